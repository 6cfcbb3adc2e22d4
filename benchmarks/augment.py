"""Benchmark: unet_jax.augment.elastic_warp against elasticdeform.deform_random_grid (one JSON object to stdout).

Both warp the same three arrays (image, labels, weights; default 572x572, the paper's tile) with the same grid and
sigma. The main baseline uses elasticdeform with the same interpolation as ours (orders 1, 0, 1 and the mirror
boundary); elasticdeform's defaults (order 3, constant boundary) are timed too, for reference. Our functions are
jitted, warmed up and timed with ``block_until_ready``, a fresh key per call; the contenders take turns in short
blocks of back-to-back calls (``common.time_interleaved``), so a changing background load on shared CPUs affects
them alike. The full ``augment`` chain (the
``augment`` section of unet_jax.config.base_config) is timed as well, for one example and for a batch.

elasticdeform is not a dependency of unet_jax; install it into the venv to get the baseline:
    pip install --no-binary elasticdeform elasticdeform
Without it the benchmark says so (stderr and the JSON's ``baseline_missing``) and reports only our times.

Usage: python benchmarks/augment.py [--size 572] [--repeats 30] [--grid 3] [--sigma 10] [--batch 4]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np

from unet_jax import augment as aug
from unet_jax import configure_cpu
from unet_jax.config import base_config

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import time_interleaved  # noqa: E402

INSTALL_HINT = "pip install --no-binary elasticdeform elasticdeform"


def _version(dist: str):
    try:
        from importlib.metadata import version
        return version(dist)
    except Exception:  # noqa: BLE001 - only informative
        return None


def main(argv=None) -> dict:
    configure_cpu()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=572, help="tile height and width (default 572)")
    p.add_argument("--repeats", type=int, default=30, help="timed calls per measurement (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first (compilation, caches)")
    p.add_argument("--block", type=int, default=10, help="timed calls per turn of each contender")
    p.add_argument("--grid", type=int, default=3, help="elastic grid points per axis (paper: 3)")
    p.add_argument("--sigma", type=float, default=10.0, help="grid displacement std in pixels (paper: 10)")
    p.add_argument("--batch", type=int, default=4, help="batch size for the augment_batch timing")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("size", "repeats", "grid", "batch", "block"):
        if getattr(args, name) < (2 if name == "grid" else 1):
            p.error(f"--{name} too small: {getattr(args, name)}")

    rng = np.random.default_rng(args.seed)
    n = args.size
    image = rng.random((n, n), dtype=np.float32)
    labels = (rng.random((n, n)) > 0.5).astype(np.int32)
    weights = rng.random((n, n), dtype=np.float32) * 10

    result = {
        "benchmark": "augment", "size": n, "grid": args.grid, "sigma": args.sigma, "repeats": args.repeats,
        "block": args.block,
        "jax_backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
        "cpu_count": os.cpu_count(), "machine": platform.machine(),
    }

    total = args.warmup + 8 * (2 * args.repeats + 2)     # the shared timer numbers every call of every contender
    keys = list(jax.random.split(jax.random.PRNGKey(args.seed), total))
    img_d, lab_d, w_d = jnp.asarray(image[..., None]), jnp.asarray(labels), jnp.asarray(weights)
    fns = {}

    # ours: elastic_warp alone (sampling the grid, the coordinate map, one resampling of the three arrays)
    warp = jax.jit(functools.partial(aug.elastic_warp, grid=args.grid, sigma=args.sigma))
    fns["elastic_warp"] = lambda i: jax.block_until_ready(warp(keys[i], img_d, lab_d, w_d))

    # ours: the full augment chain (base_config defaults, elastic grid/sigma from the options)
    cfg = base_config().augment
    cfg.elastic_grid, cfg.elastic_sigma = args.grid, args.sigma
    full = jax.jit(lambda k, i, l, w: aug.augment(k, i, l, w, cfg))
    fns["augment"] = lambda i: jax.block_until_ready(full(keys[i], img_d, lab_d, w_d))
    b = args.batch
    imgs_b, labs_b, ws_b = (jnp.broadcast_to(a, (b,) + a.shape) for a in (img_d, lab_d, w_d))
    full_b = jax.jit(lambda k, i, l, w: aug.augment_batch(k, i, l, w, cfg))
    fns["augment_batch"] = lambda i: jax.block_until_ready(full_b(keys[i], imgs_b, labs_b, ws_b))

    # baseline: elasticdeform on the host CPU
    try:
        import elasticdeform
    except ImportError:
        elasticdeform = None
        msg = f"elasticdeform is NOT installed, no baseline measured; install it with: {INSTALL_HINT}"
        print("WARNING: " + msg, file=sys.stderr)
        result.update(baseline_missing=msg)
    else:
        np.random.seed(args.seed)   # elasticdeform draws its grid from numpy's global generator
        arrays = [image, labels, weights]
        fns["elasticdeform"] = lambda i: elasticdeform.deform_random_grid(
            arrays, sigma=args.sigma, points=args.grid, order=[1, 0, 1], mode="mirror")
        fns["elasticdeform_default"] = lambda i: elasticdeform.deform_random_grid(
            arrays, sigma=args.sigma, points=args.grid)

    med = {k: r["median_s"] for k, r in time_interleaved(fns, args.repeats, args.warmup, args.block).items()}
    result.update(
        elastic_warp_ms=med["elastic_warp"] * 1e3,
        augment_ms=med["augment"] * 1e3,
        augment_batch=b,
        augment_batch_ms=med["augment_batch"] * 1e3,
        augment_config=cfg.to_dict(),
    )
    if elasticdeform is None:
        result.update(elasticdeform_ms=None, speedup=None)
    else:
        result.update(
            elasticdeform_version=getattr(elasticdeform, "__version__", None) or _version("elasticdeform"),
            elasticdeform_ms=med["elasticdeform"] * 1e3,
            elasticdeform_settings="order=[1, 0, 1], mode='mirror' (the same interpolation as ours)",
            speedup=med["elasticdeform"] / med["elastic_warp"],
            elasticdeform_default_ms=med["elasticdeform_default"] * 1e3,
            elasticdeform_default_settings="order=3, mode='constant' (elasticdeform's defaults)",
            speedup_vs_default=med["elasticdeform_default"] / med["elastic_warp"],
            speedup_target=20.0,
            speedup_target_met=bool(med["elasticdeform"] / med["elastic_warp"] >= 20.0),
        )
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
