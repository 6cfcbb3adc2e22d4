"""Own-data recipe on real data: train a folder data set as a user would, then score held-out images.

Builds folder-layout copies of real data sets (train folder + held-out test images), runs
``unet_jax.train.train_and_evaluate`` with ``experiments/folder.py`` plus overrides, restores the kept checkpoint
and reports foreground IoU / Dice on the held-out images next to the trivial predictions. Prints JSON.

Tasks (``--task``):

* ``nuclei``: ../shared/data/nuclei_bitdepth, train on the 20x / 40x images (48), test on the 63x (22), as its
  README suggests; fluorescence, 16-bit, foreground 2-25 %.
* ``isbi_cells``: ISBI 2012 training stack, slices 0-24 train, 25-29 test; EM, cells foreground (78 %).
* ``isbi_membranes``: the same with the membranes as foreground (22 %): a thin, rare structure.

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
TASKS = ("nuclei", "isbi_cells", "isbi_membranes")


def build_task(task: str, root: Path, shared: Path = SHARED) -> tuple:
    """Write (or reuse) ``root/train/{images,masks}`` and ``root/test/{images,masks}``; returns (train, test)."""
    import tifffile
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


def score(workdir: Path, test: Path, tta: bool = False) -> dict:
    """Foreground IoU / Dice of the kept checkpoint on the test folder, pooled over pixels and per image."""
    from unet_jax.data import io
    from unet_jax.evaluate import load_model, predict_image
    apply_fn, config, variables, step = load_model(workdir, with_step=True)
    channels = variables["params"]["down_0"]["Conv_0"]["kernel"].shape[2]
    threshold = float(config.eval.threshold)
    inter = union = pred_sum = true_sum = total = 0
    per_image = []
    for p in sorted((test / "images").iterdir()):
        image = io.to_float_image(io.read_image(p), p)
        if image.shape[-1] != channels:
            image = np.repeat(image, channels, axis=-1)
        truth = io.mask_to_instances(io.read_image(test / "masks" / p.name), p) > 0
        pred = predict_image(apply_fn, config, image, variables, tta=tta)[..., 1] > threshold
        i, u = int((pred & truth).sum()), int((pred | truth).sum())
        inter, union = inter + i, union + u
        pred_sum, true_sum, total = pred_sum + int(pred.sum()), true_sum + int(truth.sum()), total + truth.size
        per_image.append(i / u if u else 1.0)
    return {"step": int(step), "iou": inter / union, "dice": 2 * inter / (pred_sum + true_sum),
            "mean_image_iou": float(np.mean(per_image)), "predicted_fraction": pred_sum / total,
            "true_fraction": true_sum / total, "all_foreground_iou": true_sum / total}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=TASKS, required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--data", default="/tmp/unet_jax_recipe_data", help="where the folder copies are written")
    ap.add_argument("--shared", default=str(SHARED), help="folder holding isbi2012/ and nuclei_bitdepth/")
    ap.add_argument("--config", default=str(HERE.parent / "experiments" / "folder.py"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    ap.add_argument("--tta", action="store_true")
    args = ap.parse_args(argv)
    from unet_jax.cli import apply_overrides, load_config_module
    from unet_jax.train import train_and_evaluate
    train, test = build_task(args.task, Path(args.data) / args.task, Path(args.shared))
    config = load_config_module(args.config).get_config()
    config.data.root = str(train)
    apply_overrides(config, [tuple(s.split("=", 1)) for s in args.set])
    t0 = time.perf_counter()
    final = train_and_evaluate(config, args.workdir)
    seconds = time.perf_counter() - t0
    result = {"task": args.task, "overrides": args.set, "train_seconds": round(seconds, 1),
              "final": {k: v for k, v in final.items() if isinstance(v, (int, float))},
              "test": score(Path(args.workdir), test, args.tta)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
