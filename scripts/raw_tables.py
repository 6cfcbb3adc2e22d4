"""Tables for BENCHMARKS.md from raw result files that earlier runs wrote, with the figures rounded as quoted:

* results/gpu_h200/gpu_results.json (``benchmarks/gpu_run.sh``)  -> results/gpu_h200/summary.md
* results/isbi2012_lr_cpu/lr_*.jsonl (``unet-jax train`` metrics)  -> results/isbi2012_lr_cpu/summary.md
* results/recipe_grid_h200.jsonl (``benchmarks/recipe_grid.py``)   -> results/recipe_grid_h200.md

    python scripts/raw_tables.py
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRID_STANDARD = ("train.num_steps=", "train.eval_every=", "train.checkpoint_every=", "data.data_dir=")
TASKS = ("isbi_membranes", "nuclei", "isbi_cells")


def _head(source: Path, what: str) -> str:
    return (f"{what}. Written by `python scripts/raw_tables.py` on {time.strftime('%Y-%m-%d')} from "
            f"`{source.relative_to(ROOT)}` (the raw file the run wrote; machine and settings are in it).\n\n")


def gpu_tables(path: Path) -> str:
    d = json.loads(path.read_text())
    m, run = d["machine"], d["run"]
    out = [_head(path, f"One NVIDIA H200 ({m['device']}), jax {m['jax']}, flax {m['flax']}, torch {m['torch']}, "
                       f"Python {run['python']}, run started {run['started']} (settings: {run['settings']})"),
           "Train step, paper network (features 64, 572 -> 388, weighted loss, SGD momentum 0.99), medians of "
           f"{d['train_step']['config']['repeats']} steps:", "",
           "| framework | variant | compute | batch | images/s | TFLOP/s | MFU | time / PyTorch eager time |",
           "|---|---|---|---|---|---|---|---|"]
    for r in d["train_step"]["results"]:
        ratio = r.get("ratio_jax_over_torch_time")
        out.append(f"| {r['framework']} | {r['variant']} | {r['dtype']} | {r['batch']} | {r['images_per_s']:.0f} | "
                   f"{r['tflops']:.0f} | {100 * r['mfu']:.1f}% | {'' if ratio is None else f'{ratio:.2f}'} |")
    out += ["", f"Not reached in the time limit: {', '.join(d['train_step']['skipped'])}.", "",
            f"Overlap-tile inference of a {d['inference']['config']['image']}x{d['inference']['config']['image']} "
            f"image ({d['inference']['config']['tile']} tiles, {d['inference']['config']['tiles']} tiles, batch "
            f"{d['inference']['config']['batch_size']}):", "",
            "| compute | TTA | s | Mpx/s | tiles/s (TTA passes counted) | network alone, tiles/s |",
            "|---|---|---|---|---|---|"]
    for r in d["inference"]["results"]:
        out.append(f"| {r['dtype']} | {'8-fold' if r['tta'] else 'none'} | {r['seconds']:.3f} | "
                   f"{r['mpix_per_s']:.1f} | {r['tiles_per_s']:.0f} | {r['network_tiles_per_s']:.0f} |")
    isbi = d.get("isbi")
    if isbi:
        t, v = isbi["train"], isbi["train"]["validation"]
        out += ["", f"ISBI 2012 paper recipe (`experiments/isbi2012.py`, learning rate "
                f"{t['last_train']['learning_rate']:g}, {isbi['dtype']}) for {t['steps']} steps: validation IoU "
                f"{v['iou']:.3f} (all-cell prediction {v['trivial_iou']:.3f}), V_Rand thinned "
                f"{v['vrand_thinned']:.3f}, gradient norm at the end {t['last_train']['grad_norm']:.3f}."]
    return "\n".join(out) + "\n"


def lr_table(folder: Path) -> str:
    out = [_head(folder / "lr_*.jsonl", "ISBI 2012 paper recipe on the CPU, 450 steps per learning rate, validation "
                                       "on slices 25-29 (no TTA)"),
           "| learning rate | train loss, last step | validation loss by step | V_Rand thinned by step | IoU, last |",
           "|---|---|---|---|---|"]
    for path in sorted(folder.glob("lr_*.jsonl")):
        if "_to_" in path.stem:
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        train = [r for r in rows if r["split"] == "train"][-1]
        val = [r for r in rows if r["split"] == "validation"]
        out.append(f"| {path.stem[3:]} | {train['loss']:.3f} (step {train['step']}) | "
                   + " / ".join(f"{r['loss']:.3f} ({r['step']})" for r in val) + " | "
                   + " / ".join(f"{r['vrand_thinned']:.3f}" for r in val) + f" | {val[-1]['iou']:.3f} |")
    return "\n".join(out) + "\n"


def grid_table(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    out = [_head(path, "Own-data recipe grid: held-out foreground IoU after 1000 steps (features 16, seed 0), each "
                       "variant the default of that time with the overrides shown"),
           "| variant | overrides of the default of the time | " + " | ".join(TASKS) + " |",
           "|---|---|" + "---|" * len(TASKS)]
    for name in variants:
        by_task = {r["task"]: r for r in rows if r["variant"] == name}
        any_row = next(iter(by_task.values()))
        extra = [o for o in any_row["overrides"] if not o.startswith(GRID_STANDARD)]
        out.append(f"| {name} | {' '.join(extra) or '(none)'} | "
                   + " | ".join(f"{by_task[t]['test']['iou']:.3f}" if t in by_task else "" for t in TASKS) + " |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=ROOT / "results")
    r = ap.parse_args(argv).results
    jobs = ((r / "gpu_h200" / "gpu_results.json", r / "gpu_h200" / "summary.md", gpu_tables),
            (r / "isbi2012_lr_cpu", r / "isbi2012_lr_cpu" / "summary.md", lr_table),
            (r / "recipe_grid_h200.jsonl", r / "recipe_grid_h200.md", grid_table))
    for source, target, make in jobs:
        if source.exists():
            target.write_text(make(source))
            print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
