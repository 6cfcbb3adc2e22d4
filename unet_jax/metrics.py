"""Evaluation metrics of the paper's experiments (section 4): ISBI 2012 EM and ISBI cell tracking. Host-side.

Inputs: ``cell_prob`` float (H, W) in [0, 1], P(cell) (channel 1 of ``unet_jax.tiling.predict_tiled``; 1 = cell,
0 = membrane, as the ISBI 2012 challenge asks), cells ``cell_prob > t``; ``truth`` int (H, W), cells > 0 (instance
labels, or a binary mask: ``truth_instances``). Entry points: ``isbi2012`` (the challenge's measures as its
reference code computes them), ``threshold_metrics`` (pixel mismatch, IoU, SEG at one threshold),
``adapted_rand_error`` (SNEMI3D), ``object_matches`` / ``object_scores`` (object F1, DSB 2018 mean AP).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.metrics import contingency_table

__all__ = ["DEFAULT_THRESHOLDS", "ISBI_THRESHOLDS", "truth_instances", "label_cells", "pixel_mismatch",
           "pixel_fscore", "pixel_error_sweep", "adapted_rand_error", "simple_point_lut", "isbi2012",
           "isbi2012_stats", "isbi2012_summary", "iou", "seg_measure", "threshold_metrics",
           "AP_THRESHOLDS", "object_matches", "object_scores"]

DEFAULT_THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(1, 10))       # pixel_error_sweep's


def _java_range(start: float, stop: float, step: float) -> tuple:
    """``for (double th = start; th <= stop; th += step)``: the thresholds of the reference code, accumulated in
    double precision exactly as Java does (so 0.30000000000000004, ..., 0.9999999999999999)."""
    out, th = [], start
    while th <= stop:
        out.append(th)
        th += step
    return tuple(out)


# The thresholds of the challenge's evaluation script ("Segmentation evaluation after border thinning", the
# official ISBI 2012 script: getMaximalVRandAfterThinning(0.0, 1.0, 0.1, true) etc.): 0.0, 0.1, ..., 11 values,
# the last 0.9999999999999999.
ISBI_THRESHOLDS = _java_range(0.0, 1.0, 0.1)

_FOUR = ndi.generate_binary_structure(2, 1)


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
    """Instances of a binary cell mask: 4-connected components, int32 (H, W), 0 = membrane (host-side).

    Cells 4-connected and membranes 8-connected are the (4, 8) pair of digital topology, so a one-pixel-wide
    diagonal membrane separates two cells. All metrics here segment binary masks this way."""
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
# Adapted Rand error (SNEMI3D / scikit-image convention; not the ISBI 2012 one)
# ----------------------------------------------------------------------------------------------------------------

def adapted_rand_error(pred_instances, truth_instances_) -> dict:
    """The SNEMI3D adapted Rand error of one segmentation (``skimage.metrics.adapted_rand_error``) (host-side).

    Not the ISBI 2012 Rand error (see ``isbi2012``): pairs of distinct pixels (n(n-1) normalisation) over the
    truth foreground, and predicted label 0 is one more segment rather than singletons.

    Parameters
    ----------
    pred_instances : int array (H, W)
        Predicted segments (0 = membrane, counted as one segment where the truth is a cell).
    truth_instances_ : int array (H, W)
        True segments; pixels with truth 0 are ignored.

    Returns
    -------
    dict with ``adapted_rand_error`` = 1 - F, ``adapted_rand_precision`` (pairs joined in both / pairs joined in
    the prediction) and ``adapted_rand_recall`` (pairs joined in both / pairs joined in the truth). scikit-image
    returns the last two in the opposite order.
    """
    pred = _check_labels("pred_instances", pred_instances).astype(np.int64)
    truth = _check_labels("truth_instances", truth_instances_, pred.shape).astype(np.int64)
    table = contingency_table(truth, pred, ignore_labels=[0], sparse_type="array")
    pairs = lambda v: float(np.sum(v * (v - 1.0)))                             # noqa: E731
    joint = pairs(np.asarray(table.data, np.float64))
    in_truth = pairs(np.asarray(table.sum(axis=1), np.float64).ravel())
    in_pred = pairs(np.asarray(table.sum(axis=0), np.float64).ravel())
    if in_truth + in_pred == 0:
        return dict(adapted_rand_error=0.0, adapted_rand_precision=1.0, adapted_rand_recall=1.0)
    precision = joint / in_pred if in_pred else 1.0
    recall = joint / in_truth if in_truth else 1.0
    return dict(adapted_rand_error=1.0 - 2.0 * joint / (in_truth + in_pred), adapted_rand_precision=precision,
                adapted_rand_recall=recall)


# ----------------------------------------------------------------------------------------------------------------
# Simple points (digital topology)
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

    This is also the ISBI 2012 reference's test (WarpingError.simple2DBertrand(patch, 4): the 3x3 patch as the
    middle slice of a 3x3x3 cube between two empty slices, tested as a 3-D (6, 26) simple point): the empty
    slices join all membrane neighbours, which leaves T4 = 1 and "some neighbour is membrane", and in 2-D that is
    the same as T4 = 1 and T8' = 1.

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


# ----------------------------------------------------------------------------------------------------------------
# ISBI 2012 challenge: the reference definitions
# ----------------------------------------------------------------------------------------------------------------
#
# Each function follows a method of Fiji's Trainable_Segmentation, package trainableSegmentation.metrics (classes
# PixelError, RandError, VariationOfInformation, WarpingError, ClassificationStatistics) and
# trainableSegmentation.utils.WatershedTransform2D, the code that scores the ISBI 2012 challenge. Common to all:
# the proposal is read as float32 (the challenge reads a 32-bit TIFF) and binarised as ``proposal > th`` (float32
# value compared in double precision); segments are 4-connected components of the pixels above the threshold
# (Utils.connectedComponents(..., 4)), 0 = membrane.

def _rand_counts(gt, seg):
    """Foreground-restricted pair counts with N^2 normalisation (RandError.getForegroundRestrictedRandIndexStatsN2).

    ``gt``: truth segments (0 = background, pruned out), ``seg``: proposed segments (0 = membrane). Over the n
    truth-foreground pixels, ordered pairs (a pixel paired with itself included) of the same truth segment and the
    same proposed segment; a proposed membrane pixel is a segment of its own (a singleton). Returns float64
    (tp, fp, fn): tp = sum_ij c_ij^2 + c_0, fp = sum_j b_j^2 - sum_ij c_ij^2, fn = sum_i a_i^2 - tp, with c_ij the
    overlap of truth segment i and proposed segment j >= 1, c_0 the truth pixels on proposed membrane, a_i and b_j
    the truth and proposed segment sizes inside the truth foreground. NaN when the truth has no foreground (the
    reference divides by n = 0).
    """
    fg = gt > 0
    a, b = gt[fg].astype(np.int64), seg[fg].astype(np.int64)
    if a.size == 0:
        return np.full(3, np.nan)
    sizes_a = np.bincount(a).astype(np.float64)
    sizes_b = np.bincount(b[b > 0]).astype(np.float64)
    _, c = np.unique(a[b > 0] * (int(b.max()) + 1) + b[b > 0], return_counts=True)
    sum_c2, c0 = float(c.astype(np.float64) @ c), float(np.count_nonzero(b == 0))
    tp = sum_c2 + c0
    return np.array([tp, sizes_b @ sizes_b - sum_c2, sizes_a @ sizes_a - tp])


def _fscore(tp, fp, fn) -> float:
    """F-score of classification counts as ClassificationStatistics computes it: precision (recall) is 1 without
    false positives (negatives), F = 0 when precision + recall is not > 0 (NaN counts included)."""
    precision = 1.0 if fp == 0 else tp / (tp + fp)
    recall = 1.0 if fn == 0 else tp / (tp + fn)
    return 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _info_fscore(gt, seg) -> float:
    """V_Info of one slice: VariationOfInformation.foregroundRestrictedFscore.

    Over the n truth-foreground pixels (p_ij = c_ij / n; proposed membrane pixels are singletons, each of
    probability 1/n): H(A) truth and H(B) proposal entropies, I = H(A) - H(A|B) = H(B) - H(B|A) their mutual
    information (natural log); precision I / H(A), recall I / H(B) (precision 0, recall 1 when H(A) = 0; precision 1,
    recall 0 when H(B) = 0); returns their harmonic mean (NaN for an empty truth or precision + recall = 0).
    """
    fg = gt > 0
    n = int(np.count_nonzero(fg))
    if n == 0:
        return math.nan
    a, b = gt[fg].astype(np.int64), seg[fg].astype(np.int64)
    xlogx = lambda v: float(np.sum(v * np.log(v)))                              # noqa: E731
    pa = np.bincount(a)[1:] / n
    pb = np.bincount(b[b > 0])[1:] / n
    _, c = np.unique(a[b > 0] * (int(b.max()) + 1) + b[b > 0], return_counts=True)
    singletons = np.count_nonzero(b == 0) / n * math.log(n)
    sum_a, sum_b, sum_ab = xlogx(pa[pa > 0]), xlogx(pb[pb > 0]) - singletons, xlogx(c / n) - singletons
    ha, hb, ha_b, hb_a = -sum_a, -sum_b, sum_b - sum_ab, sum_a - sum_ab
    precision, recall = ((ha - ha_b) / ha if ha else 0.0), ((hb - hb_a) / hb if hb else 0.0)
    if ha == 0:
        precision, recall = 0.0, 1.0
    if hb == 0:
        precision, recall = 1.0, 0.0
    return 2.0 * precision * recall / (precision + recall) if precision + recall != 0 else math.nan


# Watershed state of a pixel while it is labelled (WatershedTransform2D.apply, Vincent & Soille 1991): still in the
# queue, a dam that a later basin neighbour may still claim (the algorithm's flag set), a final dam.
_INQUEUE, _SOFT_DAM, _DAM = -3, -4, -5
_C4_OFFSETS = ((0, -1), (-1, 0), (0, 1), (1, 0))        # the reference's 4-neighbour order: W, N, E, S


def _label_layer(status):
    """Labels of one flooding layer from its neighbours' statuses (int (L, 4) in W, N, E, S order: > 0 a basin,
    0 a dam, -1 not labelled yet), by the per-pixel rule of the reference's flooding queue; 0 = dam."""
    s = np.full(status.shape[0], _INQUEUE)
    for v in status.T:
        basin = v > 0
        take = basin & ((s == _INQUEUE) | (s == _SOFT_DAM))
        clash = basin & (s > 0) & (s != v)
        s = np.where(take, v, np.where(clash, _DAM, s))
        s = np.where((v == 0) & (s == _INQUEUE), _SOFT_DAM, s)
    return np.where(s > 0, s, 0)


def _thin_membranes(cells):
    """The proposal after border thinning: membranes (value 255) flooded from the cell segments (value 0) by the
    classic watershed with 4-connectivity, WatershedTransform2D(binary, 4).apply() as called by
    RandError/VariationOfInformation.get...AfterThinning...N2. Returns int64 (H, W): > 0 the basin of each
    4-connected cell segment grown over the membranes, 0 the one-pixel dams where two basins meet.

    Exact emulation of the reference's FIFO flooding: membrane pixels at city-block distance d from the cells are
    popped as layer d, layer 1 in column-major order, layer d + 1 in the order its pixels are first reached from
    layer d (in W, N, E, S order). A pixel takes the labels of its already popped neighbours in W, N, E, S order
    (``_label_layer``); inside a layer these are the earlier popped ones, solved by iterating to the fixed point.
    """
    basins, n_basins = ndi.label(cells, _FOUR)
    if n_basins == 0:                        # no cell: the whole membrane is one new minimum at level 255
        return ndi.label(~cells, _FOUR)[0].astype(np.int64)
    h, w = cells.shape
    hp, wp = h + 2, w + 2
    dist = np.full((hp, wp), -1, np.int64)
    dist[1:-1, 1:-1] = ndi.distance_transform_cdt(~cells, metric="taxicab")
    dist = dist.ravel()
    lab = np.full(hp * wp, -1, np.int64)
    lab.reshape(hp, wp)[1:-1, 1:-1][cells] = basins[cells]
    pos = np.zeros(hp * wp, np.int64)
    offsets = np.array([dy * wp + dx for dy, dx in _C4_OFFSETS])
    layer = np.flatnonzero(dist == 1)
    layer = layer[np.lexsort((layer // wp, layer % wp))]               # column-major: x, then y
    d = 1
    while layer.size:
        pos[layer] = np.arange(layer.size)
        nbr = layer[:, None] + offsets[None, :]
        lower = dist[nbr] == d - 1
        same = (dist[nbr] == d) & (pos[nbr] < pos[layer][:, None])
        while True:
            status = np.where(lower | same, lab[nbr], -1)
            new = _label_layer(status)
            if np.array_equal(new, lab[layer]):
                break
            lab[layer] = new
        d += 1
        nxt = np.flatnonzero(dist == d)
        if nxt.size:
            src = nxt[:, None] - offsets[None, :]                      # the layer-d pixel reaching it via k
            key = np.where(dist[src] == d - 1, pos[src] * 4 + np.arange(4)[None, :], np.iinfo(np.int64).max)
            nxt = nxt[np.argsort(key.min(axis=1))]
        layer = nxt
    return lab.reshape(hp, wp)[1:-1, 1:-1].copy()


def _warp_labels(truth_cells, prob32, th):
    """Warp the truth onto the thresholded proposal by simple-point flips: WarpingError.simplePointWarp2d.

    Outside the image is membrane. The pixels where truth and ``prob32 > th`` differ are visited in the order of
    decreasing ``|prob - th|`` (as float32; ties in column-major order); each one that is a simple point of the
    current warped truth (``simple_point_lut``, cells 4-connected: the reference's 3-D (6, 26) test of the slice
    between two empty ones) is flipped at once. Sweeps repeat over the remaining mismatches until one flips none.
    A mismatch whose 8 neighbours did not change since its last test is skipped (its test would repeat).

    Returns (warped truth bool (H, W), row and column indices of the mismatches left).
    """
    h, w = truth_cells.shape
    wp = w + 2
    target = prob32.astype(np.float64) > th
    ys, xs = np.nonzero(truth_cells != target)
    z = np.abs(prob32[ys, xs].astype(np.float64) - th).astype(np.float32)
    order = np.lexsort((ys, xs, -z))
    todo = ((ys[order] + 1) * wp + xs[order] + 1).tolist()
    state = bytearray(np.pad(truth_cells, 1).astype(np.uint8).ravel().tobytes())
    dirty = bytearray(b"\x01") * len(state)
    lut = bytes(_SIMPLE.astype(np.uint8))
    n, ne, e, se, s, sw, w_, nw = (dy * wp + dx for dy, dx in _NEIGHBOURS)
    flipped = True
    while flipped and todo:
        flipped, left = False, []
        for i in todo:
            if dirty[i]:
                dirty[i] = 0
                code = (state[i + n] | state[i + ne] << 1 | state[i + e] << 2 | state[i + se] << 3
                        | state[i + s] << 4 | state[i + sw] << 5 | state[i + w_] << 6 | state[i + nw] << 7)
                if lut[code]:
                    state[i] ^= 1
                    flipped = True
                    for j in (i + n, i + ne, i + e, i + se, i + s, i + sw, i + w_, i + nw):
                        dirty[j] = 1
                    continue
            left.append(i)
        todo = left
    warped = np.frombuffer(bytes(state), np.uint8).reshape(h + 2, wp)[1:-1, 1:-1].astype(bool)
    left = np.asarray(todo, np.int64)
    return warped, left // wp - 1, left % wp - 1


def _distinct(rows):
    """Number of distinct values >= 0 in each row of an int array."""
    srt = np.sort(rows, axis=1)
    first = np.concatenate([np.ones((srt.shape[0], 1), bool), srt[:, 1:] != srt[:, :-1]], axis=1)
    return np.count_nonzero(first & (srt >= 0), axis=1)


def _splits_and_mergers(warped, ys, xs):
    """Splits and mergers among the mismatches left by the warping: WarpingError.classifyMismatches2d (radius -1,
    whole image) and clusterMismatchesByType, counted per pixel.

    With the set U of 4-connected segment ids (0 = membrane) of the mismatch's 8 neighbours inside the image: a
    membrane pixel is a merger when |U| >= 3 (or U is empty); a cell pixel is a split when |U| >= 3 (or U is
    empty), or when |U| = 2 and turning it into membrane leaves its neighbours in more than 2 segments of the whole
    image. Other mismatches (object or hole additions and deletions) are not counted.
    """
    seg = ndi.label(warped, _FOUR)[0]
    h, w = seg.shape
    nb = np.full((ys.size, 8), -1, np.int64)
    for k, (dy, dx) in enumerate(_NEIGHBOURS):
        yy, xx = ys + dy, xs + dx
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        nb[inside, k] = seg[yy[inside], xx[inside]]
    n_ids, cell = _distinct(nb), warped[ys, xs]
    many = (n_ids >= 3) | (n_ids == 0)
    mergers, splits = int(np.count_nonzero(~cell & many)), int(np.count_nonzero(cell & many))
    # |U| = 2 at a cell pixel: only when its own segment's neighbours form several runs around it (consecutive
    # ring neighbours are 4-adjacent) can removing it split them; then relabel that segment without it.
    cand = cell & (n_ids == 2)
    ys, xs, nb = ys[cand], xs[cand], nb[cand]
    own = nb == seg[ys, xs][:, None]
    several = np.count_nonzero(own & ~np.roll(own, 1, axis=1), axis=1) >= 2
    boxes = ndi.find_objects(seg) if np.any(several) else None
    for y, x, ids, mine in zip(ys[several], xs[several], nb[several], own[several]):
        box = boxes[seg[y, x] - 1]
        y0, x0 = box[0].start, box[1].start
        rest = seg[box] == seg[y, x]
        rest[y - y0, x - x0] = False
        pieces = ndi.label(rest, _FOUR)[0]
        new = {int(pieces[y + dy - y0, x + dx - x0]) for (dy, dx), m in zip(_NEIGHBOURS, mine) if m}
        splits += int(len(set(ids[(ids >= 0) & ~mine].tolist())) + len(new) > 2)
    return splits, mergers


def _check_isbi_inputs(cell_prob, truth):
    p = np.asarray(cell_prob)
    if p.ndim not in (2, 3) or p.size == 0:
        raise ValueError(f"cell_prob must be a non-empty (H, W) or (N, H, W) array, got shape {p.shape}")
    if not np.issubdtype(p.dtype, np.floating):
        raise ValueError(f"cell_prob must be a float array of probabilities in [0, 1], got dtype {p.dtype}")
    if not (np.all(np.isfinite(p)) and p.min() >= 0.0 and p.max() <= 1.0):
        raise ValueError(f"cell_prob must hold probabilities in [0, 1], got values in [{p.min()}, {p.max()}]")
    t = np.asarray(truth)
    if t.shape != p.shape:
        raise ValueError(f"truth must have the shape of cell_prob {p.shape}, got {t.shape}")
    if not (t.dtype == bool or np.issubdtype(t.dtype, np.integer) or np.issubdtype(t.dtype, np.floating)):
        raise ValueError(f"truth must be a boolean or numeric label image, got dtype {t.dtype}")
    if t.min() < 0:
        raise ValueError(f"truth must be non-negative (0 = membrane, > 0 = cell), got min {t.min()}")
    return p, t


def _check_isbi_thresholds(thresholds):
    ths = ISBI_THRESHOLDS if thresholds is None else tuple(float(t) for t in np.ravel(thresholds))
    if not ths or not all(0.0 <= t <= 1.0 for t in ths):
        raise ValueError(f"thresholds must be a non-empty sequence of values in [0, 1], got {thresholds!r}")
    return ths


def isbi2012_stats(cell_prob, truth, thresholds: Optional[Sequence[float]] = None) -> dict:
    """Per-threshold statistics of one slice for ``isbi2012_summary`` (host-side).

    Parameters
    ----------
    cell_prob : float array (H, W) in [0, 1]
        P(cell); read as float32.
    truth : bool, int or float array (H, W)
        Cells > 0, membranes 0 (instance labels are merged where they touch, as the reference binarises them).
    thresholds : sequence of float in [0, 1], or None for ``ISBI_THRESHOLDS``

    Returns
    -------
    dict of float64 arrays over the thresholds: 'thresholds'; 'pixel' (T, 3) and 'rand', 'rand_thinned' (T, 3):
    (tp, fp, fn) of the pixel classification (PixelError.precisionRecallStats: truth > 0 against
    ``prob > th``) and of the foreground-restricted N^2 pair counts (``_rand_counts``) of the 4-connected truth
    segments of ``truth > th`` against the proposal's segments, before and after border thinning
    (``_thin_membranes``); 'vinfo_thinned' (T,): V_Info after thinning (``_info_fscore``); 'splits', 'mergers'
    (T,): warping mismatches (``_warp_labels``, ``_splits_and_mergers``); and 'pixels': H * W.
    """
    p, t = _check_isbi_inputs(cell_prob, truth)
    if p.ndim != 2:
        raise ValueError(f"isbi2012_stats takes one (H, W) slice, got shape {p.shape}")
    ths = _check_isbi_thresholds(thresholds)
    p32 = p.astype(np.float32)
    p64, t64 = p32.astype(np.float64), t.astype(np.float32).astype(np.float64)
    truth_cells = t64 > 0
    out = {k: [] for k in ("pixel", "rand", "rand_thinned", "vinfo_thinned", "splits", "mergers")}
    gt_mask, gt = None, None
    for th in ths:
        cells = p64 > th
        out["pixel"].append([np.count_nonzero(cells & truth_cells), np.count_nonzero(cells & ~truth_cells),
                             np.count_nonzero(~cells & truth_cells)])
        mask = t64 > th
        if gt_mask is None or not np.array_equal(mask, gt_mask):
            gt_mask, gt = mask, ndi.label(mask, _FOUR)[0]
        thinned = _thin_membranes(cells)
        out["rand"].append(_rand_counts(gt, ndi.label(cells, _FOUR)[0]))
        out["rand_thinned"].append(_rand_counts(gt, thinned))
        out["vinfo_thinned"].append(_info_fscore(gt, thinned))
        splits, mergers = _splits_and_mergers(*_warp_labels(truth_cells, p32, th))
        out["splits"].append(splits)
        out["mergers"].append(mergers)
    out = {k: np.asarray(v, np.float64) for k, v in out.items()}
    out.update(thresholds=np.asarray(ths), pixels=float(p.size))
    return out


def _best(values, thresholds, larger: bool):
    """(best value, its threshold) as the reference scans thresholds: the first strict improvement on 0 (scores)
    or on +inf (errors); NaN never improves, and the first threshold is kept when nothing does."""
    best, at = (0.0, thresholds[0]) if larger else (math.inf, thresholds[0])
    for v, th in zip(values, thresholds):
        if (v > best) if larger else (v < best):
            best, at = float(v), float(th)
    return best, float(at)


def isbi2012_summary(stats: Sequence[dict]) -> dict:
    """The ISBI 2012 measures of a stack from its slices' ``isbi2012_stats`` (host-side).

    At each threshold, pixel and Rand statistics are summed over the slices before the F-score (micro average, as
    PixelError.getPrecisionRecallStats and RandError.getForegroundRestrictedRandIndexStats do), warping mismatches
    are summed and divided by all pixels, and V_Rand / V_Info after thinning are the per-slice scores averaged
    (as the challenge script calls getMaximalVRandAfterThinning(..., perSliceAverage=true) and
    getMaximalVInfoAfterThinning); then the best threshold is taken. See ``isbi2012`` for the keys.
    """
    if not stats:
        raise ValueError("stats must hold the isbi2012_stats of at least one slice")
    ths = stats[0]["thresholds"]
    if any(s["thresholds"].shape != ths.shape or np.any(s["thresholds"] != ths) for s in stats):
        raise ValueError("all slices' isbi2012_stats must use the same thresholds")
    total = {k: sum(s[k] for s in stats) for k in ("pixel", "rand", "rand_thinned", "splits", "mergers", "pixels")}
    per_slice_vrand = np.mean([[_fscore(*c) for c in s["rand_thinned"]] for s in stats], axis=0)
    per_slice_vinfo = np.mean([s["vinfo_thinned"] for s in stats], axis=0)
    candidates = {
        "pixel_error": ([_fscore(*c) for c in total["pixel"]], True),
        "rand_error": ([_fscore(*c) for c in total["rand"]], True),
        "warping_error": ((total["splits"] + total["mergers"]) / total["pixels"], False),
        "vrand_thinned": (per_slice_vrand, True),
        "vinfo_thinned": (per_slice_vinfo, True),
        "vrand_thinned_micro": ([_fscore(*c) for c in total["rand_thinned"]], True),
    }
    out = {}
    for key, (values, larger) in candidates.items():
        best, at = _best(values, ths, larger)
        out[key] = 1.0 - best if key in ("pixel_error", "rand_error") else best
        out[f"{key}_threshold"] = at
    i = int(np.flatnonzero(ths == out["warping_error_threshold"])[0])
    out.update(warping_splits=float(total["splits"][i]), warping_mergers=float(total["mergers"][i]))
    return out


def isbi2012(cell_prob, truth, thresholds: Optional[Sequence[float]] = None) -> dict:
    """The ISBI 2012 challenge measures, as the challenge's reference code computes them (host-side).

    The reference is Fiji's Trainable_Segmentation (trainableSegmentation.metrics); the proposal is binarised at
    each threshold as ``cell_prob > th`` (float32), its segments are 4-connected cells, the truth's are the
    4-connected components of ``truth > th`` (``truth > 0`` for the pixel and warping errors).

    Parameters
    ----------
    cell_prob : float array (H, W) or (N, H, W) in [0, 1]
        P(cell) of one slice or a stack.
    truth : bool, int or float array of the same shape
        Cells > 0, membranes 0.
    thresholds : sequence of float in [0, 1], or None
        Default ``ISBI_THRESHOLDS``, those of the challenge's evaluation script: 0.0 to 1.0 in steps of 0.1
        accumulated in double precision (11 values, the last 0.9999999999999999).

    Returns
    -------
    dict of float, each measure at its best threshold with that threshold under ``<key>_threshold``:

    * ``pixel_error``: 1 - the maximal F-score of pixel similarity (PixelError.getPixelErrorMaximalFScore; cell =
      positive class);
    * ``rand_error``: 1 - the maximal foreground-restricted Rand F-score, N^2 normalisation, proposed membrane
      pixels as singletons (RandError.getForegroundRestrictedRandIndexMaximalFScore);
    * ``warping_error``: the minimal number of split and merger pixels left after warping the truth onto the
      thresholded proposal, divided by the number of pixels (WarpingError.getMinimumSplitsAndMergersErrorValue,
      clusterByError false); ``warping_splits`` and ``warping_mergers`` count them at the best threshold;
    * ``vrand_thinned`` (score, higher is better): the maximal foreground-restricted Rand F-score after thinning
      the proposal's membranes to one-pixel dams with a 4-connected watershed (RandError.getMaximalVRandAfterThinning
      with perSliceAverage true, as the challenge script calls it: per-slice scores averaged over a stack);
      ``vrand_thinned_micro`` pools the pair counts of a stack instead (perSliceAverage false);
    * ``vinfo_thinned`` (score): the information-theoretic counterpart, the harmonic mean of I/H(truth) and
      I/H(proposal) after thinning (VariationOfInformation.getMaximalVInfoAfterThinning, per-slice average).

    A stack's pixel, Rand and warping statistics are pooled over its slices at each threshold before the best
    threshold is taken. As in the reference, a slice whose truth has no cell above a threshold makes the Rand
    statistics there NaN (F-score 0) and its V_Info NaN (that threshold is skipped).
    """
    p, t = _check_isbi_inputs(cell_prob, truth)
    ths = _check_isbi_thresholds(thresholds)
    slices = [(p, t)] if p.ndim == 2 else zip(p, t)
    return isbi2012_summary([isbi2012_stats(ps, ts, ths) for ps, ts in slices])


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


AP_THRESHOLDS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))   # 0.5, 0.55, ..., 0.95 (DSB 2018)


def object_matches(pred_instances, truth_instances_, thresholds: Sequence[float] = AP_THRESHOLDS) -> dict:
    """Objects of a prediction matched to the true objects, one-to-one, at each IoU threshold (host-side).

    A predicted and a true object match at t when their IoU exceeds t; for t >= 0.5 an object can exceed it with at
    most one partner, so the matching is unique without an assignment step.

    Merges and splits: a predicted object holding more than half of each of k >= 2 true objects merged k - 1 of
    them ('merges'); a true object holding more than half of each of k >= 2 predicted objects was split into k,
    k - 1 too many ('splits').

    Returns
    -------
    dict: 'tp' (int array, true positives per threshold), 'n_pred', 'n_true' (object counts), 'merges', 'splits',
    'thresholds'.
    """
    if any(not 0.5 <= float(t) < 1.0 for t in thresholds):
        raise ValueError(f"thresholds must lie in [0.5, 1) (one-to-one matching), got {tuple(thresholds)}")
    pred = _check_labels("pred_instances", pred_instances).astype(np.int64)
    truth = _check_labels("truth_instances", truth_instances_, pred.shape).astype(np.int64)
    n_pred, n_true = np.unique(pred[pred > 0]).size, np.unique(truth[truth > 0]).size
    table = contingency_table(truth, pred, sparse_type="array").tocoo()
    keep = (table.row > 0) & (table.col > 0) & (table.data > 0)
    r, c, n = table.row[keep], table.col[keep], table.data[keep].astype(np.float64)
    size_t = np.bincount(truth.ravel())
    size_p = np.bincount(pred.ravel())
    pair_iou = n / (size_t[r] + size_p[c] - n)
    tp = np.array([np.count_nonzero(pair_iou > float(t)) for t in thresholds], np.int64)
    per_pred = np.bincount(c[n > 0.5 * size_t[r]], minlength=1)      # true objects mostly inside each prediction
    per_true = np.bincount(r[n > 0.5 * size_p[c]], minlength=1)      # predictions mostly inside each true object
    return {"tp": tp, "n_pred": int(n_pred), "n_true": int(n_true),
            "merges": int(np.maximum(per_pred - 1, 0).sum()), "splits": int(np.maximum(per_true - 1, 0).sum()),
            "thresholds": tuple(float(t) for t in thresholds)}


def object_scores(matches: Sequence[dict]) -> dict:
    """Object precision, recall and F1 at IoU 0.5 and mean average precision from ``object_matches`` of images.

    Precision, recall and F1 pool the counts over the images (a data set's figure, not dominated by images with few
    objects); ``mean_ap`` is the Data Science Bowl 2018 measure: per image the mean over thresholds of
    TP / (TP + FP + FN), then the mean over images (an image with no object, true or predicted, scores 1).
    'merges' and 'splits' are the sums of ``object_matches``' counts.
    """
    if not matches:
        raise ValueError("matches must be a non-empty list of object_matches() results")
    at50 = [m["thresholds"].index(0.5) for m in matches]
    tp = sum(int(m["tp"][i]) for m, i in zip(matches, at50))
    n_pred = sum(m["n_pred"] for m in matches)
    n_true = sum(m["n_true"] for m in matches)
    aps = []
    for m in matches:
        union = m["n_pred"] + m["n_true"] - m["tp"]
        aps.append(float(np.mean(np.where(union > 0, m["tp"] / np.maximum(union, 1), 1.0))))
    return {"object_precision": tp / n_pred if n_pred else float(n_true == 0),
            "object_recall": tp / n_true if n_true else float(n_pred == 0),
            "object_f1": 2 * tp / (n_pred + n_true) if n_pred + n_true else 1.0,
            "mean_ap": float(np.mean(aps)), "objects_predicted": n_pred, "objects_true": n_true,
            "merges": sum(m["merges"] for m in matches), "splits": sum(m["splits"] for m in matches)}


# ----------------------------------------------------------------------------------------------------------------
# Fixed-threshold measures of one slice
# ----------------------------------------------------------------------------------------------------------------

def threshold_metrics(cell_prob, truth, threshold: float = 0.5, pred_instances=None) -> dict:
    """The measures of one 2-D slice at one threshold, beside ``isbi2012`` (host-side; ``unet-jax evaluate``).

    Parameters
    ----------
    cell_prob : float array (H, W) in [0, 1]
        P(cell); cells are ``cell_prob > threshold`` and their 4-connected components (``label_cells``).
    truth : int or bool array (H, W)
        Instances or a binary mask, cells > 0 (see ``truth_instances``).
    threshold : float in [0, 1)
        ``config.eval.threshold``.
    pred_instances : int array (H, W), optional
        The predicted objects (e.g. ``unet_jax.instances.label_instances``); default: the 4-connected components
        of ``cell_prob > threshold``.

    Returns
    -------
    dict of str -> float: ``pixel_mismatch`` (fraction of wrong pixels), ``iou`` (cell class), ``seg`` (Cell
    Tracking Challenge SEG) and the SNEMI3D ``adapted_rand_error`` with its ``adapted_rand_precision`` and
    ``adapted_rand_recall`` of the objects.
    """
    p = _check_prob(cell_prob)
    truth = _check_labels("truth", truth, p.shape)
    threshold = float(_check_thresholds([threshold])[0])
    inst = truth_instances(truth)
    pred = p > threshold
    pred_inst = label_cells(pred) if pred_instances is None else _check_labels("pred_instances", pred_instances,
                                                                                p.shape)
    return dict(pixel_mismatch=pixel_mismatch(pred, inst > 0), iou=iou(pred, inst > 0),
                seg=seg_measure(pred_inst, inst), **adapted_rand_error(pred_inst, inst))
