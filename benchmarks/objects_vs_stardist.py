"""Touching nuclei as objects, side by side: the paper's target (the folder recipe's default), the distance target
and StarDist 2D, each trained from scratch on the same images for the same CPU time and scored
with unet_jax's object measures on the same held-out images.

For each task (``benchmarks/recipe.py``: ``bbbc039`` = its 70 train / 30 test images, ``nuclei`` =
nuclei_bitdepth 20x/40x train, 63x test):
  * ``paper``: ``experiments/folder.py`` with ``data.target=foreground``, its default (separation borders,
    border weights, watershed of the foreground's distance transform);
  * ``distance``: ``experiments/folder.py`` with ``data.target=auto`` (-> 'distance' on these masks, objects
    from the predicted centres);
  * ``stardist``: ``benchmarks/stardist_peer.py`` in its own environment (``--stardist-python``), given the
    process CPU seconds the ``distance`` run used.
Each is scored at half and at the whole budget (the curve) and, for unet_jax, at the checkpoint ``train`` keeps
(best validation IoU; what ``predict`` uses). Writes results/objects_vs_stardist/<task>.json after every run and
results/objects_vs_stardist.md (the table README quotes).

    python benchmarks/objects_vs_stardist.py --tasks bbbc039 nuclei --steps 1000 --workdir runs/objects \\
        --stardist-python /tmp/stardist/bin/python
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import recipe  # noqa: E402

RESULTS = HERE.parent / "results" / "objects_vs_stardist"
KEYS = ("object_f1", "mean_ap", "object_precision", "object_recall", "merges", "splits", "objects_predicted",
        "objects_true")


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def machine() -> dict:
    import jax
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python":
            platform.python_version(), "jax": jax.__version__, "backend": jax.default_backend(),
            "date": time.strftime("%Y-%m-%d")}


def run_unet(task: str, variant: str, steps: int, workdir: Path, data: Path, partial: bool = False) -> dict:
    """Train the folder recipe (``variant`` 'paper' or 'distance') for ``steps`` and score it on the task's
    held-out images at half, at all of the steps and at the kept checkpoint. ``partial``: a run stopped before
    its end is scored at its newest checkpoint only (reported at half the budget, as it must hold >= half)."""
    from unet_jax.config import load_config_module
    from unet_jax.train import train_and_evaluate
    train, test = recipe.build_task(task, data / task)
    config = load_config_module(str(HERE.parent / "experiments" / "folder.py")).get_config()
    config.data.root = str(train)
    config.data.target = "foreground" if variant == "paper" else "auto"
    half = steps // 2
    config.train.update(num_steps=steps, eval_every=half, checkpoint_every=half, keep_checkpoints=4)
    config.optimizer.warmup_steps = min(config.optimizer.warmup_steps, steps // 4)
    done = workdir / "train_time.json"
    if partial and not done.exists():     # stopped early: the newest checkpoint from half the steps on
        from unet_jax.checkpoint import checkpoint_dir
        saved = sorted(int(p.name) for p in checkpoint_dir(workdir).iterdir() if p.name.isdigit())
        result = recipe.score(workdir, test, step=saved[-1], variants=False)
        return {"method": variant, "steps": steps, "partial": True, "half": {
            "step": result["step"], "iou": result["iou"], **{k: result["objects"]["predict"][k] for k in KEYS + ("seg",)}}}
    if not done.exists():
        c0, w0 = cpu_seconds(), time.perf_counter()
        train_and_evaluate(config, workdir)
        done.write_text(json.dumps({"cpu_seconds": cpu_seconds() - c0, "wall_seconds": time.perf_counter() - w0}))
    spent = json.loads(done.read_text())
    out = {"method": variant, "steps": steps, **spent, "config": json.loads((workdir / "config.json").read_text())}
    for key, step in (("kept", None), ("full", steps), ("half", half)):
        if key == "full" and out["kept"]["step"] == steps:
            out[key] = out["kept"]
            continue
        result = recipe.score(workdir, test, step=step, variants=False)
        out[key] = {"step": result["step"], "iou": result["iou"], **{k: result["objects"]["predict"][k]
                                                                      for k in KEYS + ("seg",)}}
    return out


def run_stardist(task: str, python: str, budget: float, workdir: Path, data: Path) -> dict:
    """StarDist trained for ``budget`` CPU seconds in its own environment; its test objects scored here."""
    from unet_jax import metrics
    from unet_jax.data import io, masks
    train, test = recipe.build_task(task, data / task)
    if not (workdir / "stardist.json").exists():
        workdir.mkdir(parents=True, exist_ok=True)
        with open(workdir / "log.txt", "w") as log:
            subprocess.run([python, str(HERE / "stardist_peer.py"), "--train", str(train), "--test", str(test),
                            "--cpu-seconds", str(budget), "--out", str(workdir)], stdout=log, stderr=log, check=True)
    info = json.loads((workdir / "stardist.json").read_text())
    out = {"method": "stardist", "budget_cpu_seconds": budget}
    for key, snap in info["snapshots"].items():
        matches, segs, inter, union = [], [], 0, 0
        for p in sorted((test / "masks").iterdir()):
            truth = masks.mask_to_instances(io.read_image(p), p)
            pred = io.read_image(workdir / key / p.name).astype(np.int32)
            matches.append(metrics.object_matches(pred, truth))
            segs.append(metrics.seg_measure(pred, truth))
            inter += int(((pred > 0) & (truth > 0)).sum())
            union += int(((pred > 0) | (truth > 0)).sum())
        scores = metrics.object_scores(matches)
        out[key] = {"steps": snap["steps"], "cpu_seconds": snap["cpu_seconds"], "wall_seconds": snap["wall_seconds"],
                    "iou": inter / union, "seg": float(np.nanmean(segs)), **{k: scores[k] for k in KEYS}}
    return out


def table(rows_by_task: dict) -> str:
    """The markdown table of every task's runs (kept checkpoint for unet_jax, whole budget for StarDist)."""
    lines = ["| data (held-out images) | method | CPU min | object F1@0.5 | DSB AP 0.5-0.95 | precision | recall | "
             "merges | splits | foreground IoU | F1 at half the budget |", "|" + "---|" * 11]
    for task, rows in rows_by_task.items():
        for r in rows:
            half = r.get("half", {}).get("object_f1", float("nan"))
            if r.get("partial"):
                lines.append(f"| {task} | {r['method']} | stopped at step {r['half']['step']} of {r['steps']} | "
                             + "- | " * 7 + f"{half:.3f} |")
                continue
            main = r["kept"] if "kept" in r else r["full"]
            cpu = r.get("cpu_seconds", r.get("budget_cpu_seconds", 0)) / 60
            lines.append(f"| {task} | {r['method']} | {cpu:.0f} | {main['object_f1']:.3f} | {main['mean_ap']:.3f} | "
                         f"{main['object_precision']:.3f} | {main['object_recall']:.3f} | {main['merges']} | "
                         f"{main['splits']} | {main['iou']:.3f} | {half:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["bbbc039", "nuclei"], choices=("bbbc039", "nuclei"))
    ap.add_argument("--methods", nargs="+", default=["distance", "paper", "stardist"],
                    choices=("distance", "paper", "stardist"))
    ap.add_argument("--steps", type=int, default=1000, help="unet_jax training steps (the budget)")
    ap.add_argument("--workdir", required=True, help="one sub-folder per run; a finished run is only rescored")
    ap.add_argument("--data", default="/tmp/unet_jax_recipe_data", help="where recipe.py's folder copies go")
    ap.add_argument("--stardist-python", default="", help="python of an environment with stardist")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--partial", action="store_true", help="score unfinished unet_jax runs at their newest "
                    "checkpoint (half the steps) instead of training them to the end")
    args = ap.parse_args(argv)
    from unet_jax import configure_cpu
    configure_cpu()
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/objects_vs_stardist.py " + " ".join(argv if argv is not None else sys.argv[1:])
    everything = {}
    for task in args.tasks:
        path = results / f"{task}.json"
        record = json.loads(path.read_text()) if path.exists() else {"runs": {}}
        record.update(task=task, command=command, machine=machine(), steps=args.steps)
        for method in args.methods:
            workdir = Path(args.workdir) / task / method
            cached = workdir / "result.json"        # a scored run (several of these may run at once)
            if cached.exists() and (args.partial or not json.loads(cached.read_text()).get("partial")):
                row = json.loads(cached.read_text())
            elif method == "stardist":
                if not args.stardist_python:
                    continue
                budget = json.loads((Path(args.workdir) / task / "distance" / "train_time.json").read_text())
                row = run_stardist(task, args.stardist_python, budget["cpu_seconds"], workdir, Path(args.data))
            elif record["runs"].get(method, {}).get("steps") == args.steps and (
                    args.partial or not record["runs"][method].get("partial")):
                row = record["runs"][method]
            else:
                row = run_unet(task, method, args.steps, workdir, Path(args.data), args.partial)
            cached.write_text(json.dumps(row, indent=1, default=str))
            if path.exists():       # another process may have added its runs meanwhile
                record["runs"] = {**json.loads(path.read_text())["runs"], **record["runs"]}
            record["runs"][method] = row
            path.write_text(json.dumps(record, indent=1, default=str))
            print(json.dumps({"task": task, **{k: v for k, v in row.items() if k != "config"}}, default=str),
                  flush=True)
        everything[task] = [record["runs"][m] for m in ("paper", "distance", "stardist") if m in record["runs"]]
    done = {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}
    md = (f"Written by `{command}` ({time.strftime('%Y-%m-%d')}; machine: see each task's JSON in "
          f"results/objects_vs_stardist/).\n\n"
          + table({t: [r["runs"][m] for m in ("paper", "distance", "stardist") if m in r["runs"]]
                   for t, r in done.items()}))
    (results.parent / "objects_vs_stardist.md").write_text(md)
    print(md)
    return everything


if __name__ == "__main__":
    main()
