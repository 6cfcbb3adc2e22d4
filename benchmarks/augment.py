"""Benchmark: unet_jax.augment.elastic_warp against elasticdeform.deform_random_grid (one JSON object to stdout).

Both warp the same three arrays (image, labels, weights; default 572x572, the paper's tile) with the same grid and
sigma. The main baseline uses elasticdeform with the same interpolation as ours (orders 1, 0, 1 and the mirror
boundary); elasticdeform's defaults (order 3, constant boundary) are timed too, for reference. Our functions are
jitted, warmed up and timed with ``block_until_ready``, a fresh key per call. The full ``augment`` chain (the
``augment`` section of experiments/base.py) is timed as well, for one example and for a batch.

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
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # experiments/ beside unet_jax

from experiments import base  # noqa: E402
from unet_jax import augment as aug  # noqa: E402

INSTALL_HINT = "pip install --no-binary elasticdeform elasticdeform"


def median_seconds(fn, repeats: int, warmup: int) -> float:
    """Median wall time of ``fn(i)`` over ``repeats`` calls after ``warmup`` calls (host-side)."""
    for i in range(warmup):
        fn(i)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(warmup + i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=572, help="tile height and width (default 572)")
    p.add_argument("--repeats", type=int, default=30, help="timed calls per measurement (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first (compilation, caches)")
    p.add_argument("--grid", type=int, default=3, help="elastic grid points per axis (paper: 3)")
    p.add_argument("--sigma", type=float, default=10.0, help="grid displacement std in pixels (paper: 10)")
    p.add_argument("--batch", type=int, default=4, help="batch size for the augment_batch timing")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for name in ("size", "repeats", "grid", "batch"):
        if getattr(args, name) < (2 if name == "grid" else 1):
            p.error(f"--{name} too small: {getattr(args, name)}")

    rng = np.random.default_rng(args.seed)
    n = args.size
    image = rng.random((n, n), dtype=np.float32)
    labels = (rng.random((n, n)) > 0.5).astype(np.int32)
    weights = rng.random((n, n), dtype=np.float32) * 10

    result = {
        "benchmark": "augment", "size": n, "grid": args.grid, "sigma": args.sigma, "repeats": args.repeats,
        "jax_backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind),
        "cpu_count": os.cpu_count(), "machine": platform.machine(),
    }

    # ---- ours: elastic_warp alone ----
    total = args.warmup + args.repeats
    keys = list(jax.random.split(jax.random.PRNGKey(args.seed), total))
    img_d, lab_d, w_d = jnp.asarray(image[..., None]), jnp.asarray(labels), jnp.asarray(weights)
    warp = jax.jit(functools.partial(aug.elastic_warp, grid=args.grid, sigma=args.sigma))
    t_ours = median_seconds(lambda i: jax.block_until_ready(warp(keys[i], img_d, lab_d, w_d)), args.repeats,
                            args.warmup)
    result["elastic_warp_ms"] = t_ours * 1e3

    # ---- ours: the full augment chain (experiments/base.py defaults, elastic grid/sigma from the options) ----
    cfg = base.get_config().augment
    cfg.elastic_grid, cfg.elastic_sigma = args.grid, args.sigma
    full = jax.jit(lambda k, i, l, w: aug.augment(k, i, l, w, cfg))
    result["augment_ms"] = 1e3 * median_seconds(
        lambda i: jax.block_until_ready(full(keys[i], img_d, lab_d, w_d)), args.repeats, args.warmup)
    b = args.batch
    imgs_b, labs_b, ws_b = (jnp.broadcast_to(a, (b,) + a.shape) for a in (img_d, lab_d, w_d))
    full_b = jax.jit(lambda k, i, l, w: aug.augment_batch(k, i, l, w, cfg))
    result["augment_batch"] = b
    result["augment_batch_ms"] = 1e3 * median_seconds(
        lambda i: jax.block_until_ready(full_b(keys[i], imgs_b, labs_b, ws_b)), args.repeats, args.warmup)
    result["augment_config"] = cfg.to_dict()

    # ---- baseline: elasticdeform on the host CPU ----
    try:
        import elasticdeform
    except ImportError:
        msg = f"elasticdeform is NOT installed, no baseline measured; install it with: {INSTALL_HINT}"
        print("WARNING: " + msg, file=sys.stderr)
        result.update(baseline_missing=msg, elasticdeform_ms=None, speedup=None)
    else:
        np.random.seed(args.seed)   # elasticdeform draws its grid from numpy's global generator
        arrays = [image, labels, weights]

        def matched(_):
            return elasticdeform.deform_random_grid(arrays, sigma=args.sigma, points=args.grid, order=[1, 0, 1],
                                                    mode="mirror")

        def defaults(_):
            return elasticdeform.deform_random_grid(arrays, sigma=args.sigma, points=args.grid)

        t_base = median_seconds(matched, args.repeats, 1)
        t_default = median_seconds(defaults, args.repeats, 1)
        result.update(
            elasticdeform_version=getattr(elasticdeform, "__version__", "unknown"),
            elasticdeform_ms=t_base * 1e3,
            elasticdeform_settings="order=[1, 0, 1], mode='mirror' (same interpolation as ours)",
            speedup=t_base / t_ours,
            elasticdeform_default_ms=t_default * 1e3,
            elasticdeform_default_settings="order=3, mode='constant' (elasticdeform defaults)",
            speedup_vs_default=t_default / t_ours,
        )
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
