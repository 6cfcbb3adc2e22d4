"""bioimage.io model package (built from ``bioimageio.spec``'s typed descriptions): ``unet-jax predict`` for
whole images of any size. Host-side.

The package holds the whole-image ONNX model (``onnx_image_model``: predict's overlap-tile inference inside) and
declares predict's input normalisation with the spec's own operations (``scale_range`` at the 1st/99.8th
percentiles over channel, y and x per image, then ``clip`` to [0, 1]: ``unet_jax.data.io.to_float_image``), so
``bioimageio.core.predict`` on an image of any size and bit depth gives predict's probabilities. It declares no
halo: bioimageio.core pads an input by its halo before it computes the percentiles, which would change them.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import string
import tempfile
import zipfile
from pathlib import Path

import ml_collections
import numpy as np
import tifffile

from unet_jax.data.io import PERCENTILES, percentile_normalize
from unet_jax.export.common import NORMALISATION, UNET_DOI, import_bioimageio_spec
from unet_jax.export.onnx import OPSET, onnx_image_model
from unet_jax.model import UNet

log = logging.getLogger("unet_jax.export")

TMP_TAG = "unet-jax-export"  # temporary folders: .OUTPUT.unet-jax-export.HOST.PID.XXXXXXXX beside OUTPUT


def write_bioimageio(model: UNet, variables, output: Path, info: dict, overwrite: bool = False,
                     eval_config=None) -> Path:
    """Write a bioimage.io model package to the folder ``output``, or a zip if it ends in '.zip'.

    Built in a temporary folder beside ``output`` and moved into place at the end, so an error leaves nothing;
    the temporary folders of exports that were killed (their process is gone) are removed first.
    """
    v0_5 = import_bioimageio_spec()
    from bioimageio.spec import save_bioimageio_package_as_folder

    remove_stale_temporaries(output)
    proto = onnx_image_model(model, variables, info["tile_size"])
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.{TMP_TAG}.{socket.gethostname()}.{os.getpid()}.",
                                dir=output.parent))
    try:
        src = tmp / "src"
        src.mkdir()
        _package_files(model, variables, proto, src, info, eval_config)
        descr = bioimageio_description(v0_5, info, src, eval_config)
        package = tmp / "package"
        save_bioimageio_package_as_folder(descr, output_path=package)
        if output.suffix.lower() == ".zip":
            _zip_folder(package, tmp / "package.zip")
            os.chmod(tmp / "package.zip", 0o666 & ~_umask())
            os.replace(tmp / "package.zip", output)
        else:
            _replace_folder(package, output, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output


LEGACY_FILES = {"rdf.yaml", "README.md", "model.onnx", "test_input.npy", "test_output.npy", "sample_input.tif",
                "sample_output.tif", "cover.png"}


def remove_stale_temporaries(output: Path) -> None:
    """Remove the temporary folders that killed exports to ``output`` left beside it: this host's, whose process
    no longer runs (a running export's folder is kept), and those of earlier versions (``.OUTPUT.XXXXXXXX``
    holding nothing but package files)."""
    for path in output.parent.glob(f".{output.name}.????????"):
        if path.is_dir() and {f.name for f in path.iterdir()} <= LEGACY_FILES:
            log.info("removing %s, left by an export that did not finish", path)
            shutil.rmtree(path, ignore_errors=True)
    host = socket.gethostname()
    for path in output.parent.glob(f".{output.name}.{TMP_TAG}.*"):
        parts = path.name[len(output.name) + 2:].split(".")
        if len(parts) < 3 or not path.is_dir() or parts[1] != host or not parts[2].isdigit():
            continue
        if _running(int(parts[2])):
            continue
        log.info("removing %s, left by an export that did not finish (process %s)", path, parts[2])
        shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def preprocess(x: np.ndarray) -> np.ndarray:
    """The package's pre-processing of an (N, C, H, W) tensor, per sample: ``percentile_normalize`` over
    (C, H, W), i.e. bioimage.io's ``scale_range`` at the ``PERCENTILES`` then ``clip`` to [0, 1]."""
    return np.stack([percentile_normalize(s) for s in np.asarray(x)]).astype(np.float32)


def _reference(model: UNet, variables, image_chw: np.ndarray, tile: int, eval_config) -> np.ndarray:
    """predict's probabilities (K, H, W) of a normalised (C, H, W) image, through ``unet_jax.inference``."""
    from unet_jax.inference import predict_probabilities

    batch = 4 if eval_config is None else int(eval_config.batch_size)
    cfg = ml_collections.ConfigDict({"tile_size": tile, "batch_size": batch})
    float_model = model.clone(dtype=None) if model.dtype is not None else model
    return predict_probabilities(float_model, variables, image_chw.transpose(1, 2, 0), cfg).transpose(2, 0, 1)


def _package_files(model: UNet, variables, proto, folder: Path, info: dict, eval_config) -> None:
    """model.onnx, the test (.npy) and sample (.tif) tensors, cover.png and README.md in ``folder``."""
    (folder / "model.onnx").write_bytes(proto.SerializeToString())
    t = info["tile_size"]
    raw = sample_image(t + 9, t + 23, info["channels"])          # not a tile size: several tiles, odd sides
    expected = _reference(model, variables, preprocess(raw)[0], t, eval_config)[None].astype(np.float32)
    np.save(folder / "test_input.npy", raw)
    np.save(folder / "test_output.npy", expected)
    tifffile.imwrite(folder / "sample_input.tif", raw[0].astype(np.uint16), photometric="minisblack")
    tifffile.imwrite(folder / "sample_output.tif", expected[0], photometric="minisblack")
    _write_cover(folder / "cover.png", preprocess(raw)[0], expected[0])
    (folder / "README.md").write_text(package_readme(info))


def sample_image(height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    """A (1, C, height, width) float32 test input: smooth blobs on a background, 16-bit-like integer values."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    img = np.zeros((channels, height, width), np.float32)
    for _ in range(max(3, height * width // 400)):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(3, 8)
        img += rng.uniform(0.5, 1.0, (channels, 1, 1)) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    img = 3000 * img / max(float(img.max()), 1e-6) + rng.normal(500, 50, img.shape)
    return np.round(np.clip(img, 0, 4000)).astype(np.float32)[None]


def _write_cover(path: Path, image: np.ndarray, probs: np.ndarray) -> None:
    """A 2:1 cover: the (C, H, W) input in grey beside the foreground probability (1 - P(background))."""
    import imageio.v3 as iio

    grey = np.concatenate([image.mean(axis=0), 1.0 - probs[0]], axis=1)
    iio.imwrite(path, np.repeat((255 * np.clip(grey, 0, 1)).astype(np.uint8)[..., None], 3, axis=-1))


def _rdf_name(info: dict) -> str:
    allowed = set(string.ascii_letters + string.digits + "_+- ()")
    stem = Path(info["source"]).name if info.get("source") else "model"
    stem = "".join(c if c in allowed else "-" for c in stem)
    step = f" step {info['step']}" if info.get("step") is not None else ""
    return f"unet-jax U-Net {stem}{step}"[:64]


def _eval_settings(eval_config) -> dict:
    """The object settings of the run (threshold, eval.instances, ...) for tools that make objects from the
    package's probabilities, as ``unet_jax.inference.objects_of`` reads them."""
    if eval_config is None:
        return {}
    keys = ("threshold", "instances", "watershed_h", "watershed_smooth", "min_object_size", "min_object_fraction",
            "object_area")
    return {k: eval_config[k] for k in keys if k in eval_config}


def bioimageio_description(v0_5, info: dict, folder: Path, eval_config=None):
    """The typed ``bioimageio.spec`` model description (``v0_5.ModelDescr``) of the package files in ``folder``:
    inputs of any size (y, x >= 1), predict's normalisation as pre-processing, outputs of the input's size."""
    from bioimageio.spec.common import FileDescr

    def file(name):
        return FileDescr(source=folder / name)
    channels = [f"channel{c}" for c in range(info["channels"])]
    space_in = [v0_5.SpaceInputAxis(id=v0_5.AxisId(a), size=v0_5.ParameterizedSize(min=1, step=1))
                for a in ("y", "x")]
    space_out = [v0_5.SpaceOutputAxis(id=v0_5.AxisId(a), size=v0_5.SizeReference(
        tensor_id=v0_5.TensorId("input"), axis_id=v0_5.AxisId(a))) for a in ("y", "x")]
    joint = [v0_5.AxisId(a) for a in ("channel", "y", "x")]
    inputs = [v0_5.InputTensorDescr(
        id=v0_5.TensorId("input"),
        description="image of any size, raw intensities (any bit depth); normalised by the pre-processing",
        axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=[v0_5.Identifier(c) for c in channels])] + space_in,
        test_tensor=file("test_input.npy"), sample_tensor=file("sample_input.tif"),
        data=v0_5.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[
            v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(axes=joint, min_percentile=PERCENTILES[0],
                                                              max_percentile=PERCENTILES[1])),
            v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min=0.0, max=1.0))])]
    outputs = [v0_5.OutputTensorDescr(
        id=v0_5.TensorId("output"), description="softmax class probabilities, the input's size",
        axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=[v0_5.Identifier(c) for c in info["class_names"]])]
        + space_out,
        test_tensor=file("test_output.npy"), sample_tensor=file("sample_output.tif"),
        data=v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)))]
    config = {k: v for k, v in info.items() if k != "source"}
    config.update(eval=_eval_settings(eval_config), onnx="whole images: predict's overlap-tile inference inside")
    return v0_5.ModelDescr(
        name=_rdf_name(info),
        description=f"U-Net ({info['padding']} padding, depth {info['depth']}) trained with unet-jax: "
                    f"{info['classes']}-class softmax segmentation of whole images of any size",
        authors=[v0_5.Author(name="unet-jax user (edit rdf.yaml)")],
        cite=[v0_5.CiteEntry(text="Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical Image "
                                  "Segmentation. MICCAI 2015", doi=v0_5.Doi(UNET_DOI))],
        license=v0_5.LicenseId("Apache-2.0"), tags=["unet", "segmentation", "2d", "onnx", "unet-jax"],
        documentation=file("README.md"), covers=[file("cover.png")], inputs=inputs, outputs=outputs,
        weights=v0_5.WeightsDescr(onnx=v0_5.OnnxWeightsDescr(source=folder / "model.onnx", opset_version=OPSET)),
        config={"unet_jax": config})


def package_readme(info: dict) -> str:
    """README.md of the bioimage.io package: what runs inside, the pre-processing, tiling tools, validation."""
    t, halo = info["tile_size"], info["halo"]
    step = "" if info.get("step") is None else f" (checkpoint step {info['step']})"
    return f"""# U-Net (unet-jax)

U-Net of Ronneberger et al. (2015), {info['padding']} padding, depth {info['depth']}, {info['features']} features in
the first level, trained with unet-jax{step}.

## What the package computes

`unet-jax predict`'s probabilities, for a whole image of any size:

* input `input`: (batch, {info['channels']}, y, x), any y, x >= 1, raw intensities of any bit depth (float32 after the
  pre-processing);
* pre-processing (rdf.yaml: `scale_range` then `clip`): {NORMALISATION};
* `model.onnx` runs unet-jax's overlap-tile inference inside: it mirrors the image at its borders, cuts {t}-pixel
  tiles ({info['tiling']}), runs the network tile by tile and stitches the tiles as `unet-jax predict` does;
* output `output`: softmax probabilities (batch, {info['classes']}, y, x), channels {', '.join(info['class_names'])}.

So `bioimageio.core.predict(model="rdf.yaml", inputs=image)` equals `unet-jax predict` on the same image (float
rounding; predict without `--tta`).

## Tiling tools

The package declares no halo: bioimageio.core pads an input by a declared halo before it computes the
percentiles, which would change the normalisation of a whole image. Run whole images: memory holds the image and
one tile's activations. A tool that cuts a large image into blocks itself should normalise the whole image first,
overlap the blocks by at least {halo + 2 ** info['depth']} pixels a side (the network's context, {halo} pixels, and its
{2 ** info['depth']}-pixel pooling grid) and keep each block's centre; the result then differs from predict's only
where a block's pooling grid or tiles fall differently from predict's.

## Validation

Validate on held-out annotated images of your own with `unet-jax evaluate --workdir WORKDIR`. `test_input.npy` ->
`test_output.npy` is unet-jax's (JAX) result for a synthetic 16-bit-like image of {t + 9}x{t + 23} pixels.
"""


def _zip_folder(folder: Path, path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f.name)


def _replace_folder(tmp: Path, output: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` folder to ``output``, replacing an existing one only with ``overwrite``."""
    os.chmod(tmp, 0o777 & ~_umask())
    if not (output.exists() or output.is_symlink()):
        os.replace(tmp, output)
        return
    if not overwrite:
        raise FileExistsError(f"--output {str(output)!r} already exists; choose another path or pass --overwrite")
    old = tmp.parent / "previous"
    os.replace(output, old)
    try:
        os.replace(tmp, output)
    except BaseException:
        os.replace(old, output)      # put the previous export back
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


__all__ = ["write_bioimageio", "bioimageio_description", "package_readme", "preprocess", "sample_image",
           "remove_stale_temporaries"]
