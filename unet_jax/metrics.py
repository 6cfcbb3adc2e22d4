"""Per-image and object measures: pixel mismatch, IoU, SEG, adapted Rand error, object F1 / DSB AP, merges and
splits. Host-side (numpy). Definitions: docs/metrics.md; the ISBI 2012 challenge measures: ``unet_jax.isbi``.

``cell_prob`` is P(cell) (H, W) in [0, 1], cells ``cell_prob > t``; label images are int (H, W), objects > 0.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.metrics import contingency_table

from unet_jax import checks
from unet_jax.checks import InvalidInputError

__all__ = ["truth_instances", "label_cells", "pixel_mismatch", "pixel_fscore", "adapted_rand_error", "iou",
           "seg_measure", "threshold_metrics", "AP_THRESHOLDS", "object_matches", "object_scores",
           "check_probabilities", "check_labels", "check_thresholds"]

AP_THRESHOLDS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))   # 0.5, 0.55, ..., 0.95 (DSB 2018)

_FOUR = ndi.generate_binary_structure(2, 1)


# ----------------------------------------------------------------------------------------------------------------
# Input checks (shared with unet_jax.isbi)
# ----------------------------------------------------------------------------------------------------------------

def _nonempty(name, a):
    if a.size == 0:
        raise InvalidInputError(f"{name} must be a non-empty array, got shape {a.shape}")
    return a


def check_probabilities(name, x, ndim=2) -> np.ndarray:
    """``x`` as a non-empty float array of ``ndim`` dimensions with finite values in [0, 1]."""
    p = _nonempty(name, checks.array(name, x, ndim=ndim, kind="f"))
    if not (np.all(np.isfinite(p)) and p.min() >= 0.0 and p.max() <= 1.0):
        raise InvalidInputError(f"{name} must hold probabilities in [0, 1], got values in [{p.min()}, {p.max()}]")
    return p


def check_labels(name, x, ndim=2, kind="biu") -> np.ndarray:
    """``x`` as a non-empty, non-negative label image (bool or integers; ``kind`` as ``checks.array``)."""
    a = _nonempty(name, checks.array(name, x, ndim=ndim, kind=kind))
    if a.dtype != bool and a.min() < 0:
        raise InvalidInputError(f"{name} must be non-negative (0 = membrane/background, > 0 = cells), got min "
                                f"{a.min()}")
    return a


def check_thresholds(thresholds, closed: bool = False) -> tuple:
    """``thresholds`` as a non-empty tuple of floats in [0, 1) ([0, 1] with ``closed``)."""
    try:
        ths = tuple(float(t) for t in np.ravel(np.asarray(thresholds, dtype=np.float64)))
    except (TypeError, ValueError):
        ths = ()
    if not ths or not all(0.0 <= t <= 1.0 and (closed or t < 1.0) for t in ths):
        raise InvalidInputError(f"thresholds must be a non-empty sequence of values in [0, {'1]' if closed else '1)'}"
                                f", got {thresholds!r}")
    return ths


def _pair(name_a, a, name_b, b):
    """Two checked label images of one shape."""
    a, b = check_labels(name_a, a), check_labels(name_b, b)
    checks.same_shape(name_a, a, name_b, b)
    return a, b


# ----------------------------------------------------------------------------------------------------------------
# Instances of binary masks
# ----------------------------------------------------------------------------------------------------------------

def truth_instances(truth) -> np.ndarray:
    """Ground truth as int32 instance labels: ``truth`` itself when it holds two or more object ids, else the
    4-connected components of ``truth > 0`` (a binary mask such as ISBI 2012's 0/255)."""
    return _truth_instances(check_labels("truth", truth))


def _truth_instances(truth):
    nonzero = np.unique(truth[truth > 0]) if truth.dtype != bool else np.array([1])
    if truth.dtype == bool or nonzero.size <= 1:
        return _label_cells(truth)
    return truth.astype(np.int32)


def label_cells(cell_mask) -> np.ndarray:
    """The 4-connected components of a binary mask, int32 (cells 4-, membranes 8-connected: a one-pixel diagonal
    membrane separates two cells)."""
    return _label_cells(check_labels("cell_mask", cell_mask))


def _label_cells(mask):
    return ndi.label(mask > 0, structure=_FOUR)[0].astype(np.int32)


# ----------------------------------------------------------------------------------------------------------------
# Pixel measures
# ----------------------------------------------------------------------------------------------------------------

def pixel_mismatch(pred_binary, truth_binary) -> float:
    """Fraction of pixels whose class (non-zero = cell) differs."""
    p, t = _pair("pred_binary", pred_binary, "truth_binary", truth_binary)
    return _mismatch(p > 0, t > 0)


def _mismatch(p, t) -> float:
    return float(np.mean(p != t))


def pixel_fscore(pred_binary, truth_binary) -> float:
    """F-score (Dice) of the cell class, 2 TP / (2 TP + FP + FN); 1.0 when both maps are empty."""
    p, t = _pair("pred_binary", pred_binary, "truth_binary", truth_binary)
    p, t = p > 0, t > 0
    tp = np.count_nonzero(p & t)
    denom = 2 * tp + np.count_nonzero(p != t)
    return 1.0 if denom == 0 else float(2 * tp / denom)


def iou(pred_binary, truth_binary) -> float:
    """Intersection over union of the cell class (non-zero pixels); 1.0 when both are empty."""
    p, t = _pair("pred_binary", pred_binary, "truth_binary", truth_binary)
    return _iou(p > 0, t > 0)


def _iou(p, t) -> float:
    union = np.count_nonzero(p | t)
    return 1.0 if union == 0 else float(np.count_nonzero(p & t) / union)


# ----------------------------------------------------------------------------------------------------------------
# Segment measures
# ----------------------------------------------------------------------------------------------------------------

def adapted_rand_error(pred_instances, truth_instances_) -> dict:
    """The SNEMI3D adapted Rand error (``skimage.metrics.adapted_rand_error``; not the ISBI 2012 Rand error).

    Returns ``adapted_rand_error`` (1 - F), ``adapted_rand_precision`` and ``adapted_rand_recall`` (scikit-image
    returns the last two in the opposite order).
    """
    return _adapted_rand(*_pair("pred_instances", pred_instances, "truth_instances", truth_instances_))


def _adapted_rand(pred, truth) -> dict:
    table = contingency_table(truth.astype(np.int64), pred.astype(np.int64), ignore_labels=[0], sparse_type="array")
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


def seg_measure(pred_instances, truth_instances_) -> float:
    """The Cell Tracking Challenge SEG measure: the mean over true objects of the Jaccard index with the predicted
    object covering more than half of it (0 if none); NaN when the truth has no object."""
    return _seg(*_pair("pred_instances", pred_instances, "truth_instances", truth_instances_))


def _seg(pred, truth) -> float:
    pred, truth = pred.astype(np.int64), truth.astype(np.int64)
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
# Objects: F1 at IoU 0.5, DSB 2018 mean AP, merges and splits
# ----------------------------------------------------------------------------------------------------------------

def object_matches(pred_instances, truth_instances_, thresholds: Sequence[float] = AP_THRESHOLDS) -> dict:
    """One image's objects matched one-to-one to the true objects at each IoU threshold (IoU > t, t >= 0.5), with
    its merges and splits. Returns 'tp' (per threshold), 'n_pred', 'n_true', 'merges', 'splits', 'thresholds'."""
    if any(not 0.5 <= float(t) < 1.0 for t in thresholds):
        raise InvalidInputError(f"thresholds must lie in [0.5, 1) (one-to-one matching), got {tuple(thresholds)}")
    pred, truth = _pair("pred_instances", pred_instances, "truth_instances", truth_instances_)
    pred, truth = pred.astype(np.int64), truth.astype(np.int64)
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
    """Object precision, recall and F1 at IoU 0.5 (counts pooled over images), the DSB 2018 ``mean_ap`` (per
    image, then averaged) and the summed merges and splits of ``object_matches`` results."""
    if not matches:
        raise InvalidInputError("matches must be a non-empty list of object_matches() results")
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
# One slice at one threshold
# ----------------------------------------------------------------------------------------------------------------

def threshold_metrics(cell_prob, truth, threshold: float = 0.5, pred_instances=None) -> dict:
    """``pixel_mismatch``, ``iou``, ``seg`` and the adapted Rand error (with precision and recall) of one slice at
    ``threshold`` (``unet-jax evaluate``). Objects: ``pred_instances``, default the 4-connected components of
    ``cell_prob > threshold``; the truth goes through ``truth_instances``."""
    p = check_probabilities("cell_prob", cell_prob)
    truth = check_labels("truth", truth)
    checks.same_shape("cell_prob", p, "truth", truth)
    threshold = checks.real("threshold", threshold, 0.0, 1.0, high_open=True)
    if pred_instances is not None:
        pred_instances = check_labels("pred_instances", pred_instances)
        checks.same_shape("cell_prob", p, "pred_instances", pred_instances)
    inst = _truth_instances(truth)
    pred = p > threshold
    pred_inst = _label_cells(pred) if pred_instances is None else pred_instances
    return dict(pixel_mismatch=_mismatch(pred, inst > 0), iou=_iou(pred, inst > 0), seg=_seg(pred_inst, inst),
                **_adapted_rand(pred_inst, inst))
