"""The training target and its pixel-wise loss weights (paper section 3, eq. 2). Host-side (numpy/scipy), computed
once per label image when a data set is prepared:

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

``w_c`` balances the class frequencies, ``d1``/``d2`` are the distances to the nearest and second-nearest object;
the border term lies on background pixels, so the separation borders carved between touching objects
(``separation_border``) are expensive to get wrong. ``unet_weight_map_reference`` is the brute-force version
the tests compare with.
"""
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
    """Instance labels from a binary mask by 4-connected components. Host-side (scipy.ndimage.label).

    Parameters
    ----------
    mask : array (H, W), bool or any real dtype
        A binary segmentation such as an ISBI 2012 label slice (cells white = 255, membranes black = 0).
        Accepted encodings: bool, 0/1, 0/255 (uint8), 0/65535 (uint16), float, and anti-aliased masks with grey
        values at the edges.
    foreground : scalar or None
        ``None`` (default): cells are the bright pixels, ``mask > max(mask) / 2`` (threshold at half the
        maximum, so 0/1, 0/255, 0/65535, bool and anti-aliased masks all work; a mask that is all 0 has no
        cells). The mask must then be >= 0. Given a value, cells are the pixels exactly equal to it, e.g.
        ``foreground=0`` for an inverted mask whose cells are black.

    Returns
    -------
    int32 array (H, W): 0 = background (membrane), 1..K = the connected cell regions, numbered in raster order.

    Notes
    -----
    Connectivity is 4 (edge neighbours only). ISBI membranes are 1 pixel thick and often run diagonally; two
    cells on either side of a diagonal 1-pixel membrane touch at their corners, so 8-connectivity would merge
    them into one object.

    Examples
    --------
    >>> m = np.array([[255, 0, 255], [255, 0, 255]], np.uint8)
    >>> instances_from_mask(m)
    array([[1, 0, 2],
           [1, 0, 2]], dtype=int32)
    """
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
    """bool (H, W): the pixels of an object with a 4-neighbour in another object. Host-side.

    Where annotated objects touch, the paper's training target has a background border between them ("the
    separation border is computed using morphological operations"), which its weight map then makes expensive to
    get wrong; without it touching objects form one foreground blob and the network cannot learn to split them.
    Carving these pixels leaves a 2-pixel gap at straight contacts (objects touching only diagonally are already
    4-disconnected). Pixels next to background are not touched.

    Parameters
    ----------
    instances : integer array (H, W), values >= 0 (0 = background)
    """
    inst = _check_instances(instances).astype(np.int64)
    top = np.iinfo(np.int64).max
    higher = ndi.grey_dilation(inst, footprint=_FOUR_CONNECTED, mode="nearest") > inst
    lower = ndi.grey_erosion(np.where(inst > 0, inst, top), footprint=_FOUR_CONNECTED, mode="nearest") < inst
    return (inst > 0) & (higher | lower)


CONTOUR_WIDTH = 2     # pixels of an object's outline that ``contour_classes`` marks as contour


def contour_classes(instances, width: int = CONTOUR_WIDTH) -> np.ndarray:
    """Three-class target of instance labels: int32 (H, W), 0 = background, 1 = object interior, 2 = contour.

    A pixel of an object is contour when a pixel within ``width`` steps of it (4-connected, city-block
    distance) belongs to the background or to another object: a ``width``-pixel outline along every object's
    edge, so touching objects are kept apart by two outlines that a network learns on every object, not only
    where objects touch. Objects thinner than about ``2 * width`` are all contour. Host-side.
    """
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
    """The ``data.target='distance'`` target: int32 (H, W), 0 = background, k = 1..``bins`` where an object
    pixel's normalised distance to its object's edge (``object_distance``) lies in ((k-1)/bins, k/bins].
    Host-side.

    A softmax over these classes learns where each object's centre is (the top classes) as well as the
    foreground (any class but 0); ``unet_jax.instances`` seeds one object per predicted centre, so touching
    objects come apart even where no background pixel separates them."""
    checks.integer("bins", bins, 2)
    d = object_distance(instances)
    return np.where(d > 0, np.clip(np.ceil(d * bins), 1, bins), 0).astype(np.int32)


def class_labels(instances, separate: bool = False) -> np.ndarray:
    """Class map for training: int32 (H, W), 1 where ``instances > 0`` (cell), 0 elsewhere. Host-side.

    Parameters
    ----------
    instances : integer array (H, W), values >= 0 (0 = background)
    separate : also 0 on the ``separation_border`` between touching objects
    """
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
    """Squared distances (int (H, W) each) to the nearest and second-nearest object, exact where it matters.

    A background pixel is at least 1 from every object, so an object can be the nearest or the second-nearest
    one of a pixel with d1 + d2 <= ``radius`` only if it lies within ``radius - 1`` of that pixel. Each object's
    Euclidean feature transform is therefore computed only in its bounding box dilated by ceil(radius - 1): the
    object lies wholly inside that window and so does every pixel within ``radius - 1`` of it, so the window
    transform is exact there. The two smallest squared distances are kept as running minima (integers, exact).
    Where the true d1 + d2 > ``radius`` the result may be larger than the truth (ignored objects, or the
    integer maximum where fewer than two objects were seen); never smaller.
    """
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
    """The paper's weight map w(x) (eq. 2), fast. Host-side (numpy/scipy).

    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))``, the border term on background pixels only.

    Parameters
    ----------
    instances : integer array (H, W)
        Instance labels, 0 = background (membrane), every other value one object (a label may cover several
        disconnected regions; the distance to it is the distance to its nearest pixel). E.g. from
        ``instances_from_mask``.
    w0 : float >= 0
        Border weight (paper: 10). 0 disables the border term.
    sigma : float > 0
        Border width in pixels (paper: about 5).
    class_weights : 'balanced', None or mapping {0: wb, 1: wf}
        w_c, the class-balancing term. ``'balanced'``: inverse class frequency, ``w_c = N / (C * n_class)``
        with N pixels, n_class the pixels of the pixel's class (background = instance 0, foreground = any
        object) and C the number of classes present (1 or 2); w_c then averages exactly 1 over the image
        and the rarer class gets the larger weight. ``None``: w_c = 1 everywhere. A mapping: background pixels get
        ``wb``, object pixels ``wf`` (finite, >= 0).

    Returns
    -------
    float32 array (H, W).

    Notes
    -----
    Agrees with ``unet_weight_map_reference`` to within ``BORDER_TOL`` (1e-6) plus float32 rounding: border
    contributions below 1e-6 are dropped, i.e. where d1 + d2 > R = sigma * sqrt(2 ln(w0 / 1e-6)) (28.4 px for
    the paper's w0 = 10, sigma = 5). As a background pixel is at least 1 px from any object, only objects within
    R - 1 of a pixel can matter there, so every object's Euclidean distance (feature) transform is computed only
    in its bounding box dilated by R - 1 instead of over the whole image; the two smallest squared distances per
    pixel are kept as exact integer running minima. On a 512x512 ISBI slice (~130 cells) the windows add up to
    about 5 image areas instead of ~130, and this runs about 30 times faster than the reference
    (``benchmarks/weight_map.py``).

    Examples
    --------
    >>> inst = np.zeros((8, 9), np.int32); inst[:, :4] = 1; inst[:, 5:] = 2  # a 1-pixel gap at column 4
    >>> w = unet_weight_map(inst, class_weights=None)
    >>> bool(np.isclose(w[0, 4], 1 + 10 * np.exp(-(1 + 1) ** 2 / (2 * 5.0 ** 2))))
    True
    """
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
    """Brute-force reference for ``unet_weight_map`` (slow: one full-image EDT per object). Host-side.

    For every object k, ``scipy.ndimage.distance_transform_edt(instances != k)`` over the whole image gives the
    distance of every pixel to k; per pixel the two smallest of these are d1 and d2. Same parameters, checks,
    class weights and float32 (H, W) result as ``unet_weight_map``; it drops nothing, and costs
    O(K * H * W) (about 2 s for a 512x512 ISBI slice with ~130 cells). Meant for tests and benchmarks.
    """
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
