"""Results of an ISBI 2012 run for the README (host-side script): the metrics beside the paper's, the training
curves and a held-out slice (image, prediction, truth, errors).

    unet-jax evaluate --workdir runs/isbi_cpu --tta
    python scripts/isbi2012_report.py --workdir runs/isbi_cpu --data-root ../shared/data/isbi2012 \
        --out results --name isbi2012_cpu

reads WORKDIR/eval_validation/ (metrics.json and the *_prob.tif written by ``unet-jax evaluate``),
WORKDIR/metrics.jsonl and the labels, and writes into --out (small files only; no checkpoints):

    NAME.md / NAME.csv     the ISBI 2012 measures of the validation slices as one stack (pixel, Rand and warping
                           error, V_Rand and V_Info after thinning) next to the paper's figures
    NAME_curves.png        training loss and validation errors against the step
    NAME_heldout.png       one held-out slice: image, P(cell), truth, errors (red: missed cell, blue: missed membrane)
"""
import argparse
import csv
import importlib.metadata
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from unet_jax.logging_utils import plot_training_curves

# The paper's ISBI 2012 figures (test set, secret labels; unet-paper.md).
PAPER = {"warping_error": 0.000353, "rand_error": 0.0382, "pixel_error": 0.0611}
ROWS = (("pixel_error", "pixel error (1 - max pixel F)"), ("rand_error", "Rand error (1 - max foreground Rand F)"),
        ("warping_error", "warping error (splits and mergers)"), ("vrand_thinned", "V_Rand after thinning"),
        ("vinfo_thinned", "V_Info after thinning"), ("pixel_mismatch", "wrong pixels at P(cell) > 0.5"))


def _load_eval(workdir: Path) -> dict:
    path = workdir / "eval_validation" / "metrics.json"
    if not path.exists():
        raise SystemExit(f"error: {path} not found; run `unet-jax evaluate --workdir {workdir} --tta` first")
    return json.loads(path.read_text())


def write_table(result: dict, config: dict, out: Path, name: str, command: str) -> str:
    mean = {**result["mean"], **result.get("stack", {})}     # the ISBI measures of the slices as one stack
    lines = [f"ISBI 2012, validation slices 25-29 (held out), checkpoint step {result.get('step')}, "
             f"TTA {'8-fold' if result.get('tta') else 'off'}; features {config['model']['features']}, "
             f"{config['train']['num_steps']} steps. Paper: test set (secret labels), features 64.", "",
             "| metric | unet-jax | paper (U-Net) |", "|---|---|---|"]
    for key, label in ROWS:
        if key in mean:
            paper = f"{PAPER[key]:.6g}" if key in PAPER else ""
            lines.append(f"| {label} | {mean[key]:.6g} | {paper} |")
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "python": platform.python_version(), "jax": importlib.metadata.version("jax")}
    lines += ["", f"Reproduce: `{command}`. Written by `scripts/isbi2012_report.py` on {time.strftime('%Y-%m-%d')}; "
                  f"machine: {machine}; the run's config: `{name}.json`.", ""]
    text = "\n".join(lines)
    (out / f"{name}.md").write_text(text)
    (out / f"{name}.json").write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": machine,
                                                  "command": command, "config": config, "stack": mean}, indent=1,
                                                 default=str))
    with open(out / f"{name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image"] + [k for k, _ in ROWS])
        for row in result["per_image"] + [dict(mean, name="stack")]:
            w.writerow([row["name"]] + [row.get(k, "") for k, _ in ROWS])
    return text


def plot_heldout(workdir: Path, data_root: Path, index: int, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import tifffile
    prob_path = workdir / "eval_validation" / f"train-volume_z{index}_prob.tif"
    if not prob_path.exists():
        raise SystemExit(f"error: {prob_path} not found; evaluate the validation split (slices 25-29) first")
    prob = tifffile.imread(prob_path)
    image = tifffile.imread(data_root / "train-volume.tif", key=index)
    truth = tifffile.imread(data_root / "train-labels.tif", key=index) > 127
    pred = prob > 0.5
    errors = np.stack([truth & ~pred, np.zeros_like(pred), ~truth & pred], -1).astype(float)
    fig, ax = plt.subplots(1, 4, figsize=(14, 3.9))
    for a, img, title, cmap in zip(ax, (image, prob, truth, errors),
                                   (f"slice {index}", "P(cell)", "truth (cells white)",
                                    f"errors at 0.5: {np.mean(pred != truth):.3f} of pixels"),
                                   ("gray", "gray", "gray", None)):
        a.imshow(img, cmap=cmap)
        a.set_title(title)
        a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--data-root", type=Path, required=True, help="folder with train-volume.tif, train-labels.tif")
    p.add_argument("--out", type=Path, default=Path("results"))
    p.add_argument("--name", default="isbi2012_cpu")
    p.add_argument("--slice", type=int, default=27, help="held-out slice to show (25-29)")
    p.add_argument("--command", default="", help="training command to print under the table")
    a = p.parse_args(argv)
    result = _load_eval(a.workdir)
    config = json.loads((a.workdir / "config.json").read_text())
    a.out.mkdir(parents=True, exist_ok=True)
    print(write_table(result, config, a.out, a.name, a.command or f"unet-jax train --workdir {a.workdir} ..."))
    plot_training_curves(a.workdir / "metrics.jsonl", a.out / f"{a.name}_curves.png", metrics={
        "weighted cross-entropy": ["train/loss", "validation/loss"],
        "validation (threshold 0.5)": ["validation/pixel_mismatch", "validation/rand_error", "validation/iou"]})
    plot_heldout(a.workdir, a.data_root, a.slice, a.out / f"{a.name}_heldout.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
