"""Ablation: elastic deformation (3x3 grid, sigma 10 px) on and off, all other augmentation kept.

    unet-jax ablate --config experiments/ablations/elastic.py --workdir runs/ablate_elastic
"""
from unet_jax.config import synthetic_config as get_config  # noqa: F401

__all__ = ["SEEDS", "get_config", "get_sweep"]   # get_config is the synthetic default's, re-exported for `ablate`

SEEDS = 3


def get_sweep():
    return {"elastic": {"augment.elastic": True}, "no_elastic": {"augment.elastic": False}}
