"""Host-side cost of overlap-tile inference, without the network: what bounds ``predict_tiled`` on a fast GPU.

On an H200 the paper network ran 961 tiles/s alone but the 4096x4096 image only 370 tiles/s (BENCHMARKS.md,
"GPU"): gathering the mirrored input tiles and writing the output tiles on the host took most of the time. This
times, on any machine, (1) gathering all input tiles with ``iter_tile_batches`` against the 2-D fancy-index gather
it replaced (``image[rows[:, None], cols[None, :]]`` per tile, the baseline, measured in the same run), and
(2) ``predict_tiled`` end to end with a network that costs nothing (a centre crop of the tile to the output size,
as K channels). Prints one JSON object with medians and the ratio.

    python benchmarks/tiling_host.py                  # 4096x4096, paper tile 572, batch 16
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np

from unet_jax import configure_cpu, tiling
from unet_jax.geometry import output_size

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import time_calls  # noqa: E402


def median_time(fn, repeats):
    """Median wall seconds of ``repeats`` calls after one warm-up call."""
    return time_calls(fn, repeats)["median_s"]


def fancy_index_gather(image, grid, batch_size, pad_mode="symmetric"):
    """The gather before this benchmark: every tile by a 2-D fancy index of mirrored rows and columns."""
    image = image[..., None] if image.ndim == 2 else image
    h, w, c = image.shape
    t = grid.tile_size
    rows = {o: tiling.mirror_indices(o - grid.pad_before, t, h, pad_mode) for o in grid.origins_y}
    cols = {o: tiling.mirror_indices(o - grid.pad_before, t, w, pad_mode) for o in grid.origins_x}
    origins = grid.origins()
    for start in range(0, len(origins), batch_size):
        tiles = np.zeros((batch_size, t, t, c), np.float32)
        for i, (y, x) in enumerate(origins[start:start + batch_size]):
            tiles[i] = image[rows[int(y)][:, None], cols[int(x)][None, :]]
        yield tiles


def main(argv=None):
    configure_cpu()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096, help="square image side")
    ap.add_argument("--tile", type=int, default=572)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    image = np.random.RandomState(0).rand(args.size, args.size).astype(np.float32)
    grid = tiling.tile_grid(image.shape, args.tile, depth=args.depth, padding="VALID")
    o = output_size(args.tile, args.depth, "VALID")
    b = (args.tile - o) // 2

    @jax.jit
    def free_network(x):                                    # the tile's centre as K "logits": no compute
        return jnp.repeat(x[:, b:b + o, b:b + o, :1], args.classes, axis=-1)

    def drain(gen):
        for _ in gen:
            pass

    t_new = median_time(lambda: drain(tiling.iter_tile_batches(image, grid, args.batch_size)), args.repeats)
    t_old = median_time(lambda: drain(fancy_index_gather(image, grid, args.batch_size)), args.repeats)
    t_all = median_time(lambda: tiling.predict_tiled(free_network, image, args.tile, depth=args.depth,
                                                     batch_size=args.batch_size), args.repeats)
    n = grid.num_tiles
    print(json.dumps(dict(
        benchmark="tiling_host", machine=platform.processor() or platform.machine(),
        device=str(jax.devices()[0]),
        config=dict(size=args.size, tile=args.tile, out_tile=o, depth=args.depth, batch_size=args.batch_size,
                    classes=args.classes, tiles=n, repeats=args.repeats),
        gather_s=dict(slices=t_new, fancy_index_baseline=t_old, baseline_over_slices=t_old / t_new),
        gather_tiles_per_s=dict(slices=n / t_new, fancy_index_baseline=n / t_old),
        predict_tiled_free_network=dict(seconds=t_all, tiles_per_s=n / t_all,
                                        mpix_per_s=args.size ** 2 / 1e6 / t_all),
    ), indent=1))


if __name__ == "__main__":
    main()
