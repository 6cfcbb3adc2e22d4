"""Objects from a foreground probability: one label per object, touching objects apart (host-side, NumPy).

``'components'``: the 4-connected components of ``prob > threshold`` (touching objects merge).
``'watershed'``: a seeded watershed of the foreground's distance transform (smoothed by a Gaussian of ``smooth``
pixels, so ragged outlines do not seed objects of their own), one seed per h-maximum (a peak that rises ``h``
pixels above every saddle to a higher peak), so two touching round objects joined by a neck at least ``h`` pixels
narrower than either's radius come out apart. ``'contours'``, for a network trained on three classes (background,
interior, contour; ``unet_jax.weights.contour_classes``): one seed per 4-connected component of
``interior > 0.5``, grown over the foreground by a watershed of the interior probability. ``'centres'``, for a
network trained on ``data.target='distance'`` (``unet_jax.weights.distance_classes``): the same, seeded where the
predicted normalised distance to the object's edge exceeds 0.5 (each object's centre, however large or small the
object), grown over the foreground by a watershed of that distance. Labels are uint16
(uint32 past 65535 objects), as Fiji and napari read them.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from unet_jax import checks
from unet_jax.checks import InvalidInputError

__all__ = ["INSTANCE_METHODS", "label_instances", "as_label_dtype"]

INSTANCE_METHODS = ("components", "watershed", "contours", "centres")
_FOUR = ndi.generate_binary_structure(2, 1)


def as_label_dtype(labels) -> np.ndarray:
    """Instance labels as uint16, or uint32 when they hold more than 65535 objects."""
    labels = np.asarray(labels)
    top = int(labels.max()) if labels.size else 0
    return labels.astype(np.uint16 if top <= np.iinfo(np.uint16).max else np.uint32)


def label_instances(fg_prob, threshold: float = 0.5, method: str = "watershed", h: float = 2.0,
                    min_size: int = 0, smooth: float = 2.0, interior=None, min_fraction: float = 0.0,
                    object_area: float = 0.0) -> np.ndarray:
    """One label per object of a foreground probability map.

    Parameters
    ----------
    fg_prob : float array (H, W) in [0, 1]
        P(foreground), e.g. ``predict_probabilities(...)[..., 1]``.
    threshold : float in [0, 1)
        Foreground is ``fg_prob > threshold``.
    method : 'watershed', 'components', 'contours' or 'centres' (both need ``interior``)
    h : float > 0
        Watershed only: the depth, in pixels of the distance transform, a peak needs to seed its own object.
    min_size : int >= 0
        Objects of fewer pixels are removed (0 keeps all).
    min_fraction : float in [0, 1)
        Objects smaller than this fraction of ``object_area`` are removed (specks and fragments; 0 keeps all).
    object_area : float >= 0
        The typical object's area in pixels, e.g. the median of the annotated training objects (``eval.object_area``,
        learned by ``train``); 0 = unknown, and ``min_fraction`` is not applied.
    smooth : float >= 0
        Watershed only: sigma in pixels of the Gaussian applied to the distance transform (0: none).
    interior : float array (H, W) in [0, 1] or None
        The seed map: 'contours', P(object interior) of a three-class network (``probs[..., 1]``); 'centres', the
        predicted normalised distance to the object's edge (``unet_jax.inference.centre_map``).

    Returns
    -------
    (H, W) uint16 (or uint32) labels, 0 = background, objects numbered 1..N.
    """
    prob = np.asarray(fg_prob)
    if prob.ndim != 2 or not np.issubdtype(prob.dtype, np.floating):
        raise InvalidInputError(f"fg_prob must be a 2-D float array, got {prob.dtype} of shape {prob.shape}")
    checks.one_of("method", method, INSTANCE_METHODS)
    checks.real("h", h, 0.0, low_open=True)
    checks.real("smooth", smooth, 0.0)
    checks.integer("min_size", min_size, 0)
    checks.real("min_fraction", min_fraction, 0.0, 1.0, high_open=True)
    checks.real("object_area", object_area, 0.0)
    fg = np.nan_to_num(prob) > threshold
    if method in ("contours", "centres"):
        inner = np.nan_to_num(np.asarray(interior if interior is not None else np.nan, np.float64))
        if interior is None or inner.shape != prob.shape:
            raise InvalidInputError(f"method {method!r} needs interior, a seed map of the shape of fg_prob "
                                    f"{prob.shape}, got {None if interior is None else inner.shape}")
        markers = ndi.label(fg & (inner > 0.5), structure=_FOUR)[0]
        labels = _keep_unseeded(fg, watershed(-inner, markers, mask=fg))    # foreground without an interior
    elif method == "components":
        labels = ndi.label(fg, structure=_FOUR)[0]
    else:
        dist = ndi.distance_transform_edt(fg)
        if smooth:
            dist = ndi.gaussian_filter(dist, smooth) * fg
        markers = ndi.label(h_maxima(dist, h), structure=np.ones((3, 3), bool))[0]
        labels = _keep_unseeded(fg, watershed(-dist, markers, mask=fg))    # thinner than h: no h-maximum
    sizes = np.bincount(labels.ravel())
    cut = max(float(min_size), min_fraction * float(object_area))
    if cut:
        labels = np.where(sizes[labels] >= cut, labels, 0)
    labels = _relabel(labels)
    return as_label_dtype(labels)


def _keep_unseeded(fg: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``labels`` with each 4-connected component of the foreground that no seed reached as an object of its own."""
    missed = fg & (labels == 0)
    if not missed.any():
        return labels
    extra = ndi.label(missed, structure=_FOUR)[0]
    return np.where(missed, extra + labels.max(), labels)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Number the objects 1..N consecutively (in the order of their old ids)."""
    ids, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    return inverse if ids[0] == 0 else inverse + 1
