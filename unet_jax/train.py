"""Training (paper section 3): the loop around the jit-compiled step of ``unet_jax.step``.

``train_and_evaluate(config, workdir)`` in the style of the Flax examples: validation, metrics, orbax checkpoints
with exact resume (``unet_jax.workdir``), the time limit, stop signals, the divergence guard and several
processes. What a run writes and how it resumes: docs/training.md.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from unet_jax import checkpoint as ckpt_lib
from unet_jax.checks import InvalidInputError
from unet_jax.config import validate
from unet_jax.data import MissingSplitError, check_class_ids, load_split, resolve_target as data_target, sampler
from unet_jax.io import check_directory, check_writable_directory
from unet_jax.geometry import output_size
from unet_jax.guard import GUARD_FILE, DivergenceGuard
from unet_jax.inference import evaluate_examples
from unet_jax.logging_utils import MetricWriter, plot_training_curves
from unet_jax.model import count_convs, count_params
from unet_jax.signals import StopSignals, TrainingInterrupted
from unet_jax.step import (PARAMS_FINITE, TrainState, create_learning_rate_schedule, create_train_state,
                           make_train_step, replicate, shard_state, step_parts, unshard_state)
from unet_jax.weights import DISTANCE_BINS
from unet_jax.workdir import check_resume, describe_changes, lock_workdir, record_config, restore_state

logger = logging.getLogger(__name__)
summary = logging.getLogger("unet_jax.summary")    # shown by the command line without -v

TRIVIAL_MARGIN = 0.01    # validation IoU must beat the trivial predictions' by this much not to be warned about

__all__ = ["NonFiniteLossError", "DivergenceError", "initialize_distributed", "resolve_target",
           "learn_object_area", "train_and_evaluate", "TRIVIAL_MARGIN"]


class DivergenceError(FloatingPointError):
    """The training loss spiked (``unet_jax.guard``) more often than ``train.max_rollbacks`` allows."""


class NonFiniteLossError(FloatingPointError):
    """The loss, gradient norm or updated parameters became NaN or Inf at train step ``step`` (the first where any
    did). Checkpoints are written only after their steps were checked, so the last one stays usable."""

    def __init__(self, step: int, loss: float, grad_norm: float, params_finite: bool = True):
        self.step, self.loss, self.grad_norm = int(step), float(loss), float(grad_norm)
        self.params_finite = bool(params_finite)
        super().__init__(f"non-finite training loss at step {self.step}: loss={self.loss}, grad_norm="
                         f"{self.grad_norm}, updated parameters finite: {self.params_finite}; stopping (the last "
                         f"checkpoint, from before this step, is usable). Lower optimizer.learning_rate or set "
                         f"optimizer.grad_clip_norm.")


class _Diverged(Exception):
    """A logging window diverged (raised inside the loop, handled by going back; never escapes)."""

    def __init__(self, step: int, reason: str, error: Optional[Exception] = None):
        super().__init__(reason)
        self.step, self.reason, self.error = step, reason, error


def initialize_distributed(train_config) -> None:
    """``jax.distributed.initialize`` from ``config.train`` (no-op when already initialised); empty/0/-1 fields
    are left to JAX's cluster detection. Must run before any JAX computation."""
    if jax.distributed.is_initialized():
        return
    kwargs = {}
    if train_config.coordinator_address:
        kwargs["coordinator_address"] = train_config.coordinator_address
    if train_config.num_processes > 0:
        kwargs["num_processes"] = train_config.num_processes
    if train_config.process_id >= 0:
        kwargs["process_id"] = train_config.process_id
    jax.distributed.initialize(**kwargs)
    logger.info("jax.distributed initialised: process %d of %d, %d local / %d global devices",
                jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())


def resolve_target(config) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``data.target='auto'`` decided (``unet_jax.data.resolve_target``): 'distance' sets
    ``model.num_classes`` 5 and ``eval.instances`` 'centres' for 'watershed'. Says what and why on the summary log."""
    config = copy.deepcopy(config)      # the caller's config stays as it was
    if config.data.target != "auto":
        return config
    target, touching, total = data_target(config.data)
    distance = target == "distance"
    config.data.target = target
    config.model.num_classes = 1 + DISTANCE_BINS if distance else config.model.num_classes
    if distance and config.eval.instances == "watershed":
        config.eval.instances = "centres"
    why = (f"{touching} of {total} masks hold objects that touch" if distance else
           "no mask holds touching objects" if total else f"{config.data.mask_type} masks of {config.data.name}")
    summary.info("target: %s (%s); objects from %s", "distance to the object's edge, touching objects apart"
                 if distance else "the paper's foreground", why, config.eval.instances)
    validate(config)
    return config


def learn_object_area(config, examples) -> None:
    """Set ``eval.object_area`` (if 0) to the median area of the annotated objects of ``examples``, the size the
    ``eval.min_object_fraction`` rule compares predicted objects with."""
    if config.eval.object_area:
        return
    areas = [np.bincount(np.asarray(ex["instances"]).ravel())[1:] for ex in examples if ex.get("labelled", True)]
    areas = np.concatenate(areas) if areas else np.zeros(0, np.int64)
    areas = areas[areas > 0]
    if areas.size:
        config.eval.object_area = float(np.median(areas))
        summary.info("objects: %d annotated in the training masks, median area %.0f pixels; predicted objects "
                     "under %.0f pixels (eval.min_object_fraction=%g of it) are dropped", areas.size,
                     config.eval.object_area, config.eval.min_object_fraction * config.eval.object_area,
                     config.eval.min_object_fraction)


def _load_validation(config) -> list:
    """The labelled validation examples, or [] (with a warning) when the data set has no validation split."""
    try:
        examples = load_split(config.data, config.weights, "validation")
    except MissingSplitError as e:
        logger.warning("no validation split (%s): training without validation; best checkpoint = latest", e)
        return []
    return [ex for ex in examples if ex.get("labelled", True)]


def _network_line(model, params, tile: int) -> str:
    """One line on the network's size (issue 28), from its parameters."""
    return (f"network: {count_convs(params)} convolutions, {count_params(params):,} parameters "
            f"({count_params(params) / 1e6:.1f} M; features {model.features}, depth {model.depth}, "
            f"{model.padding}), input tile {tile} -> output {output_size(tile, model.depth, model.padding)}")


def _schedule_note(config, previous_steps: int, start: int) -> str:
    """One line on what a changed ``train.num_steps`` does to a resumed run and its learning-rate schedule."""
    o, steps = config.optimizer, config.train.num_steps
    update = start // o.grad_accum_steps
    before = float(create_learning_rate_schedule(o, previous_steps)(update))
    now = float(create_learning_rate_schedule(o, steps)(update))
    head = f"train.num_steps {previous_steps} -> {steps}: continuing from step {start} to step {steps}; "
    if o.schedule == "constant" or before == now:
        return head + f"the learning rate continues as it was ({now:.3g})"
    return head + (f"the {o.schedule} learning-rate schedule now spans {steps} steps: the rate at step {start} is "
                   f"{now:.3g} (it was {before:.3g} on the {previous_steps}-step schedule) and decays to 0 by step "
                   f"{steps}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir, *,
                       callbacks: Sequence[Callable[[int, TrainState], None]] = ()) -> Dict[str, float]:
    """Train a U-Net as ``config`` says, validating and checkpointing into ``workdir``; resume from its newest
    readable checkpoint if it has one (bitwise as if uninterrupted, on CPU).

    ``callbacks`` are called as ``cb(step, state)`` after every step (``state`` replicated on device, valid until
    the next step donates it). Returns the final metrics: 'step', 'best_step', 'best_validation', 'rollbacks',
    'trivial_warnings', ``train_<name>`` (means over the last logging window) and ``validation_<name>``. Raises
    InvalidInputError for a workdir that cannot be resumed or is in use, NonFiniteLossError / DivergenceError for
    a run that diverged, TrainingInterrupted on SIGTERM/SIGINT/SIGUSR1 (after saving the step).
    """
    validate(config)
    config = resolve_target(config)
    t_start = time.monotonic()
    for cb in callbacks:
        if not callable(cb):
            raise InvalidInputError(f"callbacks must be callables, got {cb!r}")
    if config.train.distributed:
        initialize_distributed(config.train)
    is_main = jax.process_index() == 0                 # process 0 writes
    workdir = (check_writable_directory if is_main else check_directory)(workdir, "workdir").resolve()
    parts = step_parts(config, jax.device_count())     # the model, optimizer and schedule of the step
    with contextlib.ExitStack() as stack:
        locked = is_main and workdir.is_dir()
        if locked:                                     # one train process per workdir
            stack.enter_context(lock_workdir(workdir))
        resume = check_resume(config, workdir)         # before the data are prepared: a refused resume costs nothing
        train_examples, val_examples, dataset = _load_data(config, parts.model)
        if is_main and not locked:                     # a new workdir, made once the data are there
            workdir.mkdir(parents=True, exist_ok=True)
            stack.enter_context(lock_workdir(workdir))
        channels = np.asarray(train_examples[0]["image"]).shape[-1]
        state = jax.device_get(create_train_state(jax.random.PRNGKey(config.seed), config, parts.model, channels,
                                                  parts.optimizer))
        summary.info(_network_line(parts.model, state.params, config.train.tile_size))
        tcfg = config.train
        ckpts = ckpt_lib.Checkpoints(ckpt_lib.checkpoint_dir(workdir), keep=tcfg.keep_checkpoints,
                                     best_metric=tcfg.best_metric or None, best_mode=tcfg.best_mode)
        stack.callback(ckpts.close)
        restored = restore_state(ckpts, state, parts.model, workdir, resume.changes)
        state = restored if restored is not None else state
        start = int(state.step)
        if restored is not None and resume.previous_steps not in (None, tcfg.num_steps) and start < tcfg.num_steps:
            logger.warning(_schedule_note(config, resume.previous_steps, start))
        changes = resume.changes if restored is not None else []
        if is_main:
            record_config(config, workdir, start, changes)
            if changes:
                logger.warning("continuing step %d with a changed config (train.allow_config_change): %s", start,
                               describe_changes(changes))
        if is_main:
            stack.callback(_plot_curves, workdir)
        writer = stack.enter_context(MetricWriter(workdir, enabled=is_main))
        writer.truncate_after(start)
        loop = _Loop(config, workdir, is_main, parts, ckpts, writer, val_examples, callbacks, start,
                     deadline=t_start + tcfg.time_limit if tcfg.time_limit > 0 else None)
        stack.callback(loop.bar.close)
        return loop.run(state, dataset)


def _load_data(config, model) -> tuple:
    """(train examples, validation examples, on-device training set) of a config."""
    tile = config.train.tile_size
    out = output_size(tile, model.depth, model.padding)
    train_examples = load_split(config.data, config.weights, "train")
    val_examples = _load_validation(config)
    if not train_examples:
        raise InvalidInputError(f"data {config.data.name!r} has no training examples")
    check_class_ids(train_examples + val_examples, model.num_classes)
    learn_object_area(config, train_examples)
    if not sampler.fits_on_device(train_examples, tile_size=tile, out_size=out):
        logger.warning("the training set (%.0f MB padded) may not fit on the device next to the model; the train "
                       "step samples tiles from an on-device copy", sampler.device_dataset_nbytes(
                           train_examples, tile, out) / 2 ** 20)
    return train_examples, val_examples, sampler.to_device_dataset(train_examples, tile, out)


def _plot_curves(workdir: Path) -> None:
    try:
        plot_training_curves(workdir / "metrics.jsonl", workdir / "training_curves.png")
    except Exception as e:  # noqa: BLE001 - a plotting failure must not hide the run's outcome
        logger.warning("could not plot training curves: %s", e)


class _Loop:
    """The train loop of one run and the state that changes while it runs: the replicated train state, the
    learning-rate scale (halved by each divergence rollback), the metrics not yet fetched, the last train and
    validation metrics, and the stop signal that ends it."""

    def __init__(self, config, workdir: Path, is_main: bool, parts, ckpts, writer, val_examples, callbacks,
                 start: int, deadline: Optional[float]):
        self.config, self.tcfg, self.workdir, self.is_main = config, config.train, workdir, is_main
        self.model, self.schedule = parts.model, parts.schedule
        self.p_step = make_train_step(config, jax.device_count())
        self.ckpts, self.writer, self.val_examples, self.callbacks = ckpts, writer, val_examples, callbacks
        self.start, self.deadline = start, deadline
        self.num_steps = self.tcfg.num_steps
        self.guard = DivergenceGuard(max_rollbacks=self.tcfg.max_rollbacks)
        self.pending: list = []                  # (step, metrics on device) since the last flush
        self.last_train: Dict[str, float] = {}
        self.last_eval: Dict[str, float] = {}
        self.last_eval_step: Optional[int] = None
        self.trivial_steps: list = []            # validations that did not beat the trivial predictions
        self.stopped: Optional[int] = None       # the signal that ends the run after the current step
        self.window_start = time.perf_counter()
        self.r_state = None
        self.bar = _progress_bar(self.num_steps, start, enabled=is_main)

    def run(self, state: TrainState, dataset) -> Dict[str, float]:
        """Train from ``state`` (host, at step ``start``) to the end; the result of ``train_and_evaluate``."""
        guard, num_steps, start = self.guard, self.num_steps, self.start
        guard.load(self.workdir, start)
        if guard.lr_scale != 1.0:
            logger.warning("learning rate scaled by %g after %d earlier divergence rollback(s) (%s)",
                           guard.lr_scale, len(guard.events), self.workdir / GUARD_FILE)
        guard.remember(start, state)
        self.r_state, r_data = shard_state(state), replicate(dataset)
        del state, dataset
        final_step = max(num_steps, start)   # a run resumed past a lowered num_steps reports the step it holds
        if start > num_steps:
            logger.warning("the workdir's checkpoint is at step %d, past train.num_steps=%d: nothing to train; "
                           "validating step %d", start, num_steps, start)
        step = start
        with StopSignals() as stops:
            while step < num_steps:
                step += 1
                try:
                    is_last = self._step(step, r_data, stops)
                except _Diverged as d:
                    step = self._rollback(d)
                    self.r_state = shard_state(guard.good_state)
                    continue
                if is_last:
                    final_step = step
                    break
            if self.stopped is not None:
                self.ckpts.wait()
                raise TrainingInterrupted(self.stopped, step, self.ckpts.directory)
        if self.last_eval_step != final_step and self.val_examples:   # resumed a finished run: validate it
            self.last_eval = self._validate()
        self.ckpts.wait()
        best_step = self.ckpts.best_step() if self.tcfg.best_metric else None
        best_metrics = (self.ckpts.metrics(best_step) or {}) if best_step is not None else {}
        result = {"step": final_step, "best_step": best_step, "best_validation": dict(best_metrics),
                  "rollbacks": len(guard.events), "trivial_warnings": len(self.trivial_steps)}
        result.update({f"train_{k}": v for k, v in self.last_train.items()})
        result.update({f"validation_{k}": v for k, v in self.last_eval.items()})
        return result

    def _step(self, step: int, r_data, stops) -> bool:
        """One train step and what follows it (log, validate, checkpoint); True if it was the last."""
        t = self.tcfg
        self.r_state, metrics = self.p_step(self.r_state, r_data, self.guard.lr_scale)
        self.pending.append((step, metrics))
        self.bar.update(1)
        for cb in self.callbacks:
            cb(step, self.r_state)
        self.stopped = stops.requested(step, t.log_every)   # SIGTERM / SIGINT: save this step and stop
        is_last = self.stopped is not None or step == self.num_steps or _time_is_up(self.deadline, step, t.log_every)
        if is_last and step < self.num_steps and self.stopped is None:
            logger.warning("train.time_limit (%.0f s) reached after step %d of %d: validating and saving a "
                           "checkpoint; run the same command again to continue", t.time_limit, step, self.num_steps)
        do_eval = self.stopped is None and (is_last or (t.eval_every > 0 and step % t.eval_every == 0))
        do_ckpt = do_eval or is_last or (t.checkpoint_every > 0 and step % t.checkpoint_every == 0)
        if do_ckpt or step % t.log_every == 0 or step == self.start + 1:
            self._flush(step)   # after the first step too: the compilation stays out of the tiles/s of the log
            if self.guard.max_rollbacks:
                self.guard.remember(step, jax.device_get(unshard_state(self.r_state)))
        if do_eval:
            if self.val_examples:
                self.last_eval = self._validate()
                self.writer.write_scalars(step, self.last_eval, "validation")
                logger.info("step %d validation %s", step, self.last_eval)
                self._warn_if_trivial(step, self.last_eval)
            self.last_eval_step = step
        if do_ckpt:
            host = unshard_state(self.r_state)
            self.ckpts.save(step, host.variables(), host.train_items(),
                            metrics=self.last_eval if (do_eval and self.last_eval) else None)
        if do_eval or do_ckpt:
            self.window_start = time.perf_counter()   # tiles/s counts train steps only
        return is_last

    def _validate(self) -> Dict[str, float]:
        variables = unshard_state(self.r_state).variables()
        return evaluate_examples(self.model, variables, self.val_examples, self.config)[0]

    def _flush(self, step: int) -> None:
        """Fetch the pending steps' metrics, check them (``_Diverged``) and log their means."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        rows = [{k: float(np.asarray(v).reshape(-1)[0]) for k, v in h.items()}
                for h in jax.device_get([m for _, m in pending])]
        bad = None
        for (s, _), r in zip(pending, rows):
            finite = r.pop(PARAMS_FINITE) == 1.0
            if bad is None and not (math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) and finite):
                bad = NonFiniteLossError(s, r["loss"], r["grad_norm"], finite)
        reason = self.guard.check([r["loss"] for r in rows], finite=bad is None)
        if reason:
            raise _Diverged(step, reason, bad)
        elapsed = time.perf_counter() - self.window_start
        last = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        update = (step - 1) // self.config.optimizer.grad_accum_steps
        last["learning_rate"] = float(self.schedule(update)) * self.guard.lr_scale
        last["tiles_per_second"] = len(rows) * self.tcfg.batch_size / max(elapsed, 1e-9)
        self.last_train = last
        self.writer.write_scalars(step, last, "train")
        self.bar.set_postfix(loss=f"{last['loss']:.4f}", tiles_s=f"{last['tiles_per_second']:.1f}")
        self.window_start = time.perf_counter()

    def _rollback(self, d: _Diverged) -> int:
        """Go back to the last healthy state with half the learning rate (or raise); returns its step."""
        guard = self.guard
        try:
            back = guard.rollback(d.step, d.reason)
        except RuntimeError as e:
            if d.error is not None:
                raise d.error from None
            raise DivergenceError(f"training diverged at step {d.step} ({d.reason}) and {e}; stopping. The last "
                                  f"checkpoint is from before the divergence and usable. Lower "
                                  f"optimizer.learning_rate or set optimizer.grad_clip_norm.") from None
        logger.warning("step %d: %s; going back to step %d and continuing with the learning rate scaled by %g "
                       "(rollback %d of at most %d, recorded in %s)", d.step, d.reason, back, guard.lr_scale,
                       len(guard.events), guard.max_rollbacks, self.workdir / GUARD_FILE)
        if self.is_main:
            guard.save(self.workdir)
        # Fresh random tiles from here on: the same ones might lead the same way.
        guard.good_state = guard.good_state.replace(key=jax.random.fold_in(guard.good_state.key, len(guard.events)))
        self.writer.truncate_after(back)
        self.bar.n = back
        self.bar.refresh()
        return back

    def _warn_if_trivial(self, step: int, metrics: dict) -> None:
        trivial = metrics.get("trivial_iou")
        if trivial is None or metrics["iou"] > trivial + TRIVIAL_MARGIN:
            return
        which = "all background" if trivial == 0 else "all foreground"
        logger.warning("step %d: validation IoU %.3f does not beat the trivial prediction (%s: IoU %.3f); the model "
                       "has not learned the foreground (yet). Train longer, check that the masks mark the objects "
                       "(%.1f%% foreground in validation), or try --config.loss.dice_weight=1 and "
                       "--config.train.foreground_fraction=0.33 (experiments/folder.py)", step, metrics["iou"],
                       which, trivial, 100 * metrics.get("foreground_fraction", float("nan")))
        self.trivial_steps.append(step)


def _time_is_up(deadline: Optional[float], step: int, log_every: int) -> bool:
    """Whether ``train.time_limit`` has passed (``deadline``: a ``time.monotonic()`` value, None = no limit). One
    process checks after every step; several decide together every ``log_every`` steps (process 0's clock), so
    that all stop after the same step."""
    if deadline is None:
        return False
    if jax.process_count() == 1:
        return time.monotonic() >= deadline
    if step % log_every:
        return False
    from jax.experimental import multihost_utils
    return bool(multihost_utils.broadcast_one_to_all(np.int32(time.monotonic() >= deadline)))


def _progress_bar(total: int, initial: int, enabled: bool):
    # disable is passed only to switch the bar off, so tqdm's TQDM_DISABLE=1 environment override still works.
    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr,
                **({} if enabled else {"disable": True}))
