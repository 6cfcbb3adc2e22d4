"""Synthetic stand-ins for the Cell Tracking Challenge sets PhC-C2DH-U373 and DIC-C2DH-HeLa (a data generator).

The real data (https://celltrackingchallenge.net/2d-datasets/) cannot always be downloaded; these stand-ins have
the folder layout the ``ctc`` builder (``unet_jax.data.ctc``) reads (``<out>/PhC-C2DH-U373/01/t000.tif``, 16-bit
instance masks of some frames in ``01_GT/SEG/man_seg000.tif``, sequence 02 likewise), so experiments/phc_u373.py
and experiments/dic_hela.py run end to end. Frames come from ``unet_jax.data.synthetic.synthetic_cells``,
re-rendered: U373 as uint16 phase contrast (sparse cells, inverted, 260 x 348), HeLa as uint8 DIC relief (packed
cells, 256 x 256). Frame t of sequence s is drawn from ``default_rng([seed, config, s, t])``; only ``annotated``
frames per sequence (evenly spread) get a mask, every cell labelled 1..K. A plumbing check, not a benchmark.

    python scripts/make_ctc_standin.py --out /tmp/ctc_standin [--sequences 2] [--frames N] [--annotated N]
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage as ndi

from unet_jax import checks
from unet_jax.checks import InvalidInputError
from unet_jax.data.ctc import DATASETS
from unet_jax.data.synthetic import synthetic_cells

__all__ = ["write_ctc_standin", "STYLES", "resolve_name", "annotated_frames", "render_frame"]


class Style(NamedTuple):
    """How one stand-in is drawn: its defaults and appearance."""
    size: Tuple[int, int]          # default (height, width)
    frames: int                    # default frames per sequence
    annotated: int                 # default annotated frames per sequence
    dtype: type                    # stored frame dtype
    cell_diameter: float           # passed to synthetic_cells
    keep_fraction: float           # fraction of the generator's cells kept (the rest becomes background)
    render: str                    # 'phase' or 'dic'


STYLES = {
    "phc_c2dh_u373": Style(size=(260, 348), frames=12, annotated=6, dtype=np.uint16, cell_diameter=40.0,
                           keep_fraction=0.45, render="phase"),
    "dic_c2dh_hela": Style(size=(256, 256), frames=10, annotated=5, dtype=np.uint8, cell_diameter=26.0,
                           keep_fraction=1.0, render="dic"),
}

_SEQ_DIR = re.compile(r"^\d{2,}(_GT)?$")


def resolve_name(name: str) -> str:
    """The builder config name (``'phc_c2dh_u373'`` / ``'dic_c2dh_hela'``) for a config or folder name
    (folder names case-insensitive); InvalidInputError otherwise."""
    if isinstance(name, str):
        if name in DATASETS:
            return name
        for key, folder in DATASETS.items():
            if name.lower() == folder.lower():
                return key
    choices = sorted(DATASETS) + sorted(DATASETS.values())
    raise InvalidInputError(f"name must be one of {choices}, got {name!r}")


def _positive_int(name: str, value, lo: int = 1) -> int:
    return checks.integer(name, value, low=lo)


def _check_size(size) -> Tuple[int, int]:
    hw = (size, size) if isinstance(size, (int, np.integer)) and not isinstance(size, bool) else size
    try:
        h, w = hw
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 16 for v in (h, w))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidInputError(f"size must be an integer >= 16 or a (height, width) pair of them, got {size!r}")
    return int(h), int(w)


def annotated_frames(frames: int, annotated: int) -> list:
    """Sorted indices of the ``annotated`` frames (of ``frames``) that get a mask: evenly spread, first and last
    included."""
    frames = _positive_int("frames", frames)
    annotated = _positive_int("annotated", annotated)
    if annotated > frames:
        raise InvalidInputError(f"annotated must be at most frames ({frames}), got {annotated}")
    if annotated == 1:
        return [0]
    return [int(round(i * (frames - 1) / (annotated - 1))) for i in range(annotated)]


def render_frame(style: Style, size: Tuple[int, int], rng: np.random.Generator):
    """(frame of ``style.dtype``, uint16 instance mask) of ``size`` (each side >= 16), all randomness from
    ``rng``; cells scale with the frame relative to ``style.size`` (diameter at least 8 pixels)."""
    from skimage.segmentation import relabel_sequential

    if not isinstance(style, Style) or style.render not in ("phase", "dic"):
        raise InvalidInputError(f"style must be one of STYLES' values (render 'phase' or 'dic'), got {style!r}")
    size = _check_size(size)
    if not isinstance(rng, np.random.Generator):
        raise InvalidInputError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    scale = min(size[0] / style.size[0], size[1] / style.size[1])
    image, instances = synthetic_cells(size, rng, cell_diameter=max(8.0, style.cell_diameter * scale))
    image = image.astype(np.float64)
    if style.keep_fraction < 1.0:
        keep = rng.random(int(instances.max()) + 1) < style.keep_fraction
        keep[0] = False
        instances = np.where(keep[instances], instances, 0)
        instances = relabel_sequential(instances)[0]
    cells = instances > 0
    if style.render == "phase":
        # Inverted: cells dark, their borders (the generator's dark membranes) bright like a phase halo; far from
        # any kept cell a flat, noisy background.
        near = ndi.binary_dilation(cells, iterations=2)
        background = 0.5 + 0.03 * rng.normal(size=image.shape)
        x = np.where(near, 1.0 - image, background)
        x = ndi.gaussian_filter(x, 0.8)
    else:
        # Relief: the smoothed image plus its derivative along the diagonal (shadow-cast look).
        g = ndi.gaussian_filter(image, 1.5)
        relief = ndi.sobel(g, axis=0) + ndi.sobel(g, axis=1)
        x = 0.5 + 0.35 * (g - g.mean()) + 0.6 * relief
        x = x + 0.02 * rng.normal(size=image.shape)
    x = np.clip(x, 0.0, 1.0)
    if style.dtype == np.uint8:
        frame = np.round(x * 255).astype(np.uint8)
    else:
        frame = np.round(1500 + 8000 * x).astype(np.uint16)
    return frame, instances.astype(np.uint16)


def _clear(dataset_dir: Path) -> None:
    """Remove a previous stand-in, refusing folders that hold anything but CTC sequence folders."""
    other = [p.name for p in dataset_dir.iterdir() if not (p.is_dir() and _SEQ_DIR.match(p.name))]
    if other:
        raise InvalidInputError(f"overwrite=True would delete {dataset_dir}, which holds {sorted(other)[:5]} "
                                f"besides CTC sequence folders; remove it yourself or choose another root")
    shutil.rmtree(dataset_dir)


def write_ctc_standin(root, name: str, num_sequences: int = 2, frames: Optional[int] = None,
                      size: Union[int, Sequence[int], None] = None, seed: int = 0, annotated: Optional[int] = None,
                      overwrite: bool = False) -> Path:
    """Write a stand-in under ``root/<DATASET-NAME>`` and return that folder (``root`` or it can be
    ``config.data.root``).

    ``name``: a builder config or folder name; ``frames``, ``size`` and ``annotated`` default to the style's;
    the same arguments give the same files. An existing non-empty folder is an error unless ``overwrite`` (which
    only removes folders holding nothing but sequence folders). InvalidInputError names a bad argument.
    """
    import tifffile

    key = resolve_name(name)
    style = STYLES[key]
    num_sequences = _positive_int("num_sequences", num_sequences)
    if num_sequences > 99:
        raise InvalidInputError(f"num_sequences must be at most 99 (two-digit folder names), got {num_sequences}")
    frames = style.frames if frames is None else _positive_int("frames", frames)
    annotated = min(style.annotated, frames) if annotated is None else _positive_int("annotated", annotated)
    marked = annotated_frames(frames, annotated)
    size = style.size if size is None else _check_size(size)
    seed = _positive_int("seed", seed, 0)
    overwrite = checks.boolean("overwrite", overwrite)
    if root is None or str(root) == "":
        raise InvalidInputError(f"root must be a folder path, got {root!r}")
    dataset_dir = Path(root).expanduser() / DATASETS[key]
    if dataset_dir.exists():
        if not dataset_dir.is_dir():
            raise InvalidInputError(f"root: {dataset_dir} exists and is not a folder")
        if any(dataset_dir.iterdir()):
            if not overwrite:
                raise InvalidInputError(f"root: {dataset_dir} already holds files; pass overwrite=True (--overwrite) "
                                        f"to replace the stand-in, or choose another root")
            _clear(dataset_dir)
    config_index = sorted(DATASETS).index(key)
    for s in range(1, num_sequences + 1):
        seq = f"{s:02d}"
        (dataset_dir / seq).mkdir(parents=True, exist_ok=True)
        (dataset_dir / f"{seq}_GT" / "SEG").mkdir(parents=True, exist_ok=True)
        for t in range(frames):
            frame, mask = render_frame(style, size, np.random.default_rng([seed, config_index, s, t]))
            tifffile.imwrite(dataset_dir / seq / f"t{t:03d}.tif", frame)
            if t in marked:
                tifffile.imwrite(dataset_dir / f"{seq}_GT" / "SEG" / f"man_seg{t:03d}.tif", mask)
    return dataset_dir


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------

CONFIGS = {"phc_c2dh_u373": ("experiments/phc_u373.py", "phc_u373"),
           "dic_c2dh_hela": ("experiments/dic_hela.py", "dic_hela")}

# A CPU-sized variant of the configs: everything as the config says (depth 4, 572 tiles, batch 1, SGD with
# momentum 0.99, dropout 0.5, augmentation, w0 = 10, sigma = 5) but 8 instead of 64 features and 400 instead of
# 20000 steps: about 1.4 tiles/s, 5-6 minutes on 2 busy CPU cores.
CPU_OVERRIDES = ("--config.model.features=8 --config.train.num_steps=400 --config.train.log_every=25 "
                 "--config.train.eval_every=100 --config.train.checkpoint_every=100 "
                 "--config.optimizer.name=adam --config.optimizer.learning_rate=0.003 "
                 "--config.optimizer.schedule=warmup_cosine --config.optimizer.warmup_steps=20")


def commands(out: Path, runs: str = "runs/ctc_standin") -> list:
    """The shell commands that train and evaluate both configs on the stand-ins under ``out``."""
    lines = []
    for key, (config, short) in CONFIGS.items():
        data = out / DATASETS[key]
        lines.append(f"# {DATASETS[key]}: the config as it is (paper-sized; for an accelerator)")
        lines.append(f"unet-jax train --config {config} --config.data.root={data} --workdir {runs}/{short}")
        lines.append(f"# {DATASETS[key]}: CPU-sized (minutes on a few cores)")
        lines.append(f"unet-jax train --config {config} --config.data.root={data} --workdir {runs}/{short}_cpu "
                     f"{CPU_OVERRIDES}")
        lines.append(f"unet-jax evaluate --workdir {runs}/{short}_cpu")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Write synthetic stand-ins for PhC-C2DH-U373 and DIC-C2DH-HeLa in the "
                                            "Cell Tracking Challenge layout and print the commands to train on "
                                            "them.")
    p.add_argument("--out", required=True, help="parent folder; writes OUT/PhC-C2DH-U373 and OUT/DIC-C2DH-HeLa")
    p.add_argument("--sequences", type=int, default=2, help="sequences per data set (default 2)")
    p.add_argument("--frames", type=int, default=None, help="frames per sequence (default: 12 U373, 10 HeLa)")
    p.add_argument("--annotated", type=int, default=None,
                   help="annotated frames per sequence (default: 6 U373, 5 HeLa)")
    p.add_argument("--size", type=int, nargs="+", default=None, metavar="N",
                   help="frame size: N or H W (default: 260 348 U373, 256 256 HeLa)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace existing stand-ins")
    p.add_argument("--runs", default="runs/ctc_standin", help="workdir parent used in the printed commands")
    args = p.parse_args(argv)
    size = None if args.size is None else (args.size[0] if len(args.size) == 1 else tuple(args.size))
    out = Path(args.out).expanduser().resolve()
    try:
        for key in CONFIGS:
            path = write_ctc_standin(out, key, num_sequences=args.sequences, frames=args.frames, size=size,
                                     seed=args.seed, annotated=args.annotated, overwrite=args.overwrite)
            n_seg = len(list(path.glob("*_GT/SEG/man_seg*.tif")))
            n_img = len(list(path.glob("[0-9]*/t*.tif")))
            print(f"wrote {path}: {n_img} frames, {n_seg} annotated")
    except ValueError as e:
        print(f"ctc_standin: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(commands(out, args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
