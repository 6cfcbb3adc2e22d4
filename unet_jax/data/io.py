"""Reading and converting image and mask files for the data set builders. Host-side (numpy/scipy, file IO).

Readers (``read_image``, ``read_tiff``, ``read_mask``) name the offending file in their errors; ``to_float_image``
makes float32 (H, W, C) images in [0, 1] (the one input normalisation), ``mask_to_instances`` /
``mask_to_classes`` int32 labels. Output files (``write_tiff``, ``write_png``, ``overlay``): ``unet_jax.io``.
"""
from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
from scipy import ndimage as ndi
from skimage import measure
from skimage.filters import threshold_otsu

from unet_jax.io import atomic_write, overlay, write_png, write_tiff  # noqa: F401 - moved to unet_jax.io
from unet_jax.weights import instances_from_mask

log = logging.getLogger("unet_jax.data")

PERCENTILES = (1.0, 99.8)
NORMALISE_EPS = 1e-6   # scale_range's epsilon (bioimage.io): (x - lo) / (hi - lo + eps)
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
    ndarray as stored: (H, W), (H, W, C) or (pages, H, W[, C]) for a stack, in the file's dtype. Planar RGB
    (samples stored plane by plane, (C, H, W)) comes channels-last like any RGB image; pages of one size stored
    as separate images come as one stack.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file cannot be read (truncated, corrupt, not a TIFF) or holds pages of different sizes (rather
        than cut to its first page); the message names the file and how to fix it. tifffile's own errors do not
        name it (a truncated TIFF gives ``ValueError('failed to read 7864320 bytes, got 3934439')``), so they are
        caught and re-raised.
    """
    return _tiff(path, read=True)


def tiff_shape(path) -> tuple:
    """The shape ``read_tiff`` returns for a file, from its header (no pixels read); the same errors."""
    return _tiff(path, read=False)


def _tiff(path, read: bool):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        with tifffile.TiffFile(path) as f:
            series = [s for s in f.series if not _preview(s)]
            if len(series) < len(f.series):
                log.info("%s: %d reduced-resolution preview image(s) (thumbnail, label) left out", path,
                         len(f.series) - len(series))
            shapes = [(tuple(s.shape), s.axes, np.dtype(s.dtype)) for s in series]
            pages = sum(len(s.pages) for s in series)
            uniform = len({(shape, dtype) for shape, _, dtype in shapes}) == 1
            images = [_samples_last(s.asarray(), s.axes) for s in series] if read and uniform else None
    except PermissionError as err:
        raise ValueError(_no_permission(path, err)) from err
    except Exception as err:  # tifffile raises ValueError, TiffFileError, struct.error, OSError, ...
        if "imagecodecs" in str(err):   # LZW, deflate, JPEG, ... TIFFs from slide scanners and Fiji
            raise ValueError(f"cannot read TIFF file {path}: it is compressed ({_first_line(err)}); install the "
                             f"imagecodecs package (pip install imagecodecs) or save it uncompressed") from err
        raise ValueError(f"cannot read TIFF file {path} ({type(err).__name__}: {_first_line(err)}); the file may "
                         f"be truncated or corrupt: download or export it again") from err
    if not shapes:
        raise ValueError(f"TIFF file {path} holds no image; export it again")
    if not uniform:
        if len({shape for shape, _, _ in shapes}) == 1:
            kinds = f"of different pixel types ({', '.join(sorted({str(dtype) for _, _, dtype in shapes}))})"
        else:
            kinds = (f"of different sizes ({', '.join(_size(shape, axes) for shape, axes, _ in shapes[:6])}"
                     f"{', ...' if len(shapes) > 6 else ''}, width x height)")
        raise ValueError(f"TIFF file {path} holds {pages} pages {kinds}: a file here is one image or a stack of "
                         f"pages of one size and type; save each image as its own file (Fiji: Image > Stacks > "
                         f"Stack to Images)")
    if not read:
        shape, axes, _ = shapes[0]
        if "S" in axes:
            shape = tuple(n for n, a in zip(shape, axes) if a != "S") + (shape[axes.index("S")],)
        return (len(shapes),) + shape if len(shapes) > 1 else shape
    if len(images) > 1:
        log.info("%s: %d pages of one size stored as separate images; read as one stack", path, len(images))
        return np.stack(images)
    return images[0]


def _preview(series) -> bool:
    """Whether a TIFF series is a reduced-resolution preview of the image (a thumbnail page, a slide's label or
    macro picture) rather than image data."""
    try:
        return bool(series.keyframe.is_reduced) or series.name in ("Thumbnail", "Label", "Macro")
    except Exception:  # noqa: BLE001 - a page tifffile cannot describe: keep it, reading it reports the problem
        return False


def _size(shape: tuple, axes: str) -> str:
    """'WxH' of a TIFF series, with ' (N pages)' for a stack."""
    if "X" not in axes or "Y" not in axes:
        return "x".join(map(str, shape))
    planes = int(np.prod([n for n, a in zip(shape, axes) if a not in "YXS"], dtype=np.int64))
    return f"{shape[axes.index('X')]}x{shape[axes.index('Y')]}" + (f" ({planes} pages)" if planes > 1 else "")


def _samples_last(arr: np.ndarray, axes: str) -> np.ndarray:
    """A TIFF series' array with its samples axis ('S': RGB stored plane by plane) moved last."""
    if "S" in axes and axes.index("S") != len(axes) - 1:
        return np.moveaxis(arr, axes.index("S"), -1)
    return arr


def _no_permission(path: Path, err: OSError) -> str:
    return f"cannot read {path}: {err.strerror or 'permission denied'}; make it readable (chmod +r) or copy it"


def _first_line(err: BaseException) -> str:
    """The first line of an error's message (library messages can go on with install hints and tree dumps)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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
        with warnings.catch_warnings():    # a user's own large image is no attack: say nothing below the limit
            warnings.filterwarnings("ignore", message=".*decompression bomb")
            return np.asarray(iio.imread(path, plugin="pillow"))   # no search through other plugins (and their notes)
    except Exception as err:
        raise ValueError(_unreadable(path, err)) from err


def _unreadable(path: Path, err: BaseException) -> str:
    """The message for a PNG or JPEG file that could not be read: a large image is not a broken one."""
    while err.__cause__ is not None:     # imageio raises its own error from Pillow's
        err = err.__cause__
    if isinstance(err, PermissionError):
        return _no_permission(path, err)
    if type(err).__name__ == "DecompressionBombError":   # Pillow's guard against images made to exhaust memory
        import PIL.Image

        limit, PIL.Image.MAX_IMAGE_PIXELS = PIL.Image.MAX_IMAGE_PIXELS, None
        try:
            with PIL.Image.open(path) as im:
                w, h = im.size
        finally:
            PIL.Image.MAX_IMAGE_PIXELS = limit
        return (f"image file {path} is {w}x{h} pixels ({w * h / 1e6:.0f} Mpx), more than the PNG/JPEG reader "
                f"opens ({2 * limit / 1e6:.0f} Mpx, a guard against files made to exhaust memory); the file is "
                f"fine, only large: save it as TIFF (read without this limit) or cut it into tiles (e.g. 4096x4096) "
                f"and predict those")
    if path.stat().st_size == 0:
        return f"image file {path} is empty (0 bytes); export it again"
    if type(err).__name__ == "UnidentifiedImageError":     # Pillow does not recognise the bytes
        return (f"cannot read image file {path}: it is not a {path.suffix.lower().lstrip('.').upper()} image "
                f"({path.stat().st_size} bytes that no image reader recognises); export it again")
    return (f"cannot read image file {path} ({type(err).__name__}: {_first_line(err)}); the file may be truncated "
            f"or corrupt: export it again")


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


def check_writable_directory(path, what: str) -> Path:
    """``check_directory``, then check that files can be made there: in ``path``, or in its nearest existing
    parent where ``path`` would be created. Host-side; leaves nothing behind (an unnamed temporary file).

    Raises
    ------
    ValueError
        Naming ``what`` and the folder that cannot be written (read-only, no permission), before any work.
    """
    path = check_directory(path, what)
    existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    try:
        _probe_write(existing)
    except OSError as e:
        where = "" if existing == path.absolute() else " (where it would be created)"
        raise ValueError(f"{what} {str(path)!r}: cannot write in {str(existing)!r}{where} ({e.strerror or e}); "
                         f"choose a folder you can write to") from None
    return path


def _probe_write(directory: Path) -> None:
    with tempfile.TemporaryFile(dir=directory):
        pass


def ensure_directory(path, what: str) -> Path:
    """``check_directory``, then create ``path`` with its parents if missing. Host-side."""
    path = check_directory(path, what)
    path.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------

def percentile_normalize(image, low: float = PERCENTILES[0], high: float = PERCENTILES[1]) -> np.ndarray:
    """Map the ``low``/``high`` percentiles of ``image`` to 0/1 and clip: ``(x - lo) / (hi - lo + 1e-6)`` in [0, 1],
    bioimage.io's ``scale_range`` and ``clip`` (the pre-processing of the exported packages). Host-side.

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
    return np.clip((x - lo) / (hi - lo + NORMALISE_EPS), 0.0, 1.0).astype(np.float32)


def _channels_last(arr: np.ndarray, path, what: str) -> np.ndarray:
    """(H, W) -> (H, W, 1); (H, W, C) kept; a leading singleton page axis dropped; else ValueError."""
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        return arr[..., None]
    if arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4):
        return arr
    kind = (f"{arr.shape[0]} pages or channels first" if arr.ndim == 3 else "a hyperstack") if arr.ndim > 2 else ""
    raise ValueError(f"{what} {path} has shape {arr.shape} ({kind or 'not an image'}): expected a 2-D greyscale "
                     f"(H, W) or an RGB(A) (H, W, 3|4) image; save one 2-D image (or RGB) per file")


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
    float32 array (H, W, C) in [0, 1] with C = 1 (greyscale) or 3 (colour). Intensities, whatever the bit depth
    (8-bit, 16-bit, float), are normalised per image over all pixels and channels by percentiles,
    ``(x - p1) / (p99.8 - p1)`` clipped to [0, 1] (``PERCENTILES``, ``percentile_normalize``; a constant image
    becomes all 0): the one normalisation of training, predict and the exported bioimage.io packages, which
    declare it as bioimage.io's ``scale_range`` + ``clip`` so that bioimage.io tools compute the same.

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
    return percentile_normalize(arr)


# ----------------------------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------------------------

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
                raise ValueError(f"mask {path} is a colour image (its RGB channels differ): save masks as single-"
                                 f"channel images, 0 = background and one value (e.g. 255) for cells (binary) "
                                 f"or 1..K, one value per cell (instance labels)")
            log.info("mask %s: saved as RGB with equal channels; converted to one channel", path)
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ValueError(f"mask {path} has shape {arr.shape}: expected a 2-D (H, W) mask; save one 2-D mask "
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


def binary_levels(arr: np.ndarray) -> tuple:
    """(background level, foreground level) of a binary mask, however it was stored. Host-side.

    A mask of two values has those two. Otherwise (soft edges, JPEG noise) the values are split in two by Otsu's
    threshold and each level is the median of its side, so a 0/1 mask with JPEG's stray 2s and 3s has the levels
    0 and 1 (not 0 and its noisy maximum) and an anti-aliased 0/255 mask 0 and 255.
    """
    values = np.unique(arr)
    if values.size <= 2:
        return values[0].item(), values[-1].item()
    t = threshold_otsu(arr)
    low, high = arr[arr <= t], arr[arr > t]
    return float(np.median(low)), float(np.median(high)) if high.size else float(values[-1])


def _binary_foreground(arr: np.ndarray, values: np.ndarray, path, report: dict) -> np.ndarray:
    """The foreground of a binary mask: above the midpoint of its two levels (``binary_levels``); for a mask of
    at most two values, above half its maximum (``instances_from_mask``'s rule: 0/1, 0/255, 0/65535 alike).
    Records the levels, the threshold and the pixels kept in ``report``."""
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
    """Instance labels from a stored mask (binary or instance). Host-side.

    Parameters
    ----------
    arr : array (H, W) (or an RGB-saved greyscale (H, W, 3|4)); bool, integer or float, values >= 0
    path : str or Path
        Only used in messages.
    mask_type : {'auto', 'binary', 'instance'}
        ``'binary'``: cells are the pixels above the midpoint of the mask's two levels (``binary_levels``: 0/1,
        0/255, 0/65535, anti-aliased and JPEG-compressed masks alike), split into objects by 4-connected
        components (``unet_jax.weights.instances_from_mask``). ``'instance'``: the integer values are the object
        ids and are kept (0 = background). ``'auto'``: a mask with at most two distinct values is binary; a mask
        whose values between 0 and its maximum are soft edges (ramps between 0 and the maximum rather than
        plateaus: anti-aliased, blurred or upscaled drawing), or any mask stored with lossy compression (JPEG, a
        JPEG-compressed TIFF), is a binary mask thresholded between its levels (with an INFO log saying so); any
        other mask is an instance mask.
    report : dict, optional
        Receives ``'kind'``: 'binary', 'soft binary' (thresholded soft edges) or 'instance', what was decided;
        ``'lossy'`` (JPEG-compressed file); for binary masks ``'levels'``, ``'threshold'``, ``'kept'`` (foreground
        pixels) and ``'above_lowest'`` (pixels above the mask's lowest value), for plausibility checks.

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
    arr = _mask_2d(np.asarray(arr), path, colours=mask_type != "binary")
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
    report["lossy"] = lossy = _lossy(path)
    if mask_type == "auto":
        if values.size <= 2:
            mask_type = "binary"
        elif lossy or _anti_aliased(arr, hi):
            mask_type, report["kind"] = "binary", "soft binary"
        elif not integral:
            raise ValueError(f"mask {path} has non-integer values that are not just anti-aliased edges (e.g. "
                             f"{values[~(values == np.round(values))][0]}): save binary masks as 0/255 (or 0/1) "
                             f"and instance masks as integers, one id 1..K per cell, 0 = background")
        else:
            mask_type = "instance"
    if mask_type == "binary":
        return instances_from_mask(_binary_foreground(arr, values, path, report))
    if not integral:
        raise ValueError(f"mask {path} has non-integer values (e.g. {values[~(values == np.round(values))][0]}) "
                         f"but instance labels must be integers: save one integer id 1..K per cell, 0 = "
                         f"background (or use mask_type='binary')")
    report["kind"] = "instance"
    if hi > np.iinfo(np.int32).max:
        raise ValueError(f"mask {path} has ids up to {hi}, beyond int32; renumber the cells 1..K")
    labels, reused = split_reused_ids(arr.astype(np.int32))
    if reused:
        log.info("mask %s: %d ids mark several separate regions; each connected region is one object", path, reused)
    return labels


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
