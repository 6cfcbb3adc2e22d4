"""Random training tiles (paper section 3: large input tiles, batch of one image, mirrored borders).

``to_device_dataset`` (host-side, once) puts a whole split on the accelerator, mirror-padded (tile geometry and
padding in its docstring), and ``sample_tiles`` (pure jax.numpy, jit-compiled) cuts a random batch of tiles out of
it inside the train step (sampling law: ``sample_origins``); ``fits_on_device`` tells whether a split fits next to
the model (training warns when it may not).
"""
from __future__ import annotations

import functools
import os
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from unet_jax import checks
from unet_jax.checks import InvalidInputError
from unet_jax.tiling import PAD_MODES, mirror_indices

PAD_MODE = "symmetric"
FG_BLOCK = 8

__all__ = ["DeviceDataset", "to_device_dataset", "sample_origins", "gather_tiles", "sample_tiles",
           "device_dataset_nbytes", "fits_on_device", "PAD_MODE"]


class DeviceDataset(NamedTuple):
    """A split on the device, mirror-padded for tile sampling (a pytree). ``images`` (N, Hp, Wp, C), ``labels``
    and ``weights`` (N, Hp, Wp): image i fills ``[:Ei + 2b, :Fi + 2b]``, zeros beyond (weights also 0 where an image
    smaller than O was extended); ``sizes`` (N, 2) the extents (Ei, Fi) = (max(H_i, O), max(W_i, O)) output windows
    range over; ``foreground`` whether each FG_BLOCK x FG_BLOCK block holds a foreground pixel of the image."""
    images: jax.Array
    labels: jax.Array
    weights: jax.Array
    sizes: jax.Array
    foreground: jax.Array


# ----------------------------------------------------------------------------------------------------------------
# Checks and geometry (host-side)
# ----------------------------------------------------------------------------------------------------------------

def _check_geometry(tile_size, out_size) -> int:
    """Validate tile_size/out_size; return the border (tile_size - out_size) // 2."""
    tile_size = checks.integer("tile_size", tile_size, 1)
    out_size = checks.integer("out_size", out_size, 1)
    if out_size > tile_size or (tile_size - out_size) % 2:
        raise InvalidInputError(f"out_size must be at most tile_size with an even difference (a border on each "
                                f"side), got tile_size={tile_size}, out_size={out_size}")
    return (tile_size - out_size) // 2


def _example_arrays(example, i) -> tuple:
    """(image (H, W, C) float32, class labels (H, W) int32, weights (H, W) float32) of one example dict, checked.
    The labels are the example's ``classes`` if it has them, else ``instances > 0``."""
    if not hasattr(example, "__getitem__"):
        raise InvalidInputError(f"examples[{i}] must be a dict with 'image', 'instances' and 'weights', got "
                                f"{type(example).__name__}")
    try:
        image, instances, weights = (np.asarray(example[k]) for k in ("image", "instances", "weights"))
    except KeyError as err:
        raise InvalidInputError(f"examples[{i}] has no {err.args[0]!r}; expected the keys 'image', 'instances', "
                                f"'weights' (as from unet_jax.data.load_split)") from None
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise InvalidInputError(f"examples[{i}]['image'] must be (H, W, C) or (H, W), got shape {image.shape}")
    if instances.shape != image.shape[:2] or weights.shape != image.shape[:2]:
        raise InvalidInputError(f"examples[{i}]: instances {instances.shape} and weights {weights.shape} must be "
                                f"{image.shape[:2]}, the image's (H, W)")
    labels = np.asarray(example["classes"]) if "classes" in example else (instances > 0)
    if labels.shape != instances.shape:
        raise InvalidInputError(f"examples[{i}]: classes {labels.shape} must be {image.shape[:2]}, the image's (H, W)")
    return image.astype(np.float32, copy=False), labels.astype(np.int32), weights.astype(np.float32, copy=False)


class _Geometry(NamedTuple):
    h: int        # image height, width
    w: int
    eh: int       # extent output windows range over: max(h, O), max(w, O)
    ew: int
    top: int      # mirrored rows/columns added before the image to reach eh/ew
    left: int
    border: int   # b = (T - O) / 2


def _geometry(h: int, w: int, out_size: int, border: int) -> _Geometry:
    eh, ew = max(h, out_size), max(w, out_size)
    return _Geometry(h, w, eh, ew, (eh - h) // 2, (ew - w) // 2, border)


def _window(image, labels, weights, g: _Geometry, py: int, px: int, th: int, tw: int, mode: str):
    """The padded-coordinate window [py, py + th) x [px, px + tw) of one example (host-side numpy).

    Padded coordinate p holds image row p - border - top, mirrored (``mirror_indices``) where outside the image;
    weights are 0 inside the extent but outside the image (the extension of images smaller than O).
    """
    rows = mirror_indices(py - g.border - g.top, th, g.h, mode)
    cols = mirror_indices(px - g.border - g.left, tw, g.w, mode)
    img = image[np.ix_(rows, cols)]
    lab = labels[np.ix_(rows, cols)]
    wts = weights[np.ix_(rows, cols)].astype(np.float32)
    if g.eh > g.h or g.ew > g.w:
        e_y = np.arange(py, py + th) - g.border          # extent coordinates
        e_x = np.arange(px, px + tw) - g.border
        in_ext = ((e_y >= 0) & (e_y < g.eh))[:, None] & ((e_x >= 0) & (e_x < g.ew))[None, :]
        in_img = ((e_y >= g.top) & (e_y < g.top + g.h))[:, None] & ((e_x >= g.left) & (e_x < g.left + g.w))[None]
        wts = np.where(in_ext & ~in_img, np.float32(0), wts)
    return img, lab, wts


# ----------------------------------------------------------------------------------------------------------------
# On-device path
# ----------------------------------------------------------------------------------------------------------------

def device_dataset_nbytes(examples: Sequence, tile_size: int, out_size: int) -> int:
    """Bytes ``to_device_dataset(examples, tile_size, out_size)`` will occupy on the device. Host-side."""
    border = _check_geometry(tile_size, out_size)
    shapes = [np.shape(ex["image"]) for ex in examples]
    if not shapes:
        return 0
    hp = max(max(s[0], out_size) for s in shapes) + 2 * border
    wp = max(max(s[1], out_size) for s in shapes) + 2 * border
    c = max(s[2] if len(s) == 3 else 1 for s in shapes)
    eh = max(max(s[0], out_size) for s in shapes)
    ew = max(max(s[1], out_size) for s in shapes)
    blocks = -(-eh // FG_BLOCK) * -(-ew // FG_BLOCK)          # the bool foreground-block map
    return len(shapes) * (hp * wp * (4 * c + 4 + 4) + 8 + blocks)


def to_device_dataset(examples: Sequence, tile_size: int, out_size: int, pad_mode: str = PAD_MODE,
                      device=None) -> DeviceDataset:
    """Mirror-pad a split once on the host and put it on ``device`` for ``sample_tiles``.

    A tile of T = ``tile_size`` pixels has the VALID output window O = ``out_size`` at its centre and a border
    b = (T - O) / 2; output windows lie inside the image, the border is mirrored with ``pad_mode`` (as in
    ``unet_jax.tiling``, so training and inference extrapolate alike). Images smaller than O are first mirrored up to
    O with zero weights there. Examples: dicts of 'image', 'instances', 'weights' (and 'classes'), one channel count."""
    border = _check_geometry(tile_size, out_size)
    checks.one_of("pad_mode", pad_mode, PAD_MODES)
    if isinstance(examples, (str, bytes)) or not hasattr(examples, "__len__") or len(examples) == 0:
        raise InvalidInputError(f"examples must be a non-empty sequence of example dicts, got {type(examples).__name__}"
                                f"{' of length 0' if hasattr(examples, '__len__') else ''}")
    arrays = [_example_arrays(examples[i], i) for i in range(len(examples))]
    channels = {a[0].shape[-1] for a in arrays}
    if len(channels) != 1:
        raise InvalidInputError(f"examples must all have the same number of image channels, got {sorted(channels)}")
    c = channels.pop()
    geoms = [_geometry(a[0].shape[0], a[0].shape[1], out_size, border) for a in arrays]
    hp = max(g.eh for g in geoms) + 2 * border
    wp = max(g.ew for g in geoms) + 2 * border
    n = len(arrays)
    images = np.zeros((n, hp, wp, c), np.float32)
    labels = np.zeros((n, hp, wp), np.int32)
    weights = np.zeros((n, hp, wp), np.float32)
    for i, ((image, lab, wmap), g) in enumerate(zip(arrays, geoms)):
        th, tw = g.eh + 2 * border, g.ew + 2 * border
        images[i, :th, :tw], labels[i, :th, :tw], weights[i, :th, :tw] = _window(
            image, lab, wmap, g, 0, 0, th, tw, pad_mode)
    sizes = np.array([(g.eh, g.ew) for g in geoms], np.int32).reshape(n, 2)
    foreground = np.zeros((n, -(-max(g.eh for g in geoms) // FG_BLOCK), -(-max(g.ew for g in geoms) // FG_BLOCK)),
                          bool)
    for i, ((_, lab, _), g) in enumerate(zip(arrays, geoms)):
        ys, xs = np.nonzero(lab > 0)
        foreground[i, (ys + g.top) // FG_BLOCK, (xs + g.left) // FG_BLOCK] = True
    return DeviceDataset(*jax.device_put((images, labels, weights, sizes, foreground), device))


@functools.partial(jax.jit, static_argnames=("batch_size", "out_size", "foreground"))
def sample_origins(dataset: DeviceDataset, key: jax.Array, batch_size: int, out_size: int,
                   foreground: float = 0.0):
    """Random image indices (B,) and output-window origins (B, 2) (pure jax, jit-compiled). Images are
    equally likely whatever their size; the origin is uniform over the image's valid positions, or with probability
    ``foreground`` placed so that a uniformly drawn foreground pixel lies at a uniform position in the window
    (images without foreground fall back to the uniform law). tests/test_sampler.py checks the law."""
    checks.integer("batch_size", batch_size, 1)
    checks.integer("out_size", out_size, 1)
    checks.real("foreground", foreground, 0.0, 1.0)
    return _origins(dataset, key, batch_size, out_size, foreground)


def _origins(dataset, key, batch_size, out_size, foreground):
    """``sample_origins`` of checked arguments."""
    n = dataset.sizes.shape[0]
    k_index, k_y, k_x = jax.random.split(key, 3)
    index = jax.random.randint(k_index, (batch_size,), 0, n, dtype=jnp.int32)
    sizes = dataset.sizes[index]
    oy = jax.random.randint(k_y, (batch_size,), 0, sizes[:, 0] - out_size + 1, dtype=jnp.int32)
    ox = jax.random.randint(k_x, (batch_size,), 0, sizes[:, 1] - out_size + 1, dtype=jnp.int32)
    uniform = jnp.stack([oy, ox], axis=-1)
    if foreground == 0:
        return index, uniform
    k_fg = jax.random.fold_in(key, 3)
    centred = jax.vmap(functools.partial(_foreground_origin, dataset.foreground, out_size=out_size))(
        jax.random.split(k_fg, batch_size), index, sizes)
    use = jax.random.uniform(jax.random.fold_in(k_fg, 1), (batch_size,)) < foreground
    use &= jnp.any(dataset.foreground[index], axis=(1, 2))
    return index, jnp.where(use[:, None], centred, uniform)


def _foreground_origin(blocks, key, i, size, *, out_size):
    """An origin whose output window holds a random foreground pixel of image ``i`` at a random position."""
    k_block, k_pix, k_pos = jax.random.split(key, 3)
    grid = blocks[i]
    flat = jax.random.categorical(k_block, jnp.where(grid.reshape(-1), 0.0, -jnp.inf))
    block = jnp.stack([flat // grid.shape[1], flat % grid.shape[1]]).astype(jnp.int32)
    pixel = block * FG_BLOCK + jax.random.randint(k_pix, (2,), 0, FG_BLOCK, dtype=jnp.int32)
    origin = pixel - jax.random.randint(k_pos, (2,), 0, out_size, dtype=jnp.int32)
    return jnp.clip(origin, 0, size - out_size)


@functools.partial(jax.jit, static_argnames=("tile_size",))
def gather_tiles(dataset: DeviceDataset, index: jax.Array, origins: jax.Array, tile_size: int):
    """float32 images (B, T, T, C), int32 labels and float32 weights (B, T, T) of the tiles whose output windows
    start at ``origins`` in images ``index`` (``lax.dynamic_slice``; pure jax, jit-compiled)."""
    checks.integer("tile_size", tile_size, 1)
    _check_tile(dataset, tile_size)
    return _gather(dataset, index, origins, tile_size)


def _check_tile(dataset, tile_size):
    _, hp, wp, _ = dataset.images.shape
    if tile_size > hp or tile_size > wp:
        raise InvalidInputError(f"tile_size {tile_size} exceeds the padded data set ({hp} x {wp}); build it with "
                                f"to_device_dataset(examples, tile_size={tile_size}, ...)")


def _gather(dataset, index, origins, t):
    """``gather_tiles`` of checked arguments."""
    c = dataset.images.shape[-1]

    def one(i, oy, ox):
        img = jax.lax.dynamic_slice(dataset.images, (i, oy, ox, 0), (1, t, t, c))[0]
        lab = jax.lax.dynamic_slice(dataset.labels, (i, oy, ox), (1, t, t))[0]
        wts = jax.lax.dynamic_slice(dataset.weights, (i, oy, ox), (1, t, t))[0]
        return img, lab, wts

    return jax.vmap(one)(index, origins[:, 0], origins[:, 1])


@functools.partial(jax.jit, static_argnames=("batch_size", "tile_size", "out_size", "foreground"))
def sample_tiles(dataset: DeviceDataset, key: jax.Array, batch_size: int, tile_size: int, out_size: int,
                 foreground: float = 0.0):
    """A random batch of training tiles (images (B, T, T, C), labels and weights (B, T, T)) from a
    ``DeviceDataset`` built with the same ``tile_size`` and ``out_size``: ``sample_origins`` then ``gather_tiles``
    (pure jax, jit-compiled)."""
    _check_geometry(tile_size, out_size)
    checks.integer("batch_size", batch_size, 1)
    checks.real("foreground", foreground, 0.0, 1.0)
    _check_tile(dataset, tile_size)
    index, origins = _origins(dataset, key, batch_size, out_size, foreground)
    return _gather(dataset, index, origins, tile_size)


# ----------------------------------------------------------------------------------------------------------------
# Memory check (host-side)
# ----------------------------------------------------------------------------------------------------------------

def _free_device_bytes() -> Optional[int]:
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - not every backend has it
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:  # CPU: available physical memory
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def fits_on_device(examples: Sequence, limit_bytes: Optional[int] = None, tile_size: int = 0,
                   out_size: int = 0) -> bool:
    """Whether ``to_device_dataset(examples, tile_size, out_size)`` (0, 0: unpadded) fits in ``limit_bytes``;
    default half the first device's free memory (CPU: available RAM), 1 GiB if unknown."""
    if limit_bytes is None:
        free = _free_device_bytes()
        limit_bytes = free // 2 if free else 1 << 30
    limit_bytes = checks.integer("limit_bytes", limit_bytes, 0)
    if tile_size == 0 and out_size == 0:
        tile_size = out_size = 1
    return device_dataset_nbytes(examples, tile_size, out_size) <= limit_bytes

