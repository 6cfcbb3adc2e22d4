"""Export a trained U-Net for use outside this package: a StableHLO artifact (``jax.export``, NHWC), an ONNX model
(NCHW, built from the parameters with the ``onnx`` helper API) or a bioimage.io model package (rdf.yaml, ONNX
weights, test tensors). ``export_model`` exports a workdir's checkpoint; ``export_network`` a (model, variables)
pair. Host-side; every format takes one fixed square input tile and a free batch size.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import string
import tempfile
import zipfile
from pathlib import Path
from typing import List, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tifffile

from unet_jax.data.io import PERCENTILES, atomic_write, check_directory
from unet_jax.evaluate import load_model
from unet_jax.geometry import border, output_size
from unet_jax.model import NORMS, UNet

log = logging.getLogger(__name__)

FORMATS = ("stablehlo", "onnx", "bioimageio")
PLATFORMS = ("cpu", "cuda")       # the StableHLO artifact runs on either
OPSET = 17
ONNX_IR_VERSION = 8               # the IR version of opset 17, readable by older runtimes
BIOIMAGEIO_FORMAT = "0.5.4"
INSTALL_HINT = "pip install 'unet-jax[export]'"
UNET_DOI = "10.1007/978-3-319-24574-4_28"
PREPROCESSING = {
    "uint8": "x / 255",
    "other": f"per image, over all pixels and channels: (x - p{PERCENTILES[0]:g}) / (p{PERCENTILES[1]:g} - "
             f"p{PERCENTILES[0]:g}) clipped to [0, 1] (p = percentiles)",
    "float_in_0_1": "kept as is",
    "percentiles": list(PERCENTILES),
}


# ----------------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------------

def export_model(workdir, fmt: str, output, step: Optional[int] = None, overwrite: bool = False,
                 tile_size: Optional[int] = None, return_info: bool = False):
    """Export a trained workdir's network (``unet-jax export``). Host-side.

    Parameters
    ----------
    workdir : str or Path
        A workdir written by ``unet-jax train``.
    fmt : {'stablehlo', 'onnx', 'bioimageio'}
        'stablehlo': OUTPUT (``jax.export`` bytes) and OUTPUT.json (shapes, halo, pre-processing); 'onnx': one
        .onnx file; 'bioimageio': a model package folder, or a zip file when OUTPUT ends in '.zip'.
    output : str or Path
        Where to write.
    step : int, optional
        Checkpoint step (default: the best, else the latest).
    overwrite : bool
        Replace existing outputs (default: refuse with FileExistsError).
    tile_size : int, optional
        Input tile side in pixels (default: ``config.eval.tile_size``); must be a valid U-Net input size.
    return_info : bool
        Also return ``model_info`` of the exported network (step, tile and output size, halo, ...).

    Returns
    -------
    list of Path: the files (or the package folder) written; with ``return_info``, (that list, info dict).

    Every check (format, existing outputs, output folder, onnx installed, checkpoint, tile size) runs before
    anything is created, so a refused export leaves the file system as it was.
    """
    _check_format(fmt)
    output = Path(output)
    _check_outputs(_targets(fmt, output), overwrite, create=False)
    if fmt == "stablehlo":
        import_flatbuffers()
    else:
        import_onnx()
    model, config, variables, step = load_model(workdir, step)
    tile = int(tile_size if tile_size is not None else config.eval.tile_size)
    info = model_info(model, variables, tile, step=step, source=Path(workdir),     # checks the tile size
                      target=config.data.get("target", "foreground"))
    paths = export_network(model, variables, fmt, output, tile, overwrite=overwrite, step=step,
                           source=Path(workdir), target=config.data.get("target", "foreground"))
    return (paths, info) if return_info else paths


def export_network(model: UNet, variables, fmt: str, output, tile_size: int, overwrite: bool = False,
                   step: Optional[int] = None, source=None, target: str = "foreground") -> List[Path]:
    """Export ``model`` with ``variables`` (``{'params': ...[, 'batch_stats': ...]}``) in ``fmt`` to ``output``.

    ``step`` and ``source`` (the workdir) are recorded in the metadata only; ``target`` (the run's
    ``data.target``) names the output channels. See ``export_model``.
    """
    _check_format(fmt)
    output = Path(output)
    _check_outputs(_targets(fmt, output), overwrite)
    info = model_info(model, variables, tile_size, step=step, source=source, target=target)
    if fmt == "stablehlo":
        return write_stablehlo(model, variables, output, info)
    if fmt == "onnx":
        proto = onnx_model(model, variables, tile_size)
        return [atomic_write(output, lambda p: Path(p).write_bytes(proto.SerializeToString()))]
    return [write_bioimageio(model, variables, output, info, overwrite)]


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


# ----------------------------------------------------------------------------------------------------------------
# Checks and metadata
# ----------------------------------------------------------------------------------------------------------------

def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _targets(fmt: str, output: Path) -> List[Path]:
    return [output, Path(f"{output}.json")] if fmt == "stablehlo" else [output]


def _check_outputs(paths: List[Path], overwrite: bool, create: bool = True) -> None:
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
    network; 'background', 'class1', ... otherwise."""
    if target == "contours":
        return ["background", "interior", "contour"]
    return ["background", "cell"] if num_classes == 2 else ["background"] + [f"class{k}" for k in
                                                                               range(1, num_classes)]


def model_info(model: UNet, variables, tile_size: int, step=None, source=None, target: str = "foreground") -> dict:
    """Geometry and conventions of an exported network (the StableHLO sidecar JSON; the bioimage.io README).

    Raises ValueError (naming the nearest valid sizes) if ``tile_size`` is not a valid input size.
    """
    try:
        out = output_size(tile_size, model.depth, model.padding)
    except ValueError as err:
        raise ValueError(f"tile_size: {err}") from None
    return {
        "tile_size": int(tile_size), "output_size": out, "halo": border(model.depth, model.padding),
        "padding": model.padding, "depth": model.depth, "features": model.features, "norm": model.norm,
        "upsample": model.upsample, "channels": in_channels(variables), "classes": model.num_classes,
        "class_names": class_names(model.num_classes, target), "compute_dtype": jnp.dtype(model.dtype or jnp.float32).name,
        "output": "softmax probabilities (float32)", "preprocessing": PREPROCESSING, "step": step,
        "source": None if source is None else str(source), "tiling": _tiling_hint(model, tile_size, out),
    }


def _tiling_hint(model: UNet, tile: int, out: int) -> str:
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


# ----------------------------------------------------------------------------------------------------------------
# StableHLO
# ----------------------------------------------------------------------------------------------------------------

def export_stablehlo(model: UNet, variables, tile_size: int, platforms=PLATFORMS) -> jax.export.Exported:
    """``jax.export`` of ``probability_fn`` for (batch, tile, tile, C) float32 input, batch symbolic."""
    batch, = jax.export.symbolic_shape("batch")
    spec = jax.ShapeDtypeStruct((batch, tile_size, tile_size, in_channels(variables)), jnp.float32)
    return jax.export.export(jax.jit(probability_fn(model, variables)), platforms=platforms)(spec)


def write_stablehlo(model: UNet, variables, output: Path, info: dict) -> List[Path]:
    """Write the serialised StableHLO to ``output`` and its description to ``output`` + '.json'."""
    import_flatbuffers()
    exported = export_stablehlo(model, variables, info["tile_size"])
    t, o = info["tile_size"], info["output_size"]
    meta = dict(info, format="stablehlo", layout="NHWC", input_shape=["batch", t, t, info["channels"]],
                output_shape=["batch", o, o, info["classes"]], dtype="float32", platforms=list(exported.platforms),
                jax_version=jax.__version__, calling_convention_version=exported.calling_convention_version,
                usage="jax.export.deserialize(open(PATH, 'rb').read()).call(x)")
    data = bytes(exported.serialize())
    sidecar = atomic_write(Path(f"{output}.json"), lambda p: Path(p).write_text(json.dumps(meta, indent=1) + "\n"))
    try:
        return [atomic_write(output, lambda p: Path(p).write_bytes(data)), sidecar]
    except BaseException:
        sidecar.unlink(missing_ok=True)           # no description without its model
        raise


# ----------------------------------------------------------------------------------------------------------------
# ONNX
# ----------------------------------------------------------------------------------------------------------------

class _Graph:
    """Nodes and initializers of an ONNX graph being built; every node has one output, named as the node."""

    def __init__(self, onnx):
        self.onnx, self.nodes, self.initializers = onnx, [], []

    def const(self, name: str, value, dtype=np.float32) -> str:
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(value, dtype), name))
        return name

    def op(self, op_type: str, inputs, name: str, **attrs) -> str:
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
        return name


def check_onnx_supported(model: UNet) -> None:
    """ValueError naming a model setting the ONNX export does not support; a warning for bfloat16 compute."""
    if model.norm not in NORMS:
        raise ValueError(f"ONNX export does not support model.norm={model.norm!r}; supported: {NORMS}")
    if model.upsample not in ("transpose", "bilinear"):
        raise ValueError(f"ONNX export does not support model.upsample={model.upsample!r}; supported: "
                         f"'transpose', 'bilinear'")
    if model.padding not in ("VALID", "SAME"):
        raise ValueError(f"ONNX export does not support model.padding={model.padding!r}")
    if model.dtype not in (None, jnp.float32):
        log.warning("the model computes in %s; the ONNX model computes in float32 (results differ by that "
                    "rounding)", jnp.dtype(model.dtype).name)


def onnx_model(model: UNet, variables, tile_size: int):
    """The network as an ``onnx.ModelProto``: NCHW float32 'input' (batch, C, T, T) -> 'output' (batch, K, T', T')
    softmax probabilities, T' = ``output_size(T)``; opset ``OPSET``; inference mode (dropout is the identity)."""
    onnx = import_onnx()
    check_onnx_supported(model)
    info = model_info(model, variables, tile_size)
    g = _Graph(onnx)
    logits = _onnx_unet(g, model, jax.device_get(variables), "input", tile_size)
    g.op("Softmax", [logits], "output", axis=1)
    h = onnx.helper
    t, o = info["tile_size"], info["output_size"]
    graph = h.make_graph(
        g.nodes, "unet",
        [h.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", info["channels"], t, t])],
        [h.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["batch", info["classes"], o, o])],
        g.initializers)
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], producer_name="unet-jax",
                         ir_version=ONNX_IR_VERSION, doc_string=f"U-Net (unet-jax), NCHW, {_tiling_hint(model, t, o)}")
    h.set_model_props(proto, {k: json.dumps(v) for k, v in info.items() if k not in ("source", "step")})
    onnx.checker.check_model(proto)
    return proto


def _onnx_unet(g: _Graph, model: UNet, variables, x: str, size: int) -> str:
    """The U-Net of ``UNet.__call__`` (train=False) as ONNX nodes from ``x`` (side ``size``); returns the logits."""
    params, stats = variables["params"], variables.get("batch_stats", {})
    skips = []
    for level in range(model.depth):
        x, size = _onnx_block(g, model, f"down_{level}", params, stats, x, size)
        skips.append((x, size))
        x = g.op("MaxPool", [x], f"pool_{level}", kernel_shape=[2, 2], strides=[2, 2])
        size //= 2
    x, size = _onnx_block(g, model, "bottom", params, stats, x, size)
    for level in reversed(range(model.depth)):
        x = _onnx_upsample(g, model, f"upconv_{level}", params[f"upconv_{level}"], x)
        size *= 2
        skip = _onnx_crop(g, f"crop_{level}", *skips[level], size)
        x = g.op("Concat", [skip, x], f"concat_{level}", axis=1)
        x, size = _onnx_block(g, model, f"up_{level}", params, stats, x, size)
    return _onnx_conv(g, "head", params["head"], x, 0)


def _onnx_conv(g: _Graph, name: str, p, x: str, pad: int) -> str:
    """k x k convolution with bias; the flax HWIO kernel becomes ONNX's OIHW."""
    kernel = np.asarray(p["kernel"], np.float32).transpose(3, 2, 0, 1)
    k = kernel.shape[-1]
    return g.op("Conv", [x, g.const(f"{name}/kernel", kernel), g.const(f"{name}/bias", p["bias"])], name,
                kernel_shape=[k, k], pads=[pad] * 4)


def _onnx_block(g: _Graph, model: UNet, name: str, params, stats, x: str, size: int):
    """``ConvBlock``: two 3x3 convolutions, each with the optional norm and ReLU; returns (x, side)."""
    pad = 1 if model.padding == "SAME" else 0
    for i in range(2):
        x = _onnx_conv(g, f"{name}/Conv_{i}", params[name][f"Conv_{i}"], x, pad)
        if model.norm == "batch":
            x = _onnx_batch_norm(g, f"{name}/BatchNorm_{i}", params[name][f"BatchNorm_{i}"],
                                 stats[name][f"BatchNorm_{i}"], x)
        elif model.norm == "group":
            x = _onnx_group_norm(g, f"{name}/GroupNorm_{i}", params[name][f"GroupNorm_{i}"], x)
        x = g.op("Relu", [x], f"{name}/relu_{i}")
        size -= 2 * (1 - pad)
    return x, size


def _onnx_batch_norm(g: _Graph, name: str, p, s, x: str) -> str:
    """``nn.BatchNorm`` with running averages (inference)."""
    inputs = [x] + [g.const(f"{name}/{k}", v) for k, v in (("scale", p["scale"]), ("bias", p["bias"]),
                                                            ("mean", s["mean"]), ("var", s["var"]))]
    return g.op("BatchNormalization", inputs, name, epsilon=float(nn.BatchNorm.epsilon))


def _onnx_group_norm(g: _Graph, name: str, p, x: str) -> str:
    """``nn.GroupNorm(num_groups=gcd(32, C))`` as in ``ConvBlock``, from primitive ops (variance E[x^2] - E[x]^2
    clipped at 0, as flax computes it)."""
    c = int(p["scale"].shape[0])
    grouped = g.op("Reshape", [x, g.const(f"{name}/groups", [0, math.gcd(32, c), -1], np.int64)], f"{name}/grouped")
    mean = g.op("ReduceMean", [grouped], f"{name}/mean", axes=[2], keepdims=1)
    square = g.op("ReduceMean", [g.op("Mul", [grouped, grouped], f"{name}/sq")], f"{name}/mean_sq", axes=[2],
                  keepdims=1)
    var = g.op("Relu", [g.op("Sub", [square, g.op("Mul", [mean, mean], f"{name}/mean2")], f"{name}/var0")],
               f"{name}/var")
    std = g.op("Sqrt", [g.op("Add", [var, g.const(f"{name}/eps", float(nn.GroupNorm.epsilon))], f"{name}/var_eps")],
               f"{name}/std")
    normed = g.op("Div", [g.op("Sub", [grouped, mean], f"{name}/centred"), std], f"{name}/normed")
    y = g.op("Reshape", [normed, g.op("Shape", [x], f"{name}/shape")], f"{name}/ungrouped")
    y = g.op("Mul", [y, g.const(f"{name}/scale", np.reshape(p["scale"], (c, 1, 1)))], f"{name}/scaled")
    return g.op("Add", [y, g.const(f"{name}/bias", np.reshape(p["bias"], (c, 1, 1)))], name)


def _onnx_upsample(g: _Graph, model: UNet, name: str, p, x: str) -> str:
    """2x2/stride-2 up-convolution (``UpConv2x2``), or bilinear x2 resize and a 1x1 convolution."""
    if model.upsample == "bilinear":
        x = g.op("Resize", [x, "", g.const(f"{name}/scales", [1, 1, 2, 2])], f"{name}/resize", mode="linear",
                 coordinate_transformation_mode="half_pixel")
        return _onnx_conv(g, name, p, x, 0)
    # UpConv2x2: kernel[1 - i, 1 - j, c, o] writes input (h, w) to output (2h + i, 2w + j); ONNX: W[c, o, i, j]
    kernel = np.asarray(p["kernel"], np.float32)[::-1, ::-1].transpose(2, 3, 0, 1)
    return g.op("ConvTranspose", [x, g.const(f"{name}/kernel", kernel), g.const(f"{name}/bias", p["bias"])], name,
                kernel_shape=[2, 2], strides=[2, 2])


def _onnx_crop(g: _Graph, name: str, x: str, size: int, target: int) -> str:
    """Centre crop of a square NCHW map (``center_crop_to``)."""
    d = (size - target) // 2
    if d == 0:
        return x
    return g.op("Slice", [x, g.const(f"{name}/starts", [d, d], np.int64),
                          g.const(f"{name}/ends", [d + target] * 2, np.int64),
                          g.const(f"{name}/axes", [2, 3], np.int64)], name)


# ----------------------------------------------------------------------------------------------------------------
# bioimage.io model package
# ----------------------------------------------------------------------------------------------------------------

def write_bioimageio(model: UNet, variables, output: Path, info: dict, overwrite: bool = False) -> Path:
    """Write a bioimage.io model package (spec 0.5) to the folder ``output``, or a zip if it ends in '.zip'.

    Built in a temporary folder beside ``output`` and moved into place at the end, so an error leaves nothing.
    """
    proto = onnx_model(model, variables, info["tile_size"])
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        _package_files(model, variables, proto, tmp, info)
        if output.suffix.lower() == ".zip":
            atomic_write(output, lambda p: _zip_folder(tmp, p))
        else:
            _replace_folder(tmp, output, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output


def _package_files(model: UNet, variables, proto, folder: Path, info: dict) -> None:
    """model.onnx, the test (.npy) and sample (.tif) tensors, cover.png, README.md and rdf.yaml in ``folder``."""
    import yaml

    (folder / "model.onnx").write_bytes(proto.SerializeToString())
    raw = sample_image(info["tile_size"], info["channels"])
    expected = np.asarray(probability_fn(_float32(model), variables)(preprocess(raw).transpose(0, 2, 3, 1)))
    np.save(folder / "test_input.npy", raw)
    np.save(folder / "test_output.npy", expected.transpose(0, 3, 1, 2).astype(np.float32))
    tifffile.imwrite(folder / "sample_input.tif", raw[0], photometric="minisblack")
    tifffile.imwrite(folder / "sample_output.tif", expected[0].transpose(2, 0, 1).astype(np.float32),
                     photometric="minisblack")
    _write_cover(folder / "cover.png", preprocess(raw)[0], expected[0])
    (folder / "README.md").write_text(package_readme(info))
    rdf = bioimageio_rdf(info, {f.name: _sha256(f) for f in folder.iterdir()})
    (folder / "rdf.yaml").write_text(yaml.safe_dump(json.loads(json.dumps(rdf)), sort_keys=False))   # no aliases


def _float32(model: UNet) -> UNet:
    return model.clone(dtype=None) if model.dtype not in (None, jnp.float32) else model


def sample_image(tile: int, channels: int, seed: int = 0) -> np.ndarray:
    """A (1, C, tile, tile) float32 test input: smooth blobs on a background, 16-bit-like values (0..4000)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:tile, :tile].astype(np.float32)
    img = np.zeros((channels, tile, tile), np.float32)
    for _ in range(max(3, tile * tile // 400)):
        cy, cx, r = rng.uniform(0, tile), rng.uniform(0, tile), rng.uniform(3, 8)
        img += rng.uniform(0.5, 1.0, (channels, 1, 1)) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    img = 3000 * img / max(float(img.max()), 1e-6) + rng.normal(500, 50, img.shape)
    return np.clip(img, 0, 4000).astype(np.float32)[None]


def preprocess(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """The package's pre-processing of an (N, C, H, W) tensor: bioimage.io ``scale_range`` over (C, H, W) per
    sample at the ``PERCENTILES``, then ``clip`` to [0, 1] (``to_float_image`` of a non-8-bit image)."""
    lo = np.percentile(x, PERCENTILES[0], axis=(1, 2, 3), keepdims=True)
    hi = np.percentile(x, PERCENTILES[1], axis=(1, 2, 3), keepdims=True)
    return np.clip((x - lo) / (hi - lo + eps), 0.0, 1.0).astype(np.float32)


def _write_cover(path: Path, image: np.ndarray, probs: np.ndarray) -> None:
    """A 2:1 cover: the (C, T, T) input in grey beside the (O, O, K) foreground probability, centred."""
    import imageio.v3 as iio

    t, o = image.shape[-1], probs.shape[0]
    fg = np.zeros((t, t), np.float32)
    d = (t - o) // 2
    fg[d:d + o, d:d + o] = 1.0 - probs[..., 0]
    grey = np.concatenate([image.mean(axis=0), fg], axis=1)
    iio.imwrite(path, np.repeat((255 * np.clip(grey, 0, 1)).astype(np.uint8)[..., None], 3, axis=-1))


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _rdf_name(info: dict) -> str:
    allowed = set(string.ascii_letters + string.digits + "_+- ()")
    stem = Path(info["source"]).name if info.get("source") else "model"
    stem = "".join(c if c in allowed else "-" for c in stem)
    step = f" step {info['step']}" if info.get("step") is not None else ""
    return f"unet-jax U-Net {stem}{step}"[:64]


def bioimageio_rdf(info: dict, sha: dict) -> dict:
    """The rdf.yaml content (bioimage.io model spec ``BIOIMAGEIO_FORMAT``) for ``info`` (``model_info``) and the
    sha256 of the package files (``sha[file name]``)."""
    t, halo = info["tile_size"], info["halo"]
    space_in = [{"type": "space", "id": a, "size": t} for a in ("y", "x")]
    space_out = [{"type": "space", "id": a, "size": {"tensor_id": "input", "axis_id": a, "offset": -2 * halo}}
                 for a in ("y", "x")]
    channels = [f"channel{c}" for c in range(info["channels"])]
    return {
        "format_version": BIOIMAGEIO_FORMAT, "type": "model", "name": _rdf_name(info),
        "description": f"U-Net ({info['padding']} padding, depth {info['depth']}) trained with unet-jax: "
                       f"{info['classes']}-class softmax segmentation",
        "authors": [{"name": "unet-jax user (edit rdf.yaml)"}],
        "cite": [{"text": "Ronneberger, Fischer, Brox. U-Net: Convolutional Networks for Biomedical Image "
                          "Segmentation. MICCAI 2015", "doi": UNET_DOI}],
        "license": "Apache-2.0", "tags": ["unet", "segmentation", "2d", "onnx", "unet-jax"],
        "documentation": "README.md", "covers": ["cover.png"],
        "inputs": [{
            "id": "input", "description": "image, float32 (raw intensities; normalised by the preprocessing)",
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": channels}] + space_in,
            "test_tensor": {"source": "test_input.npy", "sha256": sha["test_input.npy"]},
            "sample_tensor": {"source": "sample_input.tif", "sha256": sha["sample_input.tif"]},
            "data": {"type": "float32"},
            "preprocessing": [
                {"id": "scale_range", "kwargs": {"axes": ["channel", "y", "x"], "min_percentile": PERCENTILES[0],
                                                 "max_percentile": PERCENTILES[1]}},
                {"id": "clip", "kwargs": {"min": 0.0, "max": 1.0}}],
        }],
        "outputs": [{
            "id": "output", "description": "softmax class probabilities",
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": info["class_names"]}] + space_out,
            "test_tensor": {"source": "test_output.npy", "sha256": sha["test_output.npy"]},
            "sample_tensor": {"source": "sample_output.tif", "sha256": sha["sample_output.tif"]},
            "data": {"type": "float32", "range": [0.0, 1.0]},
        }],
        "weights": {"onnx": {"source": "model.onnx", "sha256": sha["model.onnx"], "opset_version": OPSET}},
        "config": {"unet_jax": {k: v for k, v in info.items() if k != "source"}},
    }


def package_readme(info: dict) -> str:
    """README.md of the bioimage.io package: the network, its tiles and halo, the pre-processing, validation."""
    t, o, halo = info["tile_size"], info["output_size"], info["halo"]
    return f"""# U-Net (unet-jax)

U-Net of Ronneberger et al. (2015), {info['padding']} padding, depth {info['depth']}, {info['features']} features in
the first level, trained with unet-jax{'' if info.get('step') is None else f" (checkpoint step {info['step']})"}.

## Inputs and outputs

* input `input`: float32 (batch, channel, y, x) = (N, {info['channels']}, {t}, {t}); the ONNX model takes this fixed
  tile size (any batch size).
* output `output`: float32 softmax probabilities (N, {info['classes']}, {o}, {o}), channels
  {', '.join(info['class_names'])}.
* halo: {halo} pixels a side. {"The network uses no padding, so each output is the centre of its input tile: "
  f"mirror-pad an image by {halo} pixels and tile it with overlapping inputs." if halo else
  "SAME padding keeps the size; tile edges see zero padding, so overlap tiles."} {info['tiling']}.

## Pre-processing

Per image, over all pixels and channels: `(x - p{PERCENTILES[0]:g}) / (p{PERCENTILES[1]:g} - p{PERCENTILES[0]:g})`
clipped to [0, 1] (`scale_range` then `clip` in rdf.yaml). unet-jax itself divides 8-bit images by 255 instead
(and keeps float images already in [0, 1]); for 8-bit images the two agree only roughly.

## Validation

Validate on held-out annotated images of your own with `unet-jax evaluate --workdir WORKDIR` (pixel, Rand and
warping error, IoU). `test_input.npy` -> `test_output.npy` reproduces the JAX model's output (float32 rounding).
"""


def _zip_folder(folder: Path, path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f.name)


def _replace_folder(tmp: Path, output: Path, overwrite: bool) -> None:
    """Move the finished ``tmp`` folder to ``output``, replacing an existing one only with ``overwrite``."""
    os.chmod(tmp, 0o777 & ~_umask())          # mkdtemp makes 0700; give the folder the usual permissions
    if not (output.exists() or output.is_symlink()):
        os.replace(tmp, output)
        return
    if not overwrite:
        raise FileExistsError(f"--output {str(output)!r} already exists; choose another path or pass --overwrite")
    old = Path(tempfile.mkdtemp(prefix=f".{output.name}.old.", dir=output.parent))
    try:
        os.replace(output, old / "previous")
        try:
            os.replace(tmp, output)
        except BaseException:
            os.replace(old / "previous", output)      # put the previous export back
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


__all__ = ["FORMATS", "export_model", "export_network", "export_stablehlo", "onnx_model", "model_info",
           "probability_fn", "write_bioimageio", "bioimageio_rdf", "preprocess"]
