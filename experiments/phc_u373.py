"""ISBI cell tracking 2015, PhC-C2DH-U373 (phase contrast, glioblastoma cells; 35 partially annotated images).

Download PhC-C2DH-U373 from https://celltrackingchallenge.net/2d-datasets/ and unpack it so that --config.data.root
holds 01/, 01_GT/SEG/, 02/, 02_GT/SEG/. The paper reports IOU 0.9203 on the challenge's test data.

    unet-jax train --config experiments/phc_u373.py --config.data.root=/path/to/PhC-C2DH-U373 --workdir runs/u373
"""
from unet_jax.config import ctc_config


def get_config():
    return ctc_config("phc_c2dh_u373")       # weights w0=10, sigma=5 and the rest: the paper's (base_config)
