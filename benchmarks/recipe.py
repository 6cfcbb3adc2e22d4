"""Own-data recipe on real data: train a folder data set as a user would, then score held-out images.

Builds folder-layout copies of real data sets (train folder + held-out test images), runs
``unet_jax.train.train_and_evaluate`` with ``experiments/folder.py`` plus overrides, restores the kept checkpoint
and reports foreground IoU / Dice on the held-out images next to the trivial predictions. Prints JSON.

Tasks (``--task``):

* ``nuclei``: ../shared/data/nuclei_bitdepth, train on the 20x / 40x images (48), test on the 63x (22), as its
  README suggests; fluorescence, 16-bit, foreground 2-25 %.
* ``isbi_cells``: ISBI 2012 training stack, slices 0-24 train, 25-29 test; EM, cells foreground (78 %).
* ``isbi_membranes``: the same with the membranes as foreground (22 %): a thin, rare structure.
* ``bbbc039``: ../shared/data/bbbc039, its 70 train images (the folder data set holds 20% of them out for
  validation) and its 30 held-out test images; fluorescence nuclei, dense and touching, instance masks.

    python benchmarks/recipe.py --task nuclei --workdir /tmp/recipe/nuclei --set train.num_steps=500
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
TASKS = ("nuclei", "isbi_cells", "isbi_membranes", "bbbc039")


def build_task(task: str, root: Path, shared: Path = SHARED) -> tuple:
    """Write (or reuse) ``root/train/{images,masks}`` and ``root/test/{images,masks}``; returns (train, test)."""
    import tifffile
    if task == "bbbc039":          # already in the folder layout, with a held-out part
        return shared / "bbbc039" / "train", shared / "bbbc039" / "test"
    train, test = root / "train", root / "test"
    if (test / "masks").is_dir() and any((test / "masks").iterdir()):
        return train, test
    for d in (train, test):
        (d / "images").mkdir(parents=True, exist_ok=True)
        (d / "masks").mkdir(parents=True, exist_ok=True)
    if task == "nuclei":
        src = shared / "nuclei_bitdepth"
        for p in sorted((src / "images").glob("*.tif")):
            dst = test if "_63x_" in p.name else train
            for sub in ("images", "masks"):
                link = dst / sub / p.name
                if not link.exists():
                    os.symlink(src / sub / p.name, link)
        return train, test
    src = shared / "isbi2012"
    vol, lab = tifffile.imread(src / "train-volume.tif"), tifffile.imread(src / "train-labels.tif")
    for i in range(vol.shape[0]):
        dst = test if i >= 25 else train
        mask = lab[i] if task == "isbi_cells" else (255 - lab[i])
        tifffile.imwrite(dst / "images" / f"slice{i:02d}.tif", vol[i])
        tifffile.imwrite(dst / "masks" / f"slice{i:02d}.tif", mask.astype(np.uint8))
    return train, test


WATERSHED = ((2.0, 0.0), (2.0, 2.0), (3.0, 2.0), (4.0, 2.0))     # (watershed_h, watershed_smooth) scored


def score(workdir: Path, test: Path, tta: bool = False, challenge: bool = False, step=None,
          variants: bool = True) -> dict:
    """Foreground IoU / Dice of the kept checkpoint on the test folder, pooled over pixels and per image, and the
    object measures (``unet_jax.metrics.object_scores``: F1, precision and recall at IoU 0.5, DSB mean AP; the
    mean CTC SEG, merges and splits) of the objects ``predict`` writes ('predict': the run's own ``eval`` settings,
    ``unet_jax.inference.objects_of``), of 'components' and of 'watershed' at several ``watershed_h`` and
    ``watershed_smooth`` (``variants=False``: 'predict' only). ``step``: that checkpoint instead of the kept one. ``challenge``: also the ISBI 2012 measures of the test images as one stack
    (``unet_jax.isbi.isbi2012``; for ``isbi_cells``, whose test images are slices 25-29)."""
    from unet_jax import isbi, metrics
    from unet_jax.data import io, masks
    from unet_jax.workdir import load_model
    from unet_jax.inference import foreground_probability, objects_of, predict_probabilities
    from unet_jax.instances import label_instances
    model, config, variables, step = load_model(workdir, step)
    channels = variables["params"]["down_0"]["Conv_0"]["kernel"].shape[2]
    threshold = float(config.eval.threshold)
    inter = union = pred_sum = true_sum = total = 0
    methods = {"predict": None, "components": dict(method="components")} if variants else {"predict": None}
    if variants:
        methods.update({f"watershed_h{h:g}_s{sm:g}": dict(method="watershed", h=h, smooth=sm) for h, sm in WATERSHED})
    matches = {name: [] for name in methods}
    segs = {name: [] for name in methods}
    per_image, probs, truths = [], [], []
    for p in sorted((test / "images").iterdir()):
        image = io.to_float_image(io.read_image(p), p)
        if image.shape[-1] != channels:
            image = np.repeat(image, channels, axis=-1)
        truth_instances = masks.mask_to_instances(io.read_image(test / "masks" / p.name), p)
        truth = truth_instances > 0
        full = predict_probabilities(model, variables, image, config.eval, tta=tta)
        prob = foreground_probability(full)
        pred = prob > threshold
        if challenge:
            probs.append(prob)
            truths.append(truth_instances)
        for name, kwargs in methods.items():
            objects = objects_of(full, config) if kwargs is None else label_instances(
                prob, threshold, min_fraction=float(config.eval.min_object_fraction),
                object_area=float(config.eval.object_area), **kwargs)
            matches[name].append(metrics.object_matches(objects, truth_instances))
            segs[name].append(metrics.seg_measure(objects, truth_instances))
        i, u = int((pred & truth).sum()), int((pred | truth).sum())
        inter, union = inter + i, union + u
        pred_sum, true_sum, total = pred_sum + int(pred.sum()), true_sum + int(truth.sum()), total + truth.size
        per_image.append(i / u if u else 1.0)
    extra = {}
    if challenge:
        m = isbi.isbi2012(np.stack(probs), np.stack(truths))
        extra = {"isbi2012_stack": {k: float(v) for k, v in m.items() if np.isscalar(v)}}
    objects = {name: dict(metrics.object_scores(matches[name]), seg=float(np.nanmean(segs[name])))
               for name in methods}
    return {**extra, "step": int(step), "instances": config.eval.instances, "iou": inter / union, "dice": 2 * inter / (pred_sum + true_sum),
            "mean_image_iou": float(np.mean(per_image)), "predicted_fraction": pred_sum / total,
            "true_fraction": true_sum / total, "all_foreground_iou": true_sum / total, "objects": objects}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=TASKS, required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--data", default="/tmp/unet_jax_recipe_data", help="where the folder copies are written")
    ap.add_argument("--shared", default=str(SHARED), help="folder holding isbi2012/ and nuclei_bitdepth/")
    ap.add_argument("--config", default=str(HERE.parent / "experiments" / "folder.py"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--tta", action="store_true")
    ap.add_argument("--score-only", action="store_true", help="score the workdir's kept checkpoint, no training")
    args = ap.parse_args(argv)
    from unet_jax import configure_cpu
    configure_cpu()
    from unet_jax.config import apply_overrides, load_config_module
    from unet_jax.train import train_and_evaluate
    train, test = build_task(args.task, Path(args.data) / args.task, Path(args.shared))
    config = load_config_module(args.config).get_config()
    config.data.root = str(train)
    apply_overrides(config, [tuple(s.split("=", 1)) for s in args.set])
    if args.score_only:
        result = {"task": args.task, "workdir": args.workdir, "test": score(Path(args.workdir), test, args.tta,
                                                                          args.task == "isbi_cells")}
        print(json.dumps(result))
        return result
    t0 = time.perf_counter()
    final = train_and_evaluate(config, args.workdir)
    seconds = time.perf_counter() - t0
    result = {"task": args.task, "overrides": args.set, "train_seconds": round(seconds, 1),
              "final": {k: v for k, v in final.items() if isinstance(v, (int, float))},
              "test": score(Path(args.workdir), test, args.tta, args.task == "isbi_cells")}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
