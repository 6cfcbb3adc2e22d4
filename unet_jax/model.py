"""The U-Net network of the paper (section 2, figure 1): ``ConvBlock`` and ``UNet``, and parameter counting.

``UNet()`` with its defaults is the paper network: a (N, 572, 572, 1) float input tile gives (N, 388, 388, 2)
float32 logits through 23 convolution layers (18 valid 3x3 convolutions, 4 2x2 up-convolutions, 1 1x1
convolution) holding 31,030,658 float32 parameters. Tile sizes: ``unet_jax.geometry``; the 3x3 convolution,
max-pool and up-convolution layers: ``unet_jax.layers``.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from unet_jax import checks
from unet_jax.checks import InvalidInputError
from unet_jax.geometry import PADDINGS, output_size, valid_input_size
from unet_jax.layers import Conv3x3, UpConv2x2, he_normal, max_pool_2x2

NORMS = (None, "batch", "group")
UPSAMPLES = ("transpose", "bilinear")
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}   # config.DTYPES


def center_crop_to(x: jax.Array, h: int, w: int) -> jax.Array:
    """Centre crop NHWC ``x`` to (h, w) ("copy and crop" of figure 1)."""
    dh, dw = (x.shape[1] - h) // 2, (x.shape[2] - w) // 2
    return x[:, dh:dh + h, dw:dw + w, :]


class ConvBlock(nn.Module):
    """Two 3x3 convolutions (``Conv3x3``, named ``Conv_0`` and ``Conv_1``), each followed by optional
    normalisation and ReLU."""
    features: int
    padding: str = "VALID"
    norm: Optional[str] = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        for i in range(2):
            x = Conv3x3(self.features, self.padding, dtype=self.dtype, name=f"Conv_{i}")(x)
            if self.norm == "batch":
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                                 param_dtype=jnp.float32)(x)
            elif self.norm == "group":
                x = nn.GroupNorm(num_groups=math.gcd(32, self.features), dtype=self.dtype,
                                 param_dtype=jnp.float32)(x)
            x = nn.relu(x)
        return x


class UNet(nn.Module):
    """U-Net of Ronneberger et al. (2015), figure 1: (N, H, W, C) input to (N, H', W', num_classes) float32
    logits, H' = ``output_size(H, depth, padding)``.

    ``features`` channels at the first level (doubling per level), ``depth`` 2x2 max-pools; 'VALID' padding is the
    paper's (572 -> 388), 'SAME' keeps the size. Dropout, as in the authors' Caffe model, acts on the deepest
    contracting level's output and the bottleneck's. ``norm`` (None, 'batch', 'group') follows each 3x3
    convolution; ``upsample`` 'transpose' is the paper's 2x2 up-convolution, 'bilinear' a resize and a 1x1
    convolution. ``dtype`` is the compute dtype (parameters stay float32). Training: ``rngs={'dropout': key}`` and,
    with batch norm, ``mutable=['batch_stats']``.
    """
    num_classes: int = 2
    features: int = 64
    depth: int = 4
    padding: str = "VALID"
    dropout_rate: float = 0.5
    norm: Optional[str] = None
    upsample: str = "transpose"
    dtype: Any = None

    def _check(self, x):
        checks.one_of("padding", self.padding, PADDINGS)
        checks.integer("depth", self.depth, 1)
        checks.one_of("norm", self.norm, NORMS)
        checks.one_of("upsample", self.upsample, UPSAMPLES)
        if not 0.0 <= self.dropout_rate < 1.0:
            raise InvalidInputError(f"dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
        if x.ndim != 4:
            raise InvalidInputError(f"x must be NHWC (4 dimensions), got shape {tuple(x.shape)}")
        output_size(x.shape[1], self.depth, self.padding)
        output_size(x.shape[2], self.depth, self.padding)

    @nn.compact
    def __call__(self, x, train: bool = False):
        self._check(x)
        x = x.astype(self.dtype or jnp.float32)
        skips = []
        for level in range(self.depth):
            x = ConvBlock(self.features * 2 ** level, self.padding, self.norm, self.dtype,
                          name=f"down_{level}")(x, train)
            if level == self.depth - 1 and self.dropout_rate > 0:
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            skips.append(x)
            x = max_pool_2x2(x)
        x = ConvBlock(self.features * 2 ** self.depth, self.padding, self.norm, self.dtype, name="bottom")(x, train)
        if self.dropout_rate > 0:
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        for level in reversed(range(self.depth)):
            f = self.features * 2 ** level
            if self.upsample == "transpose":
                x = UpConv2x2(f, dtype=self.dtype, name=f"upconv_{level}")(x)
            else:
                n, h, w, c = x.shape
                x = jax.image.resize(x, (n, 2 * h, 2 * w, c), "bilinear")
                x = nn.Conv(f, (1, 1), kernel_init=he_normal, dtype=self.dtype, param_dtype=jnp.float32,
                            name=f"upconv_{level}")(x)
            skip = center_crop_to(skips[level], x.shape[1], x.shape[2])
            x = jnp.concatenate([skip.astype(x.dtype), x], axis=-1)
            x = ConvBlock(f, self.padding, self.norm, self.dtype, name=f"up_{level}")(x, train)
        x = nn.Conv(self.num_classes, (1, 1), kernel_init=he_normal, dtype=self.dtype, param_dtype=jnp.float32,
                    name="head")(x)
        return x.astype(jnp.float32)


def create_model(config) -> UNet:
    """The ``UNet`` of a validated experiment config's ``model`` section ('' norm: none)."""
    m = config.model
    return UNet(num_classes=m.num_classes, features=m.features, depth=m.depth, padding=m.padding,
                dropout_rate=m.dropout_rate, norm=m.norm or None, upsample=m.upsample, dtype=COMPUTE_DTYPES[m.dtype])


def count_params(params) -> int:
    """Total number of parameters in a parameter pytree."""
    return int(sum(p.size for p in jax.tree_util.tree_leaves(params)))


def count_convs(params) -> int:
    """Number of convolution kernels (4-D ``kernel`` leaves) in a parameter pytree."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return sum(1 for path, p in flat if getattr(path[-1], "key", None) == "kernel" and p.ndim == 4)


def fields_of(params) -> dict:
    """The ``UNet`` fields a parameter tree was made with (``features``, ``depth``, ``num_classes``, ``norm``,
    ``upsample``) and its ``input_channels``, read from the shapes and names of its layers. Host-side."""
    first = params["down_0"]["Conv_0"]["kernel"]                        # (3, 3, C_in, features)
    norm = next((n for n, layer in (("batch", "BatchNorm_0"), ("group", "GroupNorm_0")) if layer in params["down_0"]),
                None)
    up = params["upconv_0"]["kernel"] if "upconv_0" in params else None   # (2, 2, ...) transpose, (1, 1, ...) not
    return {"features": int(first.shape[-1]), "depth": sum(1 for name in params if name.startswith("down_")),
            "num_classes": int(params["head"]["kernel"].shape[-1]), "norm": norm,
            "upsample": "transpose" if up is None or up.shape[0] == 2 else "bilinear",
            "input_channels": int(first.shape[2])}


def check_params(model: UNet, params, what: str = "the config") -> None:
    """Check that ``params`` (e.g. restored from a checkpoint) fit ``model``: the same layers of the same shapes.

    Raises InvalidInputError naming the model fields that differ ("model.features is 8 there, 4 in the
    checkpoint"), rather than a shape error from deep inside the first forward pass.
    """
    try:
        have = fields_of(params)
    except (KeyError, TypeError, IndexError, AttributeError):
        raise InvalidInputError("the checkpoint does not hold U-Net parameters (no down_0/Conv_0 and head "
                                "layers)") from None
    size = valid_input_size(1, model.depth, model.padding)      # parameters do not depend on the tile size
    x = jnp.zeros((1, size, size, have["input_channels"]), jnp.float32)
    want = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))["params"]
    shapes = lambda tree: {jax.tree_util.keystr(k): tuple(v.shape)   # noqa: E731
                           for k, v in jax.tree_util.tree_leaves_with_path(tree)}
    if shapes(want) == shapes(params):
        return
    mine = {"features": model.features, "depth": model.depth, "num_classes": model.num_classes, "norm": model.norm,
            "upsample": model.upsample}
    differ = [f"model.{k} is {mine[k]!r} there, {have[k]!r} in the checkpoint" for k in mine if mine[k] != have[k]]
    raise InvalidInputError(f"{what} does not fit the checkpoint: " + ("; ".join(differ) if differ else
                     "its layers' shapes differ"))
