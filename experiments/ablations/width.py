"""Ablation: network width (features of the first level: 4, 8, 16) at equal budgets.

    unet-jax ablate --config experiments/ablations/width.py --workdir runs/ablate_width
"""
from unet_jax.config import synthetic_config as get_config  # noqa: F401

__all__ = ["SEEDS", "get_config", "get_sweep"]   # get_config is the synthetic default's, re-exported for `ablate`

SEEDS = 3


def get_sweep():
    return {f"features_{f}": {"model.features": f} for f in (4, 8, 16)}
