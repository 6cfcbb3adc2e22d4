"""Touching nuclei as objects: components vs watershed, with and without the paper's border weights, 3 seeds.

Trains ``experiments/folder.py`` on the nuclei_bitdepth 20x/40x images (``benchmarks/recipe.py --task nuclei``)
with ``weights.w0`` = 0 and 10 (the paper's and the folder default), seeds 0-2, and scores each kept checkpoint on
the 22 held-out 63x images: object F1 at IoU 0.5, DSB mean AP and SEG of the 4-connected components and of the
seeded watershed (``unet_jax.instances``) at several ``watershed_h``. Prints one JSON line per run as it finishes
and a final JSON summary (mean and sample std over seeds).

    python benchmarks/nuclei_instances.py --workdir runs/nuclei_instances --steps 1000
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recipe  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="one sub-folder per run (reused: a finished run is rescored)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--w0", type=float, nargs="+", default=[0.0, 10.0])
    args = ap.parse_args(argv)
    runs = []
    for w0 in args.w0:
        for seed in args.seeds:
            workdir = Path(args.workdir) / f"w0_{w0:g}_seed{seed}"
            sets = [f"train.num_steps={args.steps}", f"weights.w0={w0}", f"seed={seed}"]
            argv_run = ["--task", "nuclei", "--workdir", str(workdir)] + [x for s in sets for x in ("--set", s)]
            if (workdir / "checkpoints").is_dir():
                argv_run.append("--score-only")
            result = recipe.main(argv_run)
            result.update(w0=w0, seed=seed)
            runs.append(result)
            print(json.dumps({"w0": w0, "seed": seed, "iou": result["test"]["iou"],
                              "objects": result["test"]["objects"]}), flush=True)
    summary = {}
    for w0 in args.w0:
        mine = [r["test"] for r in runs if r["w0"] == w0]
        row = {"iou": _mean_std([t["iou"] for t in mine])}
        for method in mine[0]["objects"]:
            for key in ("object_f1", "mean_ap", "seg"):
                row[f"{method}/{key}"] = _mean_std([t["objects"][method][key] for t in mine])
        summary[f"w0={w0:g}"] = row
    out = {"steps": args.steps, "seeds": args.seeds, "summary": summary}
    print(json.dumps(out))
    return out


def _mean_std(values) -> list:
    v = np.asarray(values, np.float64)
    return [round(float(v.mean()), 4), round(float(v.std(ddof=1)) if v.size > 1 else 0.0, 4)]


if __name__ == "__main__":
    main()
