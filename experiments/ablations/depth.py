"""Ablation: network depth 3, 4, 5 (number of poolings) at equal budgets; tiles are the smallest valid ones whose
output is at least the depth-3 default's 36x36.

    unet-jax ablate --config experiments/ablations/depth.py --workdir runs/ablate_depth
"""
from unet_jax.config import synthetic_config as get_config  # noqa: F401
from unet_jax.geometry import valid_input_size

__all__ = ["SEEDS", "get_config", "get_sweep"]   # get_config is the synthetic default's, re-exported for `ablate`

SEEDS = 3


def get_sweep():
    sweep = {}
    for depth in (3, 4, 5):
        sweep[f"depth_{depth}"] = {"model.depth": depth, "train.tile_size": valid_input_size(36, depth),
                                   "eval.tile_size": valid_input_size(100, depth)}
    return sweep
