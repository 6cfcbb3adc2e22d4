"""Reading and converting image and mask files for the data set builders. Host-side (numpy/scipy, file IO).

Readers (``read_image``, ``read_tiff``, ``read_mask``) name the offending file in their errors; ``to_float_image``
makes float32 (H, W, C) images in [0, 1], ``mask_to_instances`` / ``mask_to_classes`` int32 labels;
``write_tiff``, ``write_png`` (atomic) and ``overlay`` serve evaluate and predict.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import skimage.io
import tifffile
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from unet_jax.weights import instances_from_mask

log = logging.getLogger("unet_jax.data")

PERCENTILES = (1.0, 99.8)
FLOAT_LIMIT = 1e30   # larger float pixel values are refused: (x - lo) / (hi - lo) must stay finite in float32
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
MASK_TYPES = ("auto", "binary", "instance", "classes")
PLATEAU_SHARE = 0.2    # soft mask edges: at most this share of the in-between pixels lie inside a plateau

__all__ = ["read_tiff", "read_image", "read_mask", "to_float_image", "percentile_normalize", "mask_to_instances",
           "mask_to_classes",
           "PERCENTILES", "IMAGE_SUFFIXES", "MASK_TYPES"]


# ----------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------

def read_tiff(path) -> np.ndarray:
    """Read a (multi-page) TIFF file with tifffile. Host-side.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    ndarray as stored: (H, W), (H, W, C) or (pages, H, W) for a stack, in the file's dtype.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file cannot be read (truncated, corrupt, not a TIFF); the message names the file and how to fix
        it. tifffile's own errors do not name it (a truncated TIFF gives ``ValueError('failed to read 7864320
        bytes, got 3934439')``), so they are caught and re-raised.
    """

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        return np.asarray(tifffile.imread(path))
    except Exception as err:  # tifffile raises ValueError, TiffFileError, struct.error, OSError, ...
        if "imagecodecs" in str(err):   # LZW, deflate, JPEG, ... TIFFs from slide scanners and Fiji
            raise ValueError(f"cannot read TIFF file {path}: it is compressed ({err}); install the imagecodecs "
                             f"package (pip install imagecodecs) or save it uncompressed") from err
        raise ValueError(f"cannot read TIFF file {path} ({type(err).__name__}: {err}); the file may be truncated "
                         f"or corrupt: download or export it again") from err


def read_image(path) -> np.ndarray:
    """Read a PNG, TIFF or JPEG image file (tifffile for .tif/.tiff, imageio for the others). Host-side.

    Compressed TIFFs (LZW, deflate, JPEG, ...) are decoded by imagecodecs, a dependency of this package.

    Returns
    -------
    ndarray as stored: (H, W) or (H, W, C) (or more dimensions for TIFF stacks) in the file's dtype.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the suffix is not one of ``IMAGE_SUFFIXES`` or the file cannot be read; the message names the file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"unsupported image file {path}: expected one of {IMAGE_SUFFIXES}; convert it to PNG or "
                         f"TIFF")
    if suffix in (".tif", ".tiff"):
        return read_tiff(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")

    try:
        return np.asarray(iio.imread(path))
    except Exception as err:
        raise ValueError(f"cannot read image file {path} ({type(err).__name__}: {err}); the file may be truncated "
                         f"or corrupt: export it again") from err


def read_mask(path) -> np.ndarray:
    """Read a mask file like ``read_image``, except that a palette (indexed-colour) PNG gives its palette indices,
    which is how painting tools save class masks."""
    path = Path(path)
    if path.suffix.lower() == ".png" and path.is_file():
        try:
            if iio.immeta(path).get("mode") == "P":
                log.info("mask %s: palette PNG; its palette indices are the values", path)
                return np.asarray(iio.imread(path, mode="P"))
        except Exception:   # read_image names the file in its error
            pass
    return read_image(path)


def file_fingerprint(root, patterns=("**/*",)) -> list:
    """Sorted ``[relative path, size, mtime_ns]`` of the files under ``root`` (hidden ones skipped). Host-side.

    Used in builder config names, so that edited or replaced input files give a new prepared data set instead of
    silently reusing a stale one. A missing ``root`` gives an empty list.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for pattern in patterns:
        for p in root.glob(pattern):
            rel = p.relative_to(root)
            if any(part.startswith(".") for part in rel.parts) or not p.is_file():
                continue
            st = p.stat()
            out.append([rel.as_posix(), int(st.st_size), int(st.st_mtime_ns)])
    return sorted(out)


def check_directory(path, what: str) -> Path:
    """``path`` as a Path, checked to be usable as a directory: it and its parents are directories or missing.

    Raises
    ------
    ValueError
        If ``path`` (or a parent) is an existing file, naming ``what`` it was meant to be (e.g. "--output").
    """
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            raise ValueError(f"{what} {str(path)!r} cannot be a directory: {str(p)!r} is a file; name a directory "
                             f"(it is created if missing)")
    return path


def ensure_directory(path, what: str) -> Path:
    """``check_directory``, then create ``path`` with its parents if missing. Host-side."""
    path = check_directory(path, what)
    path.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------

def percentile_normalize(image, low: float = PERCENTILES[0], high: float = PERCENTILES[1]) -> np.ndarray:
    """Map the ``low``/``high`` percentiles of ``image`` to 0/1 and clip. Host-side.

    Parameters
    ----------
    image : real array, any shape (all channels share the percentiles)
    low, high : float, 0 <= low < high <= 100

    Returns
    -------
    float32 array of the same shape in [0, 1]; all 0 for a constant image.
    """
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(f"low and high must satisfy 0 <= low < high <= 100, got low={low!r}, high={high!r}")
    x = np.asarray(image, np.float64)
    lo, hi = np.percentile(x, (low, high))
    if not hi > lo:  # (nearly) constant: fall back to min/max, then to zeros
        lo, hi = float(x.min()), float(x.max())
        if not hi > lo:
            return np.zeros(x.shape, np.float32)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _channels_last(arr: np.ndarray, path, what: str) -> np.ndarray:
    """(H, W) -> (H, W, 1); (H, W, C) kept; a leading singleton page axis dropped; else ValueError."""
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        return arr[..., None]
    if arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4):
        return arr
    raise ValueError(f"{what} {path} has shape {arr.shape}: expected a 2-D greyscale (H, W) or an RGB(A) "
                     f"(H, W, 3|4) image; save one 2-D image per file")


def to_float_image(arr, path="<array>", greyscale_rgb: bool = True) -> np.ndarray:
    """Convert a stored image to the float32 (H, W, C) [0, 1] convention. Host-side.

    Parameters
    ----------
    arr : array (H, W), (H, W, C) with C in 1..4, or (1, H, W[, C]); bool, integer or float
    path : str or Path
        Only used in messages.
    greyscale_rgb : bool
        If True (default), an RGB(A) image whose three colour channels are equal (a greyscale image saved as
        RGB) becomes one channel, with an INFO log message saying so. An alpha channel is dropped (logged).
        A 2-channel (grey, alpha) image keeps its grey channel.

    Returns
    -------
    float32 array (H, W, C) in [0, 1] with C = 1 (greyscale) or 3 (colour). Intensity scaling:

    * 8-bit (and bool) images: divided by 255 (1), keeping absolute intensities comparable between images;
    * 16-bit, other integer and float images not already in [0, 1]: normalised per image by percentiles,
      ``(x - p1) / (p99.8 - p1)`` clipped to [0, 1] (``PERCENTILES``, ``percentile_normalize``); a constant
      image becomes all 0;
    * float images already in [0, 1]: kept.

    Raises
    ------
    ValueError
        For unsupported shapes or dtypes and for NaN, infinite or huge (|x| > ``FLOAT_LIMIT``) values, naming
        ``path``.
    """
    arr = _channels_last(np.asarray(arr), path, "image")
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype,
                                                                                            np.floating)):
        raise ValueError(f"image {path} has unsupported dtype {arr.dtype}: expected 8- or 16-bit integers or "
                         f"floats")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"image {path} is empty (shape {arr.shape})")
    c = arr.shape[-1]
    if c == 2:  # grey + alpha
        log.info("image %s: grey + alpha channels; the alpha channel is dropped", path)
        arr = arr[..., :1]
    elif c == 4:
        log.info("image %s: RGBA; the alpha channel is dropped", path)
        arr = arr[..., :3]
    if arr.shape[-1] == 3 and greyscale_rgb and np.array_equal(arr[..., 0], arr[..., 1]) \
            and np.array_equal(arr[..., 0], arr[..., 2]):
        log.info("image %s: greyscale saved as RGB (all three channels equal); converted to one channel", path)
        arr = arr[..., :1]
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"image {path} contains NaN or infinite values; fix or remove them")
        peak = float(np.max(np.abs(arr)))
        if peak > FLOAT_LIMIT:
            raise ValueError(f"image {path} has values up to {peak:.3g}, beyond what float32 arithmetic can "
                             f"normalise (|value| <= {FLOAT_LIMIT:.0e}); rescale the image (e.g. to 0-1 or "
                             f"16-bit) and save it again")
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / np.float32(255.0)
    if np.issubdtype(arr.dtype, np.floating) and arr.min() >= 0.0 and arr.max() <= 1.0:
        return arr.astype(np.float32)
    return percentile_normalize(arr)


# ----------------------------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------------------------

def _mask_2d(arr: np.ndarray, path) -> np.ndarray:
    """Squeeze a stored mask to 2-D: RGB(A)-saved greyscale masks keep one channel (logged); colour -> error."""
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4):
        c = arr.shape[-1]
        if c in (2, 4):
            arr = arr[..., :c - 1]
        if arr.shape[-1] == 3:
            if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
                raise ValueError(f"mask {path} is a colour image (its RGB channels differ): save masks as single-"
                                 f"channel images, 0 = background and one value (e.g. 255) for cells (binary) "
                                 f"or 1..K, one value per cell (instance labels)")
            log.info("mask %s: saved as RGB with equal channels; converted to one channel", path)
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"mask {path} has shape {arr.shape}: expected a 2-D (H, W) mask; save one 2-D mask "
                         f"per file")
    return arr


def _anti_aliased(arr: np.ndarray, hi) -> bool:
    """Whether the values between 0 and ``hi`` of a mask are the soft edges of a binary mask (anti-aliased,
    blurred or upscaled drawing) rather than object ids.

    Object ids form plateaus: most pixels of an id have all four neighbours of the same value. Soft edges are
    ramps: few of their pixels do (``PLATEAU_SHARE``), and the ramps lie between background and full value (most
    of their pixels belong to 8-connected bands that touch, 4-connected, both 0 and ``hi``).
    """
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


def mask_to_instances(arr, path="<array>", mask_type: str = "auto", report: dict | None = None) -> np.ndarray:
    """Instance labels from a stored mask (binary or instance). Host-side.

    Parameters
    ----------
    arr : array (H, W) (or an RGB-saved greyscale (H, W, 3|4)); bool, integer or float, values >= 0
    path : str or Path
        Only used in messages.
    mask_type : {'auto', 'binary', 'instance'}
        ``'binary'``: cells are the pixels above half the mask's maximum (threshold at half, so 0/1, 0/255,
        0/65535 and anti-aliased masks all work), split into objects by 4-connected components
        (``unet_jax.weights.instances_from_mask``). ``'instance'``: the integer values are the object ids and
        are kept (0 = background). ``'auto'``: a mask with at most two distinct values is binary; a mask whose
        values between 0 and its maximum are soft edges (ramps between 0 and the maximum rather than plateaus:
        anti-aliased, blurred or upscaled drawing, or any JPEG mask) is a binary mask thresholded at half its
        maximum (with an INFO log saying so); any other mask is an instance mask.
    report : dict, optional
        Receives ``'kind'``: 'binary', 'soft binary' (thresholded soft edges) or 'instance', what was decided.

    Returns
    -------
    int32 array (H, W): 0 = background, 1..K = objects.

    Raises
    ------
    ValueError
        Naming ``path``: negative, NaN or non-integer values in an instance mask, ids beyond int32, colour masks,
        wrong shapes or dtypes.
    """
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
    arr = _mask_2d(np.asarray(arr), path)
    if arr.size == 0:
        raise ValueError(f"mask {path} is empty (shape {arr.shape})")
    report = {} if report is None else report
    report["kind"] = "binary"
    if arr.dtype == np.bool_:
        return instances_from_mask(arr)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"mask {path} has unsupported dtype {arr.dtype}: expected integers (8/16/32-bit) or "
                         f"floats")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ValueError(f"mask {path} contains NaN or infinite values; expected 0 = background and positive "
                         f"values for cells")
    lo, hi = arr.min(), arr.max()
    if lo < 0:
        raise ValueError(f"mask {path} has negative values (minimum {lo}); expected 0 = background and positive "
                         f"values for cells: binary (e.g. 0/255) or instance labels 1..K")
    values = np.unique(arr)
    integral = bool(np.all(values == np.round(values)))
    if mask_type == "auto":
        if values.size <= 2:
            mask_type = "binary"
        elif Path(str(path)).suffix.lower() in (".jpg", ".jpeg") or _anti_aliased(arr, hi):
            log.info("mask %s: %d pixels with values between 0 and %s along the edges (anti-aliased, blurred or "
                     "JPEG-compressed: an anti-aliased binary mask); thresholded at half the maximum (%s)", path,
                     int(np.count_nonzero((arr != 0) & (arr != hi))), hi, hi / 2)
            mask_type, report["kind"] = "binary", "soft binary"
        elif not integral:
            raise ValueError(f"mask {path} has non-integer values that are not just anti-aliased edges (e.g. "
                             f"{values[~(values == np.round(values))][0]}): save binary masks as 0/255 (or 0/1) "
                             f"and instance masks as integers, one id 1..K per cell, 0 = background")
        else:
            mask_type = "instance"
    if mask_type == "binary":
        return instances_from_mask(arr)
    if not integral:
        raise ValueError(f"mask {path} has non-integer values (e.g. {values[~(values == np.round(values))][0]}) "
                         f"but instance labels must be integers: save one integer id 1..K per cell, 0 = "
                         f"background (or use mask_type='binary')")
    report["kind"] = "instance"
    if hi > np.iinfo(np.int32).max:
        raise ValueError(f"mask {path} has ids up to {hi}, beyond int32; renumber the cells 1..K")
    return arr.astype(np.int32)


def mask_to_classes(arr, path="<array>", num_classes: int | None = None) -> tuple:
    """Class ids and objects from a multi-class mask (pixel value = class id, 0 = background). Host-side.

    Parameters
    ----------
    arr : integer array (H, W) (or RGB-saved greyscale); a palette PNG read with ``read_mask`` gives its indices
    path : str or Path
        Only used in messages.
    num_classes : int, optional
        Classes of the network, background included: ids must lie in 0..num_classes-1.

    Returns
    -------
    (classes, instances): int32 arrays (H, W); ``instances`` numbers the 4-connected components of each class
    1..K across all classes, so touching objects of different classes are different objects (weight maps).

    Raises
    ------
    ValueError
        Naming ``path``: non-integer or negative values, ids >= ``num_classes`` (e.g. an instance mask given as
        classes), colour masks, wrong shapes.
    """
    arr = _mask_2d(np.asarray(arr), path)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.int32)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"mask {path} has unsupported dtype {arr.dtype}: expected integer class ids")
    values = np.unique(arr)
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)) or values.min() < 0:
        raise ValueError(f"mask {path} is a class mask (data.mask_type='classes') but holds values that are not "
                         f"class ids 0, 1, 2, ... (e.g. {values[(values != np.round(values)) | (values < 0)][:1]}); "
                         f"save one integer id per class, 0 = background")
    top = int(values.max())
    if num_classes is not None and top >= num_classes:
        hint = (" (this looks like an instance mask, one id per object: use data.mask_type='instance' or "
                "'auto')" if values.size > num_classes else "")
        raise ValueError(f"mask {path} has class id {top} but model.num_classes is {num_classes} (ids 0.."
                         f"{num_classes - 1}, 0 = background){hint}; set --config.model.num_classes={top + 1} or "
                         f"fix the mask")
    classes = arr.astype(np.int32)
    instances = np.zeros(classes.shape, np.int32)
    offset = 0
    for c in values[values > 0].astype(int):
        comp, n = ndi.label(classes == c, structure=ndi.generate_binary_structure(2, 1))
        instances[comp > 0] = comp[comp > 0] + offset
        offset += n
    return classes, instances


def check_same_shape(image: np.ndarray, instances: np.ndarray, image_path, mask_path) -> None:
    """ValueError naming both files if the image (H, W, C) and the mask (H, W) differ in height or width."""
    if image.shape[:2] != instances.shape[:2]:
        raise ValueError(f"image {image_path} is {image.shape[0]}x{image.shape[1]} but its mask {mask_path} is "
                         f"{instances.shape[0]}x{instances.shape[1]} (height x width); they must match pixel "
                         f"for pixel: re-export the mask at the image's size")


# ----------------------------------------------------------------------------------------------------------------
# Writing (evaluate, predict, ablate)
# ----------------------------------------------------------------------------------------------------------------

def atomic_write(path, write_fn):
    """Call ``write_fn(tmp_path)`` then rename onto ``path``, so a failure leaves no half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)       # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_tiff(path, array):
    """Write ``array`` as a TIFF at ``path`` (atomically, see ``atomic_write``); returns the path."""
    return atomic_write(path, lambda p: tifffile.imwrite(p, np.asarray(array)))


def write_png(path, rgb_uint8):
    """Write an RGB uint8 image as a PNG at ``path`` (atomically); returns the path."""
    return atomic_write(path, lambda p: skimage.io.imsave(p, rgb_uint8, check_contrast=False))


def overlay(image, cell_prob, threshold=0.5, truth_instances=None) -> np.ndarray:
    """RGB uint8 (H, W, 3): the image in grey, predicted cell borders in green and, given the truth, the wrongly
    classified pixels (red: predicted membrane inside a true cell; blue: predicted cell on a true membrane)."""
    img = np.asarray(image, np.float32)
    if img.ndim == 3:
        img = img.mean(axis=-1)
    grey = np.clip(img, 0, 1)
    rgb = np.stack([grey, grey, grey], -1)
    pred = cell_prob > threshold
    if truth_instances is not None:
        truth = np.asarray(truth_instances) > 0
        rgb[truth & ~pred] = 0.6 * rgb[truth & ~pred] + 0.4 * np.array([1.0, 0.0, 0.0])
        rgb[~truth & pred] = 0.6 * rgb[~truth & pred] + 0.4 * np.array([0.0, 0.3, 1.0])
    rgb[find_boundaries(pred, mode="inner")] = (0.0, 1.0, 0.0)
    return (rgb * 255 + 0.5).astype(np.uint8)
