"""ISBI cell tracking 2015, DIC-C2DH-HeLa (differential interference contrast; 20 partially annotated images).

Download DIC-C2DH-HeLa from https://celltrackingchallenge.net/2d-datasets/ and unpack it so that --config.data.root
holds 01/, 01_GT/SEG/, 02/, 02_GT/SEG/. The paper reports IOU 0.7756 on the challenge's test data.

    unet-jax train --config experiments/dic_hela.py --config.data.root=/path/to/DIC-C2DH-HeLa --workdir runs/hela
"""
from unet_jax.config import base_config


def get_config():
    c = base_config()
    c.data.name = "ctc"
    c.data.builder_config = "dic_c2dh_hela"
    c.data.root = ""
    c.data.validation_fraction = 0.2
    c.weights.w0 = 10.0
    c.weights.sigma = 5.0
    c.train.num_steps = 20000
    c.train.best_metric = "iou"      # the paper's measure on these data sets: keep the highest
    c.train.best_mode = "max"
    return c
