"""Stopping a training run cleanly on SIGTERM or SIGINT. Host-side.

Batch schedulers (SLURM, Kubernetes) send SIGTERM some seconds before they kill a job (SLURM also SIGUSR1 ahead
of the time limit, with ``sbatch --signal=USR1@SECONDS``), and Ctrl-C sends SIGINT. While ``StopSignals`` is
active the first of them only asks the train loop to stop: it saves the step it is at and raises
``TrainingInterrupted``, which the command line turns into exit code 128 + the signal's number (143 for SIGTERM,
130 for SIGINT, 138 for SIGUSR1); the same command then resumes from that step. A second signal stops at once.
"""
from __future__ import annotations

import signal
import threading
from typing import Optional

import jax
import numpy as np

# SIGUSR1: what SLURM sends ahead of a job's time limit when asked to (sbatch --signal=USR1@120).
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)

__all__ = ["StopSignals", "TrainingInterrupted", "SIGNALS"]


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after saving step ``step``; ``exit_code`` is 128 + the signal's number."""

    def __init__(self, signum: int, step: int, checkpoint_dir):
        self.signum, self.step = int(signum), int(step)
        self.exit_code = 128 + self.signum
        super().__init__(f"{signal.Signals(self.signum).name}: stopped after step {self.step} and saved it "
                         f"(checkpoint {self.step} in {checkpoint_dir}); run the same command to continue from "
                         f"there")


class StopSignals:
    """Context manager: while active (in the main thread), ``SIGNALS`` set ``received`` instead of ending the
    process; a second signal raises ``KeyboardInterrupt`` at once. Elsewhere (a thread) it does nothing."""

    def __init__(self):
        self.received: Optional[int] = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt(f"second signal ({signal.Signals(signum).name}): stopping without saving")
        self.received = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def requested(self, step: int, every: int) -> Optional[int]:
        """The signal to stop on after ``step``, or None. One process decides after every step; several decide
        together every ``every`` steps (any process's signal stops all of them after the same step)."""
        if jax.process_count() == 1:
            return self.received
        if step % every:
            return None
        from jax.experimental import multihost_utils
        signums = multihost_utils.process_allgather(np.int32(self.received or 0))
        return int(np.max(signums)) or None
