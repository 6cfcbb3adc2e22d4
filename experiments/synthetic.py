"""The default experiment: a small U-Net on the procedural synthetic cells (no download), minutes on 2 CPU cores.

It is ``unet_jax.config.synthetic_config()``, also what ``unet-jax train`` runs without --config: it starts
from ``base_config()`` (the paper's settings) and scales the network, tiles and schedule down so the
whole run (600 steps of 4 tiles, validation every 200) finishes quickly on a CPU while still showing the paper's
ingredients: VALID convolutions with overlap-tile validation, the weighted loss with border weights, elastic
deformation and gray-value augmentation. Adam with a warmup-cosine schedule replaces the paper's SGD with
momentum 0.99 (which is tuned for one large 572-pixel tile per step).

Run: ``unet-jax train --config=experiments/synthetic.py --workdir=runs/synthetic``; override any field on the
command line, e.g. ``--config.train.num_steps=200``.
"""
from unet_jax.config import synthetic_config


def get_config():
    return synthetic_config()
