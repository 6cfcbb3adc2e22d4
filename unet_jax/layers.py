"""The U-Net's layers written for XLA:CPU speed, each equal to its flax/lax counterpart to float rounding
(tests/test_layers.py; BENCHMARKS.md): ``max_pool_2x2``, ``upconv2x2`` / ``UpConv2x2`` (one matrix product and a
depth-to-space reshape) and ``conv3x3_shift`` / ``Conv3x3`` (shifted multiply-adds for few input channels,
``lax.conv_general_dilated`` otherwise). NHWC activations in the compute dtype; float32 parameters."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Up to this many input channels, ``Conv3x3`` uses ``conv3x3_shift``.
SHIFT_MAX_CHANNELS = 3

# He normal (paper: Gaussian with std sqrt(2/N), N = fan-in = k*k*C_in).
he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


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
    """(N, H, W, C_in) -> (N, 2H, 2W, C_out): a 2x2/stride-2 transposed convolution without bias (kernel as
    ``nn.ConvTranspose``'s) as one matrix product and a depth-to-space reshape; the custom VJP rearranges the output
    gradient once for both gradient products."""
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
    """VALID convolution as kh*kw*C_in shifted multiply-adds that XLA fuses with bias and ReLU, for few input
    channels (the paper's first layer); equal to ``lax.conv_general_dilated`` to rounding. The custom VJP takes the
    kernel gradient as one matrix product of the shifted views and the input gradient by lax's transposed
    convolution."""
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
