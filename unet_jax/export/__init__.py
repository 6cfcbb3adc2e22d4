"""Export a trained U-Net for use outside this package: a StableHLO artifact (``jax.export``, NHWC, one tile), an
ONNX model (NCHW, one tile) or a bioimage.io model package (whole images of any size, predict's pre-processing and
overlap-tile inference; for bioimageio.core, napari, deepImageJ). ``export_model`` exports a workdir's checkpoint;
``export_network`` a (model, variables) pair. Host-side; one module per format.
"""
from __future__ import annotations

import os  # noqa: F401  (tests patch os.access through this module)
from pathlib import Path
from typing import List, Optional

from unet_jax.checks import integer
from unet_jax.export.bioimageio import (bioimageio_description, package_readme, preprocess, sample_image,
                                        write_bioimageio)
from unet_jax.export.common import (FORMATS, INSTALL_HINT, check_format, check_outputs, class_names,
                                    import_bioimageio_spec, import_flatbuffers, import_onnx, in_channels, model_info,
                                    probability_fn, targets)
from unet_jax.export.onnx import OPSET, check_onnx_supported, onnx_image_model, onnx_model
from unet_jax.export.stablehlo import PLATFORMS, export_stablehlo, write_stablehlo
from unet_jax.io import atomic_write
from unet_jax.model import UNet
from unet_jax.workdir import load_model


def export_model(workdir, fmt: str, output, step: Optional[int] = None, overwrite: bool = False,
                 tile_size: Optional[int] = None, return_info: bool = False):
    """Export a workdir's network (``unet-jax export``) of checkpoint ``step`` (default: the best) as ``fmt``:
    'stablehlo' (OUTPUT and OUTPUT.json), 'onnx' or 'bioimageio' (a package folder, or a zip for OUTPUT.zip), with
    input tiles of ``tile_size`` (default ``eval.tile_size``). Returns the paths written (and, with
    ``return_info``, ``model_info``). Every check runs before anything is created: a refused export changes
    nothing."""
    check_format(fmt)
    output = Path(output)
    check_outputs(targets(fmt, output), overwrite, create=False)
    if fmt == "stablehlo":
        import_flatbuffers()
    else:
        import_onnx()
    if fmt == "bioimageio":
        import_bioimageio_spec()
    model, config, variables, step = load_model(workdir, step)
    tile = config.eval.tile_size if tile_size is None else integer("tile_size", tile_size, 1)
    info = model_info(model, variables, tile, step=step, source=Path(workdir),     # checks the tile size
                      target=config.data.target)
    paths = export_network(model, variables, fmt, output, tile, overwrite=overwrite, step=step,
                           source=Path(workdir), target=config.data.target, eval_config=config.eval)
    return (paths, info) if return_info else paths


def export_network(model: UNet, variables, fmt: str, output, tile_size: int, overwrite: bool = False,
                   step: Optional[int] = None, source=None, target: str = "foreground",
                   eval_config=None) -> List[Path]:
    """Export ``model`` with ``variables`` (``{'params': ...[, 'batch_stats': ...]}``) in ``fmt`` to ``output``.

    ``step`` and ``source`` (the workdir) are recorded in the metadata only; ``target`` (the run's
    ``data.target``) names the output channels; ``eval_config`` (the run's ``eval`` section: threshold, object
    settings) goes into the bioimage.io package for tools that make objects from it. See ``export_model``.
    """
    check_format(fmt)
    output = Path(output)
    check_outputs(targets(fmt, output), overwrite)
    info = model_info(model, variables, tile_size, step=step, source=source, target=target)
    if fmt == "stablehlo":
        return write_stablehlo(model, variables, output, info)
    if fmt == "onnx":
        proto = onnx_model(model, variables, tile_size)
        return [atomic_write(output, lambda p: Path(p).write_bytes(proto.SerializeToString()))]
    return [write_bioimageio(model, variables, output, info, overwrite, eval_config=eval_config)]


__all__ = ["FORMATS", "INSTALL_HINT", "OPSET", "PLATFORMS", "export_model", "export_network", "export_stablehlo",
           "write_stablehlo", "onnx_model", "onnx_image_model", "check_onnx_supported", "write_bioimageio",
           "bioimageio_description", "package_readme", "preprocess", "sample_image", "model_info", "class_names",
           "in_channels", "probability_fn", "import_onnx", "import_flatbuffers", "import_bioimageio_spec"]
