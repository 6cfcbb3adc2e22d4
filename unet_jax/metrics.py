"""Evaluation metrics of the paper's experiments (section 4): ISBI 2012 EM and ISBI cell tracking.

Host-side (numpy, scipy, scikit-image); nothing here runs inside jit.

Conventions
-----------
* Predictions are ``cell_prob``: float (H, W) in [0, 1], the softmax probability of class 1 = cell (channel 1 of
  ``unet_jax.tiling.predict_tiled``'s output). The membrane (boundary) probability is ``1 - cell_prob``; a
  threshold t on ``cell_prob`` is the threshold 1 - t on the membrane probability the challenge thresholds.
* A thresholded prediction is the boolean cell mask ``cell_prob > t``; its instances are the 4-connected
  components of that mask (membranes, label 0, are 8-connected: the (4, 8) connectivity pair of digital topology,
  so a one-pixel-wide diagonal membrane separates two cells).
* Ground truth ``truth`` is int (H, W) with cells > 0 and membranes/background 0: either instance labels
  (1..K, e.g. Cell Tracking Challenge masks) or a binary mask (bool, or a single non-zero value, e.g. the ISBI
  2012 labels 255 = cell, 0 = membrane), which ``truth_instances`` turns into 4-connected components.
* Where the challenge takes an optimum over thresholds (``*_sweep`` functions), the sweep runs over
  ``thresholds`` of ``cell_prob`` (default ``DEFAULT_THRESHOLDS`` = 0.1, 0.2, ..., 0.9) and returns the best
  value and its threshold.

Metrics (all errors: lower is better)
-------------------------------------
* pixel error: ``pixel_mismatch`` is the fraction of wrongly classified pixels (the squared Euclidean distance of the
  binary maps, normalised); ``pixel_error_sweep`` is the challenge's "1 - maximal F-score of pixel similarity",
  the F-score of the cell class.
* Rand error: 1 - the maximal foreground-restricted Rand F-score (``skimage.metrics.adapted_rand_error``, ground
  truth label 0 ignored; predicted membrane pixels inside true cells count as one more predicted segment).
* variation of information (``skimage.metrics.variation_of_information``, foreground-restricted the same way):
  split part H(pred | truth) (over-segmentation), merge part H(truth | pred) (under-segmentation), in bits.
* warping error (Jain et al. 2010): the thresholded prediction is warped toward the truth by flipping simple
  points only; what still differs is a topological error (``warping_error``).
* IoU of the cell class and the Cell Tracking Challenge SEG measure (``seg_measure``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.metrics import adapted_rand_error, contingency_table, variation_of_information

__all__ = ["DEFAULT_THRESHOLDS", "truth_instances", "label_cells", "pixel_mismatch", "pixel_fscore",
           "pixel_error_sweep", "rand_error", "rand_error_sweep", "vi", "vi_sweep", "simple_point_lut",
           "warp_to_truth", "warping_error", "iou", "seg_measure", "evaluate_slice"]

DEFAULT_THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(1, 10))

_FOUR = ndi.generate_binary_structure(2, 1)
_EIGHT = ndi.generate_binary_structure(2, 2)


# ----------------------------------------------------------------------------------------------------------------
# Input checks and conversions
# ----------------------------------------------------------------------------------------------------------------

def _check_2d(name, x, shape=None):
    x = np.asarray(x)
    if x.ndim != 2 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (H, W) array, got shape {x.shape}")
    if shape is not None and x.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} (like the other input), got {x.shape}")
    if not (x.dtype == bool or np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"{name} must be a real numeric or boolean array, got dtype {x.dtype}")
    return x


def _check_prob(cell_prob):
    p = _check_2d("cell_prob", cell_prob)
    if not np.issubdtype(p.dtype, np.floating):
        raise ValueError(f"cell_prob must be a float array of probabilities in [0, 1], got dtype {p.dtype}")
    if not (np.all(np.isfinite(p)) and p.min() >= 0.0 and p.max() <= 1.0):
        raise ValueError(f"cell_prob must hold probabilities in [0, 1], got values in [{p.min()}, {p.max()}]")
    return p


def _check_thresholds(thresholds):
    t = np.asarray(thresholds, dtype=np.float64).ravel()
    if t.size == 0 or not np.all((t >= 0.0) & (t < 1.0)):
        raise ValueError(f"thresholds must be a non-empty sequence of values in [0, 1), got {thresholds!r}")
    return t


def _check_labels(name, x, shape=None):
    x = _check_2d(name, x, shape)
    if x.dtype == bool:
        return x
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{name} must be an integer or boolean label image, got dtype {x.dtype}")
    if x.size and x.min() < 0:
        raise ValueError(f"{name} must be non-negative (0 = membrane/background, > 0 = cells), got min {x.min()}")
    return x


def truth_instances(truth) -> np.ndarray:
    """Ground truth as instance labels (host-side).

    Parameters
    ----------
    truth : int or bool array (H, W)
        Instance labels (cells 1..K, 0 = membrane/background), or a binary mask (bool, or one single non-zero
        value such as the ISBI 2012 labels 255 = cell / 0 = membrane).

    Returns
    -------
    int32 array (H, W)
        ``truth`` itself when it holds two or more distinct non-zero labels; otherwise the 4-connected components
        of ``truth > 0``.
    """
    truth = _check_labels("truth", truth)
    nonzero = np.unique(truth[truth > 0]) if truth.dtype != bool else np.array([1])
    if truth.dtype == bool or nonzero.size <= 1:
        return ndi.label(truth > 0, structure=_FOUR)[0].astype(np.int32)
    return truth.astype(np.int32)


def label_cells(cell_mask) -> np.ndarray:
    """Instances of a binary cell mask: 4-connected components, int32 (H, W), 0 = membrane (host-side)."""
    cell_mask = _check_labels("cell_mask", cell_mask)
    return ndi.label(cell_mask > 0, structure=_FOUR)[0].astype(np.int32)


# ----------------------------------------------------------------------------------------------------------------
# Pixel error
# ----------------------------------------------------------------------------------------------------------------

def pixel_mismatch(pred_binary, truth_binary) -> float:
    """Fraction of pixels whose class differs (host-side).

    Parameters
    ----------
    pred_binary, truth_binary : bool or int arrays (H, W)
        Cells are the non-zero pixels.

    Returns
    -------
    float in [0, 1]: ``mean(pred != truth)``, the normalised squared Euclidean distance of the binary maps.
    """
    p = _check_labels("pred_binary", pred_binary) > 0
    t = _check_labels("truth_binary", truth_binary, p.shape) > 0
    return float(np.mean(p != t))


def pixel_fscore(pred_binary, truth_binary) -> float:
    """F-score (Dice) of the cell class, 2 TP / (2 TP + FP + FN); 1.0 when both maps are empty (host-side)."""
    p = _check_labels("pred_binary", pred_binary) > 0
    t = _check_labels("truth_binary", truth_binary, p.shape) > 0
    tp = np.count_nonzero(p & t)
    denom = 2 * tp + np.count_nonzero(p != t)
    return 1.0 if denom == 0 else float(2 * tp / denom)


def pixel_error_sweep(cell_prob, truth_binary, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict:
    """The ISBI 2012 pixel error: 1 - the maximal F-score of pixel similarity over thresholds (host-side).

    Parameters
    ----------
    cell_prob : float array (H, W) in [0, 1]
        P(cell); thresholded as ``cell_prob > t``.
    truth_binary : bool or int array (H, W)
        Cells non-zero.
    thresholds : sequence of float in [0, 1)

    Returns
    -------
    dict
        ``pixel_error`` (1 - max F), ``threshold`` (where the maximum is; the first on ties), ``fscores`` and
        ``mismatch`` (fraction of wrong pixels) per threshold as float64 arrays.
    """
    p = _check_prob(cell_prob)
    t = _check_labels("truth_binary", truth_binary, p.shape) > 0
    ths = _check_thresholds(thresholds)
    fs = np.array([pixel_fscore(p > th, t) for th in ths])
    mismatch = np.array([np.mean((p > th) != t) for th in ths])
    best = int(np.argmax(fs))
    return dict(pixel_error=float(1.0 - fs[best]), threshold=float(ths[best]), fscores=fs, mismatch=mismatch)


# ----------------------------------------------------------------------------------------------------------------
# Rand error and variation of information
# ----------------------------------------------------------------------------------------------------------------

def _table(truth_inst, pred_inst):
    return contingency_table(truth_inst, pred_inst, ignore_labels=[0], sparse_type="array")


def rand_error(pred_instances, truth_instances_) -> dict:
    """Foreground-restricted adapted Rand error of one segmentation (host-side).

    Parameters
    ----------
    pred_instances : int array (H, W)
        Predicted segments (0 = membrane; it counts as one more segment where the truth is a cell).
    truth_instances_ : int array (H, W)
        True instances; pixels with truth 0 are ignored.

    Returns
    -------
    dict with ``rand_error`` = 1 - Rand F-score, ``precision`` and ``recall`` as returned by
    ``skimage.metrics.adapted_rand_error``.
    """
    pred = _check_labels("pred_instances", pred_instances).astype(np.int64)
    truth = _check_labels("truth_instances", truth_instances_, pred.shape).astype(np.int64)
    err, prec, rec = adapted_rand_error(truth, pred, ignore_labels=(0,))
    return dict(rand_error=float(err), precision=float(prec), recall=float(rec))


def vi(pred_instances, truth_instances_) -> dict:
    """Foreground-restricted variation of information, in bits (host-side).

    Returns
    -------
    dict with ``vi`` = ``vi_split`` + ``vi_merge``; ``vi_split`` = H(pred | truth) (false splits),
    ``vi_merge`` = H(truth | pred) (false merges), from ``skimage.metrics.variation_of_information`` with truth
    label 0 ignored.
    """
    pred = _check_labels("pred_instances", pred_instances).astype(np.int64)
    truth = _check_labels("truth_instances", truth_instances_, pred.shape).astype(np.int64)
    split, merge = variation_of_information(truth, pred, ignore_labels=(0,))
    return dict(vi=float(split + merge), vi_split=float(split), vi_merge=float(merge))


def _segmentation_sweep(p, truth_inst, ths):
    """Rand (error, precision, recall) and VI (split, merge) per threshold, sharing one contingency table."""
    truth = truth_inst.astype(np.int64)
    rand, vis = [], []
    for th in ths:
        pred = label_cells(p > th).astype(np.int64)
        table = _table(truth, pred)
        rand.append(adapted_rand_error(table=table))
        total = table.sum()
        if total > 0:
            vis.append(variation_of_information(truth, pred, table=table / total))
        else:
            vis.append(np.zeros(2))
    return np.asarray(rand, np.float64), np.asarray(vis, np.float64)


def rand_error_sweep(cell_prob, truth, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict:
    """The ISBI 2012 Rand error: 1 - the maximal foreground-restricted Rand F-score over thresholds (host-side).

    Each thresholded prediction ``cell_prob > t`` is segmented into 4-connected cells (``label_cells``) and
    compared with ``truth_instances(truth)`` by ``skimage.metrics.adapted_rand_error``.

    Returns
    -------
    dict with ``rand_error`` (minimum over thresholds), ``threshold``, ``precision``, ``recall`` (at that
    threshold) and ``errors`` (float64 array, per threshold).
    """
    p = _check_prob(cell_prob)
    inst = truth_instances(_check_labels("truth", truth, p.shape))
    ths = _check_thresholds(thresholds)
    rand, _ = _segmentation_sweep(p, inst, ths)
    best = int(np.argmin(rand[:, 0]))
    return dict(rand_error=float(rand[best, 0]), threshold=float(ths[best]), precision=float(rand[best, 1]),
                recall=float(rand[best, 2]), errors=rand[:, 0].copy())


def vi_sweep(cell_prob, truth, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict:
    """Minimal foreground-restricted variation of information over thresholds, with its split/merge parts.

    Host-side. Returns dict with ``vi``, ``vi_split``, ``vi_merge`` (at the best threshold), ``threshold`` and
    ``values`` (float64 array (len(thresholds), 2) of (split, merge) per threshold).
    """
    p = _check_prob(cell_prob)
    inst = truth_instances(_check_labels("truth", truth, p.shape))
    ths = _check_thresholds(thresholds)
    _, vis = _segmentation_sweep(p, inst, ths)
    best = int(np.argmin(vis.sum(axis=1)))
    return dict(vi=float(vis[best].sum()), vi_split=float(vis[best, 0]), vi_merge=float(vis[best, 1]),
                threshold=float(ths[best]), values=vis)


# ----------------------------------------------------------------------------------------------------------------
# Warping error (Jain et al. 2010)
# ----------------------------------------------------------------------------------------------------------------

# The 8 neighbours, clockwise from north; bit k of a neighbourhood code is neighbour k.
_NEIGHBOURS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def _components(cells, adjacent):
    """Connected components of a subset of the 8 neighbour positions (tiny union-find by flood fill)."""
    cells = list(cells)
    seen, comps = set(), []
    for c in cells:
        if c in seen:
            continue
        comp, stack = set(), [c]
        seen.add(c)
        while stack:
            a = stack.pop()
            comp.add(a)
            for b in cells:
                if b not in seen and adjacent(_NEIGHBOURS[a], _NEIGHBOURS[b]):
                    seen.add(b)
                    stack.append(b)
        comps.append(comp)
    return comps


def simple_point_lut() -> np.ndarray:
    """Lookup table of 2-D simple points for the (4, 8) pair: cells 4-connected, membranes 8-connected.

    Host-side. Index = 8-bit code of the 8 neighbours (bit k set when neighbour k, clockwise from north, is a
    cell). A pixel is simple (its flip changes no topology) iff T4 = 1 and T8' = 1, with T4 the number of
    4-connected components of cell neighbours that are 4-adjacent to the pixel and T8' the number of 8-connected
    components of membrane neighbours (Bertrand's topological numbers). The test does not depend on the pixel's
    own value, so it holds for flips either way.

    Returns
    -------
    bool array (256,)
    """
    four = lambda a, b: abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1          # noqa: E731
    eight = lambda a, b: max(abs(a[0] - b[0]), abs(a[1] - b[1])) == 1     # noqa: E731
    lut = np.zeros(256, bool)
    for code in range(256):
        fg = [k for k in range(8) if code >> k & 1]
        bg = [k for k in range(8) if not code >> k & 1]
        t4 = sum(1 for comp in _components(fg, four) if any(k % 2 == 0 for k in comp))   # even k: N, E, S, W
        t8 = len(_components(bg, eight))
        lut[code] = t4 == 1 and t8 == 1
    return lut


_SIMPLE = simple_point_lut()


def warp_to_truth(pred_binary, truth_binary, priority=None, levels: int = 8) -> np.ndarray:
    """Warp a binary prediction toward the truth by flipping simple points only (host-side).

    Pixels where the prediction differs from the truth are flipped while the flip is topology-preserving (a
    simple point, see ``simple_point_lut``), until no differing pixel can be flipped. Outside the image counts as
    membrane. Flips are done in parallel on one of the four (row parity, column parity) sub-lattices at a time:
    pixels of one sub-lattice are never 8-neighbours, so each parallel step equals a sequence of single simple
    flips. Only pixels next to a flip are re-tested, so the cost follows the moving front.

    Parameters
    ----------
    pred_binary, truth_binary : bool or int arrays (H, W)
        Cells non-zero.
    priority : float array (H, W) or None
        Flip order: differing pixels are handled in ``levels`` bands of decreasing priority (e.g. how wrong the
        prediction is, ``|cell_prob - truth|``); a band joins once the previous bands have no flippable pixel
        left. None: one band.
    levels : int
        Number of priority bands (>= 1).

    Returns
    -------
    bool array (H, W)
        The warped prediction: a topology-preserving deformation of ``pred_binary``.
    """
    pred = _check_labels("pred_binary", pred_binary) > 0
    truth = _check_labels("truth_binary", truth_binary, pred.shape) > 0
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise ValueError(f"levels must be a positive integer, got {levels!r}")
    h, w = pred.shape
    hp, wp = h + 2, w + 2
    lab = np.zeros((hp, wp), np.uint8)
    lab[1:-1, 1:-1] = pred
    tru = np.zeros((hp, wp), bool)
    tru[1:-1, 1:-1] = truth
    lab, tru = lab.ravel(), tru.ravel()
    diff = lab.astype(bool) != tru
    offsets = np.array([dy * wp + dx for dy, dx in _NEIGHBOURS], np.int64)
    weights = (1 << np.arange(8)).astype(np.uint8)
    yy, xx = np.divmod(np.arange(hp * wp), wp)
    parity = [((yy % 2) == a) & ((xx % 2) == b) for a in (0, 1) for b in (0, 1)]

    if priority is None:
        band = np.zeros(hp * wp, np.int64)
        levels = 1
    else:
        pr = _check_2d("priority", priority, pred.shape).astype(np.float64)
        sel = pr[pred != truth]
        lo, hi = (float(sel.min()), float(sel.max())) if sel.size else (0.0, 0.0)
        scaled = (hi - pr) / (hi - lo) if hi > lo else np.zeros_like(pr)       # 0 = highest priority
        inner = np.clip(np.floor(np.nan_to_num(scaled) * levels), 0, levels - 1).astype(np.int64)
        band = np.zeros((hp, wp), np.int64)
        band[1:-1, 1:-1] = inner
        band = band.ravel()

    dirty = np.zeros(hp * wp, bool)
    for level in range(levels):
        active = band <= level
        dirty |= diff & (band == level)
        idle, p = 0, 0
        while idle < 4:
            cand = np.flatnonzero(dirty & diff & active & parity[p])
            p = (p + 1) % 4
            if cand.size == 0:
                idle += 1
                continue
            dirty[cand] = False
            code = (lab[cand[:, None] + offsets[None, :]] * weights[None, :]).sum(axis=1, dtype=np.int64)
            flip = cand[_SIMPLE[code]]
            if flip.size == 0:
                idle += 1
                continue
            lab[flip] ^= 1
            diff[flip] = False
            dirty[(flip[:, None] + offsets[None, :]).ravel()] = True
            idle = 0
    return lab.reshape(hp, wp)[1:-1, 1:-1].astype(bool)


def _adjacent_counts(comp_labels, n_comp, other_labels):
    """For components 1..n of ``comp_labels``, the number of distinct labels > 0 of ``other_labels`` 4-adjacent."""
    a, b = comp_labels, other_labels
    shifted = ((a[:-1], b[1:]), (a[1:], b[:-1]), (a[:, :-1], b[:, 1:]), (a[:, 1:], b[:, :-1]))
    pairs = [np.stack([x[(x > 0) & (y > 0)], y[(x > 0) & (y > 0)]], axis=1) for x, y in shifted]
    pairs = np.unique(np.concatenate(pairs).astype(np.int64), axis=0)
    return np.bincount(pairs[:, 0], minlength=n_comp + 1)[1:] if pairs.size else np.zeros(n_comp, np.int64)


def warping_error(pred_binary, truth_binary, priority=None, levels: int = 8, return_warped: bool = False) -> dict:
    """Warping error of Jain et al. (2010): the topological disagreement of a binary prediction (host-side).

    The prediction is warped toward the truth by simple-point flips (``warp_to_truth``); the pixels that still
    differ are errors no topology-preserving deformation removes. Their 8-connected components are classified by
    the 4-connected cell components of the warped prediction next to them:

    * a component where the prediction has a cell but the truth a membrane joins k cells: k >= 2 is a **merger**,
      k = 0 an **addition** (a spurious object), k = 1 other (e.g. a filled hole);
    * a component where the prediction has membrane but the truth a cell borders k cells: k >= 2 is a **split**,
      k = 0 a **deletion** (a missed object), k = 1 other (e.g. a hole in a cell).

    Parameters
    ----------
    pred_binary, truth_binary : bool or int arrays (H, W)
        Cells non-zero.
    priority, levels
        Flip order, see ``warp_to_truth``.
    return_warped : bool
        Also return the warped prediction under ``'warped'``.

    Returns
    -------
    dict
        ``warping_error`` (float: remaining differing pixels / H W), ``splits``, ``mergers``, ``additions``,
        ``deletions``, ``other`` (int counts of error components).
    """
    pred = _check_labels("pred_binary", pred_binary) > 0
    truth = _check_labels("truth_binary", truth_binary, pred.shape) > 0
    warped = warp_to_truth(pred, truth, priority=priority, levels=levels)
    extra = warped & ~truth
    missing = ~warped & truth
    result = dict(warping_error=float(np.count_nonzero(extra | missing) / pred.size))

    extra_lab, n_extra = ndi.label(extra, structure=_EIGHT)
    cells_wo_extra = ndi.label(warped & ~extra, structure=_FOUR)[0]
    k_extra = _adjacent_counts(extra_lab, n_extra, cells_wo_extra)
    missing_lab, n_missing = ndi.label(missing, structure=_EIGHT)
    cells = ndi.label(warped, structure=_FOUR)[0]
    k_missing = _adjacent_counts(missing_lab, n_missing, cells)
    result.update(mergers=int(np.sum(k_extra >= 2)), additions=int(np.sum(k_extra == 0)),
                  splits=int(np.sum(k_missing >= 2)), deletions=int(np.sum(k_missing == 0)),
                  other=int(np.sum(k_extra == 1) + np.sum(k_missing == 1)))
    if return_warped:
        result["warped"] = warped
    return result


# ----------------------------------------------------------------------------------------------------------------
# IoU and SEG
# ----------------------------------------------------------------------------------------------------------------

def iou(pred_binary, truth_binary) -> float:
    """Intersection over union of the cell class (non-zero pixels); 1.0 when both are empty (host-side)."""
    p = _check_labels("pred_binary", pred_binary) > 0
    t = _check_labels("truth_binary", truth_binary, p.shape) > 0
    union = np.count_nonzero(p | t)
    return 1.0 if union == 0 else float(np.count_nonzero(p & t) / union)


def seg_measure(pred_instances, truth_instances_) -> float:
    """The Cell Tracking Challenge SEG measure (host-side).

    For each reference object R (truth label > 0) the predicted object S (label > 0) covering more than half of
    R, if any, is its match and scores the Jaccard index |R & S| / |R | S|; an unmatched R scores 0. SEG is the
    mean over reference objects (at most one S can cover more than half of R, so the match is unique).

    Parameters
    ----------
    pred_instances, truth_instances_ : int arrays (H, W), 0 = background.

    Returns
    -------
    float in [0, 1]; NaN when the truth has no object.
    """
    pred = _check_labels("pred_instances", pred_instances).astype(np.int64)
    truth = _check_labels("truth_instances", truth_instances_, pred.shape).astype(np.int64)
    ref_ids = np.unique(truth[truth > 0])
    if ref_ids.size == 0:
        return float("nan")
    table = contingency_table(truth, pred, sparse_type="array").tocoo()
    r, s, n = table.row, table.col, table.data
    keep = (r > 0) & (s > 0) & (n > 0)
    r, s, n = r[keep], s[keep], n[keep]
    size_r = np.bincount(truth.ravel(), minlength=truth.max() + 1)
    size_s = np.bincount(pred.ravel(), minlength=pred.max() + 1)
    match = n > 0.5 * size_r[r]
    jacc = np.zeros(truth.max() + 1)
    jacc[r[match]] = n[match] / (size_r[r[match]] + size_s[s[match]] - n[match])
    return float(jacc[ref_ids].mean())


# ----------------------------------------------------------------------------------------------------------------
# Everything for one slice
# ----------------------------------------------------------------------------------------------------------------

def evaluate_slice(cell_prob, truth, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, threshold: float = 0.5,
                   warping_thresholds: Optional[Sequence[float]] = None) -> dict:
    """Every metric of one 2-D slice (host-side; what the ``evaluate`` command calls).

    Parameters
    ----------
    cell_prob : float array (H, W) in [0, 1]
        P(cell).
    truth : int or bool array (H, W)
        Instances or a binary mask, cells > 0 (see ``truth_instances``).
    thresholds : sequence of float in [0, 1)
        Sweep of the challenge metrics (pixel error, Rand error, VI).
    threshold : float in [0, 1)
        Fixed threshold for ``pixel_mismatch``, ``iou`` and ``seg`` (``config.eval.threshold``).
    warping_thresholds : sequence of float or None
        Thresholds for the warping error (the minimum is reported); None = ``(threshold,)``. The warping error is
        the slowest metric (well under a second per threshold on 512 x 512).

    Returns
    -------
    dict of str -> float
        ``pixel_error`` (1 - max pixel F-score), ``pixel_error_threshold``, ``pixel_mismatch`` (fraction of wrong
        pixels at ``threshold``), ``rand_error``, ``rand_precision``, ``rand_recall``, ``rand_threshold``,
        ``vi``, ``vi_split``, ``vi_merge``, ``vi_threshold``, ``warping_error``, ``warping_threshold``,
        ``warping_splits``, ``warping_mergers``, ``warping_additions``, ``warping_deletions``,
        ``warping_other``, ``iou``, ``seg``.
    """
    p = _check_prob(cell_prob)
    truth = _check_labels("truth", truth, p.shape)
    ths = _check_thresholds(thresholds)
    threshold = float(_check_thresholds([threshold])[0])
    wths = (threshold,) if warping_thresholds is None else tuple(_check_thresholds(warping_thresholds))
    inst = truth_instances(truth)
    tbin = inst > 0
    out = {}

    px = pixel_error_sweep(p, tbin, ths)
    out.update(pixel_error=px["pixel_error"], pixel_error_threshold=px["threshold"],
               pixel_mismatch=pixel_mismatch(p > threshold, tbin))

    rand, vis = _segmentation_sweep(p, inst, ths)
    b = int(np.argmin(rand[:, 0]))
    out.update(rand_error=float(rand[b, 0]), rand_precision=float(rand[b, 1]), rand_recall=float(rand[b, 2]),
               rand_threshold=float(ths[b]))
    b = int(np.argmin(vis.sum(axis=1)))
    out.update(vi=float(vis[b].sum()), vi_split=float(vis[b, 0]), vi_merge=float(vis[b, 1]),
               vi_threshold=float(ths[b]))

    wrongness = np.abs(p - tbin)
    best = None
    for th in wths:
        we = warping_error(p > th, tbin, priority=wrongness)
        if best is None or we["warping_error"] < best[1]["warping_error"]:
            best = (th, we)
    th, we = best
    out.update(warping_error=we["warping_error"], warping_threshold=float(th),
               **{f"warping_{k}": float(we[k]) for k in ("splits", "mergers", "additions", "deletions", "other")})

    pred_bin = p > threshold
    out.update(iou=iou(pred_bin, tbin), seg=seg_measure(label_cells(pred_bin), inst))
    return out
