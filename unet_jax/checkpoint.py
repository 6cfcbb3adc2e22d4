"""Checkpoints with orbax-checkpoint: periodic saves, keep the latest K and the best, fall back past corrupt ones.

Host-side (the arrays saved are numpy copies of the train state). ``Checkpoints`` manages
``workdir/checkpoints/<step>/``; the rest of the workdir (config.json, the lock, restoring a trained network for
evaluation) is ``unet_jax.workdir``'s. Layout: docs/training.md.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Mapping, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from unet_jax import checks
from unet_jax.config import BEST_MODES

logger = logging.getLogger(__name__)

CHECKPOINT_SUBDIR = "checkpoints"
VARIABLES = "variables"
TRAIN = "train"
DIGEST = "digest"
_METRICS = "metrics"   # orbax's own item name for the metrics passed to save()

__all__ = ["Checkpoints", "CheckpointRestoreError", "checkpoint_dir", "to_host"]


class CheckpointRestoreError(RuntimeError):
    """No checkpoint of a directory could be restored (none there, or every one failed to load)."""


class CorruptCheckpointError(ValueError):
    """A saved step's arrays do not match the digest saved with them, or hold NaN/Inf parameters."""


def _key_name(key) -> str:
    for attr in ("key", "name", "idx"):   # DictKey, GetAttrKey (named tuples), SequenceKey / FlattenedIndexKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def array_digest(tree) -> str:
    """SHA-256 over the arrays of a pytree, each with its path, dtype and shape, in path order. Host-side.

    The path uses the key names only, so a tree restored as nested dicts (no target) digests like the named
    tuples and lists it was saved from."""
    h = hashlib.sha256()
    leaves = [("/".join(_key_name(k) for k in path), leaf)
              for path, leaf in jax.tree_util.tree_leaves_with_path(tree)]
    for name, leaf in sorted(leaves, key=lambda item: item[0]):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{name}:{a.dtype.str}{a.shape};".encode())
        h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def checkpoint_dir(workdir) -> Path:
    """``workdir/checkpoints``: where ``Checkpoints`` keeps the steps of a training run."""
    return Path(workdir).resolve() / CHECKPOINT_SUBDIR


def to_host(tree):
    """Copy a pytree of jax/numpy arrays to host numpy arrays (0-d arrays stay 0-d ``np.ndarray``). Host-side."""
    return jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)), tree)


# ----------------------------------------------------------------------------------------------------------------
# Manager
# ----------------------------------------------------------------------------------------------------------------

def _metric_fn(best_metric: str, best_mode: str):
    worst = math.inf if best_mode == "min" else -math.inf

    def fn(metrics):
        v = metrics.get(best_metric) if isinstance(metrics, Mapping) else None
        try:
            v = float(v)
        except (TypeError, ValueError):
            return worst
        return v if math.isfinite(v) else worst

    return fn


class _ReadOnlyNotes(logging.Filter):
    """Drops orbax's notes that a read-only manager is read-only (every evaluate/predict would print two)."""

    def filter(self, record):
        text = record.getMessage()
        return not ("read_only=True" in text or "is read only" in text or "read only=" in text)


@contextlib.contextmanager
def _quiet_read_only_warnings(read_only: bool):
    if not read_only:
        yield
        return
    quiet = _ReadOnlyNotes()
    loggers = [logging.getLogger("absl"), logging.getLogger()]
    for lg in loggers:
        lg.addFilter(quiet)
        for handler in lg.handlers:
            handler.addFilter(quiet)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(quiet)
            for handler in lg.handlers:
                handler.removeFilter(quiet)


class _BackgroundNoise(logging.Filter):
    """Drops what orbax logs from its background save threads when a save fails (a traceback per thread, some
    190 lines on a full disk): the same error is raised again in the main thread (``Checkpoints.wait``), where it
    is reported once; and its note that a save without metrics was not ranked (a save on SIGTERM)."""

    def filter(self, record):
        text = record.getMessage()
        if "did not provide metrics" in text:
            return False
        return not ("orbax" in record.pathname and record.levelno >= logging.ERROR)


@contextlib.contextmanager
def _disk_errors(directory: Path):
    """Turn orbax's error for a full disk (a ValueError 'RESOURCE_EXHAUSTED: ... Failed writing ...') into the
    OSError(ENOSPC) it is, naming the checkpoint directory."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - re-raised unless it is the full disk
        text = str(e)
        if getattr(e, "errno", None) == errno.ENOSPC or "RESOURCE_EXHAUSTED" in text or "No space left" in text:
            raise OSError(errno.ENOSPC, "No space left on device", str(directory)) from e
        raise


class Checkpoints:
    """An orbax ``CheckpointManager`` over ``directory`` (``checkpoint_dir(workdir)``) with the items 'variables',
    'train' and their digests: keeps the latest ``keep`` steps and the best by the validation metric
    ``best_metric`` (``best_mode`` 'min' or 'max'; None: latest only). ``async_save`` writes in a background thread
    (``wait``/``close`` block until written). Every process of a multi-host run calls it together. Layout and
    what counts as damaged: docs/training.md.
    """

    def __init__(self, directory, *, keep: int = 3, best_metric: Optional[str] = "pixel_mismatch",
                 best_mode: str = "min", async_save: bool = True, read_only: bool = False):
        checks.integer("keep", keep, 1)
        checks.one_of("best_mode", best_mode, BEST_MODES)
        if best_metric is not None and (not isinstance(best_metric, str) or not best_metric):
            raise checks.InvalidInputError(f"best_metric must be a non-empty string or None, got {best_metric!r}")
        self.directory = Path(directory).resolve()
        self.best_metric = best_metric
        kwargs = {}
        if best_metric is not None:
            fn = _metric_fn(best_metric, best_mode)
            kwargs = dict(best_fn=fn, best_mode=best_mode)
        if not read_only:
            policies = [ocp.checkpoint_managers.LatestN(n=keep)]
            if best_metric is not None:
                # BestN keeps the last n after sorting ascending (reverse=False): 'min' needs descending order.
                policies.append(ocp.checkpoint_managers.BestN(
                    get_metric_fn=kwargs["best_fn"], reverse=(best_mode == "min"), n=1,
                    keep_checkpoints_without_metrics=False))
            kwargs["preservation_policy"] = ocp.checkpoint_managers.AnyPreservationPolicy(policies)
            kwargs["cleanup_tmp_directories"] = True
        if not read_only:     # once per process: the threads of an earlier manager may still log
            absl = logging.getLogger("absl")
            if not any(isinstance(f, _BackgroundNoise) for f in absl.filters):
                absl.addFilter(_BackgroundNoise())
        with _quiet_read_only_warnings(read_only):
            options = ocp.CheckpointManagerOptions(read_only=read_only, enable_async_checkpointing=async_save,
                                                   create=not read_only, **kwargs)
            self._manager = ocp.CheckpointManager(self.directory, options=options,
                                                  item_names=(VARIABLES, TRAIN, DIGEST))

    # -- queries ---------------------------------------------------------------------------------------------
    def all_steps(self):
        """Saved steps, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> Optional[int]:
        """The most recent saved step, or None."""
        return self._manager.latest_step()

    def best_step(self) -> Optional[int]:
        """The saved step with the best ``best_metric`` (the latest if no step has metrics), or None."""
        if self.best_metric is None:
            return self.latest_step()
        steps = self.all_steps()
        with_metrics = [s for s in steps if self.metrics(s) is not None]
        if not with_metrics:
            return self.latest_step()
        return self._manager.best_step()

    def metrics(self, step: int) -> Optional[dict]:
        """The metrics saved with ``step`` (None if none were)."""
        try:
            m = self._manager.metrics(step)
        except Exception:  # noqa: BLE001 - unreadable metrics count as none
            return None
        return dict(m) if m else None

    # -- save / restore --------------------------------------------------------------------------------------
    def save(self, step: int, variables, train, metrics: Optional[Mapping[str, float]] = None) -> None:
        """Save ``variables`` and ``train`` (pytrees of arrays; copied to host numpy) as ``step``.

        ``metrics`` (name -> float, e.g. the validation metrics of this step) ranks the step for 'best'.
        """
        checks.integer("step", step, 0)
        if metrics is not None:
            metrics = {str(k): float(v) for k, v in metrics.items()}
        variables, train = to_host(variables), to_host(train)
        digest = {VARIABLES: array_digest(variables), TRAIN: array_digest(train)}
        with _disk_errors(self.directory):
            self._manager.save(int(step), args=ocp.args.Composite(**{
                VARIABLES: ocp.args.StandardSave(variables), TRAIN: ocp.args.StandardSave(train),
                DIGEST: ocp.args.JsonSave(digest)}), metrics=metrics, force=True)

    def restore(self, step: int, variables=None, train=None, *, with_train: bool = True) -> dict:
        """Restore ``step``; ``variables``/``train`` are target pytrees of numpy arrays giving structure, shapes
        and dtypes (None: as saved, nested dicts). ``with_train=False`` loads only the variables.

        Returns ``{'variables': ..., 'train': ...}`` of numpy arrays. Raises ``CorruptCheckpointError`` when the
        arrays read do not match the digest saved with them (steps saved before digests were written are checked
        for NaN/Inf parameters only), and whatever orbax raises on a missing or unreadable step.
        """
        items = {VARIABLES: ocp.args.StandardRestore(None if variables is None else to_host(variables))}
        if with_train:
            items[TRAIN] = ocp.args.StandardRestore(None if train is None else to_host(train))
        step_dir = self.directory / str(int(step))
        for name in (VARIABLES, TRAIN) if with_train else (VARIABLES,):
            if step_dir.is_dir() and not (step_dir / name / "_METADATA").is_file():
                # Readable only with a target tree (train has one, evaluate/predict do not): damaged for all.
                raise CorruptCheckpointError(f"step {step} is incomplete: {name}/_METADATA is missing")
        has_digest = (step_dir / DIGEST).is_dir()
        if has_digest:
            items[DIGEST] = ocp.args.JsonRestore()
        restored = self._manager.restore(int(step), args=ocp.args.Composite(**items))
        out = {k: restored[k] for k in items if k != DIGEST}
        expected = dict(restored[DIGEST]) if has_digest else {}
        for name, tree in out.items():
            if name in expected and array_digest(tree) != expected[name]:
                raise CorruptCheckpointError(f"the {name} arrays of step {step} do not match the checksum saved "
                                             f"with them (the files changed on disk)")
        bad = [jax.tree_util.keystr(p) for p, a in jax.tree_util.tree_leaves_with_path(out[VARIABLES])
               if np.issubdtype(np.asarray(a).dtype, np.floating) and not np.isfinite(a).all()]
        if bad:
            raise CorruptCheckpointError(f"step {step} holds NaN or Inf parameters ({', '.join(bad[:3])})")
        return out

    def restore_with_fallback(self, steps, variables=None, train=None, *, with_train: bool = True
                              ) -> Tuple[Optional[int], Optional[dict]]:
        """Try ``steps`` in order; a step that fails to load is skipped with a ``RuntimeWarning``.

        Returns ``(step, restored)`` for the first that loads, ``(None, None)`` if ``steps`` is empty.

        Raises
        ------
        CheckpointRestoreError
            If every one of a non-empty ``steps`` fails.
        """
        errors = []
        for step in steps:
            try:
                return step, self.restore(step, variables, train, with_train=with_train)
            except Exception as e:  # noqa: BLE001 - any failure to read a step means: try the previous one
                first = (str(e).strip().splitlines() or [""])[0]     # orbax's tree diffs run to many lines
                msg = (f"checkpoint step {step} in {self.directory} could not be restored "
                       f"({type(e).__name__}: {first[:300]}); falling back to the previous checkpoint")
                warnings.warn(msg, RuntimeWarning, stacklevel=2)
                errors.append(f"step {step}: {type(e).__name__}: {first[:200]}")
        if errors:
            raise CheckpointRestoreError(f"no checkpoint in {self.directory} could be restored (damaged or "
                                         f"changed files; train again in a new workdir): " + "; ".join(errors))
        return None, None

    def restore_latest(self, variables=None, train=None, *, with_train: bool = True
                       ) -> Tuple[Optional[int], Optional[dict]]:
        """Restore the most recent step that loads (newest first, see ``restore_with_fallback``)."""
        return self.restore_with_fallback(sorted(self.all_steps(), reverse=True), variables, train,
                                          with_train=with_train)

    def set_aside_after(self, step: int) -> list:
        """Move the steps newer than ``step`` (ones that failed to restore) to ``directory/unreadable/``.

        A run that resumed from an older step saves those step numbers again, which orbax refuses while the
        unreadable ones are still there. Returns the steps moved (each logged as a warning).
        """
        newer = [s for s in self.all_steps() if s > step]
        if not newer:
            return []
        self._manager.wait_until_finished()
        if jax.process_index() == 0:
            aside = self.directory / "unreadable"
            aside.mkdir(exist_ok=True)
            for s in newer:
                target = aside / f"{s}.{int(time.time())}"
                os.replace(self.directory / str(s), target)
                logger.warning("moved unreadable checkpoint step %d to %s", s, target)
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes("unet_jax_checkpoint_set_aside")
        self._manager.reload()
        return newer

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk."""
        with _disk_errors(self.directory):
            self._manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending saves and release the manager."""
        with _disk_errors(self.directory):
            try:
                self._manager.wait_until_finished()
            finally:
                self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
