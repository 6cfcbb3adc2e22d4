"""The README's results table, from the result files the measuring commands wrote: results/summary.md.

Reads results/isbi2012_cpu.csv (``scripts/isbi2012_report.py``, the stack row) and
results/objects_vs_stardist/<task>.json (``benchmarks/objects_vs_stardist.py``); the paper's figures are those of
Ronneberger et al. 2015 (arXiv 1505.04597, tables 1 and 2). A missing file leaves its rows out and says so.

    python scripts/results_summary.py            # -> results/summary.md
"""
from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Ronneberger et al. 2015: ISBI 2012 test set (table 1), ISBI cell tracking 2015 (table 2).
PAPER = {"pixel_error": 0.0611, "rand_error": 0.0382, "warping_error": 0.000353,
         "PhC-U373": 0.9203, "DIC-HeLa": 0.7756}
TASKS = {"bbbc039": "BBBC039 nuclei, 30 held-out images", "nuclei": "nuclei_bitdepth, 22 held-out images at 63x"}
OBJECT_ROWS = (("object_f1", "object F1 at IoU 0.5"), ("mean_ap", "DSB AP (IoU 0.5-0.95)"),
               ("merges", "merged nuclei (fewer is better)"))


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def isbi_rows(results: Path) -> list:
    """The stack row of results/isbi2012_cpu.csv (``scripts/isbi2012_report.py``)."""
    path = results / "isbi2012_cpu.csv"
    if not path.exists():
        return []
    stack = next(r for r in csv.DictReader(open(path)) if r["image"] == "stack")
    link = f"[{path.relative_to(ROOT)}]({path.relative_to(ROOT)})"
    labels = {"pixel_error": "pixel error", "rand_error": "Rand error", "warping_error": "warping error"}
    return [("ISBI 2012 EM, slices 25-29 held out", label, f"{float(stack[k]):.4g}", "", _fmt(PAPER[k]), "", link)
            for k, label in labels.items()]


def object_rows(results: Path) -> list:
    rows = []
    for task, title in TASKS.items():
        path = results / "objects_vs_stardist" / f"{task}.json"
        if not path.exists():
            continue
        runs = json.loads(path.read_text())["runs"]

        def score(method):
            run = runs.get(method, {})
            return run.get("full") or run.get("half")

        ours, dist, peer = score("paper"), score("distance"), score("stardist")
        src = f"[{path.relative_to(ROOT)}]({path.relative_to(ROOT)})"
        for key, label in OBJECT_ROWS:
            rows.append((title, label, _fmt(ours[key]) if ours else "not run", _fmt(dist[key]) if dist else "not run",
                         "", _fmt(peer[key]) if peer else "not run", src))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=ROOT / "results")
    args = ap.parse_args(argv)
    rows = isbi_rows(args.results) + object_rows(args.results)
    rows += [(f"ISBI cell tracking 2015, {name}", "IoU", "not measured (data not available here)", "",
              _fmt(PAPER[name]), "", "") for name in ("PhC-U373", "DIC-HeLa")]
    try:
        version = metadata.version("unet-jax")
    except metadata.PackageNotFoundError:
        version = "not installed"
    head = (f"Written by `python scripts/results_summary.py` on {time.strftime('%Y-%m-%d')} (unet-jax {version}, "
            f"Python {platform.python_version()}) from the files in the last column; each holds its own command, "
            f"config and machine. Paper: Ronneberger et al. 2015, arXiv 1505.04597. Objects: unet-jax's folder recipe "
            f"with the paper's target (its default) and with the distance target, and StarDist 2D, each trained "
            f"for the same CPU seconds (a third of the folder recipe's default steps).\n\n")
    table = ["| data (held out) | measure | unet-jax | unet-jax, distance target | paper (U-Net) | StarDist | file |",
             "|---|---|---|---|---|---|---|"]
    table += ["| " + " | ".join(r) + " |" for r in rows]
    text = head + "\n".join(table) + "\n"
    (args.results / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
