"""The run directory (workdir) of a training run: its lock, ``config.json`` and config history, the check that a
resume fits the checkpoints there, and restoring them (``restore_state`` for train, ``load_model`` for the
drivers). Host-side. Layout and resume rules: docs/training.md.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Mapping, NamedTuple, Optional, Sequence, Tuple

import ml_collections

from unet_jax.checkpoint import (CHECKPOINT_SUBDIR, TRAIN, VARIABLES, CheckpointRestoreError, Checkpoints,
                                 checkpoint_dir)
from unet_jax.checks import InvalidInputError
from unet_jax.config import UsageError, apply_overrides, fill_eval_defaults, validate_eval
from unet_jax.model import check_params, create_model

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
CONFIG_HISTORY_FILE = "config_history.jsonl"
LOCK_FILE = ".train.lock"
# Settings that say how a run is carried out, not what it computes: they may change between a run and its resume.
# train.num_steps too: a finished run continues with more steps (train longer), its schedule spread over them.
RUN_CONTROL_KEYS = ("train.num_steps", "train.time_limit", "train.log_every", "train.allow_config_change",
                    "train.distributed", "train.coordinator_address", "train.num_processes", "train.process_id",
                    "data.data_dir", "eval.batch_size")
# Fields train derives from the data (``resolve_target``, ``learn_object_area``): not a change of the config.
DERIVED_KEYS = ("eval.object_area",)

__all__ = ["save_config", "load_config", "lock_workdir", "config_changes", "check_resume", "record_config",
           "restore_state", "restore_params", "load_model", "CONFIG_FILE", "CONFIG_HISTORY_FILE", "RUN_CONTROL_KEYS"]


def save_config(config: ml_collections.ConfigDict, workdir) -> Path:
    """Write ``config`` as ``workdir/config.json`` (atomically: temporary file, then rename)."""
    if not isinstance(config, (ml_collections.ConfigDict, Mapping)):
        raise InvalidInputError(f"config must be a ConfigDict or mapping, got {type(config).__name__}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    d = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    path = workdir / CONFIG_FILE
    tmp = path.with_name(f".{CONFIG_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_config(workdir) -> ml_collections.ConfigDict:
    """``workdir/config.json`` as a ConfigDict (as saved: not validated); InvalidInputError naming the file when
    it is missing or not a JSON object."""
    path = Path(workdir) / CONFIG_FILE
    if not path.is_file():
        raise InvalidInputError(f"workdir {str(workdir)!r} has no {CONFIG_FILE}; expected a directory written by "
                                f"unet_jax.train.train_and_evaluate")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"{path} is not valid JSON ({e}); it is the run's config, written by unet-jax "
                                f"train: restore it from a copy, or train again in a new workdir") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path} holds a {type(data).__name__}, not a config; restore it from a copy, or "
                                f"train again in a new workdir")
    return ml_collections.ConfigDict(data)


def lock_workdir(workdir, what: str = "train", name: str = LOCK_FILE):
    """An exclusive lock on ``workdir`` for one process: the open lock file, which holds it until closed or the
    process ends. InvalidInputError naming the holder's pid when another ``what`` process has it."""
    path = Path(workdir) / name
    f = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise InvalidInputError(f"workdir {str(workdir)!r} is in use by another {what} process (pid {holder}); "
                                f"wait for it to finish or use another --workdir") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


# ----------------------------------------------------------------------------------------------------------------
# Resuming: does the config fit the checkpoints there?
# ----------------------------------------------------------------------------------------------------------------

def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_changes(old: dict, new: dict) -> list:
    """``[(key, old value, new value)]`` for the fields of two config dicts that differ, run-control settings
    (``RUN_CONTROL_KEYS``) and fields the old config does not have (written by an older version) left out."""
    a, b = _flatten(old), _flatten(new)
    return [(k, a[k], b.get(k)) for k in sorted(a) if k not in RUN_CONTROL_KEYS + DERIVED_KEYS and a[k] != b.get(k)
            and not (isinstance(a[k], (list, tuple)) and list(a[k]) == list(b.get(k) or []))]


def has_checkpoints(workdir: Path) -> bool:
    directory = checkpoint_dir(workdir)
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


class Resume(NamedTuple):
    """What ``check_resume`` found: the allowed config changes and the ``num_steps`` of the run continued."""
    changes: list
    previous_steps: Optional[int]


def check_resume(config, workdir: Path) -> Resume:
    """Refuse (InvalidInputError) to resume a workdir whose checkpoints were trained with another config: always
    for another model, for other fields unless ``train.allow_config_change``."""
    if not (workdir / CONFIG_FILE).exists() or not has_checkpoints(workdir):
        return Resume([], None)
    old = load_config(workdir)     # as an older version wrote it: fields may be missing
    if old.get("model") is not None and old.model.to_dict() != config.model.to_dict():
        raise InvalidInputError(f"workdir {str(workdir)!r} holds checkpoints of a different model (config.json "
                                f"model {old.model.to_dict()} vs {config.model.to_dict()}); use a new workdir")
    changes = config_changes(old.to_dict(), config.to_dict())
    if changes and not config.train.allow_config_change:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes[:5])
        more = f" and {len(changes) - 5} more" if len(changes) > 5 else ""
        raise InvalidInputError(f"workdir {str(workdir)!r} holds a run trained with another config ({listed}{more}); "
                                f"use a new --workdir, or continue this run with the new settings by adding "
                                f"--config.train.allow_config_change=true (the earlier config is kept in "
                                f"{CONFIG_HISTORY_FILE})")
    return Resume(changes, old.get("train", {}).get("num_steps"))


def describe_changes(changes) -> str:
    return "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes)


def record_config(config, workdir: Path, step: int, changes: list) -> None:
    """Write ``config.json`` and append the config this run starts (or resumes at ``step``) with, and its changes
    from the previous one, to ``config_history.jsonl``."""
    row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "step": int(step),
           "changes": [{"key": k, "old": a, "new": b} for k, a, b in changes], "config": config.to_dict()}
    with open(workdir / CONFIG_HISTORY_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True, default=str) + "\n")
    save_config(config, workdir)


def restore_state(ckpts: Checkpoints, state, model, workdir: Path, changes: list):
    """``state`` (a ``unet_jax.step.TrainState``, giving the structure) from the newest readable checkpoint, or
    None when there is none; a step that fails to load is skipped with a warning. InvalidInputError when the
    checkpoints hold another network or cannot take the allowed config ``changes``."""
    with warnings.catch_warnings(record=True) as fallbacks:   # steps that failed to load: shown below, if wanted
        warnings.simplefilter("always")
        try:
            step, restored = ckpts.restore_latest(state.variables(), state.train_items())
        except CheckpointRestoreError as e:
            other = _other_network(ckpts, model)
            if other:       # config.json edited to match the config: the checkpoints hold another network
                raise InvalidInputError(f"the checkpoints in {workdir} hold another network than the config "
                                        f"({other}); use a new --workdir") from e
            if not changes:
                _show(fallbacks)
                raise
            raise InvalidInputError(f"the checkpoints in {workdir} do not fit the changed config ("
                                    f"{describe_changes(changes)}): a change of the optimizer's state (another "
                                    f"optimizer, clipping, weight decay or accumulation) cannot be resumed; use a "
                                    f"new --workdir") from e
    _show(fallbacks)
    if restored is None:
        return None
    v, t = restored[VARIABLES], restored[TRAIN]
    try:
        check_params(model, v["params"])      # orbax restores saved arrays of other shapes without a word
    except InvalidInputError as e:
        raise InvalidInputError(f"the checkpoints in {workdir} hold another network than the config "
                                f"({str(e).split(': ', 1)[-1]}); use a new --workdir") from None
    state = state.replace(params=v["params"], batch_stats=v.get("batch_stats", {}), step=t["step"], key=t["key"],
                          opt_state=t["opt_state"])
    if int(state.step) != step:
        raise AssertionError(f"checkpoint step {step} holds state.step {int(state.step)}")
    ckpts.set_aside_after(step)   # newer steps failed to restore (warned); this run saves them again
    logger.info("resuming from checkpoint step %d in %s", step, ckpts.directory)
    return state


def _other_network(ckpts: Checkpoints, model) -> str:
    """How the latest checkpoint's network differs from ``model``, or '' if it does not or cannot be read."""
    try:
        variables = ckpts.restore(ckpts.latest_step(), with_train=False)[VARIABLES]
    except Exception:  # noqa: BLE001 - unreadable: the caller reports the restore error
        return ""
    try:
        check_params(model, variables["params"])
    except InvalidInputError as e:
        return str(e).split(": ", 1)[-1]
    return ""


def _show(caught) -> None:
    """Emit again the warnings caught by ``warnings.catch_warnings(record=True)``."""
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


# ----------------------------------------------------------------------------------------------------------------
# Restoring a trained network (evaluate, predict, export, ...)
# ----------------------------------------------------------------------------------------------------------------

def restore_params(workdir, step: Optional[int] = None):
    """The variables of a run's checkpoint (no optimizer state): ``(variables, config, step)``, numpy arrays and
    the saved config. ``step`` None: the best step by ``train.best_metric`` (the latest without validation
    metrics), and if it cannot be read the others newest first (with a RuntimeWarning); an explicit step is not
    replaced. CheckpointRestoreError when no candidate can be read."""
    config = load_config(workdir)
    directory = checkpoint_dir(workdir)
    if not directory.is_dir():
        raise InvalidInputError(f"workdir {str(workdir)!r} has no {CHECKPOINT_SUBDIR}/ directory")
    train_cfg = config.get("train", {})     # the saved file, as an older version may have written it
    ckpt = Checkpoints(directory, best_metric=train_cfg.get("best_metric") or None,
                       best_mode=train_cfg.get("best_mode", "min"), read_only=True, async_save=False)
    try:
        steps = ckpt.all_steps()
        if not steps:
            raise InvalidInputError(f"workdir {str(workdir)!r} has no saved checkpoint in {directory}")
        if step is not None:
            if step not in steps:
                raise InvalidInputError(f"step must be one of the saved steps {steps}, got {step!r}")
            try:
                restored = ckpt.restore(step, with_train=False)
            except Exception as e:  # noqa: BLE001 - an unreadable step: say which, and what else there is
                others = [s for s in steps if s != step]
                raise CheckpointRestoreError(
                    f"checkpoint step {step} in {directory} could not be read ({type(e).__name__}: "
                    f"{str(e)[:200]})" + (f"; try another --step: saved steps are {others}" if others else "")
                ) from e
        else:
            first = ckpt.best_step()
            order = [first] + [s for s in sorted(steps, reverse=True) if s != first]
            step, restored = ckpt.restore_with_fallback(order, with_train=False)
    finally:
        ckpt.close()
    logger.info("restored variables of step %d from %s", step, directory)
    return dict(restored[VARIABLES]), config, int(step)


def load_model(workdir, step: Optional[int] = None, overrides: Sequence[Tuple[str, str]] = ()):
    """A workdir's network: ``(model, config, variables, step)``. ``overrides`` (("eval.tile_size", "380"), ...)
    may change the eval and data sections (e.g. a moved data root), not the model, which must match the
    checkpoint. ``step`` None: the best checkpoint."""
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise InvalidInputError(f"workdir {str(workdir)!r} is a file; expected the directory that `unet-jax train "
                                f"--workdir` wrote")
    if not workdir.is_dir():
        raise FileNotFoundError(f"workdir {str(workdir)!r} does not exist; train first with "
                                f"`unet-jax train --workdir {workdir}`")
    if not (workdir / CONFIG_FILE).exists():
        raise FileNotFoundError(f"workdir {str(workdir)!r} holds no training run (no config.json); train first "
                                f"with `unet-jax train --workdir {workdir}`")
    variables, config, step = restore_params(workdir, step)
    fill_eval_defaults(config)
    if overrides:
        bad = [k for k, _ in overrides if k.split(".")[0] == "model"]
        if bad:
            raise UsageError(f"--config.{bad[0]}: model fields come from the checkpoint and cannot be overridden")
        apply_overrides(config, overrides)
    validate_eval(config)
    model = create_model(config)
    try:
        check_params(model, variables["params"], f"{workdir / CONFIG_FILE}")
    except InvalidInputError as e:
        raise InvalidInputError(f"{e} (step {step}); config.json was edited or replaced: restore the one the run "
                                f"wrote, or train again") from None
    return model, config, variables, step
