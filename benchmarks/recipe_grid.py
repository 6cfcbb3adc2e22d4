"""Side-by-side comparison of training recipes on real data (the own-data issue's benchmark).

Runs ``benchmarks/recipe.py`` for every (task, variant) pair, ``--parallel`` processes at a time (a GPU or a big
machine runs several at once; each gets its own TFDS folder so none wait for another's data preparation), and
prints one JSON line per run plus a table of held-out foreground IoU. Variants are overrides of
``experiments/folder.py``; ``old_default`` reproduces the recipe before the own-data issue, ``plain`` the plain
PyTorch-style recipe the issue compares with (SAME padding, unweighted cross-entropy, flips only, no dropout,
4 tiles of 256 per step).

    python benchmarks/recipe_grid.py --steps 1000 --parallel 1 --out results/recipe_grid.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
NO_AUG = ["augment.elastic=false", "augment.rotate=false", "augment.brightness=0.0", "augment.contrast=0.0",
          "augment.gamma=0.0", "augment.noise=0.0"]
OLD = ["model.padding=VALID", "train.tile_size=316", "train.batch_size=2", "eval.tile_size=316",
       "weights.class_weights=balanced", "model.dropout_rate=0.5", "loss.dice_weight=0.0",
       "train.foreground_fraction=0.0", "optimizer.schedule=constant", "optimizer.warmup_steps=0",
       "optimizer.grad_clip_norm=0.0", "model.norm=", "train.best_metric=pixel_mismatch", "train.best_mode=min"]
PLAIN = ["model.padding=SAME", "train.tile_size=256", "train.batch_size=4", "eval.tile_size=256",
         "weights.class_weights=none", "weights.w0=0.0", "model.dropout_rate=0.0", "loss.dice_weight=0.0",
         "train.foreground_fraction=0.0", "optimizer.schedule=constant", "optimizer.warmup_steps=0",
         "optimizer.grad_clip_norm=0.0", "model.norm=", "train.best_metric=iou", "train.best_mode=max"] + NO_AUG
VARIANTS = {
    "default": [],
    "old_default": OLD,
    "plain": PLAIN,
    "valid_316": ["model.padding=VALID", "train.tile_size=316", "train.batch_size=2", "eval.tile_size=316"],
    "no_norm": ["model.norm="],
    "ce_only": ["loss.dice_weight=0.0"],
    "balanced_ce": ["loss.dice_weight=0.0", "weights.class_weights=balanced"],
    "uniform_tiles": ["train.foreground_fraction=0.0"],
    "flips_only": NO_AUG,
    "no_border_weights": ["weights.w0=0.0"],
}
TASKS = ("isbi_membranes", "nuclei", "isbi_cells")


def run_one(task, variant, args) -> dict:
    name = f"{task}__{variant}"
    workdir = Path(args.workdir) / name
    cmd = [sys.executable, str(HERE / "recipe.py"), "--task", task, "--workdir", str(workdir),
           "--data", str(Path(args.workdir) / "data"), "--shared", args.shared,
           "--set", f"train.num_steps={args.steps}", "--set", f"train.eval_every={args.eval_every}",
           "--set", f"train.checkpoint_every={args.eval_every}",
           "--set", f"data.data_dir={Path(args.workdir) / 'tfds' / name}"]
    for o in VARIANTS[variant] + args.set:
        cmd += ["--set", o]
    t0 = time.time()
    with open(Path(args.workdir) / f"{name}.log", "w") as log:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1]) if proc.returncode == 0 and lines else {"error": proc.returncode}
    result.update(task=task, variant=variant, wall_seconds=round(time.time() - t0, 1))
    print(json.dumps(result), flush=True)
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--workdir", default="/tmp/unet_jax_recipe_grid")
    ap.add_argument("--shared", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--set", action="append", default=[], help="override applied to every variant")
    ap.add_argument("--out", default="", help="append the JSON lines to this file")
    args = ap.parse_args(argv)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    # Build each task's folder copy once, before the runs share it.
    sys.path.insert(0, str(HERE))
    from recipe import build_task
    for task in args.tasks:
        build_task(task, Path(args.workdir) / "data" / task, Path(args.shared))
    jobs = [(t, v) for v in args.variants for t in args.tasks]
    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(lambda tv: run_one(*tv, args), jobs))
    if args.out:
        with open(args.out, "a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
    print(f"\n| variant | {' | '.join(args.tasks)} |\n|---|{'---|' * len(args.tasks)}")
    for v in args.variants:
        cells = []
        for t in args.tasks:
            r = next(r for r in results if r["task"] == t and r["variant"] == v)
            cells.append(f"{r['test']['iou']:.3f}" if "test" in r else f"error {r.get('error')}")
        print(f"| {v} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
