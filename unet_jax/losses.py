"""The training energy (paper section 3): pixel-wise softmax with a per-pixel weighted cross-entropy; and the
soft Dice term that the own-data recipe adds to it (not in the paper).

Pure jax.numpy; runs inside the jit-compiled train step.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from unet_jax.checks import InvalidInputError


def center_crop(x: jax.Array, size, axes=(1, 2)) -> jax.Array:
    """Centre-crop the two spatial ``axes`` of ``x`` to ``size`` (int or (h, w), at most the input's); an odd
    excess leaves the extra pixel at the end."""
    if isinstance(size, int):
        size = (size, size)
    th, tw = (int(s) for s in size)
    a0, a1 = (a % x.ndim for a in axes)
    h, w = x.shape[a0], x.shape[a1]
    if th > h or tw > w or th <= 0 or tw <= 0:
        raise InvalidInputError(f"size must be positive and at most the input's spatial shape {(h, w)}, got {(th, tw)}")
    idx = [slice(None)] * x.ndim
    idx[a0] = slice((h - th) // 2, (h - th) // 2 + th)
    idx[a1] = slice((w - tw) // 2, (w - tw) // 2 + tw)
    return x[tuple(idx)]


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Pixel-wise softmax cross-entropy: (N, H, W, K) float logits, (N, H, W) int labels -> (N, H, W) float32."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def weighted_softmax_cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None
                                   ) -> jax.Array:
    """The paper's energy (eq. 1) as a weighted mean: ``sum_x w(x) CE(x) / sum_x w(x)`` over every pixel
    of the batch, so its scale does not depend on tile, batch or weight scale (0 if all weights are 0; plain mean for
    ``weights=None``). Labels and weights larger than the (N, H, W, K) logits are centre-cropped to them."""
    if logits.ndim != 4:
        raise InvalidInputError(f"logits must be (N, H, W, K), got shape {tuple(logits.shape)}")
    if labels.ndim != 3:
        raise InvalidInputError(f"labels must be (N, H, W), got shape {tuple(labels.shape)}")
    size = logits.shape[1:3]
    labels = center_crop(labels, size)
    ce = pixel_cross_entropy(logits, labels)
    if weights is None:
        return ce.mean()
    if weights.shape != labels.shape and weights.ndim != 3:
        raise InvalidInputError(f"weights must be (N, H, W), got shape {tuple(weights.shape)}")
    weights = center_crop(weights, size).astype(jnp.float32)
    total = weights.sum()
    return jnp.where(total > 0, (weights * ce).sum() / jnp.where(total > 0, total, 1.0), 0.0)


def soft_dice_loss(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None,
                   smooth: float = 1e-5) -> jax.Array:
    """1 - the soft Dice coefficient of the foreground classes k >= 1, per image, averaged over images and
    classes (background left out, as nnU-Net and MONAI do). Unlike the cross-entropy it weighs a small foreground's
    overlap as a whole. Pixels where ``mask <= 0`` are left out; ``smooth`` is added above and below."""
    if logits.ndim != 4 or logits.shape[-1] < 2:
        raise InvalidInputError(f"logits must be (N, H, W, K) with K >= 2, got shape {tuple(logits.shape)}")
    size = logits.shape[1:3]
    labels = center_crop(labels, size)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., 1:]
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)[..., 1:]
    if mask is not None:
        keep = (center_crop(mask, size) > 0).astype(jnp.float32)[..., None]
        probs, onehot = probs * keep, onehot * keep
    inter = (probs * onehot).sum(axis=(1, 2))
    denom = probs.sum(axis=(1, 2)) + onehot.sum(axis=(1, 2))
    return 1.0 - ((2.0 * inter + smooth) / (denom + smooth)).mean()
