"""The U-Net network (paper section 2, figure 1) and its tile geometry.

Array conventions (used throughout unet_jax): images are NHWC float32 (values in [0, 1]), labels are int32
class maps of shape (N, H, W), logits are NHWC float32 with ``num_classes`` channels.

The paper network is ``UNet()`` with its defaults: a 572x572x1 input tile gives 388x388x2 logits through 23
convolution layers (18 valid 3x3 convolutions, 4 2x2 up-convolutions, 1 1x1 convolution) holding 31,030,658
parameters.

Formulations (``UNet.impl``)
----------------------------
``impl='plain'`` builds the network from the generic flax layers (``nn.Conv``, ``nn.max_pool``,
``nn.ConvTranspose``): the reference. ``impl='fast'`` (the default) has the same parameters (same tree, names and
shapes) and the same results to float rounding (``tests/test_model.py`` compares outputs and gradients), with
layers written for speed where the generic XLA ops are slow, measured on a 2-core AVX-512 CPU (``benchmarks/``):

* ``max_pool_2x2``: 2x2/stride-2 max-pool as a reshape and a max over two small axes (``reduce_window`` and its
  ``select_and_scatter`` gradient are slow on CPU).
* ``UpConv2x2``: the 2x2/stride-2 transposed convolution. Its windows do not overlap, so it is one matrix product
  (C_in -> 4 C_out) followed by a depth-to-space reshape.
* ``Conv3x3``: the 3x3 convolution + bias of ``ConvBlock``. With few input channels (``C_in <=
  SHIFT_MAX_CHANNELS``: the first layer, one channel in the paper) it is ``conv3x3_shift``: nine shifted
  multiply-adds that XLA fuses with the bias and ReLU into one pass over the image, and a custom VJP whose kernel
  gradient is a single (9 C_in, N H W) x (N H W, C_out) matrix product (the convolution library packs a 1-channel
  image badly: ~4x slower forward, ~3x slower fwd+bwd at features 16). Otherwise it is ``lax.conv_general_dilated``
  (XLA:CPU runs it with Eigen's spatial convolution once YNNPACK convolutions are off, see below), which
  per layer matched or beat the matrix-product formulations (9 shifted matmuls, im2col, row-im2col, and a
  "wide" product over the full width with shifted output sums): those spend more time moving 3-9 copies of
  the activations than they save.

XLA:CPU flags
-------------
Importing this module (and so ``unet_jax``) appends ``XLA_CPU_FLAGS`` to the ``XLA_FLAGS`` environment variable
when JAX has not started a backend yet. ``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`` leaves
convolutions to Eigen instead of YNNPACK (the default in jaxlib 0.10): per layer, YNNPACK's float32 3x3
convolutions and kernel-gradient convolutions ran 1.5-3x slower than Eigen's (train step at features 64: 1.9x
faster without them; at 16: 1.5x; see BENCHMARKS.md); YNNPACK keeps the matrix products, where it is a little
faster than Eigen.
The flag only affects XLA:CPU. It is not set when ``UNET_JAX_XLA_CPU_FLAGS=0`` (opt-out), when ``XLA_FLAGS``
already names ``xla_cpu_experimental_ynn_fusion_type`` (yours wins), or for jaxlib < 0.10 (flag unknown; an unknown
XLA flag aborts the process). ``xla_cpu_flags_applied()`` tells whether it is in effect.
"""
from __future__ import annotations

import importlib.metadata
import math
import os
import warnings
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

PADDINGS = ("VALID", "SAME")
NORMS = (None, "batch", "group")
UPSAMPLES = ("transpose", "bilinear")
IMPLS = ("fast", "plain")

# Up to this many input channels, ``Conv3x3`` uses ``conv3x3_shift`` in the fast formulation.
SHIFT_MAX_CHANNELS = 3

# He normal (paper: Gaussian with std sqrt(2/N), N = fan-in = k*k*C_in).
he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


# ----------------------------------------------------------------------------------------------------------------
# XLA:CPU flags (see the module docstring)
# ----------------------------------------------------------------------------------------------------------------

XLA_CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
XLA_CPU_FLAGS_ENV = "UNET_JAX_XLA_CPU_FLAGS"
_MIN_JAXLIB = (0, 10)
_xla_flags_state = {"applied": False}


def _jaxlib_version() -> tuple:
    try:
        return tuple(int(p) for p in importlib.metadata.version("jaxlib").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return (0, 0)


def _backends_started() -> bool:
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # private API moved: assume started, change nothing
        return True


def _apply_xla_cpu_flags() -> None:
    """Append ``XLA_CPU_FLAGS`` to ``$XLA_FLAGS`` (host-side, at import) unless opted out or not applicable."""
    if os.environ.get(XLA_CPU_FLAGS_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags:
        _xla_flags_state["applied"] = "-individual_convolution" in flags
        return
    if _jaxlib_version() < _MIN_JAXLIB:
        return
    if _backends_started():
        if jax.default_backend() == "cpu":
            warnings.warn(
                "unet_jax was imported after JAX started its CPU backend, so its XLA flag "
                f"{' '.join(XLA_CPU_FLAGS)} (1.5-2x faster CPU train steps) is not in effect; import unet_jax "
                f"before running JAX code, or set it in XLA_FLAGS yourself (silence: {XLA_CPU_FLAGS_ENV}=0)",
                stacklevel=3)
        return
    os.environ["XLA_FLAGS"] = " ".join([flags.strip(), *XLA_CPU_FLAGS]).strip()
    _xla_flags_state["applied"] = True


def xla_cpu_flags_applied() -> bool:
    """Whether ``XLA_CPU_FLAGS`` (convolutions on Eigen rather than YNNPACK) are in this process's ``XLA_FLAGS``."""
    return bool(_xla_flags_state["applied"])


_apply_xla_cpu_flags()


# ----------------------------------------------------------------------------------------------------------------
# Tile geometry
# ----------------------------------------------------------------------------------------------------------------

def _check_padding(padding: str) -> str:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    return padding


def _check_depth(depth: int) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    return depth


def _trace_valid(size: int, depth: int) -> Optional[int]:
    """Output size for VALID padding, or None where a pool sees an odd size or a size drops to <= 0."""
    s = size
    for _ in range(depth):
        s -= 4
        if s <= 0 or s % 2:
            return None
        s //= 2
    s -= 4
    if s <= 0:
        return None
    for _ in range(depth):
        s = 2 * s - 4
        if s <= 0:
            return None
    return s


def _min_bottom(depth: int) -> int:
    """Smallest bottleneck size b (after the bottom convs) for which every decoder level stays positive."""
    b = 1
    while _decoder_out(b, depth) is None:
        b += 1
    return b


def _decoder_out(b: int, depth: int) -> Optional[int]:
    s = b
    for _ in range(depth):
        s = 2 * s - 4
        if s <= 0:
            return None
    return s


def _valid_in_from_bottom(b: int, depth: int) -> int:
    # Inverse of the contracting path: before the bottom convs b + 4, then each level doubles and adds 4.
    s = b + 4
    for _ in range(depth):
        s = 2 * s + 4
    return s


def valid_input_sizes(depth: int = 4, upto: int = 4096):
    """All valid VALID-padding input sizes up to ``upto`` (for depth 4: 188, 204, ..., 572, ... = 16k + 12)."""
    _check_depth(depth)
    b = _min_bottom(depth)
    out = []
    while (s := _valid_in_from_bottom(b, depth)) <= upto:
        out.append(s)
        b += 1
    return out


def _nearest_valid(size: int, depth: int, padding: str) -> tuple:
    if padding == "SAME":
        m = 2 ** depth
        lo = max(m, (size // m) * m)
        return (lo, lo + m) if lo < size else (lo,)
    b = _min_bottom(depth)
    lo, hi = None, None
    while True:
        s = _valid_in_from_bottom(b, depth)
        if s < size:
            lo = s
        else:
            hi = s
            break
        b += 1
    return tuple(x for x in (lo, hi) if x is not None)


def output_size(size: int, depth: int = 4, padding: str = "VALID") -> int:
    """Spatial output size of the U-Net for a square (or one side of a) input tile.

    Parameters
    ----------
    size : int
        Input side length in pixels.
    depth : int
        Number of 2x2 max-pools (4 in the paper).
    padding : {'VALID', 'SAME'}
        Convolution padding. VALID is the paper's: each 3x3 conv trims 2 pixels.

    Returns
    -------
    int
        The output side length (388 for 572 with the paper's settings; ``size`` for SAME).

    Raises
    ------
    ValueError
        If any 2x2 max-pool would see an odd size (or the size becomes non-positive); the message names the
        nearest valid input sizes.
    """
    _check_padding(padding)
    _check_depth(depth)
    if isinstance(size, bool) or not isinstance(size, (int,)) and not hasattr(size, "__index__"):
        raise ValueError(f"size must be an integer, got {size!r}")
    size = int(size)
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if padding == "SAME":
        if size % (2 ** depth):
            raise ValueError(
                f"input size {size} is not valid for depth {depth} with SAME padding: it must be a multiple of "
                f"{2 ** depth}; nearest valid sizes: {_nearest_valid(size, depth, padding)}")
        return size
    out = _trace_valid(size, depth)
    if out is None:
        raise ValueError(
            f"input size {size} is not valid for depth {depth} with VALID padding: a 2x2 max-pool would see an "
            f"odd size or the output would be empty; nearest valid sizes: {_nearest_valid(size, depth, padding)}")
    return out


def valid_input_size(min_output: int, depth: int = 4, padding: str = "VALID") -> int:
    """Smallest valid input size whose output is at least ``min_output`` pixels (e.g. 388 -> 572)."""
    _check_padding(padding)
    _check_depth(depth)
    if isinstance(min_output, bool) or int(min_output) != min_output or min_output <= 0:
        raise ValueError(f"min_output must be a positive integer, got {min_output!r}")
    if padding == "SAME":
        m = 2 ** depth
        return -(-int(min_output) // m) * m
    b = _min_bottom(depth)
    while _decoder_out(b, depth) < min_output:
        b += 1
    return _valid_in_from_bottom(b, depth)


def border(depth: int = 4, padding: str = "VALID") -> int:
    """Context pixels lost on each side: (input - output) / 2; 92 for the paper network, 0 for SAME."""
    if _check_padding(padding) == "SAME":
        return 0
    s = valid_input_size(1, depth)
    return (s - output_size(s, depth)) // 2


# ----------------------------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------------------------

@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pool with stride 2 on NHWC ``x`` with even H and W: (N, H, W, C) -> (N, H/2, W/2, C).

    A reshape and a max over the two window axes. The custom VJP passes each window's output gradient to its
    first maximum in row-major window order, as ``nn.max_pool``'s gradient (``select_and_scatter``) does, in one
    fused pass (the gradient of ``max`` would split it between ties, through a mask, a count and a division).
    """
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _max_pool_fwd(x):
    y = max_pool_2x2(x)
    return y, (x, y)


def _max_pool_bwd(res, g):
    x, y = res
    n, h, w, c = x.shape
    x6 = x.reshape(n, h // 2, 2, w // 2, 2, c)
    taken = jnp.zeros(y.shape, bool)
    rows = []
    for i in range(2):
        cols = []
        for j in range(2):
            first = (x6[:, :, i, :, j, :] == y) & ~taken
            taken = taken | first
            cols.append(jnp.where(first, g, jnp.zeros_like(g)))
        rows.append(jnp.stack(cols, axis=3))                              # (N, H/2, W/2, 2, C)
    return (jnp.stack(rows, axis=2).reshape(x.shape),)                    # (N, H/2, 2, W/2, 2, C)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)


@jax.custom_vjp
def upconv2x2(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """2x2/stride-2 transposed convolution without bias as a matrix product and a depth-to-space reshape.

    Parameters
    ----------
    x : float array (N, H, W, C_in)
    kernel : float array (2, 2, C_in, C_out) in ``nn.ConvTranspose``'s convention, same dtype as ``x``

    Returns
    -------
    array (N, 2H, 2W, C_out) of ``x``'s dtype: output pixel (2h + i, 2w + j) is ``x[h, w] @ kernel[1-i, 1-j]``.

    The custom VJP rearranges the output gradient once, to (N H W, 4 C_out), for both gradient products (autodiff
    made two differently laid-out copies of it).
    """
    n, h, w, c_in = x.shape
    c_out = kernel.shape[-1]
    y = jnp.dot(x, _upconv_matrix(kernel)).reshape(n, h, w, 2, 2, c_out)
    return y.transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, c_out)


def _upconv_matrix(kernel):
    """(2, 2, C_in, C_out) ``nn.ConvTranspose`` kernel -> (C_in, 4 C_out) matrix, columns ordered (i, j, o)."""
    c_in, c_out = kernel.shape[2:]
    return kernel[::-1, ::-1].transpose(2, 0, 1, 3).reshape(c_in, 4 * c_out)


def _upconv_fwd(x, kernel):
    return upconv2x2(x, kernel), (x, kernel)


def _upconv_bwd(res, g):
    x, kernel = res
    n, h, w, c_in = x.shape
    c_out = kernel.shape[-1]
    g = g.reshape(n, h, 2, w, 2, c_out).transpose(0, 1, 3, 2, 4, 5).reshape(n * h * w, 4 * c_out)
    dx = jnp.dot(g, _upconv_matrix(kernel).T).reshape(x.shape)
    dk = jax.lax.dot_general(x.reshape(n * h * w, c_in), g, (((0,), (0,)), ((), ())))     # (C_in, 4 C_out)
    dk = dk.reshape(c_in, 2, 2, c_out).transpose(1, 2, 0, 3)[::-1, ::-1]
    return dx, dk.astype(kernel.dtype)


upconv2x2.defvjp(_upconv_fwd, _upconv_bwd)


class UpConv2x2(nn.Module):
    """2x2 up-convolution with stride 2 (transposed convolution): (N, H, W, C_in) -> (N, 2H, 2W, features).

    Same parameters and same result as ``flax.linen.ConvTranspose(features, (2, 2), strides=(2, 2),
    padding='VALID')``: ``kernel[1 - i, 1 - j, c, o]`` writes input pixel (h, w) to output pixel (2h + i, 2w + j).
    Computed by ``upconv2x2`` (its windows do not overlap, so it is one matrix product).
    """
    features: int
    dtype: Any = None
    kernel_init: Any = he_normal

    @nn.compact
    def __call__(self, x):
        c_in = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (2, 2, c_in, self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        dtype = self.dtype or x.dtype
        return upconv2x2(x.astype(dtype), kernel.astype(dtype)) + bias.astype(dtype)


def _conv_valid(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """VALID 3x3 (any k x k) convolution of NHWC ``x`` with an HWIO ``kernel`` (``lax.conv_general_dilated``)."""
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _shifted(x: jax.Array, kh: int, kw: int):
    """The kh*kw views ``x[:, i:i+h, j:j+w, :]`` (h = H-kh+1, w = W-kw+1) of NHWC ``x``, row-major in (i, j)."""
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    return [x[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)]


@jax.custom_vjp
def conv3x3_shift(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """VALID convolution as shifted multiply-adds, for few input channels (the paper's 1-channel first layer).

    Parameters
    ----------
    x : float array (N, H, W, C_in)
    kernel : float array (kh, kw, C_in, C_out), same dtype as ``x``

    Returns
    -------
    array (N, H - kh + 1, W - kw + 1, C_out) of ``x``'s dtype (accumulated in float32), equal to
    ``lax.conv_general_dilated(x, kernel, (1, 1), 'VALID')`` to float rounding.

    The forward is kh*kw*C_in broadcast multiply-adds that XLA fuses, with a following bias and ReLU, into one
    loop over the output. The custom VJP computes the kernel gradient as one matrix product of the (kh kw C_in,
    N h w) shifted views with the (N h w, C_out) output gradient (autodiff of the forward would make kh*kw*C_in
    reductions over the output) and the input gradient with ``lax``'s transposed convolution (dead code, removed
    by XLA, when ``x`` is the network input).
    """
    kh, kw, c_in, _ = kernel.shape
    k = kernel.astype(jnp.float32)
    views = _shifted(x, kh, kw)
    y = 0.0
    for t, v in enumerate(views):
        for c in range(c_in):
            y = y + v[..., c:c + 1].astype(jnp.float32) * k[t // kw, t % kw, c]
    return y.astype(x.dtype)


def _conv3x3_shift_fwd(x, kernel):
    return conv3x3_shift(x, kernel), (x, kernel)


def _conv3x3_shift_bwd(res, g):
    x, kernel = res
    kh, kw, c_in, c_out = kernel.shape
    patches = jnp.stack(_shifted(x, kh, kw), axis=0)                       # (kh kw, N, h, w, C_in)
    dk = jnp.einsum("tnhwc,nhwo->tco", patches, g.astype(x.dtype), preferred_element_type=jnp.float32)
    dk = dk.reshape(kh, kw, c_in, c_out).astype(kernel.dtype)
    dx = jax.vjp(lambda x_: _conv_valid(x_, kernel), x)[1](g)[0]
    return dx, dk


conv3x3_shift.defvjp(_conv3x3_shift_fwd, _conv3x3_shift_bwd)


class Conv3x3(nn.Module):
    """3x3 convolution with bias: (N, H, W, C_in) -> (N, H', W', features), H' = H - 2 (VALID) or H (SAME).

    Same parameters (``kernel`` (3, 3, C_in, features) and ``bias`` (features,), float32) and same result as
    ``flax.linen.Conv(features, (3, 3), padding=padding, kernel_init=he_normal)``. Computes in ``dtype`` (default:
    the promoted dtype of input and parameters, like ``nn.Conv``) with ``conv3x3_shift`` when ``C_in <=
    SHIFT_MAX_CHANNELS`` and ``lax.conv_general_dilated`` otherwise.
    """
    features: int
    padding: str = "VALID"
    dtype: Any = None
    kernel_init: Any = he_normal

    @nn.compact
    def __call__(self, x):
        c_in = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (3, 3, c_in, self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        dtype = self.dtype or jnp.result_type(x.dtype, kernel.dtype)
        x, kernel, bias = x.astype(dtype), kernel.astype(dtype), bias.astype(dtype)
        if self.padding == "SAME":
            x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        y = conv3x3_shift(x, kernel) if c_in <= SHIFT_MAX_CHANNELS else _conv_valid(x, kernel)
        return y + bias


def center_crop_to(x: jax.Array, h: int, w: int) -> jax.Array:
    """Centre crop NHWC ``x`` to (h, w) ("copy and crop" of figure 1)."""
    dh, dw = (x.shape[1] - h) // 2, (x.shape[2] - w) // 2
    return x[:, dh:dh + h, dw:dw + w, :]


class ConvBlock(nn.Module):
    """Two 3x3 convolutions, each followed by optional normalisation and ReLU (``Conv3x3`` or, with
    ``impl='plain'``, ``nn.Conv``; both are named ``Conv_0`` and ``Conv_1``)."""
    features: int
    padding: str = "VALID"
    norm: Optional[str] = None
    dtype: Any = None
    impl: str = "fast"

    @nn.compact
    def __call__(self, x, train: bool):
        for i in range(2):
            if self.impl == "fast":
                x = Conv3x3(self.features, self.padding, dtype=self.dtype, name=f"Conv_{i}")(x)
            else:
                x = nn.Conv(self.features, (3, 3), padding=self.padding, kernel_init=he_normal,
                            dtype=self.dtype, param_dtype=jnp.float32)(x)
            if self.norm == "batch":
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                                 param_dtype=jnp.float32)(x)
            elif self.norm == "group":
                x = nn.GroupNorm(num_groups=math.gcd(32, self.features), dtype=self.dtype,
                                 param_dtype=jnp.float32)(x)
            x = nn.relu(x)
        return x


class UNet(nn.Module):
    """U-Net of Ronneberger et al. (2015), figure 1.

    Attributes
    ----------
    num_classes : int
        Output channels of the final 1x1 convolution (2: membrane/background = 0, cell = 1).
    features : int
        Channels of the first level (64 in the paper); level k has ``features * 2**k``.
    depth : int
        Number of 2x2 max-pools (4 in the paper).
    padding : {'VALID', 'SAME'}
        'VALID' is the paper's unpadded network (572 -> 388); 'SAME' keeps the size (a multiple of 2**depth).
    dropout_rate : float
        Drop-out "at the end of the contracting path": applied, when ``train=True``, to the output of the deepest
        contracting level (before its pool; this map also feeds the deepest skip connection) and to the
        bottleneck output, as in the authors' released Caffe model.
    norm : {None, 'batch', 'group'}
        Normalisation after each 3x3 convolution (the paper uses none).
    upsample : {'transpose', 'bilinear'}
        'transpose' is the paper's 2x2 up-convolution; 'bilinear' resizes by 2 and applies a 1x1 convolution that
        halves the channels.
    dtype : dtype or None
        Compute dtype (e.g. ``jnp.bfloat16`` for mixed precision); parameters stay float32, logits are float32.
    impl : {'fast', 'plain'}
        'fast' uses the layers written for speed (``Conv3x3``, ``max_pool_2x2``, ``UpConv2x2``; see the module
        docstring); 'plain' the generic flax layers (``nn.Conv``, ``nn.max_pool``, ``nn.ConvTranspose``). Same
        parameters, same results (to float rounding).

    ``model.apply(variables, x, train=False)`` maps (N, H, W, C_in) float input to (N, H', W', num_classes)
    float32 logits, H' = ``output_size(H, depth, padding)``. With ``train=True`` pass ``rngs={'dropout': key}``
    (when ``dropout_rate > 0``) and, with ``norm='batch'``, ``mutable=['batch_stats']``.
    """
    num_classes: int = 2
    features: int = 64
    depth: int = 4
    padding: str = "VALID"
    dropout_rate: float = 0.5
    norm: Optional[str] = None
    upsample: str = "transpose"
    dtype: Any = None
    impl: str = "fast"

    def _check(self, x):
        _check_padding(self.padding)
        _check_depth(self.depth)
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {self.impl!r}")
        if self.upsample not in UPSAMPLES:
            raise ValueError(f"upsample must be one of {UPSAMPLES}, got {self.upsample!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
        if x.ndim != 4:
            raise ValueError(f"x must be NHWC (4 dimensions), got shape {tuple(x.shape)}")
        output_size(x.shape[1], self.depth, self.padding)
        output_size(x.shape[2], self.depth, self.padding)

    @nn.compact
    def __call__(self, x, train: bool = False):
        self._check(x)
        x = x.astype(self.dtype or jnp.float32)
        skips = []
        for level in range(self.depth):
            x = ConvBlock(self.features * 2 ** level, self.padding, self.norm, self.dtype, self.impl,
                          name=f"down_{level}")(x, train)
            if level == self.depth - 1 and self.dropout_rate > 0:
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            skips.append(x)
            x = max_pool_2x2(x) if self.impl == "fast" else nn.max_pool(x, (2, 2), strides=(2, 2))
        x = ConvBlock(self.features * 2 ** self.depth, self.padding, self.norm, self.dtype, self.impl,
                      name="bottom")(x, train)
        if self.dropout_rate > 0:
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        for level in reversed(range(self.depth)):
            f = self.features * 2 ** level
            if self.upsample == "transpose" and self.impl == "fast":
                x = UpConv2x2(f, dtype=self.dtype, name=f"upconv_{level}")(x)
            elif self.upsample == "transpose":
                x = nn.ConvTranspose(f, (2, 2), strides=(2, 2), padding="VALID", kernel_init=he_normal,
                                     dtype=self.dtype, param_dtype=jnp.float32, name=f"upconv_{level}")(x)
            else:
                n, h, w, c = x.shape
                x = jax.image.resize(x, (n, 2 * h, 2 * w, c), "bilinear")
                x = nn.Conv(f, (1, 1), kernel_init=he_normal, dtype=self.dtype, param_dtype=jnp.float32,
                            name=f"upconv_{level}")(x)
            skip = center_crop_to(skips[level], x.shape[1], x.shape[2])
            x = jnp.concatenate([skip.astype(x.dtype), x], axis=-1)
            x = ConvBlock(f, self.padding, self.norm, self.dtype, self.impl, name=f"up_{level}")(x, train)
        x = nn.Conv(self.num_classes, (1, 1), kernel_init=he_normal, dtype=self.dtype, param_dtype=jnp.float32,
                    name="head")(x)
        return x.astype(jnp.float32)


def count_params(params) -> int:
    """Total number of parameters in a parameter pytree."""
    return int(sum(p.size for p in jax.tree_util.tree_leaves(params)))


def count_convs(params) -> int:
    """Number of convolution kernels (4-D ``kernel`` leaves) in a parameter pytree."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return sum(1 for path, p in flat if getattr(path[-1], "key", None) == "kernel" and p.ndim == 4)


def unet_flops(size: int, features: int = 64, depth: int = 4, in_channels: int = 1, num_classes: int = 2,
               padding: str = "VALID") -> int:
    """Forward-pass FLOPs (2 per multiply-add, convolutions only) of the network on one ``size``-square tile."""
    flops = 0
    s = size
    c = in_channels

    def conv3(s, c_in, c_out):
        o = s - 2 if padding == "VALID" else s
        return o, 2 * o * o * 9 * c_in * c_out

    for level in range(depth):
        f = features * 2 ** level
        s, fl = conv3(s, c, f); flops += fl
        s, fl = conv3(s, f, f); flops += fl
        c = f
        s //= 2
    f = features * 2 ** depth
    s, fl = conv3(s, c, f); flops += fl
    s, fl = conv3(s, f, f); flops += fl
    c = f
    for level in reversed(range(depth)):
        f = features * 2 ** level
        flops += 2 * s * s * c * 4 * f
        s *= 2
        s, fl = conv3(s, 2 * f, f); flops += fl
        s, fl = conv3(s, f, f); flops += fl
        c = f
    flops += 2 * s * s * c * num_classes
    return flops
