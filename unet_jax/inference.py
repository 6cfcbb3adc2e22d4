"""One inference path (paper section 2, "overlap-tile"): the probabilities of whole images and the measures of
labelled examples, used alike by training's validation, ``unet-jax evaluate`` and ``unet-jax predict``.

Host-side drivers around ``unet_jax.tiling.predict_tiled``; the network runs jit-compiled, its variables an argument
of the compiled function, so a changing model (validation during training) does not recompile. Probabilities are
float32 (H, W, K) softmax outputs; for two classes, class 1 is the cell (foreground); a ``data.target='contours'``
network has three (background, interior, contour).
"""
from __future__ import annotations

import functools
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm.auto import tqdm

from unet_jax import metrics
from unet_jax.checks import InvalidInputError
from unet_jax.isbi import isbi2012_stats, isbi2012_summary
from unet_jax.config import ISBI_METRICS
from unet_jax.instances import label_instances
from unet_jax.model import UNet
from unet_jax.tiling import predict_tiled

__all__ = ["predict_probabilities", "evaluate_examples", "foreground_probability", "centre_map", "objects_of"]


@functools.lru_cache(maxsize=16)
def _apply_fn(model: UNet) -> Callable:
    """``(variables, tiles) -> logits`` in inference mode, one function object per model, so the compilations
    ``unet_jax.tiling`` caches per function object serve every call with that model."""
    return lambda variables, x: model.apply(variables, x, train=False)


def predict_probabilities(model: UNet, variables, image, eval_config, tta: bool = False,
                          progress: bool = False) -> np.ndarray:
    """Softmax probabilities (H, W, K) float32 of one (H, W[, C]) image by overlap-tile prediction.

    ``eval_config``: the ``eval`` config section (``tile_size``, ``batch_size``); ``tta`` averages the 8
    flips/rotations; ``progress`` shows a bar over tile batches.
    """
    return predict_tiled(_apply_fn(model), image, int(eval_config.tile_size), depth=model.depth,
                         padding=model.padding, batch_size=int(eval_config.batch_size), tta=tta,
                         num_classes=model.num_classes, progress=progress, variables=variables)


def evaluate_examples(model: UNet, variables, examples: Sequence[dict], config, *, tta: bool = False,
                      sweep: bool = False, on_prediction: Optional[Callable[[dict, np.ndarray], None]] = None,
                      progress: Optional[str] = None) -> Tuple[Dict[str, float], List[dict]]:
    """Predict ``examples`` (``load_split`` dicts) and measure the labelled ones: the evaluator of validation
    and of ``evaluate``. ``sweep``: the ISBI 2012 measures at the challenge's thresholds per image and pooled (else at
    ``eval.threshold``, pooled, only for isbi2012 or an ISBI ``train.best_metric``); ``on_prediction(example,
    probabilities)`` after each image; ``progress``: a bar title or None.

    Returns (summary, rows): ``summary`` pools the labelled images ('loss', 'pixel_mismatch', and for two classes
    'iou', 'trivial_iou', 'foreground_fraction', the object measures of ``objects_of`` and the ISBI measures; for
    class masks the mean per-class 'iou'); ``rows`` one dict per example with its own measures. docs/data.md lists
    every key."""
    if not examples:
        raise InvalidInputError("examples must be a non-empty list of examples, got an empty list")
    threshold = config.eval.threshold
    challenge = sweep or config.data.name == "isbi2012" or config.train.best_metric in ISBI_METRICS
    items = examples
    if progress:
        items = tqdm(examples, desc=progress, unit="image")
    num = den = wrong = total = 0.0
    rows, stats, ious, trivial, fg, matches = [], [], [], [], [], []
    for ex in items:
        probs = predict_probabilities(model, variables, ex["image"], config.eval, tta=tta)
        if on_prediction is not None:
            on_prediction(ex, probs)
        row = {"name": ex["name"]}
        rows.append(row)
        if not (ex.get("labelled", True) and np.any(ex["instances"])):
            continue
        truth = metrics.truth_instances(ex["instances"])
        labels = np.asarray(ex["classes"], np.int64) if "classes" in ex else (truth > 0).astype(np.int64)
        weights = np.asarray(ex["weights"], np.float64)
        p_true = np.take_along_axis(probs, labels[..., None], axis=-1)[..., 0].astype(np.float64)
        num += float((weights * -np.log(np.maximum(p_true, 1e-12))).sum())
        den += float(weights.sum())
        objects = objects_of(probs, config)
        if not is_foreground(probs, config):   # class masks: per-class IoU of the arg-max, objects of any class
            pred = probs.argmax(-1)
            wrong += metrics.pixel_mismatch(pred, labels) * labels.size
            total += labels.size
            row.update({f"iou_class{k}": metrics.iou(pred == k, labels == k) for k in range(1, probs.shape[-1])})
            row["iou"] = float(np.mean([row[f"iou_class{k}"] for k in range(1, probs.shape[-1])]))
            ious.append(row["iou"])
            row["seg"] = metrics.seg_measure(objects, truth)
            matches.append(metrics.object_matches(objects, truth))
            continue
        cell_prob = foreground_probability(probs)
        row.update(metrics.threshold_metrics(cell_prob, truth, threshold, pred_instances=objects))
        matches.append(metrics.object_matches(objects, truth))
        wrong += row["pixel_mismatch"] * labels.size
        total += labels.size
        ious.append(row["iou"])
        trivial.append((metrics.iou(np.zeros_like(labels), labels), metrics.iou(np.ones_like(labels), labels)))
        fg.append((labels > 0).mean())
        if challenge:
            stats.append(isbi2012_stats(cell_prob, truth, thresholds=None if sweep else (threshold,)))
            if sweep:
                row.update(isbi2012_summary(stats[-1:]))
    summary: Dict[str, float] = {}
    if total:
        summary.update(loss=num / den if den > 0 else 0.0, pixel_mismatch=wrong / total)
    if stats:
        isbi = isbi2012_summary(stats)
        summary.update(isbi if sweep else {k: isbi[k] for k in ISBI_METRICS})
    if ious:
        summary.update(iou=float(np.mean(ious)), seg=float(np.nanmean([r["seg"] for r in rows if "seg" in r])))
        summary.update({k: float(np.mean([r[k] for r in rows if k in r])) for k in rows_keys(rows, "iou_class")})
        summary.update(metrics.object_scores(matches))
    if trivial:
        summary.update(trivial_iou=float(np.max(np.mean(trivial, axis=0))), foreground_fraction=float(np.mean(fg)))
    return summary, rows


def rows_keys(rows: Sequence[dict], prefix: str) -> List[str]:
    """The sorted keys starting with ``prefix`` that any row has."""
    return sorted({k for r in rows for k in r if k.startswith(prefix)})


def is_foreground(probs, config) -> bool:
    """Whether ``probs`` (..., K) is a foreground network's: two classes, or a ``data.target`` of 'contours' or
    'distance' (their classes but background are parts of the objects)."""
    return probs.shape[-1] == 2 or config.data.target in ("contours", "distance")


def foreground_probability(probs) -> np.ndarray:
    """P(object) of softmax probabilities (..., K): class 1 for two classes, any class but background else."""
    fg = probs[..., 1] if probs.shape[-1] == 2 else 1.0 - probs[..., 0]
    return np.clip(np.nan_to_num(fg), 0.0, 1.0)


def centre_map(probs) -> np.ndarray:
    """The predicted normalised distance to the object's edge (0 background, 1 centre) of a
    ``data.target='distance'`` network's probabilities (..., 1 + bins): the expectation over its distance classes
    (class k stands for the interval ((k-1)/bins, k/bins], taken at its middle)."""
    bins = probs.shape[-1] - 1
    mids = (np.arange(1, bins + 1, dtype=np.float32) - 0.5) / bins
    return np.clip(np.nan_to_num(probs[..., 1:] @ mids), 0.0, 1.0)


def objects_of(probs, config) -> np.ndarray:
    """The objects of one image's softmax probabilities (H, W, K) as the config asks (``eval.instances``,
    ``eval.threshold``, ``eval.watershed_h``, ``eval.watershed_smooth``, ``eval.min_object_size``,
    ``eval.min_object_fraction`` of ``eval.object_area``; 'contours' seeds from P(interior) of a
    ``data.target='contours'`` network, 'centres' from the ``centre_map`` of a 'distance' one):
    uint16/uint32 labels, 0 = background."""
    e = config.eval
    seeds = {"contours": lambda: probs[..., 1], "centres": lambda: centre_map(probs)}.get(e.instances)
    return label_instances(foreground_probability(probs), threshold=e.threshold, method=e.instances,
                           h=e.watershed_h, min_size=e.min_object_size, smooth=e.watershed_smooth,
                           interior=None if seeds is None else seeds(), min_fraction=e.min_object_fraction,
                           object_area=e.object_area)
