"""Evaluation of a trained workdir (paper section 4): overlap-tile prediction of a split, the ISBI metrics per
image and their mean, probability TIFFs and overlay PNGs. Host-side driver; the network runs jit-compiled.

``evaluate(workdir, split='validation', tta=False)`` writes to ``WORKDIR/eval_SPLIT/`` (or ``output_dir``)::

    metrics.csv            one row per image (name, every metric), a row 'mean' (mean over the images) and a
                           last row 'stack': the ISBI 2012 measures of all labelled images as one stack, the way
                           the challenge scores a stack (statistics pooled over the slices at each threshold)
    metrics.json           {'per_image': [...], 'mean': {...}, 'stack': {...}, 'step': ..., 'tta': ...}
    NAME_prob.tif          float32 (H, W) cell probability P(class 1)
    NAME_overlay.png       the image with the predicted cell borders (green) and, with labels, wrong pixels
                           (red: predicted membrane inside a cell; blue: predicted cell on a membrane)
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from unet_jax.checks import InvalidInputError, one_of
from unet_jax.data import load_split
from unet_jax.io import (atomic_write, check_writable_directory, ensure_directory, overlay, write_png,
                         write_tiff)
from unet_jax.inference import evaluate_examples, foreground_probability
from unet_jax.workdir import load_model

log = logging.getLogger(__name__)

OBJECT_KEYS = ("object_f1", "object_precision", "object_recall", "mean_ap", "objects_predicted", "objects_true",
               "merges", "splits")


def evaluate(workdir, split: str = "validation", tta: bool = False, step: Optional[int] = None,
             output_dir=None, overrides: Sequence[Tuple[str, str]] = (), write_images: bool = True) -> dict:
    """Evaluate a workdir's checkpoint ``step`` (default: the best) on a data split; host-side driver.

    Returns 'per_image' (the ISBI 2012 measures at their best thresholds and ``threshold_metrics`` at
    ``eval.threshold``), their 'mean', 'stack' (all labelled images pooled as one stack, as the challenge scores),
    'objects' (object F1, precision, recall at IoU 0.5, mean AP of ``eval.instances``), and the paths written. The
    unlabelled 'test' split only writes predictions.
    """
    one_of("split", split, ("train", "validation", "test"))
    out = check_writable_directory(output_dir or Path(workdir) / f"eval_{split}", "--output")   # before any work
    model, config, variables, step = load_model(workdir, step, overrides)
    examples = load_split(config.data, config.weights, split)
    if not examples:
        raise InvalidInputError(f"split {split!r} of data set {config.data.name!r} is empty")
    if split == "test":
        examples = [dict(ex, labelled=False) for ex in examples]
    threshold = config.eval.threshold

    def write(ex, probs):
        if not write_images:
            return
        cell_prob = foreground_probability(probs)
        labelled = ex.get("labelled", True) and np.any(ex["instances"])
        stem = Path(str(ex["name"]).replace("/", "_")).stem     # CTC names are 'SEQ/tNNN'
        write_tiff(out / f"{stem}_prob.tif", cell_prob.astype(np.float32))
        write_png(out / f"{stem}_overlay.png",
                  overlay(ex["image"], cell_prob, threshold, ex["instances"] if labelled else None))

    stack, rows = evaluate_examples(model, variables, examples, config, tta=tta, sweep=True, on_prediction=write,
                                    progress=f"evaluate {split}")
    objects = {k: stack[k] for k in OBJECT_KEYS if k in stack}
    stack = {k: v for k, v in stack.items() if k not in OBJECT_KEYS + ("loss", "iou", "trivial_iou", "seg",
                                                                       "foreground_fraction", "pixel_mismatch")}
    keys = sorted({k for r in rows for k in r if k != "name"})
    mean = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
    ensure_directory(out, "--output")

    def _csv(p):
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, ["name"] + keys)
            w.writeheader()
            for r in rows:
                w.writerow(r)
            if keys:
                w.writerow(dict(mean, name="mean"))
            if stack:
                w.writerow(dict(stack, name="stack"))
    csv_path = atomic_write(out / "metrics.csv", _csv)
    result = {"per_image": rows, "mean": mean, "stack": stack, "objects": objects,
              "instances": config.eval.instances, "split": split, "tta": tta,
              "step": step}
    json_path = atomic_write(out / "metrics.json", lambda p: Path(p).write_text(json.dumps(result, indent=1)))
    result.update(csv=str(csv_path), json=str(json_path), output_dir=str(out))
    return result
