"""The paper's three ablations on ISBI 2012 (train slices 0-24, validation 25-29) at equal budgets and 3 seeds:
border weights w0=10 vs none, elastic deformation vs none, VALID vs SAME padding.

Twelve runs (4 variants x 3 seeds) must fit a 2-core CPU, so every run gets a reduced budget: the CPU recipe
(experiments/isbi2012_cpu.py) at half its width (8 features) and 600 steps of 2 tiles of 316 (132x132 output);
the SAME variant trains on 128-pixel tiles (128x128 output, the same labelled area per step) and validates on
512-pixel tiles. Validation is whole-slice overlap-tile prediction of slices 25-29 (no TTA).

    unet-jax ablate --config experiments/ablations/isbi2012.py --workdir runs/ablate_isbi \
        --config.data.root=/path/to/isbi2012

On an accelerator, restore the CPU recipe's budget with --config.model.features=16 --config.train.num_steps=8000
(or the paper's with features 64).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from isbi2012_cpu import get_config as _cpu_config  # noqa: E402

SEEDS = 3


def get_config():
    c = _cpu_config()
    c.model.features = 8
    c.train.num_steps = 600
    c.optimizer.warmup_steps = 50
    c.train.eval_every = 0          # validate (and checkpoint) only at the end
    c.train.checkpoint_every = 0
    c.train.log_every = 100
    return c


def get_sweep():
    return {
        "paper": {},
        "no_border_weights": {"weights.w0": 0.0},
        "no_elastic": {"augment.elastic": False},
        "same_padding": {"model.padding": "SAME", "train.tile_size": 128, "eval.tile_size": 512},
    }
