"""ISBI cell tracking 2015, PhC-C2DH-U373 (phase contrast, glioblastoma cells; 35 partially annotated images).

Download PhC-C2DH-U373 from https://celltrackingchallenge.net/2d-datasets/ and unpack it so that --config.data.root
holds 01/, 01_GT/SEG/, 02/, 02_GT/SEG/. The paper reports IOU 0.9203 on the challenge's test data.

    unet-jax train --config experiments/phc_u373.py --config.data.root=/path/to/PhC-C2DH-U373 --workdir runs/u373
"""
from unet_jax.config import base_config


def get_config():
    c = base_config()
    c.data.name = "ctc"
    c.data.builder_config = "phc_c2dh_u373"
    c.data.root = ""
    c.data.validation_fraction = 0.2
    c.weights.w0 = 10.0
    c.weights.sigma = 5.0
    c.train.num_steps = 20000
    c.train.best_metric = "iou"      # the paper's measure on these data sets: keep the highest
    c.train.best_mode = "max"
    return c
