"""ISBI 2012 reduced for a CPU: the paper's network at a quarter of the width (16 features), smaller tiles and
Adam, so that it trains in at most an hour on 2 CPU cores (8000 steps: 39-45 min on the 2-core AMD EPYC
benchmark machine, README "Results"). Same data, weights and augmentation as the paper.

    unet-jax train --config experiments/isbi2012_cpu.py --config.data.root=/path/to/isbi2012 --workdir runs/isbi_cpu
"""
from unet_jax.config import base_config


def get_config():
    c = base_config()
    c.data.name = "isbi2012"
    c.train.best_metric = "vrand_thinned"   # the challenge's ranking measure (higher is better)
    c.model.features = 16
    c.model.dropout_rate = 0.2
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 100
    c.train.tile_size = 316          # -> 132x132 output
    c.train.batch_size = 2
    c.train.num_steps = 8000
    c.eval.batch_size = 2
    return c
