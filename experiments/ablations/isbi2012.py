"""The paper's three ablations on ISBI 2012 (train slices 0-24, validation 25-29) with the CPU recipe at equal
budgets and 3 seeds: border weights w0=10 vs none, elastic deformation vs none, VALID vs SAME padding.

    unet-jax ablate --config experiments/ablations/isbi2012.py --workdir runs/ablate_isbi \
        --config.data.root=/path/to/isbi2012
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from isbi2012_cpu import get_config  # noqa: E402,F401

SEEDS = 3


def get_sweep():
    return {
        "paper": {},
        "no_border_weights": {"weights.w0": 0.0},
        "no_elastic": {"augment.elastic": False},
        "same_padding": {"model.padding": "SAME", "train.tile_size": 128, "eval.tile_size": 512},
    }
