"""The training energy (paper section 3): pixel-wise softmax with a per-pixel weighted cross-entropy; and the
soft Dice term that the own-data recipe adds to it (not in the paper).

Pure jax.numpy; runs inside the jit-compiled train step.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from unet_jax.checks import InvalidInputError


def center_crop(x: jax.Array, size, axes=(1, 2)) -> jax.Array:
    """Centre-crop the two spatial ``axes`` of ``x`` to ``size``.

    Parameters
    ----------
    x : array
        E.g. labels (N, H, W), weights (N, H, W) or logits/images (N, H, W, C) (default ``axes=(1, 2)``);
        use ``axes=(0, 1)`` for unbatched (H, W[, C]) arrays.
    size : int or (int, int)
        Target (height, width); must not exceed the input's.

    Returns
    -------
    array of the same dtype, cropped to ``size`` on ``axes``; an odd excess leaves the extra pixel at the end.
    """
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
    """Weighted mean of the pixel-wise softmax cross-entropy (the paper's energy, eq. 1).

    ``loss = sum_x w(x) * CE(x) / sum_x w(x)``, summed over every pixel of every image in the batch. Normalising
    by the total weight makes the loss a weighted *mean* (its scale does not depend on the tile size, batch or the
    overall scale of w); zero-weight pixels do not contribute at all. With ``weights=None`` it is the plain mean.

    Parameters
    ----------
    logits : float array (N, H, W, K)
    labels : int array (N, H', W') with class indices in [0, K); H' >= H, W' >= W
    weights : float array (N, H', W') or None
        Labels and weights larger than the logits (a VALID-padding network sees a border its output lacks) are
        centre-cropped to the logits' size with ``center_crop``.

    Returns
    -------
    float32 scalar. If all weights are zero the loss is 0.
    """
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
    """One minus the soft Dice coefficient of the foreground classes, per image, averaged over images and classes.

    ``dice_k(n) = (2 sum_x p_k(x) [y(x) = k] + smooth) / (sum_x p_k(x) + sum_x [y(x) = k] + smooth)`` over the
    pixels x of image n (softmax probabilities p), for every class k >= 1 (background is left out, as in
    nnU-Net and MONAI's ``include_background=False``); the loss is ``1 - mean_{n,k} dice_k(n)``. Unlike the
    cross-entropy, whose gradient a rare class barely moves, the Dice term weighs the foreground's overlap as a
    whole, however small its area. Per image (not pooled over the batch), so the mean over devices equals the
    loss of the global batch.

    Parameters
    ----------
    logits : float array (N, H, W, K), K >= 2
    labels : int array (N, H', W'); H' >= H, W' >= W (centre-cropped like ``weighted_softmax_cross_entropy``)
    mask : float or bool array (N, H', W') or None
        Pixels where ``mask <= 0`` are left out (e.g. the zero weights of mirrored extensions).
    smooth : float
        Added to numerator and denominator: an image without the class and without predicted class scores ~1.

    Returns
    -------
    float32 scalar in [0, 1].
    """
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
