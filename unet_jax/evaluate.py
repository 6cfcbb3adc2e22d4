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
import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from unet_jax.config import UsageError, apply_overrides
from unet_jax.data.io import check_directory, ensure_directory

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------------
# Small host-side helpers shared with predict
# ------------------------------------------------------------------------------------------------------------

def atomic_write(path, write_fn):
    """Call ``write_fn(tmp_path)`` then rename onto ``path``, so a failure leaves no half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)       # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_tiff(path, array):
    import tifffile
    return atomic_write(path, lambda p: tifffile.imwrite(p, np.asarray(array)))


def write_png(path, rgb_uint8):
    import skimage.io
    return atomic_write(path, lambda p: skimage.io.imsave(p, rgb_uint8, check_contrast=False))


def overlay(image, cell_prob, threshold=0.5, truth_instances=None) -> np.ndarray:
    """RGB uint8 (H, W, 3): the image in grey, predicted cell borders in green and, given the truth, the wrongly
    classified pixels (red: predicted membrane inside a true cell; blue: predicted cell on a true membrane)."""
    from skimage.segmentation import find_boundaries
    img = np.asarray(image, np.float32)
    if img.ndim == 3:
        img = img.mean(axis=-1)
    grey = np.clip(img, 0, 1)
    rgb = np.stack([grey, grey, grey], -1)
    pred = cell_prob > threshold
    if truth_instances is not None:
        truth = np.asarray(truth_instances) > 0
        rgb[truth & ~pred] = 0.6 * rgb[truth & ~pred] + 0.4 * np.array([1.0, 0.0, 0.0])
        rgb[~truth & pred] = 0.6 * rgb[~truth & pred] + 0.4 * np.array([0.0, 0.3, 1.0])
    rgb[find_boundaries(pred, mode="inner")] = (0.0, 1.0, 0.0)
    return (rgb * 255 + 0.5).astype(np.uint8)


def load_model(workdir, step: Optional[int] = None, overrides: Sequence[Tuple[str, str]] = (), with_step=False):
    """Restore a workdir's variables and config (host-side) and return (``model.apply``, config, variables).

    ``overrides`` ("eval.tile_size", "380") may change the eval/data sections (e.g. a moved data root); model
    fields cannot be overridden since they must match the checkpoint. ``with_step=True`` appends the restored
    step to the returned tuple.
    """
    from unet_jax.checkpoint import restore_params
    from unet_jax.train import create_model
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"workdir {str(workdir)!r} is a file; expected the directory that `unet-jax train "
                         f"--workdir` wrote")
    if not workdir.is_dir():
        raise FileNotFoundError(f"workdir {str(workdir)!r} does not exist; train first with "
                                f"`unet-jax train --workdir {workdir}`")
    if not (workdir / "config.json").exists():
        raise FileNotFoundError(f"workdir {str(workdir)!r} holds no training run (no config.json); train first "
                                f"with `unet-jax train --workdir {workdir}`")
    variables, config, step = restore_params(workdir, step, with_step=True)
    if overrides:
        bad = [k for k, _ in overrides if k.split(".")[0] == "model"]
        if bad:
            raise UsageError(f"--config.{bad[0]}: model fields come from the checkpoint and cannot be overridden")
        apply_overrides(config, overrides)
    from unet_jax.model import output_size
    output_size(int(config.eval.tile_size), int(config.model.depth), config.model.padding)
    model = create_model(config)
    return (model.apply, config, variables, step) if with_step else (model.apply, config, variables)


def predict_image(apply_fn, config, image, variables, tta=False, progress=False) -> np.ndarray:
    """(H, W, K) float32 probabilities of one (H, W[, C]) image with the config's eval tile settings."""
    from unet_jax.tiling import predict_tiled
    return predict_tiled(apply_fn, image, int(config.eval.tile_size), depth=int(config.model.depth),
                         padding=config.model.padding, batch_size=int(config.eval.batch_size), tta=tta,
                         progress=progress, variables=variables)


# ------------------------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------------------------

def evaluate(workdir, split: str = "validation", tta: bool = False, step: Optional[int] = None,
             output_dir=None, overrides: Sequence[Tuple[str, str]] = (), write_images: bool = True) -> dict:
    """Evaluate a trained workdir on a data split (host-side driver).

    Returns
    -------
    dict with 'per_image' (list of {'name', metric: value}), 'mean' ({metric: value}, the mean over the images),
    'stack' (``unet_jax.metrics.isbi2012`` of all labelled images pooled as one stack: the figures to compare with
    the challenge's), 'csv' and 'json' (paths written), 'output_dir'. Per image: the ISBI 2012 measures at their
    best thresholds (``isbi2012``: ``pixel_error``, ``rand_error``, ``warping_error``, ``vrand_thinned``,
    ``vinfo_thinned``, ... and each ``*_threshold``) and, at ``eval.threshold``, ``threshold_metrics``
    (``pixel_mismatch``, ``iou``, ``seg``, ``adapted_rand_error``). For the unlabelled 'test' split only the
    predictions are written and 'mean' and 'stack' are empty.
    """
    from tqdm.auto import tqdm

    from unet_jax.data import load_split
    from unet_jax.metrics import isbi2012_stats, isbi2012_summary, threshold_metrics
    if split not in ("train", "validation", "test"):
        raise ValueError(f"split must be 'train', 'validation' or 'test', got {split!r}")
    out = check_directory(output_dir or Path(workdir) / f"eval_{split}", "--output")
    apply_fn, config, variables, step = load_model(workdir, step, overrides, with_step=True)
    examples = load_split(config.data, config.weights, split)
    if not examples:
        raise ValueError(f"split {split!r} of data set {config.data.name!r} is empty")
    threshold = float(config.eval.get("threshold", 0.5))
    rows, stats = [], []
    for ex in tqdm(examples, desc=f"evaluate {split}", unit="image"):
        probs = predict_image(apply_fn, config, ex["image"], variables, tta=tta)
        cell_prob = probs[..., 1]
        labelled = ex.get("labelled", True) and np.any(ex["instances"])
        row = {"name": ex["name"]}
        if labelled and split != "test":
            stats.append(isbi2012_stats(cell_prob, ex["instances"]))
            row.update(isbi2012_summary(stats[-1:]))
            row.update(threshold_metrics(cell_prob, ex["instances"], threshold))
        rows.append(row)
        if write_images:
            stem = Path(str(ex["name"]).replace("/", "_")).stem     # CTC names are 'SEQ/tNNN'
            write_tiff(out / f"{stem}_prob.tif", cell_prob.astype(np.float32))
            write_png(out / f"{stem}_overlay.png",
                      overlay(ex["image"], cell_prob, threshold, ex["instances"] if labelled else None))
    keys = sorted({k for r in rows for k in r if k != "name"})
    mean = {k: float(np.mean([r[k] for r in rows if k in r])) for k in keys}
    stack = isbi2012_summary(stats) if stats else {}
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
    result = {"per_image": rows, "mean": mean, "stack": stack, "split": split, "tta": tta, "step": step}
    json_path = atomic_write(out / "metrics.json", lambda p: Path(p).write_text(json.dumps(result, indent=1)))
    result.update(csv=str(csv_path), json=str(json_path), output_dir=str(out))
    return result
