"""Divergence guard for training: notices a loss spike or a non-finite step and says where to go back to.

Host-side, no JAX. ``train_and_evaluate`` shows it each logging window of step losses; after every healthy window
it keeps a host copy of the training state (``remember``). When a window diverges (``check``: a non-finite loss,
gradient or parameter, or a window mean loss more than ``factor`` times the median of the recent windows' means),
the run goes back to that copy and continues with the learning rate halved and fresh random tiles, up to
``max_rollbacks`` times; the rollbacks are logged and recorded in ``WORKDIR/guard.json`` so that a resumed run
keeps the lowered learning rate.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from statistics import median
from typing import Any, List, Optional, Sequence

from unet_jax.checks import InvalidInputError

GUARD_FILE = "guard.json"

__all__ = ["DivergenceGuard", "GUARD_FILE"]


class DivergenceGuard:
    """Spike detection over logging windows and the last healthy state.

    Parameters
    ----------
    factor : float
        A window whose mean loss exceeds ``factor`` times the median of the last ``history`` healthy windows'
        means diverged (only once ``min_history`` windows are known).
    history, min_history : int
    max_rollbacks : int
        Rollbacks allowed in one run (counting those of earlier, resumed invocations).
    """

    def __init__(self, factor: float = 3.0, history: int = 5, min_history: int = 3, max_rollbacks: int = 3):
        if not factor > 1.0:
            raise ValueError(f"factor must be > 1, got {factor!r}")
        self.factor, self.history, self.min_history = float(factor), int(history), int(min_history)
        self.max_rollbacks = int(max_rollbacks)
        self.means: List[float] = []
        self.events: List[dict] = []
        self.lr_scale = 1.0
        self.good_step: Optional[int] = None
        self.good_state: Any = None

    def check(self, losses: Sequence[float], finite: bool = True) -> Optional[str]:
        """Why the window of step ``losses`` diverged (a sentence), or None if it is healthy (then recorded)."""
        mean = float(sum(losses) / max(len(losses), 1))
        if not finite or not math.isfinite(mean):
            return "a non-finite loss, gradient or parameter"
        recent = self.means[-self.history:]
        if len(recent) >= self.min_history and mean > self.factor * median(recent):
            return f"mean loss {mean:.4g} over {len(losses)} steps, {mean / median(recent):.1f}x the recent " \
                   f"median {median(recent):.4g}"
        self.means.append(mean)
        return None

    def remember(self, step: int, host_state) -> None:
        """Keep ``host_state`` (on the host) as the state to go back to."""
        self.good_step, self.good_state = int(step), host_state

    def rollback(self, step: int, reason: str) -> int:
        """Record a rollback from ``step`` to the remembered state; halves ``lr_scale``; returns the good step.

        Raises RuntimeError when no state is remembered or ``max_rollbacks`` is used up (the caller turns it
        into its own error)."""
        if self.good_state is None:
            raise RuntimeError("no healthy state to go back to")
        if len(self.events) >= self.max_rollbacks:
            raise RuntimeError(f"the loss diverged {len(self.events) + 1} times (limit {self.max_rollbacks})")
        self.lr_scale *= 0.5
        self.events.append({"step": int(step), "back_to": self.good_step, "reason": reason,
                            "lr_scale": self.lr_scale})
        self.means = self.means[:-1]   # the window before a spike may already lean towards it
        return self.good_step

    def save(self, workdir) -> None:
        """Write the rollbacks and the learning-rate scale to ``workdir/guard.json`` (atomically)."""
        path = Path(workdir) / GUARD_FILE
        tmp = path.with_name(f".{GUARD_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"lr_scale": self.lr_scale, "rollbacks": self.events}, indent=1) + "\n")
        os.replace(tmp, path)

    def load(self, workdir, resume_step: int) -> None:
        """Take over the rollbacks of earlier invocations whose step is at most ``resume_step``."""
        path = Path(workdir) / GUARD_FILE
        if not path.is_file():
            return
        try:
            events = json.loads(path.read_text())["rollbacks"]
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidInputError(f"{path} is not a guard record written by unet_jax ({e}); delete it to start the "
                             f"learning rate afresh") from None
        self.events = [e for e in events if e["back_to"] <= resume_step]
        self.lr_scale = 0.5 ** len(self.events)
