"""Output files and folders: atomic writes, TIFFs that carry the input's pixel size (ImageJ metadata, read by Fiji
and napari), PNGs, overlays, and the checks that an output folder is usable before any work. Host-side.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import skimage.io
import tifffile
from skimage.segmentation import find_boundaries

from unet_jax.checks import InvalidInputError

log = logging.getLogger(__name__)

IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)        # what an ImageJ hyperstack TIFF can hold
_TIFF_UNITS = {2: "inch", 3: "centimeter"}               # TIFF ResolutionUnit tag values

__all__ = ["PixelSize", "read_pixel_size", "check_directory", "check_writable_directory", "ensure_directory",
           "atomic_write", "write_tiff", "write_png", "overlay"]


class PixelSize(NamedTuple):
    """Size of one pixel: ``y`` and ``x`` (and ``z``, the slice spacing of a stack, or None) in ``unit``
    (e.g. 'micron', 'nm', 'inch'); what ImageJ calls the calibration."""
    y: float
    x: float
    unit: str
    z: Optional[float] = None


def read_pixel_size(path) -> Optional[PixelSize]:
    """The pixel size a TIFF (ImageJ metadata, OME-XML or resolution tags) or PNG (pHYs) records, or None
    (no calibration, a screen default, or an unreadable file: the image reader reports those)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as f:
                return _tiff_pixel_size(f)
        if suffix == ".png":
            import PIL.Image

            with PIL.Image.open(path) as im:
                dpi = im.info.get("dpi")
            if dpi and dpi[0] > 0 and dpi[1] > 0 and tuple(np.round(dpi)) not in ((72.0, 72.0), (96.0, 96.0)):
                return PixelSize(y=1.0 / float(dpi[1]), x=1.0 / float(dpi[0]), unit="inch")
    except Exception as err:  # noqa: BLE001 - calibration is optional; the reader names broken files
        log.debug("%s: no pixel size read (%s)", path, err)
    return None


def _tiff_pixel_size(f: tifffile.TiffFile) -> Optional[PixelSize]:
    page = f.pages[0]
    tags = page.tags
    ij = f.imagej_metadata or {}
    if f.is_ome and not ij:
        size = _ome_pixel_size(f.ome_metadata)
        if size is not None:
            return size
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    xres, yres = (_ratio(tags[k].value) for k in ("XResolution", "YResolution"))
    if not (xres > 0 and yres > 0):
        return None
    unit = ij.get("unit")
    if unit is None:
        code = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
        unit = _TIFF_UNITS.get(code)
        if unit is None or (unit == "inch" and (xres, yres) in ((72.0, 72.0), (96.0, 96.0))):
            return None         # no unit, or an image editor's screen default: not a physical size
    if isinstance(unit, bytes):
        unit = unit.decode("utf-8", "replace")
    spacing = ij.get("spacing")
    return PixelSize(y=1.0 / yres, x=1.0 / xres, unit=str(unit).replace("\\u00B5", "µ"),
                     z=float(spacing) if spacing else None)


def _ratio(value) -> float:
    if isinstance(value, tuple):
        return float(value[0]) / float(value[1]) if value[1] else 0.0
    return float(value)


def _ome_pixel_size(xml: Optional[str]) -> Optional[PixelSize]:
    if not xml:
        return None
    import xml.etree.ElementTree as ET

    for el in ET.fromstring(xml).iter():
        if el.tag.endswith("}Pixels") or el.tag == "Pixels":
            a = el.attrib
            if "PhysicalSizeX" in a and "PhysicalSizeY" in a:
                unit = a.get("PhysicalSizeXUnit", "µm")
                z = float(a["PhysicalSizeZ"]) if "PhysicalSizeZ" in a else None
                return PixelSize(y=float(a["PhysicalSizeY"]), x=float(a["PhysicalSizeX"]),
                                 unit="micron" if unit in ("µm", "um") else unit, z=z)
    return None


def check_directory(path, what: str) -> Path:
    """``path`` as a Path, usable as a directory (it and its parents are directories or missing);
    InvalidInputError naming ``what`` (e.g. "--output") otherwise."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            raise InvalidInputError(f"{what} {str(path)!r} cannot be a directory: {str(p)!r} is a file; name a "
                                    f"directory (it is created if missing)")
    return path


def check_writable_directory(path, what: str) -> Path:
    """``check_directory``, then check that files can be made in ``path`` (or its nearest existing parent),
    before any work; leaves nothing behind. InvalidInputError naming ``what`` and the folder."""
    path = check_directory(path, what)
    existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    try:
        _probe_write(existing)
    except OSError as e:
        where = "" if existing == path.absolute() else " (where it would be created)"
        raise InvalidInputError(f"{what} {str(path)!r}: cannot write in {str(existing)!r}{where} ({e.strerror or e}); "
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


def write_tiff(path, array, pixel_size: Optional[PixelSize] = None, axes: Optional[str] = None):
    """Write ``array`` as a TIFF at ``path`` atomically; returns the path.

    'YX' / 'ZYX' arrays (``axes``; 'YX' is the 2-D default) of uint8, uint16 or float32 become ImageJ TIFFs (Fiji
    and napari read their calibration), anything else a plain TIFF. ``pixel_size`` goes into the resolution tags
    (and the ImageJ unit and spacing).
    """
    array = np.asarray(array)
    axes = axes or ("YX" if array.ndim == 2 else None)
    if axes is not None and len(axes) != array.ndim:
        raise InvalidInputError(f"axes {axes!r} do not match an array of shape {array.shape}")
    imagej = array.dtype in IMAGEJ_DTYPES and axes in ("YX", "ZYX")
    kwargs = {}
    if pixel_size is not None:
        kwargs["resolution"] = (1.0 / pixel_size.x, 1.0 / pixel_size.y)
        if imagej:
            meta = {"unit": pixel_size.unit}
            if pixel_size.z and axes == "ZYX":
                meta["spacing"] = pixel_size.z
            kwargs["metadata"] = meta
        else:
            code = {v: k for k, v in _TIFF_UNITS.items()}.get(pixel_size.unit)
            if code is None:            # a unit plain TIFF tags cannot name (e.g. micron): in centimetres
                per_cm = _per_centimetre(pixel_size)
                if per_cm is None:
                    kwargs.pop("resolution")
                else:
                    kwargs["resolution"] = per_cm
                    kwargs["resolutionunit"] = 3
            else:
                kwargs["resolutionunit"] = code
    if imagej:
        kwargs.setdefault("metadata", {})["axes"] = axes
        return atomic_write(path, lambda p: tifffile.imwrite(p, array, imagej=True, **kwargs))
    return atomic_write(path, lambda p: tifffile.imwrite(p, array, photometric="minisblack", **kwargs))


_TO_CM = {"micron": 1e-4, "µm": 1e-4, "um": 1e-4, "nm": 1e-7, "nanometer": 1e-7, "mm": 0.1, "millimeter": 0.1,
          "cm": 1.0, "centimeter": 1.0, "m": 100.0, "meter": 100.0, "inch": 2.54}


def _per_centimetre(size: PixelSize):
    factor = _TO_CM.get(size.unit)
    return None if factor is None else (1.0 / (size.x * factor), 1.0 / (size.y * factor))


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
