"""Objects from a foreground probability, touching objects apart (host-side, NumPy): 'components' (4-connected
components of ``prob > threshold``), 'watershed' (seeded by the h-maxima of the smoothed distance transform),
'contours' and 'centres' (seeds from a three-class or distance-target network's interior map, grown over the
foreground). Labels are uint16 (uint32 past 65535 objects), as Fiji and napari read them."""
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
    """(H, W) uint16/uint32 labels of the objects of ``fg_prob`` (H, W) > ``threshold``, 0 = background.

    ``h``: the depth in distance-transform pixels a watershed peak needs to seed an object, after a Gaussian of
    ``smooth`` pixels; ``interior``: the seed map of 'contours' (P(interior)) and 'centres' (``centre_map``).
    Objects under ``min_size`` pixels or ``min_fraction`` of ``object_area`` (0: unknown) are dropped."""
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
