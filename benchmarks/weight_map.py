"""Benchmark: fast ``unet_weight_map`` vs the brute-force ``unet_weight_map_reference`` on real ISBI label slices.

Host-side (numpy/scipy). Prints one JSON object: per-slice and overall median seconds of both, the speedup
(reference / fast, from the medians measured in this run) and the largest absolute difference of the two maps.

    python benchmarks/weight_map.py --slices 0 1 2 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import numpy as np
import tifffile

from unet_jax.weights import instances_from_mask, unet_weight_map, unet_weight_map_reference

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import time_calls  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def median_seconds(fn, repeats: int):
    """(median wall seconds of ``repeats`` calls of ``fn``, no warm-up, and the last result)."""
    r = time_calls(fn, repeats, warmup=0)
    return r["median_s"], r["result"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "isbi2012",
                   help="directory holding train-labels.tif (default: ../shared/data/isbi2012 beside the repo)")
    p.add_argument("--slices", type=int, nargs="+", default=[0, 1, 2], help="label slices to time (default 0 1 2)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per slice and method (default 3)")
    p.add_argument("--w0", type=float, default=10.0)
    p.add_argument("--sigma", type=float, default=5.0)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")

    labels = tifffile.imread(args.data_dir / "train-labels.tif")
    kw = dict(w0=args.w0, sigma=args.sigma, class_weights="balanced")
    unet_weight_map(instances_from_mask(labels[args.slices[0]]), **kw)  # warm-up (imports, caches)

    per_slice, ref_all, fast_all, max_diff = [], [], [], 0.0
    for i in args.slices:
        inst = instances_from_mask(labels[i])
        t_ref, ref = median_seconds(lambda: unet_weight_map_reference(inst, **kw), args.repeats)
        t_fast, fast = median_seconds(lambda: unet_weight_map(inst, **kw), args.repeats)
        diff = float(np.abs(fast - ref).max())
        max_diff = max(max_diff, diff)
        ref_all.append(t_ref)
        fast_all.append(t_fast)
        per_slice.append(dict(slice=i, objects=int(inst.max()), reference_s=t_ref, fast_s=t_fast,
                              speedup=t_ref / t_fast, max_abs_diff=diff))

    ref_med, fast_med = statistics.median(ref_all), statistics.median(fast_all)
    print(json.dumps(dict(
        benchmark="weight_map", shape=list(labels.shape[1:]), w0=args.w0, sigma=args.sigma,
        slices=args.slices, repeats=args.repeats,
        reference_median_s=ref_med, fast_median_s=fast_med, speedup=ref_med / fast_med,
        max_abs_diff=max_diff, per_slice=per_slice,
        machine=dict(python=platform.python_version(), processor=platform.processor() or platform.machine()),
    ), indent=2))


if __name__ == "__main__":
    main()
