"""ISBI cell tracking 2015, DIC-C2DH-HeLa (differential interference contrast; 20 partially annotated images).

Download DIC-C2DH-HeLa from https://celltrackingchallenge.net/2d-datasets/ and unpack it so that --config.data.root
holds 01/, 01_GT/SEG/, 02/, 02_GT/SEG/. The paper reports IOU 0.7756 on the challenge's test data.

    unet-jax train --config experiments/dic_hela.py --config.data.root=/path/to/DIC-C2DH-HeLa --workdir runs/hela
"""
from unet_jax.config import ctc_config


def get_config():
    return ctc_config("dic_c2dh_hela")       # weights w0=10, sigma=5 and the rest: the paper's (base_config)
