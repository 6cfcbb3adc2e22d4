"""The ISBI 2012 EM challenge measures, computed as the challenge's reference code does. Host-side.

``isbi2012`` scores one slice or a stack; ``isbi2012_stats`` (per slice) and ``isbi2012_summary`` (pooled) let a
caller score slices as they come. The reference is Fiji's Trainable_Segmentation (trainableSegmentation.metrics);
the definitions and conventions are in docs/metrics.md.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

from unet_jax import checks
from unet_jax.checks import InvalidInputError
from unet_jax.metrics import check_labels, check_probabilities, check_thresholds

__all__ = ["ISBI_THRESHOLDS", "DEFAULT_THRESHOLDS", "pixel_error_sweep", "simple_point_lut", "isbi2012",
           "isbi2012_stats", "isbi2012_summary"]

DEFAULT_THRESHOLDS = tuple(round(0.1 * k, 1) for k in range(1, 10))       # pixel_error_sweep's


def _java_range(start: float, stop: float, step: float) -> tuple:
    """``for (double th = start; th <= stop; th += step)`` accumulated in double precision, as Java does."""
    out, th = [], start
    while th <= stop:
        out.append(th)
        th += step
    return tuple(out)


# The challenge script's thresholds: 0.0, 0.1, ..., 11 values, the last 0.9999999999999999.
ISBI_THRESHOLDS = _java_range(0.0, 1.0, 0.1)

_FOUR = ndi.generate_binary_structure(2, 1)


def pixel_error_sweep(cell_prob, truth_binary, thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> dict:
    """1 - the maximal pixel F-score over thresholds of ``cell_prob > t`` (a single image's ISBI pixel error).

    Returns ``pixel_error``, ``threshold`` (the first best) and per-threshold ``fscores`` and ``mismatch``.
    """
    p = check_probabilities("cell_prob", cell_prob, ndim=2)
    t = check_labels("truth_binary", truth_binary)
    checks.same_shape("cell_prob", p, "truth_binary", t)
    t, ths = t > 0, check_thresholds(thresholds)
    fs = np.array([_dice(*_pixel_counts(p > th, t)) for th in ths])
    mismatch = np.array([np.mean((p > th) != t) for th in ths])
    best = int(np.argmax(fs))
    return dict(pixel_error=float(1.0 - fs[best]), threshold=float(ths[best]), fscores=fs, mismatch=mismatch)


# The 8 neighbours, clockwise from north; bit k of a neighbourhood code is neighbour k.
_NEIGHBOURS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def _pixel_counts(cells, truth_cells):
    """(tp, fp, fn) of the cell class."""
    return (np.count_nonzero(cells & truth_cells), np.count_nonzero(cells & ~truth_cells),
            np.count_nonzero(~cells & truth_cells))


def _dice(tp, fp, fn) -> float:
    """2 TP / (2 TP + FP + FN), 1.0 when both maps are empty (``metrics.pixel_fscore``)."""
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else float(2 * tp / denom)


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
    """Lookup table (256,) of 2-D simple points for cells 4-connected, membranes 8-connected.

    Index: bit k set when neighbour k (clockwise from north) is a cell. Simple iff T4 = 1 and T8' = 1
    (Bertrand's topological numbers), independent of the pixel's own value. In 2-D this equals the reference's
    WarpingError.simple2DBertrand(patch, 4) (the slice between two empty ones, tested as a 3-D (6, 26) point).
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


#
# Each function follows a method of Fiji's Trainable_Segmentation, package trainableSegmentation.metrics (classes
# PixelError, RandError, VariationOfInformation, WarpingError, ClassificationStatistics) and
# trainableSegmentation.utils.WatershedTransform2D, the code that scores the ISBI 2012 challenge. Common to all:
# the proposal is read as float32 (the challenge reads a 32-bit TIFF) and binarised as ``proposal > th`` (float32
# value compared in double precision); segments are 4-connected components of the pixels above the threshold
# (Utils.connectedComponents(..., 4)), 0 = membrane.

def _rand_counts(gt, seg):
    """(tp, fp, fn) of ordered pixel pairs over the truth foreground, N^2 normalisation, proposed membrane
    pixels as singletons (RandError.getForegroundRestrictedRandIndexStatsN2); NaN for an empty truth."""
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
    """F-score as ClassificationStatistics computes it: precision (recall) 1 without false positives
    (negatives); 0 when precision + recall is not > 0 (NaN counts included)."""
    precision = 1.0 if fp == 0 else tp / (tp + fp)
    recall = 1.0 if fn == 0 else tp / (tp + fn)
    return 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _info_fscore(gt, seg) -> float:
    """V_Info of one slice (VariationOfInformation.foregroundRestrictedFscore): the harmonic mean of I / H(truth)
    and I / H(proposal) over the truth foreground, proposed membrane pixels as singletons; NaN for an empty truth."""
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
    """Labels of one flooding layer from its neighbours' statuses (L, 4) in W, N, E, S order (> 0 basin, 0 dam,
    -1 not yet labelled), by the reference queue's per-pixel rule; 0 = dam."""
    s = np.full(status.shape[0], _INQUEUE)
    for v in status.T:
        basin = v > 0
        take = basin & ((s == _INQUEUE) | (s == _SOFT_DAM))
        clash = basin & (s > 0) & (s != v)
        s = np.where(take, v, np.where(clash, _DAM, s))
        s = np.where((v == 0) & (s == _INQUEUE), _SOFT_DAM, s)
    return np.where(s > 0, s, 0)


def _thin_membranes(cells):
    """The proposal after border thinning: a 4-connected watershed from the cell segments over the membranes
    (WatershedTransform2D(binary, 4).apply()); int64 (H, W), > 0 basins, 0 one-pixel dams.

    Emulates the reference's FIFO flooding exactly: layer d = membrane pixels at city-block distance d, layer 1
    in column-major order, layer d + 1 in the order it is reached from layer d (W, N, E, S); inside a layer,
    labels are iterated to the fixed point.
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
    """Warp the truth onto ``prob32 > th`` by simple-point flips (WarpingError.simplePointWarp2d).

    Outside the image is membrane. Mismatches are visited by decreasing ``|prob - th|`` (float32; ties
    column-major), each simple one flipped at once; sweeps repeat until one flips none (a mismatch whose
    neighbours did not change is not retested). Returns (warped truth, rows and columns of the mismatches left).
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
    """(splits, mergers) among the mismatches left by the warping (WarpingError.classifyMismatches2d,
    clusterMismatchesByType), counted per pixel; see docs/metrics.md. Additions and deletions are not counted."""
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


def _check_inputs(cell_prob, truth, thresholds, ndim):
    """The checked arguments of ``isbi2012`` / ``isbi2012_stats``: (probabilities, truth, thresholds)."""
    p = check_probabilities("cell_prob", cell_prob, ndim=ndim)
    t = check_labels("truth", truth, ndim=p.ndim, kind="biuf")
    checks.same_shape("cell_prob", p, "truth", t)
    ths = ISBI_THRESHOLDS if thresholds is None else check_thresholds(thresholds, closed=True)
    return p, t, ths


def isbi2012_stats(cell_prob, truth, thresholds: Optional[Sequence[float]] = None) -> dict:
    """Per-threshold statistics of one (H, W) slice for ``isbi2012_summary``.

    Returns float64 arrays over the thresholds: 'pixel', 'rand', 'rand_thinned' (T, 3) (tp, fp, fn) counts;
    'vinfo_thinned', 'splits', 'mergers' (T,); 'thresholds'; and 'pixels' = H * W.
    """
    return _slice_stats(*_check_inputs(cell_prob, truth, thresholds, ndim=2))


def _slice_stats(p, t, ths) -> dict:
    p32 = p.astype(np.float32)
    p64, t64 = p32.astype(np.float64), t.astype(np.float32).astype(np.float64)
    truth_cells = t64 > 0
    out = {k: [] for k in ("pixel", "rand", "rand_thinned", "vinfo_thinned", "splits", "mergers")}
    gt_mask, gt = None, None
    for th in ths:
        cells = p64 > th
        out["pixel"].append(_pixel_counts(cells, truth_cells))
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
    """(best value, its threshold) as the reference scans: the first strict improvement on 0 (scores) or +inf
    (errors); NaN never improves; the first threshold when nothing does."""
    best, at = (0.0, thresholds[0]) if larger else (math.inf, thresholds[0])
    for v, th in zip(values, thresholds):
        if (v > best) if larger else (v < best):
            best, at = float(v), float(th)
    return best, float(at)


def isbi2012_summary(stats: Sequence[dict]) -> dict:
    """The ISBI 2012 measures of a stack from its slices' ``isbi2012_stats``: pixel, Rand and warping counts
    pooled over slices, V_Rand / V_Info after thinning averaged per slice (as the challenge script does), each
    at its best threshold. Keys: see ``isbi2012``."""
    if not stats:
        raise InvalidInputError("stats must hold the isbi2012_stats of at least one slice")
    ths = stats[0]["thresholds"]
    if any(s["thresholds"].shape != ths.shape or np.any(s["thresholds"] != ths) for s in stats):
        raise InvalidInputError("all slices' isbi2012_stats must use the same thresholds")
    return _summary(stats, ths)


def _summary(stats, ths) -> dict:
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
    """The ISBI 2012 challenge measures of one (H, W) slice or an (N, H, W) stack, as the reference computes them.

    ``cell_prob``: P(cell) in [0, 1]; ``truth``: cells > 0, membranes 0; ``thresholds``: default
    ``ISBI_THRESHOLDS``. Returns floats, each measure at its best threshold (under ``<key>_threshold``):
    ``pixel_error``, ``rand_error``, ``warping_error`` (with ``warping_splits``, ``warping_mergers``),
    ``vrand_thinned``, ``vrand_thinned_micro`` and ``vinfo_thinned`` (docs/metrics.md).
    """
    p, t, ths = _check_inputs(cell_prob, truth, thresholds, ndim=(2, 3))
    slices = [(p, t)] if p.ndim == 2 else zip(p, t)
    return _summary([_slice_stats(ps, ts, ths) for ps, ts in slices], np.asarray(ths))


