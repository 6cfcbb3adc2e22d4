"""Ablation sweeps: variants x seeds with equal budgets, summarised as mean +- std. Host-side driver.

A sweep file (experiments/ablations/*.py) defines::

    get_config()  -> ConfigDict   the shared base experiment (same steps, data and evaluation for all variants)
    get_sweep()   -> dict         {variant name: {"section.key": value, ...}} overrides per variant
    SEEDS = 3                     (optional) number of seeds; seed k sets config.seed = k

``run_sweep`` trains each (variant, seed) in ``WORKDIR/VARIANT/seed_K`` with ``train_and_evaluate`` (which resumes
from its checkpoints), records the final validation metrics in ``final_metrics.json`` there, and skips runs that
already have one, so an interrupted sweep resumes where it stopped. It then writes ``results.md``, ``results.csv``
(mean and std per variant and metric) and ``results.png`` (bar plot with std error bars) to WORKDIR.
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from unet_jax import checkpoint as ckpt_lib
from unet_jax.checks import integer
from unet_jax.config import UsageError, apply_overrides, call_user_function, load_config_module, validate
from unet_jax.io import atomic_write
from unet_jax.evaluate import evaluate
from unet_jax.train import train_and_evaluate
from unet_jax.workdir import lock_workdir

log = logging.getLogger(__name__)

# Shown in results.md / results.png (all metrics go to results.csv): the challenge metrics of ``unet-jax evaluate``
# on the validation split (no TTA) and the fraction of wrong pixels from training's last validation.
DEFAULT_METRICS = ("pixel_error", "rand_error", "warping_error", "iou", "validation_pixel_mismatch")
EVAL_METRICS = ("pixel_error", "rand_error", "warping_error", "vrand_thinned", "vinfo_thinned", "iou", "seg")


def load_sweep(path):
    """(base config, {variant: overrides}, seeds) from a sweep file. Host-side."""
    module = load_config_module(path)
    config = call_user_function(path, "get_config", module.get_config)
    if not hasattr(module, "get_sweep"):
        raise UsageError(f"sweep file {str(path)!r} has no get_sweep() returning {{variant: overrides}}")
    sweep = call_user_function(path, "get_sweep", module.get_sweep)
    if not isinstance(sweep, dict) or not sweep:
        raise UsageError(f"get_sweep() in {str(path)!r} must return a non-empty dict {{variant: overrides}}")
    return config, sweep, int(getattr(module, "SEEDS", 3))


def variant_config(base, overrides: dict, seed: int, extra: Sequence[Tuple[str, str]] = ()):
    """A copy of ``base`` with one variant's overrides, the command line's ``extra`` overrides and the seed."""
    config = base.copy_and_resolve_references()
    apply_overrides(config, list(extra))
    for key, value in overrides.items():
        apply_overrides(config, [(key, repr(value) if not isinstance(value, str) else value)])
    config.seed = int(seed)
    validate(config)
    return config


def run_sweep(sweep_path, workdir, overrides: Sequence[Tuple[str, str]] = (), seeds: Optional[int] = None) -> dict:
    """Run (or resume) a sweep and summarise it; returns the summary (see ``summarize``)."""
    base, sweep, default_seeds = load_sweep(sweep_path)
    seeds = integer("seeds", default_seeds if seeds is None else seeds, 1)
    workdir = Path(workdir)
    # Check every variant before training any, so a typo fails at once.
    configs = {(name, s): variant_config(base, ov, s, overrides) for name, ov in sweep.items() for s in range(seeds)}
    workdir.mkdir(parents=True, exist_ok=True)
    with lock_workdir(workdir, "ablate", ".ablate.lock"):    # two sweeps in one workdir would collide
        results, failed = _run_all(configs, workdir)
    summary = summarize(results, workdir, sweep_name=Path(sweep_path).stem) if results else None
    if failed:
        raise SweepIncomplete(failed, len(configs), summary)
    return summary


def _run_all(configs: dict, workdir: Path) -> tuple:
    """Run (or read) every (variant, seed); returns ({variant: [metrics]}, [what failed])."""
    results, failed = {}, []
    for (name, seed), config in configs.items():
        run_dir = workdir / name / f"seed_{seed}"
        try:
            metrics = _run_one(name, seed, config, run_dir)
        except RUN_ERRORS as e:     # a run that fails (diverged, bad data) does not cost the others
            log.warning("%s seed %d failed: %s", name, seed, e)
            failed.append(f"{name} seed {seed}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        results.setdefault(name, []).append(metrics)
    return results, failed


# What a run of a sweep can fail with that is not a bug here: bad settings or data, a diverged run, a full disk,
# unreadable checkpoints.
RUN_ERRORS = (ValueError, FloatingPointError, OSError, ckpt_lib.CheckpointRestoreError)


class SweepIncomplete(ValueError):
    """Some runs of a sweep failed; ``summary`` (or None) tabulates the others, whose results are kept."""

    def __init__(self, failed: list, total: int, summary: Optional[dict]):
        self.failed, self.summary = failed, summary
        kept = (f"the other {total - len(failed)} run(s) are tabulated in {summary['markdown_path']}" if summary
                else "no run finished")
        super().__init__(f"{len(failed)} of {total} run(s) of the sweep failed ({'; '.join(failed)}); {kept}; fix "
                         f"the cause and run the same command again: finished runs are skipped")


def _run_one(name: str, seed: int, config, run_dir: Path) -> dict:
    """Train and evaluate one (variant, seed) in ``run_dir``, or read its recorded result; returns its metrics."""
    done = run_dir / "final_metrics.json"
    if done.exists():
        log.info("%s seed %d: done, skipped", name, seed)
        metrics = json.loads(done.read_text())
    else:
        print(f"[ablate] {name} seed {seed} -> {run_dir}", flush=True)
        metrics = {k: float(v) for k, v in train_and_evaluate(config, str(run_dir)).items()
                   if isinstance(v, (int, float, np.floating, np.integer))}
    if "pixel_error" not in metrics and "eval_skipped" not in metrics:
        metrics.update(_evaluate_run(run_dir))
        atomic_write(done, lambda p: Path(p).write_text(json.dumps(metrics, indent=1)))
    elif not done.exists():
        atomic_write(done, lambda p: Path(p).write_text(json.dumps(metrics, indent=1)))
    return metrics


def _evaluate_run(run_dir: Path) -> dict:
    """The challenge metrics (``EVAL_METRICS``) of a finished run on its validation split, without TTA (host-side;
    ``unet-jax evaluate --no-images``): the ISBI 2012 measures of the split as one stack, IoU and SEG averaged over
    its images. An unlabelled or empty validation split gives ``{'eval_skipped': 1.0}``."""
    try:
        result = evaluate(run_dir, split="validation", write_images=False)
        mean = {**result["mean"], **result["stack"]}
    except ValueError as e:        # e.g. a data set without a validation split
        log.warning("%s: not evaluated (%s)", run_dir, e)
        mean = {}
    out = {k: float(mean[k]) for k in EVAL_METRICS if k in mean}
    return out or {"eval_skipped": 1.0}


def summarize(results: dict, workdir, sweep_name: str = "sweep") -> dict:
    """Mean +- std per variant and metric to results.md / results.csv / results.png in ``workdir``.

    ``results``: {variant: [metrics dict per seed]}. Returns {'markdown', 'markdown_path', 'csv_path',
    'png_path', 'table': {variant: {metric: (mean, std, n)}}}. std is the sample standard deviation (ddof=1; 0
    for a single seed).
    """
    workdir = Path(workdir)
    metrics = [m for m in DEFAULT_METRICS if any(m in r for runs in results.values() for r in runs)]
    metrics += sorted({k for runs in results.values() for r in runs for k in r} - set(metrics) - {"step"})
    table = {}
    for name, runs in results.items():
        table[name] = {}
        for m in metrics:
            vals = np.array([r[m] for r in runs if m in r], float)
            if vals.size:
                std = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
                table[name][m] = (float(vals.mean()), std, int(vals.size))
    shown = [m for m in metrics if m in DEFAULT_METRICS] or metrics[:4]
    lines = ["| variant | seeds | " + " | ".join(shown) + " |", "|---|---|" + "---|" * len(shown)]
    for name, row in table.items():
        n = max((v[2] for v in row.values()), default=0)
        cells = [f"{row[m][0]:.4g} ± {row[m][1]:.2g}" if m in row else "" for m in shown]
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    markdown = (f"Sweep {sweep_name}: mean ± std over seeds on the validation split. pixel_error, rand_error, "
                f"warping_error (ISBI 2012 definitions, the split as one stack), iou: `unet-jax evaluate` of the "
                f"best checkpoint (thresholds swept, no TTA); "
                f"validation_pixel_mismatch: wrong pixels at the last validation of training.\n\n"
                + "\n".join(lines) + "\n")
    md_path = atomic_write(workdir / "results.md", lambda p: Path(p).write_text(markdown))

    def _csv(p):
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["variant", "metric", "mean", "std", "n"])
            for name, row in table.items():
                for m, (mean, std, n) in row.items():
                    w.writerow([name, m, f"{mean:.6g}", f"{std:.6g}", n])
    csv_path = atomic_write(workdir / "results.csv", _csv)
    png_path = atomic_write(workdir / "results.png", lambda p: _bar_plot(table, shown, p, sweep_name))
    return {"markdown": markdown, "markdown_path": str(md_path), "csv_path": str(csv_path),
            "png_path": str(png_path), "table": table}


def _bar_plot(table, metrics, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(table)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        means = [table[n].get(m, (np.nan, 0, 0))[0] for n in names]
        stds = [table[n].get(m, (np.nan, 0, 0))[1] for n in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=4, color="tab:blue")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(m, fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
