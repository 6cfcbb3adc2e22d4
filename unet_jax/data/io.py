"""Reading image and mask files and the one input normalisation. Host-side (numpy, tifffile, imageio).

Readers name the offending file in their errors (library errors often do not); ``to_float_image`` makes the
float32 (H, W, C) [0, 1] images of training, predict and the exported packages. Masks: ``unet_jax.data.masks``;
output files: ``unet_jax.io``.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile

from unet_jax.checks import InvalidInputError

log = logging.getLogger("unet_jax.data")

PERCENTILES = (1.0, 99.8)
NORMALISE_EPS = 1e-6   # scale_range's epsilon (bioimage.io): (x - lo) / (hi - lo + eps)
FLOAT_LIMIT = 1e30   # larger float pixel values are refused: (x - lo) / (hi - lo) must stay finite in float32
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")

__all__ = ["read_tiff", "tiff_shape", "read_image", "read_mask", "file_fingerprint", "to_float_image",
           "percentile_normalize", "PERCENTILES", "IMAGE_SUFFIXES"]


# ----------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------

def read_tiff(path) -> np.ndarray:
    """A (multi-page) TIFF file as stored: (H, W), (H, W, C) or (pages, H, W[, C]); planar RGB comes
    channels-last, same-size pages stored as separate images come as one stack.

    FileNotFoundError for a missing file; InvalidInputError naming the file for an unreadable one or pages of
    different sizes (tifffile's own errors do not name it).
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
        raise InvalidInputError(_no_permission(path, err)) from err
    except Exception as err:  # tifffile raises ValueError, TiffFileError, struct.error, OSError, ...
        if "imagecodecs" in str(err):   # LZW, deflate, JPEG, ... TIFFs from slide scanners and Fiji
            raise InvalidInputError(f"cannot read TIFF file {path}: it is compressed ({_first_line(err)}); install the "
                                    f"imagecodecs package (pip install imagecodecs) or save it uncompressed") from err
        raise InvalidInputError(f"cannot read TIFF file {path} ({type(err).__name__}: {_first_line(err)}); the file "
                                f"may be truncated or corrupt: download or export it again") from err
    if not shapes:
        raise InvalidInputError(f"TIFF file {path} holds no image; export it again")
    if not uniform:
        if len({shape for shape, _, _ in shapes}) == 1:
            kinds = f"of different pixel types ({', '.join(sorted({str(dtype) for _, _, dtype in shapes}))})"
        else:
            kinds = (f"of different sizes ({', '.join(_size(shape, axes) for shape, axes, _ in shapes[:6])}"
                     f"{', ...' if len(shapes) > 6 else ''}, width x height)")
        raise InvalidInputError(f"TIFF file {path} holds {pages} pages {kinds}: a file here is one image or a stack of "
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
    """A PNG, TIFF or JPEG file as stored (tifffile for TIFF, Pillow for the others; imagecodecs decodes
    compressed TIFFs). FileNotFoundError, or InvalidInputError naming the file (unsupported suffix, unreadable).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InvalidInputError(f"unsupported image file {path}: expected one of {IMAGE_SUFFIXES}; convert it to "
                                f"PNG or TIFF")
    if suffix in (".tif", ".tiff"):
        return read_tiff(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        with warnings.catch_warnings():    # a user's own large image is no attack: say nothing below the limit
            warnings.filterwarnings("ignore", message=".*decompression bomb")
            return np.asarray(iio.imread(path, plugin="pillow"))   # no search through other plugins (and their notes)
    except Exception as err:
        raise InvalidInputError(_unreadable(path, err)) from err


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
    """Sorted ``[relative path, size, mtime_ns]`` of the files under ``root`` (hidden ones skipped; [] if
    missing): part of builder config names, so edited input files give a new prepared data set."""
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


# ----------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------

def percentile_normalize(image, low: float = PERCENTILES[0], high: float = PERCENTILES[1]) -> np.ndarray:
    """``(x - p_low) / (p_high - p_low + 1e-6)`` clipped to [0, 1], float32 (all channels share the
    percentiles): bioimage.io's ``scale_range`` + ``clip``, as the exported packages declare it."""
    if not 0.0 <= low < high <= 100.0:
        raise InvalidInputError(f"low and high must satisfy 0 <= low < high <= 100, got low={low!r}, high={high!r}")
    return _scale_range(image, low, high)


def _scale_range(image, low, high) -> np.ndarray:
    x = np.asarray(image, np.float64)
    lo, hi = np.percentile(x, (low, high))
    return np.clip((x - lo) / (hi - lo + NORMALISE_EPS), 0.0, 1.0).astype(np.float32)


def _channels_last(arr: np.ndarray, path, what: str) -> np.ndarray:
    """(H, W) -> (H, W, 1); (H, W, C) kept; a leading singleton page axis dropped; else InvalidInputError."""
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        return arr[..., None]
    if arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4):
        return arr
    kind = (f"{arr.shape[0]} pages or channels first" if arr.ndim == 3 else "a hyperstack") if arr.ndim > 2 else ""
    raise InvalidInputError(f"{what} {path} has shape {arr.shape} ({kind or 'not an image'}): expected a 2-D greyscale "
                            f"(H, W) or an RGB(A) (H, W, 3|4) image; save one 2-D image (or RGB) per file")


def to_float_image(arr, path="<array>", greyscale_rgb: bool = True) -> np.ndarray:
    """A stored image as float32 (H, W, C) in [0, 1], C = 1 or 3: the one normalisation of training, predict
    and the exported packages (``percentile_normalize`` with ``PERCENTILES``, whatever the bit depth).

    Alpha channels are dropped and, with ``greyscale_rgb``, RGB with equal channels becomes grey (both logged).
    InvalidInputError naming ``path`` for unsupported shapes or dtypes and NaN, infinite or huge values.
    """
    arr = _channels_last(np.asarray(arr), path, "image")
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype,
                                                                                            np.floating)):
        raise InvalidInputError(f"image {path} has unsupported dtype {arr.dtype}: expected 8- or 16-bit integers or "
                                f"floats")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InvalidInputError(f"image {path} is empty (shape {arr.shape})")
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
            raise InvalidInputError(f"image {path} contains NaN or infinite values; fix or remove them")
        peak = float(np.max(np.abs(arr)))
        if peak > FLOAT_LIMIT:
            raise InvalidInputError(f"image {path} has values up to {peak:.3g}, beyond what float32 arithmetic can "
                                    f"normalise (|value| <= {FLOAT_LIMIT:.0e}); rescale the image (e.g. to 0-1 or "
                                    f"16-bit) and save it again")
    return _scale_range(arr, *PERCENTILES)


