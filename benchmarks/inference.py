"""Throughput of overlap-tile inference (``unet_jax.tiling.predict_tiled``) and its scaling with image size.

For each image size: the median wall time of ``predict_tiled`` over ``--repeats`` runs (after one warm-up run that
compiles), megapixels per second, seconds per megapixel relative to the smallest size (1.0 = linear scaling), and
the baseline measured in the same run: one jit-compiled pass of the same network over the whole mirror-padded
image (``--no-whole`` skips it), whose ratio shows what tiling costs (or saves). Prints one JSON object.

Example (small network on a CPU; the paper network is ``--features 64 --tile 572``)::

    python benchmarks/inference.py --features 8 --tile 316 --sizes 256 512 1024
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from unet_jax import configure_cpu, tiling
from unet_jax.geometry import border, output_size, valid_input_size
from unet_jax.model import UNet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import random_variables, time_calls  # noqa: E402


def main(argv=None):
    configure_cpu()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=8, help="first-level channels (paper: 64)")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--padding", choices=("VALID", "SAME"), default="VALID")
    ap.add_argument("--tile", type=int, default=316, help="input tile size (paper: 572)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024], help="square image sides")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tta", action="store_true", help="8-fold test-time augmentation")
    ap.add_argument("--no-whole", action="store_true", help="skip the whole-image baseline")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    args = ap.parse_args(argv)

    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else None
    model = UNet(features=args.features, depth=args.depth, padding=args.padding, dropout_rate=0.0, dtype=dtype)
    variables = random_variables(model, (1, args.tile, args.tile, 1))
    apply_fn = functools.partial(model.apply, variables)
    whole = jax.jit(lambda x: jax.nn.softmax(model.apply(variables, x), axis=-1))
    out_tile = output_size(args.tile, args.depth, args.padding)
    rs = np.random.RandomState(0)

    results = []
    for size in sorted(args.sizes):
        image = rs.rand(size, size).astype(np.float32)
        grid = tiling.tile_grid(image.shape, args.tile, depth=args.depth, padding=args.padding)
        run = functools.partial(tiling.predict_tiled, apply_fn, image, args.tile, depth=args.depth,
                                padding=args.padding, batch_size=args.batch_size, tta=args.tta)
        t = time_calls(run, args.repeats)["median_s"]
        row = dict(image=size, tiles=grid.num_tiles, padded=list(grid.padded_shape), median_s=t,
                   s_per_tile=t / grid.num_tiles,
                   mpix_per_s=size * size / 1e6 / t)
        if not args.no_whole:
            if args.padding == "VALID":
                b, s = border(args.depth), valid_input_size(size, args.depth)
                pad = np.pad(image, ((b, s - b - size),) * 2, mode="symmetric")
            else:
                m = 2 ** args.depth
                s = -(-size // m) * m
                pad = np.pad(image, ((0, s - size),) * 2, mode="symmetric")
            x = jnp.asarray(pad[None, ..., None])
            tw = time_calls(lambda: np.asarray(whole(x)), args.repeats)["median_s"]
            row.update(whole_median_s=tw, whole_input=pad.shape[0], tiled_vs_whole=t / tw)
        results.append(row)

    base = results[0]["median_s"] / results[0]["image"] ** 2
    for row in results:
        row["s_per_pixel_vs_smallest"] = row["median_s"] / row["image"] ** 2 / base
    mp = np.array([r["image"] ** 2 / 1e6 for r in results])
    ts = np.array([r["median_s"] for r in results])
    slope, intercept = np.polyfit(mp, ts, 1) if len(results) > 1 else (ts[0] / mp[0], 0.0)
    print(json.dumps(dict(
        benchmark="tiled_inference",
        device=str(jax.devices()[0]), backend=jax.default_backend(),
        config=dict(features=args.features, depth=args.depth, padding=args.padding, tile=args.tile,
                    out_tile=out_tile, batch_size=args.batch_size, tta=args.tta, dtype=args.dtype,
                    repeats=args.repeats),
        results=results,
        linear_fit=dict(seconds_per_mpix=float(slope), intercept_s=float(intercept)),
    ), indent=1))


if __name__ == "__main__":
    main()
