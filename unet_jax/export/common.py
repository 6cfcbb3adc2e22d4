"""What every export format shares: the format names, the optional dependencies (and how to install them), the
checks of the output paths, and ``model_info``, the geometry and conventions of an exported network. Host-side.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List

import jax
import jax.numpy as jnp

from unet_jax.checks import InvalidInputError
from unet_jax.data.io import PERCENTILES
from unet_jax.io import check_directory
from unet_jax.geometry import border, output_size
from unet_jax.model import UNet

log = logging.getLogger("unet_jax.export")

FORMATS = ("stablehlo", "onnx", "bioimageio")
INSTALL_HINT = "pip install 'unet-jax[export]'"
UNET_DOI = "10.1007/978-3-319-24574-4_28"
NORMALISATION = (f"per image, over all pixels and channels: (x - p{PERCENTILES[0]:g}) / (p{PERCENTILES[1]:g} - "
                 f"p{PERCENTILES[0]:g} + 1e-6) clipped to [0, 1], p = percentiles (linear interpolation), whatever "
                 f"the bit depth (unet_jax.data.io.to_float_image); a constant image becomes 0")


def import_onnx():
    """The ``onnx`` module, or ImportError saying how to install it (an optional dependency)."""
    try:
        import onnx
    except ImportError as err:
        raise ImportError(f"ONNX and bioimage.io export need the onnx package: {INSTALL_HINT}") from err
    return onnx


def import_flatbuffers():
    """The ``flatbuffers`` module (``jax.export`` serialisation needs it), or ImportError saying how to install it."""
    try:
        import flatbuffers
    except ImportError as err:
        raise ImportError(f"StableHLO export needs the flatbuffers package (jax.export serialisation): "
                          f"{INSTALL_HINT}") from err
    return flatbuffers


def import_bioimageio_spec():
    """``bioimageio.spec``'s model description module (v0_5), or ImportError saying how to install it (also for
    bioimageio.spec <= 0.5.12 beside pydantic >= 2.12, which cannot write or load any package)."""
    try:
        import pydantic
        from bioimageio.spec import __version__ as spec_version
        from bioimageio.spec.model import v0_5
    except ImportError as err:
        raise ImportError(f"bioimage.io export needs the bioimageio.spec package: {INSTALL_HINT}") from err
    if _version(spec_version) <= (0, 5, 12) and _version(pydantic.VERSION) >= (2, 12):
        raise ImportError(f"bioimageio.spec {spec_version} cannot write bioimage.io packages with pydantic "
                          f"{pydantic.VERSION} (>= 2.12): pip install 'pydantic<2.12', as {INSTALL_HINT} does")
    return v0_5


def _version(text: str) -> tuple:
    return tuple(int(p) for p in (text.split(".") + ["0", "0"])[:3] if p.isdigit()) or (0,)


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")


def targets(fmt: str, output: Path) -> List[Path]:
    """The paths an export of ``fmt`` to ``output`` writes."""
    return [output, Path(f"{output}.json")] if fmt == "stablehlo" else [output]


def check_outputs(paths: List[Path], overwrite: bool, create: bool = True) -> None:
    """FileExistsError for existing outputs (unless ``overwrite``); a clear error for a folder that cannot be
    written (a parent that is a file: ValueError; no write permission: PermissionError). ``create``: make the
    output folder; else only check that its nearest existing ancestor is writable."""
    for path in paths:
        if (path.exists() or path.is_symlink()) and not overwrite:
            raise FileExistsError(f"--output {str(path)!r} already exists; choose another path or pass --overwrite")
    folder = check_directory(paths[0].parent, "--output folder")
    if not create:
        existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
        if not os.access(existing, os.W_OK | os.X_OK):
            what = "the --output folder" if existing == folder else "a folder in --output's path"
            raise PermissionError(f"cannot write to {what} {str(existing)!r}: permission denied")
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PermissionError(f"cannot create the --output folder {str(folder)!r}: {err.strerror}") from err
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write to the --output folder {str(folder)!r}: permission denied")


def in_channels(variables) -> int:
    """Input channels of a U-Net from its first convolution kernel (3, 3, C_in, F)."""
    return int(variables["params"]["down_0"]["Conv_0"]["kernel"].shape[2])


def class_names(num_classes: int, target: str = "foreground") -> List[str]:
    """'background', 'cell' for two classes; 'background', 'interior', 'contour' for a ``data.target='contours'``
    network; 'background', 'distance1' ... 'distance4' (the object's edge to its centre) for a 'distance' one;
    'background', 'class1', ... otherwise."""
    if target == "contours":
        return ["background", "interior", "contour"]
    if target == "distance":
        return ["background"] + [f"distance{k}" for k in range(1, num_classes)]
    return ["background", "cell"] if num_classes == 2 else ["background"] + [f"class{k}" for k in
                                                                               range(1, num_classes)]


def model_info(model: UNet, variables, tile_size: int, step=None, source=None, target: str = "foreground") -> dict:
    """Geometry and conventions of an exported network (the StableHLO sidecar JSON; the bioimage.io README).

    Raises ValueError (naming the nearest valid sizes) if ``tile_size`` is not a valid input size.
    """
    try:
        out = output_size(tile_size, model.depth, model.padding)
    except ValueError as err:
        raise InvalidInputError(f"tile_size: {err}") from None
    return {
        "tile_size": int(tile_size), "output_size": out, "halo": border(model.depth, model.padding),
        "padding": model.padding, "depth": model.depth, "features": model.features, "norm": model.norm,
        "upsample": model.upsample, "channels": in_channels(variables), "classes": model.num_classes,
        "class_names": class_names(model.num_classes, target), "target": target,
        "compute_dtype": jnp.dtype(model.dtype or jnp.float32).name, "output": "softmax probabilities (float32)",
        "preprocessing": {"normalisation": NORMALISATION, "percentiles": list(PERCENTILES)}, "step": step,
        "source": None if source is None else str(source), "tiling": tiling_hint(model, tile_size, out),
    }


def tiling_hint(model: UNet, tile: int, out: int) -> str:
    if model.padding == "VALID":
        return (f"overlap-tile: mirror-pad the image by {border(model.depth)} pixels a side, cut {tile}-pixel tiles "
                f"every {out - out % 2 ** model.depth} pixels; each gives the centre {out}x{out} pixels")
    return (f"SAME padding: tile edges see zero padding; overlap tiles (e.g. by {tile // 2} pixels) and blend "
            f"or keep their centres")


def probability_fn(model: UNet, variables):
    """``x (N, H, W, C) float32 -> softmax probabilities (N, H', W', K) float32``, the weights closed over."""
    def probabilities(x):
        return jax.nn.softmax(model.apply(variables, x, train=False), axis=-1)
    return probabilities
