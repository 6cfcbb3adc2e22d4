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
        raise ValueError(f"each image must have shape (H, W) or (H, W, C), got {image.shape}")
    if np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32) / float(np.iinfo(image.dtype).max)
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(image.astype(np.float32), 0.0, 1.0)
    raise ValueError(f"images must be integer or floating arrays, got dtype {image.dtype}")


def augment_preview(images, labels, config, path, n: int = 8, seed: int = 0, tile: int = 256,
                    columns: int = 4) -> np.ndarray:
    """Host-side: augment ``n`` random tiles and write them as a PNG grid with the label borders drawn over them.

    Each tile is a random ``tile x tile`` crop of a random image, augmented with ``augment_batch`` (one jitted
    call, ``config`` as in training); borders between different label values are drawn with
    ``skimage.segmentation.mark_boundaries``.

    Parameters
    ----------
    images : array (N, H, W) or (N, H, W, C), or a sequence of (H, W[, C]) arrays of any sizes; uint8 (0..255)
        or float in [0, 1]
    labels : int array (N, H, W) or a sequence of (H, W) arrays (each its image's size)
        Class or instance labels (e.g. ISBI: 1 = cell, 0 = membrane).
    config : ConfigDict or Mapping
        The ``augment`` section of ``unet_jax.config.base_config()`` (see ``unet_jax.augment.augment``).
    path : str or Path
        Output PNG file; parent directories are created.
    n : int
        Number of tiles (>= 1).
    seed : int
        Seeds the choice of crops (numpy) and the augmentation (``jax.random.PRNGKey(seed)``).
    tile : int
        Tile height and width in pixels (at most the smallest image side).
    columns : int
        Tiles per row of the grid.

    Returns
    -------
    uint8 (rows * (tile + gap) - gap, cols * (tile + gap) - gap, 3): the RGB picture written to ``path``.
    """
    images = [_as_float_image(im) for im in images]
    labels = [np.asarray(lab) for lab in labels]
    if not images or len(labels) != len(images):
        raise ValueError(f"images and labels must be non-empty and of the same length, got {len(images)} images "
                         f"and {len(labels)} labels")
    for k, (im, lab) in enumerate(zip(images, labels)):
        if lab.shape != im.shape[:2] or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"labels[{k}] must be an integer array of shape {im.shape[:2]} (its image's), got "
                             f"{lab.dtype} {lab.shape}")
    channels = {im.shape[2] for im in images}
    if len(channels) != 1:
        raise ValueError(f"all images must have the same number of channels, got {sorted(channels)}")
    c = channels.pop()
    for name, value, low in (("n", n, 1), ("tile", tile, 2), ("columns", columns, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    smallest = min(min(im.shape[:2]) for im in images)
    if tile > smallest:
        raise ValueError(f"tile must be at most the smallest image side {smallest}, got {tile}")
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
        raise ValueError(f"--output {str(path)!r} must name a .png file or a folder (got "
                         f"{repr(path.suffix) if path.suffix else 'no suffix'})")
    check_writable_directory(path.parent, "--output")
    return path


def preview_from_config(config, path, n: int = 8, seed: int = 0, tile: Optional[int] = None) -> Path:
    """Host-side: ``augment_preview`` of the training split of an experiment config's data set.

    Parameters
    ----------
    config : ml_collections.ConfigDict
        A whole experiment config (``unet_jax.config.base_config`` schema): ``data`` and ``weights`` choose the data
        set (``unet_jax.data.load_split``, prepared first if needed), ``augment`` the augmentation.
    path : str or Path
        Output PNG.
    n, seed : int
        Number of tiles; seed of the crops and the augmentation.
    tile : int or None
        Tile size; None = ``config.train.tile_size``, at most the smallest image side.

    Returns
    -------
    Path of the written PNG (``path``, or ``path/augment_preview.png`` when ``path`` is a folder). Borders are
    drawn between the data set's object instances.
    """
    path = preview_path(path)
    examples = [e for e in load_split(config.data, config.weights, "train") if e["labelled"]]
    if not examples:
        raise ValueError(f"the {config.data.name!r} data set has no labelled training examples")
    smallest = min(min(e["image"].shape[:2]) for e in examples)
    tile = min(int(config.train.tile_size), smallest) if tile is None else tile
    augment_preview([e["image"] for e in examples], [e["instances"] for e in examples], config.augment, path,
                    n=n, seed=seed, tile=tile)
    return path
