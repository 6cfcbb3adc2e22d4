"""A picture of the data augmentation: a PNG grid of augmented tiles with their label borders drawn over them.

Host-side (numpy, scikit-image); the augmentation itself is ``unet_jax.augment.augment_batch`` under jit. From the
command line::

    unet-jax augment-preview --config experiments/isbi2012.py --config.data.root=../shared/data/isbi2012 \
        --config.augment.elastic_sigma=20 --output aug.png
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import skimage.io
from skimage.segmentation import mark_boundaries

from unet_jax import augment as aug
from unet_jax import checks
from unet_jax.checks import InvalidInputError
from unet_jax.data import load_split
from unet_jax.io import check_writable_directory

BORDER_COLOR = (1.0, 0.15, 0.1)     # label borders, RGB in [0, 1]
GAP = 4                             # white pixels between tiles


def _as_float_image(image) -> np.ndarray:
    """Host-side: one (H, W[, C]) uint8 or float image -> float32 (H, W, C) in [0, 1]."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise InvalidInputError(f"each image must have shape (H, W) or (H, W, C), got {image.shape}")
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32) / float(np.iinfo(image.dtype).max)
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(image.astype(np.float32), 0.0, 1.0)
    raise InvalidInputError(f"images must be integer or floating arrays, got dtype {image.dtype}")


def augment_preview(images, labels, config, path, n: int = 8, seed: int = 0, tile: int = 256,
                    columns: int = 4) -> np.ndarray:
    """Augment ``n`` random ``tile`` x ``tile`` crops of ``images`` (uint8 or float in [0, 1], any sizes) with
    ``augment_batch`` and the ``augment`` section ``config``, draw the borders of ``labels`` over them and write the
    grid of ``columns`` tiles a row to the PNG ``path``; returns the uint8 RGB picture. ``seed`` seeds the crops and
    the augmentation (host-side)."""
    images = [_as_float_image(im) for im in images]
    labels = [np.asarray(lab) for lab in labels]
    if not images or len(labels) != len(images):
        raise InvalidInputError(f"images and labels must be non-empty and of the same length, got {len(images)} "
                                f"images and {len(labels)} labels")
    for k, (im, lab) in enumerate(zip(images, labels)):
        if lab.shape != im.shape[:2] or not np.issubdtype(lab.dtype, np.integer):
            raise InvalidInputError(f"labels[{k}] must be an integer array of shape {im.shape[:2]} (its image's), "
                                    f"got {lab.dtype} {lab.shape}")
    channels = {im.shape[2] for im in images}
    if len(channels) != 1:
        raise InvalidInputError(f"all images must have the same number of channels, got {sorted(channels)}")
    c = channels.pop()
    for name, value, low in (("n", n, 1), ("tile", tile, 2), ("columns", columns, 1)):
        checks.integer(name, value, low)
    smallest = min(min(im.shape[:2]) for im in images)
    if tile > smallest:
        raise InvalidInputError(f"tile must be at most the smallest image side {smallest}, got {tile}")
    cfg = aug.read_config(config)

    rng = np.random.default_rng(seed)
    crops, lab_crops = [], []
    for i in rng.integers(0, len(images), n):
        h, w = images[i].shape[:2]
        y, x = rng.integers(0, h - tile + 1), rng.integers(0, w - tile + 1)
        crops.append(images[i][y:y + tile, x:x + tile])
        lab_crops.append(labels[i][y:y + tile, x:x + tile].astype(np.int32))
    crops, lab_crops = np.stack(crops), np.stack(lab_crops)
    weights = np.ones(lab_crops.shape, np.float32)

    fn = jax.jit(lambda k, i, l, wt: aug.augment_batch(k, i, l, wt, cfg))
    out_images, out_labels, _ = jax.device_get(fn(jax.random.PRNGKey(seed), jnp.asarray(crops),
                                                  jnp.asarray(lab_crops), jnp.asarray(weights)))

    cols = min(columns, n)
    rows = math.ceil(n / cols)
    grid = np.ones((rows * (tile + GAP) - GAP, cols * (tile + GAP) - GAP, 3), np.float32)
    for k in range(n):
        img = out_images[k]
        rgb = np.repeat(img[..., :1], 3, axis=-1) if c < 3 else img[..., :3]
        drawn = mark_boundaries(rgb.astype(np.float64), out_labels[k], color=BORDER_COLOR, mode="inner")
        r, q = divmod(k, cols)
        grid[r * (tile + GAP):r * (tile + GAP) + tile, q * (tile + GAP):q * (tile + GAP) + tile] = drawn
    picture = (np.clip(grid, 0, 1) * 255 + 0.5).astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    skimage.io.imsave(str(path), picture, check_contrast=False)
    return picture


def preview_path(path) -> Path:
    """Where the preview goes: ``path`` if it names a .png file, ``path/augment_preview.png`` if it is a folder
    (existing, or written with a trailing slash); checked to be writable before any work."""
    folder = str(path).endswith(("/", os.sep)) or Path(path).is_dir()
    path = Path(path) / "augment_preview.png" if folder else Path(path)
    if path.suffix.lower() != ".png":
        raise InvalidInputError(f"--output {str(path)!r} must name a .png file or a folder (got "
                                f"{repr(path.suffix) if path.suffix else 'no suffix'})")
    check_writable_directory(path.parent, "--output")
    return path


def preview_from_config(config, path, n: int = 8, seed: int = 0, tile: Optional[int] = None) -> Path:
    """``augment_preview`` of the labelled training examples of an experiment config's data set (``tile``
    None: ``train.tile_size``, at most the smallest image side); returns the PNG's path (``path`` or
    ``path/augment_preview.png`` for a folder)."""
    path = preview_path(path)
    examples = [e for e in load_split(config.data, config.weights, "train") if e["labelled"]]
    if not examples:
        raise InvalidInputError(f"the {config.data.name!r} data set has no labelled training examples")
    smallest = min(min(e["image"].shape[:2]) for e in examples)
    tile = min(config.train.tile_size, smallest) if tile is None else tile
    augment_preview([e["image"] for e in examples], [e["instances"] for e in examples], config.augment, path,
                    n=n, seed=seed, tile=tile)
    return path
