"""The paper's training target and pixel-wise loss weights (section 3, eq. 2), host-side (numpy/scipy), once per
label image when a data set is prepared: ``w(x) = w_c(x) + w0 exp(-(d1(x) + d2(x))^2 / (2 sigma^2))``, ``w_c``
balancing the classes, d1/d2 the distances to the nearest and second-nearest object. The border term lies on the
background carved between touching objects (``separation_border``)."""
from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy import ndimage as ndi

from unet_jax import checks
from unet_jax.checks import InvalidInputError

__all__ = ["instances_from_mask", "separation_border", "contour_classes", "distance_classes", "DISTANCE_BINS", "class_labels", "unet_weight_map", "unet_weight_map_reference"]

# The fast weight map drops border-term contributions smaller than this (absolute, in weight units); the
# difference to ``unet_weight_map_reference`` is therefore at most BORDER_TOL (plus float32 rounding).
BORDER_TOL = 1e-6

# 4-connectivity (a cross): cells separated by a 1-pixel membrane, diagonal ones included, stay apart.
_FOUR_CONNECTED = ndi.generate_binary_structure(2, 1)


# ----------------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------------

def _check_instances(instances) -> np.ndarray:
    """Return ``instances`` as a 2-D integer ndarray with values >= 0, or raise InvalidInputError naming it."""
    arr = np.asarray(instances)
    if arr.ndim != 2:
        raise InvalidInputError(f"instances must be a 2-D (H, W) integer array, got shape {arr.shape}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(f"instances must be an integer array (0 = background, 1..K = objects), got dtype "
                                f"{arr.dtype}; use instances_from_mask for a binary mask")
    if arr.size == 0:
        raise InvalidInputError(f"instances must not be empty, got shape {arr.shape}")
    if arr.min() < 0:
        raise InvalidInputError(f"instances must be >= 0 (0 = background), got minimum {arr.min()}")
    return arr


def check_class_weights(class_weights):
    """Validate ``class_weights`` ('balanced', None or {0: wb, 1: wf}); return 'balanced', None or a (wb, wf)
    float tuple. Raises InvalidInputError naming ``class_weights`` for anything else (host-side)."""
    if class_weights is None:
        return None
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise InvalidInputError(f"class_weights must be 'balanced', None or a mapping {{0: wb, 1: wf}}, "
                                    f"got {class_weights!r}")
        return "balanced"
    if isinstance(class_weights, Mapping):
        keys = set(class_weights.keys())
        if keys != {0, 1}:
            raise InvalidInputError(f"class_weights mapping must have exactly the keys 0 (background) and 1 (object), "
                                    f"got keys {sorted(keys, key=repr)}")
        out = []
        for k in (0, 1):
            v = class_weights[k]
            out.append(checks.real(f"class_weights[{k}]", v, 0.0))
        return tuple(out)
    raise InvalidInputError(f"class_weights must be 'balanced', None or a mapping {{0: wb, 1: wf}}, "
                            f"got {type(class_weights).__name__} {class_weights!r}")


def _check_all(instances, w0, sigma, class_weights):
    return (_check_instances(instances), checks.real("w0", w0, 0.0), checks.real("sigma", sigma, 0.0, low_open=True),
            check_class_weights(class_weights))


# ----------------------------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------------------------

def instances_from_mask(mask, foreground=None) -> np.ndarray:
    """int32 (H, W) instance labels of a binary ``mask`` by 4-connected components (8-connectivity would merge
    cells across a diagonal 1-pixel membrane). ``foreground`` None: cells are ``mask > max / 2`` (bool, 0/1, 0/255,
    0/65535, float and anti-aliased masks; the mask must be >= 0); a value: the pixels equal to it."""
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise InvalidInputError(f"mask must be a 2-D (H, W) array, got shape {arr.shape}")
    if arr.dtype != np.bool_ and not np.issubdtype(arr.dtype, np.number):
        raise InvalidInputError(f"mask must be a boolean or numeric array, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise InvalidInputError(f"mask must be real-valued, got dtype {arr.dtype}")
    if arr.size == 0:
        raise InvalidInputError(f"mask must not be empty, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise InvalidInputError("mask must not contain NaN or infinite values")
    if foreground is None:
        if arr.dtype == np.bool_:
            fg = arr
        else:
            lo, hi = arr.min(), arr.max()
            if lo < 0:
                raise InvalidInputError(f"mask must be >= 0 when foreground is None (threshold at half the maximum), "
                                        f"got minimum {lo}; pass foreground=<cell value>")
            fg = arr.astype(np.float64) > float(hi) / 2.0
    else:
        if isinstance(foreground, (str, bytes)) or not np.isscalar(foreground):
            raise InvalidInputError(f"foreground must be None or a scalar cell value, got {foreground!r}")
        fg = arr == foreground
    labels, _ = ndi.label(fg, structure=_FOUR_CONNECTED, output=np.int32)
    return labels


def separation_border(instances) -> np.ndarray:
    """bool (H, W): object pixels with a 4-neighbour in another object. The paper makes these background
    so touching objects stay apart in the target (a 2-pixel gap at straight contacts); pixels next to background
    are untouched."""
    inst = _check_instances(instances).astype(np.int64)
    top = np.iinfo(np.int64).max
    higher = ndi.grey_dilation(inst, footprint=_FOUR_CONNECTED, mode="nearest") > inst
    lower = ndi.grey_erosion(np.where(inst > 0, inst, top), footprint=_FOUR_CONNECTED, mode="nearest") < inst
    return (inst > 0) & (higher | lower)


CONTOUR_WIDTH = 2     # pixels of an object's outline that ``contour_classes`` marks as contour


def contour_classes(instances, width: int = CONTOUR_WIDTH) -> np.ndarray:
    """int32 (H, W) three-class target: 0 background, 1 interior, 2 contour (an object pixel within ``width``
    city-block steps of background or another object), so every object is outlined."""
    inst = _check_instances(instances).astype(np.int64)
    checks.integer("width", width, 1)
    footprint = ndi.iterate_structure(_FOUR_CONNECTED, width)
    same = ((ndi.grey_dilation(inst, footprint=footprint, mode="nearest") == inst)
            & (ndi.grey_erosion(inst, footprint=footprint, mode="nearest") == inst))
    return np.where(inst > 0, np.where(same, 1, 2), 0).astype(np.int32)


DISTANCE_BINS = 4     # object classes of ``distance_classes``: a ``data.target='distance'`` network has 1 + 4


def object_distance(instances) -> np.ndarray:
    """float32 (H, W): each object pixel's Euclidean distance to the nearest pixel outside its object (background
    or another object), divided by the largest such distance in the object; 0 on background. Host-side.

    The normalised distance is 1 at every object's centre and small along its outline, whatever the object's size,
    so touching objects are apart where it is low (StarDist's object probability is the same map)."""
    inst = _check_instances(instances)
    out = np.zeros(inst.shape, np.float32)
    for i, box in enumerate(ndi.find_objects(inst), start=1):
        if box is None:
            continue
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        own = np.pad(inst[box] == i, 1, mode="edge")   # an object cut by the image edge goes on beyond it
        dist = ndi.distance_transform_edt(own)[1:-1, 1:-1]
        top = dist.max()
        if top > 0:
            out[box] = np.where(inst[box] == i, dist / top, out[box])
    return out


def distance_classes(instances, bins: int = DISTANCE_BINS) -> np.ndarray:
    """int32 (H, W) ``data.target='distance'`` target: 0 background, k = 1..``bins`` where an object pixel's
    normalised distance to its edge (``object_distance``) lies in ((k-1)/bins, k/bins]; the top classes mark object
    centres, which ``unet_jax.instances`` seeds one object each from."""
    checks.integer("bins", bins, 2)
    d = object_distance(instances)
    return np.where(d > 0, np.clip(np.ceil(d * bins), 1, bins), 0).astype(np.int32)


def class_labels(instances, separate: bool = False) -> np.ndarray:
    """int32 (H, W) two-class map: 1 where ``instances > 0``, and with ``separate`` 0 on the
    ``separation_border``."""
    fg = _check_instances(instances) > 0
    if separate:
        fg &= ~separation_border(instances)
    return fg.astype(np.int32)


# ----------------------------------------------------------------------------------------------------------------
# Weight maps
# ----------------------------------------------------------------------------------------------------------------

def _class_weight_map(instances: np.ndarray, class_weights) -> np.ndarray:
    """w_c(x) as float64 (H, W) from checked ``instances`` and checked ``class_weights``."""
    fg = instances > 0
    if class_weights is None:
        return np.ones(instances.shape, np.float64)
    if class_weights == "balanced":
        n = fg.size
        n_fg = int(np.count_nonzero(fg))
        n_bg = n - n_fg
        present = int(n_fg > 0) + int(n_bg > 0)
        wf = n / (present * n_fg) if n_fg else 0.0
        wb = n / (present * n_bg) if n_bg else 0.0
    else:
        wb, wf = class_weights
    return np.where(fg, wf, wb).astype(np.float64)


def _border_radius(w0: float, sigma: float, tol: float = BORDER_TOL) -> float:
    """R such that w0 * exp(-s^2 / (2 sigma^2)) <= tol for every s >= R."""
    if w0 <= tol:
        return 0.0
    return sigma * math.sqrt(2.0 * math.log(w0 / tol))


def _two_nearest_sq_fast(instances: np.ndarray, radius: float):
    """Squared distances (H, W) to the nearest and second-nearest object, exact where d1 + d2 <= ``radius``
    (each object's feature transform computed only in its bounding box dilated by ceil(radius - 1)); elsewhere
    possibly larger than the truth, never smaller."""
    h, w = instances.shape
    lab = instances
    if lab.max() > lab.size:  # sparse huge ids: renumber so find_objects' list stays small
        _, inv = np.unique(lab, return_inverse=True)
        lab = inv.reshape(lab.shape)
        if instances.min() > 0:  # no background: ids start at 1 after renumbering
            lab = lab + 1
    dtype = np.int32 if (h - 1) ** 2 + (w - 1) ** 2 < np.iinfo(np.int32).max else np.int64
    unseen = np.iinfo(dtype).max
    d1 = np.full((h, w), unseen, dtype)
    d2 = np.full((h, w), unseen, dtype)
    rows = np.arange(h, dtype=dtype)[:, None]
    cols = np.arange(w, dtype=dtype)[None, :]
    r = max(int(math.ceil(radius - 1.0)), 0)
    for k, box in enumerate(ndi.find_objects(lab), start=1):
        if box is None:
            continue
        ys, xs = box
        y0, y1 = max(ys.start - r, 0), min(ys.stop + r, h)
        x0, x1 = max(xs.start - r, 0), min(xs.stop + r, w)
        # Nearest pixel of object k for every window pixel; squared distance in integers (no float round-off).
        ft = ndi.distance_transform_edt(lab[y0:y1, x0:x1] != k, return_distances=False, return_indices=True)
        dy = ft[0] - rows[: y1 - y0]  # ft holds window coordinates
        dx = ft[1] - cols[:, : x1 - x0]
        dk = dy * dy
        dk += dx * dx
        b1 = d1[y0:y1, x0:x1]
        b2 = d2[y0:y1, x0:x1]
        np.minimum(b2, np.maximum(b1, dk), out=b2)  # new second = min(old second, max(old first, new))
        np.minimum(b1, dk, out=b1)
    return d1, d2, unseen


def unet_weight_map(instances, w0: float = 10.0, sigma: float = 5.0, class_weights="balanced") -> np.ndarray:
    """The paper's weight map w(x) (eq. 2) of ``instances`` (H, W), float32 (H, W), fast (host-side).

    ``w0`` >= 0 (0: no border term), ``sigma`` > 0 pixels; ``class_weights`` 'balanced' (``N / (C n_class)``, mean
    1), None (1) or {0: wb, 1: wf}. Border terms below ``BORDER_TOL`` are dropped, so each object's distance
    transform is computed only in a window around it: about 30x faster than ``unet_weight_map_reference`` on an ISBI
    slice (benchmarks/weight_map.py), equal to within BORDER_TOL."""
    instances, w0, sigma, cw = _check_all(instances, w0, sigma, class_weights)
    weights = _class_weight_map(instances, cw)
    if w0 > 0:
        q1, q2, unseen = _two_nearest_sq_fast(instances, _border_radius(w0, sigma))
        bg = (instances == 0) & (q2 != unseen)  # q2 is unseen where fewer than 2 objects are near (or exist)
        s = np.sqrt(q1[bg], dtype=np.float64) + np.sqrt(q2[bg], dtype=np.float64)
        weights[bg] += w0 * np.exp(-(s * s) / (2.0 * sigma ** 2))
    return weights.astype(np.float32)


def unet_weight_map_reference(instances, w0: float = 10.0, sigma: float = 5.0,
                              class_weights="balanced") -> np.ndarray:
    """Brute-force ``unet_weight_map`` (one full-image distance transform per object, O(K H W)); same
    arguments and result, nothing dropped. For tests and benchmarks."""
    instances, w0, sigma, cw = _check_all(instances, w0, sigma, class_weights)
    weights = _class_weight_map(instances, cw)
    ids = np.unique(instances)
    ids = ids[ids != 0]
    if w0 > 0 and ids.size >= 2:
        d1 = np.full(instances.shape, np.inf)
        d2 = np.full(instances.shape, np.inf)
        for k in ids:
            d = ndi.distance_transform_edt(instances != k)
            d2 = np.where(d < d1, d1, np.minimum(d2, d))
            d1 = np.minimum(d1, d)
        bg = instances == 0
        weights = weights + np.where(bg, w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma ** 2)), 0.0)
    return weights.astype(np.float32)
