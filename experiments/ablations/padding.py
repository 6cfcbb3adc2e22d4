"""Ablation: the paper's unpadded (VALID) convolutions against SAME padding. Equal budgets: the same steps and
batch, and tiles chosen so both see about the same number of labelled pixels per step (VALID 124 -> 36x36 output,
SAME 40 -> 40x40); both predict with overlap-tile inference.

    unet-jax ablate --config experiments/ablations/padding.py --workdir runs/ablate_padding
"""
from unet_jax.config import synthetic_config as get_config  # noqa: F401

__all__ = ["SEEDS", "get_config", "get_sweep"]   # get_config is the synthetic default's, re-exported for `ablate`

SEEDS = 3


def get_sweep():
    return {"valid": {"model.padding": "VALID"},
            "same": {"model.padding": "SAME", "train.tile_size": 40, "eval.tile_size": 96}}
