"""The reference U-Net built from the generic flax layers (``nn.Conv``, ``nn.max_pool``, ``nn.ConvTranspose``).

``PlainUNet`` has ``unet_jax.model.UNet``'s fields, checks and parameter tree, with the layers of ``unet_jax.layers``
replaced by their generic counterparts: the fast network must match its outputs and gradients to float rounding
(tests/test_model.py), and ``benchmarks/train_step.py --impl plain`` times it as the baseline.
"""
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from unet_jax.layers import he_normal
from unet_jax.model import UNet, center_crop_to


class PlainConvBlock(nn.Module):
    """``unet_jax.model.ConvBlock`` with ``nn.Conv`` (auto-named ``Conv_0``, ``Conv_1``) for ``Conv3x3``."""
    features: int
    padding: str = "VALID"
    norm: Optional[str] = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool):
        for _ in range(2):
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


class PlainUNet(UNet):
    """``UNet`` (same fields and checks) computed with ``nn.Conv``, ``nn.max_pool`` and ``nn.ConvTranspose``."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        self._check(x)
        x = x.astype(self.dtype or jnp.float32)
        skips = []
        for level in range(self.depth):
            x = PlainConvBlock(self.features * 2 ** level, self.padding, self.norm, self.dtype,
                               name=f"down_{level}")(x, train)
            if level == self.depth - 1 and self.dropout_rate > 0:
                x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
            skips.append(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = PlainConvBlock(self.features * 2 ** self.depth, self.padding, self.norm, self.dtype,
                           name="bottom")(x, train)
        if self.dropout_rate > 0:
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        for level in reversed(range(self.depth)):
            f = self.features * 2 ** level
            if self.upsample == "transpose":
                x = nn.ConvTranspose(f, (2, 2), strides=(2, 2), padding="VALID", kernel_init=he_normal,
                                     dtype=self.dtype, param_dtype=jnp.float32, name=f"upconv_{level}")(x)
            else:
                n, h, w, c = x.shape
                x = jax.image.resize(x, (n, 2 * h, 2 * w, c), "bilinear")
                x = nn.Conv(f, (1, 1), kernel_init=he_normal, dtype=self.dtype, param_dtype=jnp.float32,
                            name=f"upconv_{level}")(x)
            skip = center_crop_to(skips[level], x.shape[1], x.shape[2])
            x = jnp.concatenate([skip.astype(x.dtype), x], axis=-1)
            x = PlainConvBlock(f, self.padding, self.norm, self.dtype, name=f"up_{level}")(x, train)
        x = nn.Conv(self.num_classes, (1, 1), kernel_init=he_normal, dtype=self.dtype, param_dtype=jnp.float32,
                    name="head")(x)
        return x.astype(jnp.float32)
