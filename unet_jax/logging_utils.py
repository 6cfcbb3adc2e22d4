"""Training logs: a JSON-lines metrics file, TensorBoard scalar event files and a training-curve PNG. Host-side.

Event files are written with tensorboardX (no TensorFlow needed), imported only when a writer writes them.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import time
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional

from unet_jax.checks import InvalidInputError, integer

__all__ = ["MetricWriter", "read_jsonl", "plot_training_curves"]

# tensorboardX writes events from a background thread that flushes the file about this often (seconds) while
# events arrive, so a killed run loses at most about this much of its TensorBoard events (metrics.jsonl is flushed
# at every write).
_TB_FLUSH_SECS = 1
_writer_ids = itertools.count()   # numbers this process's event files: never two writers on one file


# ----------------------------------------------------------------------------------------------------------------
# Writer
# ----------------------------------------------------------------------------------------------------------------

def _to_float(name: str, value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"scalar {name!r} must be a number, got {value!r}") from None


class MetricWriter:
    """Scalar metrics into ``workdir/metrics.jsonl`` (one flushed line ``{"step", "split", "time", name: value}``
    per ``write_scalars``) and a new TensorBoard event file in ``workdir/tensorboard`` (tags ``split/name``).
    ``enabled=False`` makes every method a no-op (the other processes of a multi-host run)."""

    def __init__(self, workdir, enabled: bool = True, tensorboard: bool = True):
        self.workdir = Path(workdir)
        self.enabled = bool(enabled)
        self.jsonl_path = self.workdir / "metrics.jsonl"
        self.tb_dir = self.workdir / "tensorboard"
        self._jsonl = None
        self._tb = None
        if not self.enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter   # here: importing this module stays light

            # The suffix keeps file names unique (tensorboardX truncates an existing file of the same name) and,
            # zero-padded, in creation order within one process and second.
            self._tb = SummaryWriter(str(self.tb_dir), flush_secs=_TB_FLUSH_SECS,
                                     filename_suffix=f".{os.getpid()}.{next(_writer_ids):04d}")

    def truncate_after(self, step: int) -> None:
        """Drop the records after ``step`` (a resumed run rewrites the steps after its checkpoint). Event files
        are append-only: a ``SessionLog.START`` event at ``step + 1`` (as tensorboardX's ``purge_step``) makes
        TensorBoard drop the later events read before it."""
        if not self.enabled:
            return
        if self._tb is not None:
            from tensorboardX.proto.event_pb2 import Event, SessionLog

            self._tb.file_writer.add_event(Event(step=int(step) + 1,
                                                 session_log=SessionLog(status=SessionLog.START)))
        self._jsonl.close()
        kept = [r for r in read_jsonl(self.jsonl_path) if r.get("step", 0) <= step]
        tmp = self.jsonl_path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for r in kept:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, self.jsonl_path)
        self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")

    def write_scalars(self, step: int, scalars: Mapping[str, float], split: str = "train") -> None:
        """Append ``scalars`` (name -> number) for ``step`` under ``split`` ('train', 'validation', ...)."""
        if not self.enabled:
            return
        integer("step", step)
        if not isinstance(split, str) or not split:
            raise InvalidInputError(f"split must be a non-empty string, got {split!r}")
        values = {str(k): _to_float(k, v) for k, v in scalars.items()}
        now = time.time()
        record = {"step": int(step), "split": split, "time": now}
        # JSON has no NaN/Inf; write them as strings so the file stays valid JSON.
        record.update({k: (v if math.isfinite(v) else str(v)) for k, v in values.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(f"{split}/{k}", v, int(step), walltime=now)

    def close(self) -> None:
        """Flush and close the files."""
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()   # writes the queued events, flushes and closes the event file
        self._jsonl = self._tb = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_jsonl(path) -> List[dict]:
    """Read a metrics JSONL file (host-side); a torn last line (a killed writer) is skipped. Missing file -> []."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


# ----------------------------------------------------------------------------------------------------------------
# Curves
# ----------------------------------------------------------------------------------------------------------------

def _series(records: Iterable[dict], split: str, name: str):
    pts = {}
    for r in records:
        if r.get("split") == split and isinstance(r.get(name), (int, float)):
            pts[r["step"]] = float(r[name])   # a resumed run's rewrite of a step wins
    steps = sorted(pts)
    return steps, [pts[s] for s in steps]


def plot_training_curves(jsonl_path, png_path, metrics: Optional[Dict[str, List[str]]] = None) -> Path:
    """Plot a metrics JSONL file's curves into ``png_path`` (matplotlib Agg); ``metrics``: panel title -> list of
    ``'split/name'`` series (default: a loss and a pixel-error panel). Returns the PNG's path."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if metrics is None:
        metrics = {"loss": ["train/loss", "validation/loss"],
                   "error": ["train/pixel_mismatch", "validation/pixel_mismatch", "validation/rand_error"]}
    if not isinstance(metrics, Mapping) or not metrics:
        raise InvalidInputError(f"metrics must be a non-empty mapping of panel -> series, got {metrics!r}")
    records = read_jsonl(jsonl_path)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, (title, series) in zip(axes[0], metrics.items()):
        for s in series:
            split, _, name = s.partition("/")
            steps, values = _series(records, split, name)
            if steps:
                ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=s)
        ax.set_title(title)
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_name(png_path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png_path)
    return png_path
