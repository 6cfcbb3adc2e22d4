"""Ablation: the paper's border weights (w0=10, sigma=5) against class balancing alone (w0=0), on the synthetic
default data with equal budgets and 3 seeds.

    unet-jax ablate --config experiments/ablations/border_weights.py --workdir runs/ablate_weights
"""
from unet_jax.config import synthetic_config as get_config  # noqa: F401

__all__ = ["SEEDS", "get_config", "get_sweep"]   # get_config is the synthetic default's, re-exported for `ablate`

SEEDS = 3


def get_sweep():
    return {"border_w0_10": {"weights.w0": 10.0}, "no_border": {"weights.w0": 0.0}}
