"""ONNX export: the network for one square tile (``onnx_model``), and the whole-image model of ``unet-jax
predict`` (``onnx_image_model``: any image size, the overlap-tile inference inside the graph), both NCHW float32,
opset 17, built from the parameters with the ``onnx`` helper API. Host-side.
"""
from __future__ import annotations

import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from unet_jax.checks import InvalidInputError
from unet_jax.export.common import import_onnx, log, model_info, tiling_hint
from unet_jax.model import NORMS, UNet
from unet_jax.tiling import blend_window, tile_grid

OPSET = 17
ONNX_IR_VERSION = 8               # the IR version of opset 17, readable by older runtimes
INT64_MAX = np.iinfo(np.int64).max


class _Graph:
    """Nodes and initializers of an ONNX graph being built; every node has one output, named as the node."""

    def __init__(self, onnx):
        self.onnx, self.nodes, self.initializers = onnx, [], []

    def const(self, name: str, value, dtype=np.float32) -> str:
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(value, dtype), name))
        return name

    def scalar(self, name: str, value, dtype=np.int64) -> str:
        """A 0-d constant (``const`` makes 1-d ones)."""
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(self, op_type: str, inputs, name: str, **attrs) -> str:
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
        return name


def check_onnx_supported(model: UNet) -> None:
    """ValueError naming a model setting the ONNX export does not support; a warning for bfloat16 compute."""
    if model.norm not in NORMS:
        raise InvalidInputError(f"ONNX export does not support model.norm={model.norm!r}; supported: {NORMS}")
    if model.upsample not in ("transpose", "bilinear"):
        raise InvalidInputError(f"ONNX export does not support model.upsample={model.upsample!r}; supported: "
                         f"'transpose', 'bilinear'")
    if model.padding not in ("VALID", "SAME"):
        raise InvalidInputError(f"ONNX export does not support model.padding={model.padding!r}")
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
                         ir_version=ONNX_IR_VERSION, doc_string=f"U-Net (unet-jax), NCHW, {tiling_hint(model, t, o)}")
    h.set_model_props(proto, {k: json.dumps(v) for k, v in info.items() if k not in ("source", "step")})
    onnx.checker.check_model(proto)
    return proto


def onnx_image_model(model: UNet, variables, tile_size: int):
    """``unet-jax predict``'s inference of whole images as an ``onnx.ModelProto``: NCHW float32 'input'
    (batch, C, H, W), any H, W >= 1 -> 'output' (batch, K, H, W) softmax probabilities.

    The graph does what ``unet_jax.tiling.predict_tiled`` does (``pad_mode='symmetric'``, no TTA): it mirrors the
    image beyond its borders, cuts ``tile_size`` tiles on ``tile_grid``'s grid, runs the network on one tile at a
    time (an ONNX Loop, so memory holds one tile's activations) and writes the tiles' outputs in row-major order
    (VALID) or blends them with the raised-cosine window (SAME). So it gives predict's probabilities up to float
    rounding, for any network predict runs (group norm, SAME padding included).
    """
    onnx = import_onnx()
    check_onnx_supported(model)
    info = model_info(model, variables, tile_size)
    grid = tile_grid((tile_size, tile_size), tile_size, depth=model.depth, padding=model.padding)
    variables = jax.device_get(variables)
    g = _Graph(onnx)
    c, k, t, o = info["channels"], info["classes"], grid.tile_size, grid.out_size
    shape = g.op("Shape", ["input"], "image/shape")
    size = {a: g.op("Gather", [shape, g.scalar(f"image/axis_{a}", i)], f"image/{a}", axis=0)
            for a, i in (("y", 2), ("x", 3))}
    index, count = {}, {}
    for a in ("y", "x"):
        index[a], count[a] = _tile_indices(g, a, size[a], grid)
    x = g.op("Gather", ["input", index["y"]], "tiles/rows", axis=2)                   # (N, C, ny, T, W)
    x = g.op("Gather", [x, index["x"]], "tiles/cols", axis=4)                         # (N, C, ny, T, nx, T)
    x = g.op("Transpose", [x], "tiles/nyx", perm=[0, 2, 4, 1, 3, 5])                  # (N, ny, nx, C, T, T)
    tiles = g.op("Reshape", [x, g.const("tiles/shape", [-1, c, t, t], np.int64)], "tiles")
    n = g.op("Gather", [g.op("Shape", [tiles], "tiles/shape_of"), g.scalar("tiles/axis0", 0)], "tiles/n", axis=0)
    probs = g.op("Loop", [n, ""], "tiles/probs", body=_tile_body(g, model, variables, tiles, t, k, o))
    one = {a: g.op("Unsqueeze", [count[a], g.const(f"grid/{a}/axes", [0], np.int64)], f"grid/{a}/n1")
           for a in ("y", "x")}
    p6 = g.op("Reshape", [probs, g.op("Concat", [g.const("grid/lead", [-1], np.int64), one["y"], one["x"],
                                                  g.const("grid/tail", [k, o, o], np.int64)], "grid/shape", axis=0)],
              "grid/probs")                                                              # (N, ny, nx, K, O, O)
    if grid.padding == "VALID":
        out = _stitch_valid(g, p6, grid)
    else:
        out = _blend_same(g, p6, grid, size, count)
    ends = g.op("Concat", [g.op("Unsqueeze", [size[a], g.const(f"crop/{a}/axes", [0], np.int64)], f"crop/{a}")
                           for a in ("y", "x")], "crop/ends", axis=0)
    g.op("Slice", [out, g.const("crop/starts", [0, 0], np.int64), ends, g.const("crop/axes", [2, 3], np.int64)],
         "output")
    h = onnx.helper
    graph = h.make_graph(
        g.nodes, "unet_image",
        [h.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", c, "height", "width"])],
        [h.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["batch", k, "height", "width"])],
        g.initializers)
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], producer_name="unet-jax",
                         ir_version=ONNX_IR_VERSION,
                         doc_string=f"U-Net (unet-jax), NCHW, whole images: the overlap-tile inference of "
                                    f"unet-jax predict inside ({t}-pixel tiles, {info['tiling']})")
    h.set_model_props(proto, {k: json.dumps(v) for k, v in info.items() if k not in ("source", "step")})
    onnx.checker.check_model(proto)
    return proto


def _tile_indices(g: _Graph, a: str, size: str, grid):
    """(rows of each tile as mirrored image indices (n, T) int64, tile count n) along one axis of ``size`` pixels:
    ``tile_grid``'s count and origins, ``mirror_indices(..., 'symmetric')``."""
    covered = grid.out_size if grid.padding == "VALID" else grid.tile_size - 2 * grid.overlap
    rest = g.op("Add", [size, g.scalar(f"grid/{a}/rest", grid.step - 1 - covered)], f"grid/{a}/rest_px")
    n = g.op("Add", [g.op("Max", [g.op("Div", [rest, g.scalar(f"grid/{a}/step", grid.step)], f"grid/{a}/more0"),
                                   g.scalar(f"grid/{a}/zero", 0)], f"grid/{a}/more"),
                     g.scalar(f"grid/{a}/one", 1)], f"grid/{a}/n")
    origins = g.op("Range", [g.scalar(f"grid/{a}/first", -grid.pad_before),
                             g.op("Sub", [g.op("Mul", [n, g.scalar(f"grid/{a}/step2", grid.step)], f"grid/{a}/span"),
                                          g.scalar(f"grid/{a}/pad", grid.pad_before)], f"grid/{a}/last"),
                             g.scalar(f"grid/{a}/step3", grid.step)], f"grid/{a}/origins")
    pos = g.op("Add", [g.op("Unsqueeze", [origins, g.const(f"grid/{a}/ax1", [1], np.int64)], f"grid/{a}/col"),
                       g.const(f"grid/{a}/offsets", np.arange(grid.tile_size)[None], np.int64)], f"grid/{a}/pos")
    period = g.op("Mul", [size, g.scalar(f"grid/{a}/two", 2)], f"grid/{a}/period")
    q = g.op("Mod", [pos, period], f"grid/{a}/q", fmod=0)
    mirrored = g.op("Sub", [g.op("Sub", [period, g.scalar(f"grid/{a}/one2", 1)], f"grid/{a}/p1"), q], f"grid/{a}/m")
    return g.op("Where", [g.op("GreaterOrEqual", [q, size], f"grid/{a}/beyond"), mirrored, q], f"grid/{a}/index"), n


def _tile_body(g: _Graph, model: UNet, variables, tiles: str, t: int, k: int, o: int):
    """The Loop body: tile ``i`` of ``tiles`` through the network -> (1, K, O, O) probabilities (scan output).
    Its constants (the weights) go into the main graph, which the body sees."""
    onnx = g.onnx
    body = _Graph(onnx)
    body.initializers = g.initializers
    x = body.op("Gather", [tiles, "i"], "tile/x", axis=0)                             # (C, T, T)
    x = body.op("Unsqueeze", [x, body.const("tile/axes", [0], np.int64)], "tile/batch")
    logits = _onnx_unet(body, model, variables, x, t)
    body.op("Softmax", [logits], "tile/probs", axis=1)
    body.op("Identity", ["cond"], "cond_out")
    h = onnx.helper
    return h.make_graph(body.nodes, "tile",
                        [h.make_tensor_value_info("i", onnx.TensorProto.INT64, []),
                         h.make_tensor_value_info("cond", onnx.TensorProto.BOOL, [])],
                        [h.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []),
                         h.make_tensor_value_info("tile/probs", onnx.TensorProto.FLOAT, [1, k, o, o])])


def _slice(g: _Graph, x: str, name: str, starts, ends, axes) -> str:
    return g.op("Slice", [x, g.const(f"{name}/s", starts, np.int64), g.const(f"{name}/e", ends, np.int64),
                          g.const(f"{name}/a", axes, np.int64)], name)


def _stitch_valid(g: _Graph, p6: str, grid) -> str:
    """(N, ny, nx, K, O, O) VALID tile outputs -> (N, K, >= H, >= W): as predict writes them, in row-major order,
    a later tile over an earlier one (tile k keeps its first ``step`` rows, the last tile all of its O)."""
    s, o = grid.step, grid.out_size
    rows = _slice(g, p6, "stitch/y/head", [0], [s], [4])                              # (N, ny, nx, K, S, O)
    rows = g.op("Transpose", [rows], "stitch/y/t", perm=[0, 2, 3, 1, 4, 5])            # (N, nx, K, ny, S, O)
    rows = g.op("Reshape", [rows, g.const("stitch/y/shape", [0, 0, 0, -1, o], np.int64)], "stitch/y/rows")
    if o > s:
        tail = _slice(g, p6, "stitch/y/tail", [-1, s], [INT64_MAX, o], [1, 4])        # (N, 1, nx, K, O-S, O)
        tail = g.op("Transpose", [tail], "stitch/y/tail_t", perm=[0, 2, 3, 1, 4, 5])
        tail = g.op("Reshape", [tail, g.const("stitch/y/tail_shape", [0, 0, 0, -1, o], np.int64)], "stitch/y/tr")
        rows = g.op("Concat", [rows, tail], "stitch/y", axis=3)                       # (N, nx, K, Y, O)
    cols = _slice(g, rows, "stitch/x/head", [0], [s], [4])                            # (N, nx, K, Y, S)
    cols = g.op("Transpose", [cols], "stitch/x/t", perm=[0, 2, 3, 1, 4])               # (N, K, Y, nx, S)
    cols = g.op("Reshape", [cols, g.const("stitch/x/shape", [0, 0, 0, -1], np.int64)], "stitch/x/cols")
    if o > s:
        tail = _slice(g, rows, "stitch/x/tail", [-1, s], [INT64_MAX, o], [1, 4])      # (N, 1, K, Y, O-S)
        tail = g.op("Transpose", [tail], "stitch/x/tail_t", perm=[0, 2, 3, 1, 4])
        tail = g.op("Reshape", [tail, g.const("stitch/x/tail_shape", [0, 0, 0, -1], np.int64)], "stitch/x/tr")
        cols = g.op("Concat", [cols, tail], "stitch/x", axis=3)
    return cols


def _overlap_add(g: _Graph, x: str, name: str, ndim: int, tile_axis: int, pixel_axis: int, step: int,
                 overlap: int) -> str:
    """Sum tiles that overlap by ``overlap`` pixels along ``pixel_axis`` (tiles indexed on ``tile_axis`` of an
    ``ndim``-d ``x``): segment k = tile k's first ``step`` pixels + tile k-1's last ``overlap`` (zero-padded to
    ``step``) -> n + 1 segments."""
    def pads(before: dict, after: dict, tag: str) -> str:
        return g.const(f"{name}/{tag}", [before.get(i, 0) for i in range(ndim)] +
                       [after.get(i, 0) for i in range(ndim)], np.int64)
    head = _slice(g, x, f"{name}/head", [0], [step], [pixel_axis])
    head = g.op("Pad", [head, pads({}, {tile_axis: 1}, "head_pads")], f"{name}/head_pad")
    tail = _slice(g, x, f"{name}/tail", [step], [INT64_MAX], [pixel_axis])
    tail = g.op("Pad", [tail, pads({tile_axis: 1}, {pixel_axis: step - overlap}, "tail_pads")], f"{name}/tail_pad")
    return g.op("Add", [head, tail], f"{name}/sum")


def _blend_same(g: _Graph, p6: str, grid, size: dict, count: dict) -> str:
    """(N, ny, nx, K, T, T) SAME tile outputs -> (N, K, H, W): each weighted by the raised-cosine window,
    accumulated where tiles overlap, divided by the summed windows (``predict_tiled``'s blending)."""
    t, s, ov, pad = grid.tile_size, grid.step, grid.overlap, grid.pad_before
    win = blend_window(t, ov).astype(np.float32)
    x = g.op("Mul", [p6, g.const("blend/window2", win[:, None] * win[None, :])], "blend/weighted")
    x = _overlap_add(g, x, "blend/y", 6, 1, 4, s, ov)                                    # (N, ny+1, nx, K, S, T)
    x = g.op("Transpose", [x], "blend/y/t", perm=[0, 2, 3, 1, 4, 5])
    x = g.op("Reshape", [x, g.const("blend/y/shape", [0, 0, 0, -1, t], np.int64)], "blend/y/rows")
    x = _crop_axis(g, x, "blend/y/crop", 3, pad, size["y"])                           # (N, nx, K, H, T)
    x = _overlap_add(g, x, "blend/x", 5, 1, 4, s, ov)                                    # (N, nx+1, K, H, S)
    x = g.op("Transpose", [x], "blend/x/t", perm=[0, 2, 3, 1, 4])
    x = g.op("Reshape", [x, g.const("blend/x/shape", [0, 0, 0, -1], np.int64)], "blend/x/cols")
    x = _crop_axis(g, x, "blend/x/crop", 3, pad, size["x"])                           # (N, K, H, W)
    sums = {}
    for a in ("y", "x"):
        n1 = g.op("Unsqueeze", [count[a], g.const(f"blend/{a}/w_axes", [0], np.int64)], f"blend/{a}/n1")
        w = g.op("Expand", [g.const(f"blend/{a}/w", win[None]), g.op("Concat", [
            n1, g.const(f"blend/{a}/tile", [t], np.int64)], f"blend/{a}/w_shape", axis=0)], f"blend/{a}/ws")
        w = _overlap_add(g, w, f"blend/{a}/wsum", 2, 0, 1, s, ov)                         # (n+1, S)
        w = g.op("Reshape", [w, g.const(f"blend/{a}/flat", [-1], np.int64)], f"blend/{a}/wflat")
        sums[a] = _crop_axis(g, w, f"blend/{a}/wcrop", 0, pad, size[a])               # (H,) or (W,)
    wy = g.op("Unsqueeze", [sums["y"], g.const("blend/wy_axes", [1], np.int64)], "blend/wy")
    return g.op("Div", [x, g.op("Mul", [wy, sums["x"]], "blend/w2")], "blend/out")


def _crop_axis(g: _Graph, x: str, name: str, axis: int, start: int, length: str) -> str:
    """``x[..., start:start + length, ...]`` along ``axis``, ``length`` a scalar int64 tensor."""
    end = g.op("Unsqueeze", [g.op("Add", [length, g.scalar(f"{name}/start0", start)], f"{name}/end0"),
                             g.const(f"{name}/ax", [0], np.int64)], f"{name}/end")
    return g.op("Slice", [x, g.const(f"{name}/s", [start], np.int64), end, g.const(f"{name}/a", [axis], np.int64)],
                name)


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
