"""Mask interpretation: stored mask files to instance labels or class ids. Host-side (numpy/scipy).

``mask_to_instances`` decides what a mask is (binary, soft-edged or JPEG binary, instance ids, colour instances)
and says so in the log; ``mask_to_classes`` reads class masks. Errors name the file and how to fix it.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tifffile
from scipy import ndimage as ndi
from skimage import measure
from skimage.filters import threshold_otsu

from unet_jax import checks
from unet_jax.checks import InvalidInputError
from unet_jax.weights import instances_from_mask

log = logging.getLogger("unet_jax.data")

MASK_TYPES = ("auto", "binary", "instance", "classes")
PLATEAU_SHARE = 0.2    # soft mask edges: at most this share of the in-between pixels lie inside a plateau

__all__ = ["mask_to_instances", "mask_to_classes", "binary_levels", "split_reused_ids", "check_same_shape",
           "MASK_TYPES"]


def _mask_2d(arr: np.ndarray, path, colours: bool = False) -> np.ndarray:
    """Squeeze a stored mask to 2-D: RGB(A)-saved greyscale masks keep one channel (logged); a colour mask gives
    one id per colour (black = 0) with ``colours`` (instance masks drawn in colours), else an error."""
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4):
        c = arr.shape[-1]
        if c in (2, 4):
            colour, alpha = arr[..., :c - 1], arr[..., -1]
            if colour.min() == colour.max() and alpha.min() != alpha.max():   # drawn as transparency
                log.info("mask %s: one flat colour, the mask drawn in its alpha channel; the alpha channel is the "
                         "mask", path)
                return alpha
            arr = colour
        if arr.shape[-1] == 3 and _lossy(path) and _nearly_grey(arr):
            log.info("mask %s: a JPEG saved as RGB whose channels differ only by compression noise; their mean is "
                     "the mask", path)
            arr = arr.astype(np.float32).mean(axis=-1, keepdims=True)
        if arr.shape[-1] == 3:
            grey = np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])
            if not grey and colours and not _lossy(path):
                return _colour_ids(arr, path)
            if not grey:
                raise InvalidInputError(f"mask {path} is a colour image (its RGB channels differ): save masks as "
                                        f"single-channel images, 0 = background and one value (e.g. 255) for cells "
                                        f"(binary) or 1..K, one value per cell (instance labels)")
            log.info("mask %s: saved as RGB with equal channels; converted to one channel", path)
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise InvalidInputError(f"mask {path} has shape {arr.shape}: expected a 2-D (H, W) mask; save one 2-D mask "
                                f"per file")
    return arr


def _colour_ids(rgb: np.ndarray, path) -> np.ndarray:
    """int32 (H, W) of a colour mask: 0 where black, 1..K for its other colours (in sorted colour order)."""
    colours, ids = np.unique(rgb.reshape(-1, rgb.shape[-1]), axis=0, return_inverse=True)
    black = np.flatnonzero(~colours.any(axis=1))
    ids = ids.reshape(rgb.shape[:2]).astype(np.int32) + (0 if black.size else 1)
    if black.size:     # black is background: the colours before it move up one, black becomes 0
        ids = np.where(ids == black[0], 0, np.where(ids < black[0], ids + 1, ids))
    log.info("mask %s: a colour mask of %d colours; black is background and each colour an object id (objects of "
             "a reused colour are told apart by connectivity)", path, len(colours) - black.size)
    return ids


def split_reused_ids(labels: np.ndarray):
    """(labels, n): instance labels in which every connected region (8-connected) of one id is an object of its
    own, and how many ids were found on more than one region (0: ``labels`` returned as they are). Masks where
    touching objects are told apart by a few colours or values reused across the image need this."""
    regions = measure.label(labels, background=0, connectivity=2)
    n_ids, n_regions = np.unique(labels[labels > 0]).size, int(regions.max())
    if n_regions == n_ids:
        return labels, 0
    _, first = np.unique(regions.ravel(), return_index=True)
    region_ids = labels.ravel()[first[1:]]                # the id of each region (region 0 is background)
    return regions.astype(np.int32), int(np.count_nonzero(np.bincount(region_ids) > 1))


def _nearly_grey(rgb: np.ndarray) -> bool:
    """Whether an RGB array's channels differ by at most 10% of its range (grey, up to JPEG's colour noise)."""
    x = rgb.astype(np.float32)
    span = float(x.max() - x.min())
    return span == 0 or float(np.abs(x - x.mean(axis=-1, keepdims=True)).max()) <= 0.1 * span


def _anti_aliased(arr: np.ndarray, hi) -> bool:
    """Whether the values between 0 and ``hi`` are the soft edges of a binary mask (anti-aliased, blurred or
    upscaled drawing) rather than object ids: ids form plateaus (pixels whose 4 neighbours share their value),
    ramps do not (at most ``PLATEAU_SHARE``), and most ramp pixels lie in bands touching both 0 and ``hi``."""
    between = (arr != 0) & (arr != hi)
    n = int(np.count_nonzero(between))
    if n == 0:
        return True
    padded = np.pad(arr, 1, mode="edge")
    same = np.ones(arr.shape, bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        same &= padded[dy:dy + arr.shape[0], dx:dx + arr.shape[1]] == arr
    if np.count_nonzero(same & between) > PLATEAU_SHARE * n:
        return False
    bands, count = ndi.label(between, structure=np.ones((3, 3), bool))
    grown = ndi.grey_dilation(bands, footprint=ndi.generate_binary_structure(2, 1))   # 4-neighbours
    touches_zero = np.zeros(count + 1, bool)
    touches_hi = np.zeros(count + 1, bool)
    touches_zero[grown[arr == 0]] = True
    touches_hi[grown[arr == hi]] = True
    sizes = np.bincount(bands.ravel(), minlength=count + 1)
    both = touches_zero & touches_hi
    both[0] = False
    return sizes[both].sum() >= 0.5 * n


def binary_levels(arr: np.ndarray) -> tuple:
    """(background, foreground) level of a binary mask: its two values, or (soft edges, JPEG noise) the
    medians of the two sides of Otsu's threshold, so stray noise values do not move the levels."""
    values = np.unique(arr)
    if values.size <= 2:
        return values[0].item(), values[-1].item()
    t = threshold_otsu(arr)
    low, high = arr[arr <= t], arr[arr > t]
    return float(np.median(low)), float(np.median(high)) if high.size else float(values[-1])


def _binary_foreground(arr: np.ndarray, values: np.ndarray, path, report: dict) -> np.ndarray:
    """The foreground of a binary mask: above half its maximum for two values (0/1, 0/255, 0/65535 alike),
    else above the midpoint of ``binary_levels``; records levels, threshold and pixel counts in ``report``."""
    if values.size <= 2:
        low, high = values[0].item(), values[-1].item()
        threshold = high / 2
    else:
        low, high = binary_levels(arr)
        threshold = (low + high) / 2
        log.info("mask %s: %d pixels with values other than its levels %s and %s (anti-aliased, blurred or "
                 "%scompressed edges: a binary mask); thresholded at %s", path,
                 int(np.count_nonzero((arr != low) & (arr != high))), _num(low), _num(high),
                 "JPEG-" if report.get("lossy") else "", _num(threshold))
    foreground = arr > threshold
    report.update(levels=(low, high), threshold=threshold, kept=int(np.count_nonzero(foreground)),
                  above_lowest=int(np.count_nonzero(arr > values[0])))
    return foreground


def _num(x) -> str:
    return f"{float(x):g}"


def _lossy(path) -> bool:
    """Whether a mask file went through lossy compression (a JPEG, or a TIFF with JPEG or WebP inside)."""
    path = Path(str(path))
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        return True
    if suffix in (".tif", ".tiff") and path.is_file():
        try:
            with tifffile.TiffFile(path) as f:
                name = f.pages[0].compression.name
        except Exception:  # noqa: BLE001 - unreadable files are reported by the reader
            return False
        return "JPEG" in name or "WEBP" in name
    return False


def mask_to_instances(arr, path="<array>", mask_type: str = "auto", report: dict | None = None) -> np.ndarray:
    """Instance labels int32 (H, W) (0 = background, 1..K) from a stored mask; ``path`` is for messages.

    ``mask_type``: 'binary' (above the midpoint of the two levels, then 4-connected components), 'instance' (the
    integer values are the ids; ids reused on separate regions are split), or 'auto': two values are binary; soft
    edges or lossy compression make a thresholded binary mask ('soft binary'); other integer masks are instance
    masks; colour masks give one id per colour. Each decision is logged. ``report`` receives 'kind', 'lossy' and,
    for binary masks, 'levels', 'threshold', 'kept' and 'above_lowest' (for plausibility checks).
    InvalidInputError naming ``path`` for values that are no mask (negative, NaN, non-integer ids, beyond int32).
    """
    checks.one_of("mask_type", mask_type, MASK_TYPES)
    arr = _mask_2d(np.asarray(arr), path, colours=mask_type != "binary")
    if arr.size == 0:
        raise InvalidInputError(f"mask {path} is empty (shape {arr.shape})")
    report = {} if report is None else report
    report["kind"] = "binary"
    if arr.dtype == np.bool_:
        return instances_from_mask(arr)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InvalidInputError(f"mask {path} has unsupported dtype {arr.dtype}: expected integers (8/16/32-bit) or "
                                f"floats")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise InvalidInputError(f"mask {path} contains NaN or infinite values; expected 0 = background and positive "
                                f"values for cells")
    lo, hi = arr.min(), arr.max()
    if lo < 0:
        raise InvalidInputError(f"mask {path} has negative values (minimum {lo}); expected 0 = background and positive "
                                f"values for cells: binary (e.g. 0/255) or instance labels 1..K")
    values = np.unique(arr)
    integral = bool(np.all(values == np.round(values)))
    report["lossy"] = lossy = _lossy(path)
    if mask_type == "auto":
        if values.size <= 2:
            mask_type = "binary"
        elif lossy or _anti_aliased(arr, hi):
            mask_type, report["kind"] = "binary", "soft binary"
        elif not integral:
            raise InvalidInputError(f"mask {path} has non-integer values that are not just anti-aliased edges (e.g. "
                                    f"{values[~(values == np.round(values))][0]}): save binary masks as 0/255 (or 0/1) "
                                    f"and instance masks as integers, one id 1..K per cell, 0 = background")
        else:
            mask_type = "instance"
    if mask_type == "binary":
        return instances_from_mask(_binary_foreground(arr, values, path, report))
    if not integral:
        raise InvalidInputError(f"mask {path} has non-integer values (e.g. {values[~(values == np.round(values))][0]}) "
                                f"but instance labels must be integers: save one integer id 1..K per cell, 0 = "
                                f"background (or use mask_type='binary')")
    report["kind"] = "instance"
    if hi > np.iinfo(np.int32).max:
        raise InvalidInputError(f"mask {path} has ids up to {hi}, beyond int32; renumber the cells 1..K")
    labels, reused = split_reused_ids(arr.astype(np.int32))
    if reused:
        log.info("mask %s: %d ids mark several separate regions; each connected region is one object", path, reused)
    return labels


def mask_to_classes(arr, path="<array>", num_classes: int | None = None) -> tuple:
    """(classes, instances) int32 (H, W) from a class mask (value = class id, 0 = background; ids below
    ``num_classes`` if given). ``instances`` numbers the 4-connected components of each class 1..K across all
    classes, so touching objects of different classes stay apart. InvalidInputError naming ``path``."""
    arr = _mask_2d(np.asarray(arr), path)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.int32)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InvalidInputError(f"mask {path} has unsupported dtype {arr.dtype}: expected integer class ids")
    values = np.unique(arr)
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)) or values.min() < 0:
        bad = values[(values != np.round(values)) | (values < 0)][:1]
        raise InvalidInputError(f"mask {path} is a class mask (data.mask_type='classes') but holds values that are not "
                                f"class ids 0, 1, 2, ... (e.g. {bad}); save one integer id per class, 0 = background")
    top = int(values.max())
    if num_classes is not None and top >= num_classes:
        hint = (" (this looks like an instance mask, one id per object: use data.mask_type='instance' or "
                "'auto')" if values.size > num_classes else "")
        raise InvalidInputError(f"mask {path} has class id {top} but model.num_classes is {num_classes} (ids 0.."
                                f"{num_classes - 1}, 0 = background){hint}; set --config.model.num_classes={top + 1} "
                                f"or fix the mask")
    classes = arr.astype(np.int32)
    instances = np.zeros(classes.shape, np.int32)
    offset = 0
    for c in values[values > 0].astype(int):
        comp, n = ndi.label(classes == c, structure=ndi.generate_binary_structure(2, 1))
        instances[comp > 0] = comp[comp > 0] + offset
        offset += n
    return classes, instances


def check_same_shape(image: np.ndarray, instances: np.ndarray, image_path, mask_path) -> None:
    """InvalidInputError naming both files if the image (H, W, C) and the mask (H, W) differ in size."""
    if image.shape[:2] != instances.shape[:2]:
        raise InvalidInputError(f"image {image_path} is {image.shape[0]}x{image.shape[1]} but its mask {mask_path} is "
                                f"{instances.shape[0]}x{instances.shape[1]} (height x width); they must match pixel "
                                f"for pixel: re-export the mask at the image's size")
