"""The default experiment: a small U-Net on the procedural synthetic cells (no download), minutes on 2 CPU cores.

Starts from ``base.get_config()`` (the paper's settings) and scales the network, tiles and schedule down so the
whole run (600 steps of 4 tiles, validation every 200) finishes quickly on a CPU while still showing the paper's
ingredients: VALID convolutions with overlap-tile validation, the weighted loss with border weights, elastic
deformation and gray-value augmentation. Adam with a warmup-cosine schedule replaces the paper's SGD with
momentum 0.99 (which is tuned for one large 572-pixel tile per step).

Run: ``unet-jax train --config=experiments/synthetic.py --workdir=runs/synthetic``; override any field on the
command line, e.g. ``--config.train.num_steps=200``.
"""
try:
    from experiments import base
except ImportError:   # loaded by file path (unet_jax.cli puts this directory on sys.path)
    import base


def get_config():
    c = base.get_config()
    c.model.features = 8
    c.model.depth = 3
    c.model.dropout_rate = 0.1

    c.data.name = "synthetic_cells"
    c.data.num_train = 16
    c.data.num_validation = 4
    c.data.image_size = 192

    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.momentum = 0.9        # unused by adam; kept meaningful for --config.optimizer.name=sgd
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 20

    c.train.tile_size = 124           # depth 3, VALID: 124 -> 36 x 36 output
    c.train.batch_size = 4
    c.train.num_steps = 600
    c.train.log_every = 25
    c.train.eval_every = 200
    c.train.checkpoint_every = 200

    c.eval.tile_size = 188            # -> 100 x 100 output per validation tile
    c.eval.batch_size = 4
    return c
