"""Training (paper section 3): SGD on random tiles, weighted pixel-wise cross-entropy, one jit-compiled step.

``train_step`` is one whole optimisation step on the accelerator (tile sampling, augmentation, forward pass,
weighted loss, gradients averaged over devices, optax update); ``make_train_step`` pmaps it for a config.
``train_and_evaluate(config, workdir)`` drives it in the style of the Flax examples, with validation, metrics,
orbax checkpoints (``unet_jax.checkpoint``) and exact resume. Random keys: sample i of step s uses
``split(fold_in(fold_in(key, s), i), 3)`` (tile, augmentation, dropout), so the result does not depend on the
device split; the full scheme is in ``train_step``'s docstring.
"""
from __future__ import annotations

import copy
import functools
import json
import logging
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence

import flax
import flax.jax_utils
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax import lax
from tqdm.auto import tqdm

from unet_jax import augment as augment_lib
from unet_jax import checkpoint as ckpt_lib
from unet_jax.config import validate
from unet_jax.data import MissingSplitError, check_class_ids, load_split, resolve_target as data_target, sampler
from unet_jax.io import check_directory, check_writable_directory
from unet_jax.geometry import output_size, valid_input_size
from unet_jax.guard import GUARD_FILE, DivergenceGuard
from unet_jax.inference import evaluate_examples
from unet_jax.logging_utils import MetricWriter, plot_training_curves
from unet_jax.losses import center_crop, soft_dice_loss, weighted_softmax_cross_entropy
from unet_jax.model import UNet, check_params
from unet_jax.signals import StopSignals, TrainingInterrupted
from unet_jax.weights import DISTANCE_BINS

logger = logging.getLogger(__name__)
summary = logging.getLogger("unet_jax.summary")    # shown by the command line without -v

AXIS = "batch"
PARAMS_FINITE = "params_finite"
_COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}   # config.DTYPES
TRIVIAL_MARGIN = 0.01    # validation IoU must beat the trivial predictions' by this much not to be warned about

__all__ = ["TrainState", "NonFiniteLossError", "DivergenceError", "create_model", "create_learning_rate_schedule", "create_optimizer",
           "create_train_state", "make_train_step", "train_step", "replicate", "shard_state", "unshard_state",
           "initialize_distributed", "train_and_evaluate"]


class DivergenceError(FloatingPointError):
    """The training loss spiked (``unet_jax.guard``) more often than ``train.max_rollbacks`` allows."""


class _Diverged(Exception):
    """A logging window diverged (raised inside the train loop, handled by going back; never escapes)."""

    def __init__(self, step: int, reason: str, error: Optional[Exception] = None):
        super().__init__(reason)
        self.step, self.reason, self.error = step, reason, error


class NonFiniteLossError(FloatingPointError):
    """The training loss, the gradient norm or the updated parameters became NaN or Inf at train step ``step``
    (the first step where any did).

    Checkpoints are only written after the steps up to them were checked, so the last checkpoint of the run is
    from before ``step`` and stays usable.
    """

    def __init__(self, step: int, loss: float, grad_norm: float, params_finite: bool = True):
        self.step, self.loss, self.grad_norm = int(step), float(loss), float(grad_norm)
        self.params_finite = bool(params_finite)
        super().__init__(f"non-finite training loss at step {self.step}: loss={self.loss}, grad_norm="
                         f"{self.grad_norm}, updated parameters finite: {self.params_finite}; stopping (the last "
                         f"checkpoint, from before this step, is usable). Lower optimizer.learning_rate or set "
                         f"optimizer.grad_clip_norm.")


@flax.struct.dataclass
class TrainState:
    """Everything a training run is, as one pytree.

    Attributes
    ----------
    step : int32 scalar
        Number of train steps (micro-batches) done.
    params : pytree of float32 arrays
        Model parameters (float32 also with ``model.dtype='bfloat16'``).
    batch_stats : pytree
        BatchNorm running statistics (``model.norm='batch'``), else ``{}``.
    opt_state : pytree
        optax state (including the gradient accumulator of ``optimizer.grad_accum_steps > 1``).
    key : uint32 (2,)
        The run's PRNG key; constant, each step folds in its step number (the scheme: ``train_step``).

    Resuming is exact because the state (step, key, parameters, optimizer state) is all there is.
    """
    step: Any
    params: Any
    batch_stats: Any
    opt_state: Any
    key: Any

    def variables(self) -> dict:
        """``{'params': ..., 'batch_stats': ...}`` (the latter only when there are batch statistics)."""
        v = {"params": self.params}
        if self.batch_stats:
            v["batch_stats"] = self.batch_stats
        return v


def _positive_int(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------------------------------------------
# Model and optimizer
# ----------------------------------------------------------------------------------------------------------------

def create_model(config) -> UNet:
    """The ``UNet`` of a config.

    Parameters
    ----------
    config : ConfigDict
        A full experiment config (its ``model`` section is used) or the ``model`` section itself; ``norm`` None or
        '' means no normalisation.

    Returns
    -------
    UNet with ``dtype`` jnp.float32 or jnp.bfloat16 (compute dtype; parameters stay float32).
    """
    m = config.model if "model" in config else config
    return UNet(num_classes=int(m.num_classes), features=int(m.features), depth=int(m.depth), padding=m.padding,
                dropout_rate=float(m.dropout_rate), norm=m.norm or None, upsample=m.upsample,
                dtype=_COMPUTE_DTYPES[m.dtype])


def create_learning_rate_schedule(optimizer_config, num_steps: int) -> optax.Schedule:
    """Learning rate as a function of the optimizer update count.

    Parameters
    ----------
    optimizer_config : ConfigDict
        ``config.optimizer``: ``learning_rate``, ``schedule`` ('constant' | 'cosine' | 'warmup_cosine') and
        ``warmup_steps``, ``grad_accum_steps``.
    num_steps : int
        ``config.train.num_steps`` (train steps). Schedules count optimizer updates, i.e.
        ``num_steps // grad_accum_steps`` in all; ``warmup_steps`` counts updates too.

    Returns
    -------
    optax schedule: 'constant' is ``learning_rate`` (after a linear warmup from 0 if ``warmup_steps > 0``);
    'cosine' decays from ``learning_rate`` to 0 over all updates; 'warmup_cosine' rises linearly from 0 over
    ``warmup_steps`` and then decays to 0 by a cosine.
    """
    lr = float(optimizer_config.learning_rate)
    warmup = int(optimizer_config.warmup_steps)
    updates = max(num_steps // int(optimizer_config.grad_accum_steps), 1)
    if optimizer_config.schedule == "constant":
        if warmup == 0:
            return optax.constant_schedule(lr)
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
    if optimizer_config.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, decay_steps=updates)
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps=warmup, decay_steps=updates, end_value=0.0)


def _decay_mask(params):
    """Weight decay applies to convolution kernels only (not to biases or normalisation scales/offsets)."""
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def create_optimizer(optimizer_config, num_steps: int) -> optax.GradientTransformation:
    """The optax optimizer of ``config.optimizer``.

    The chain is: gradient clipping by global norm (``grad_clip_norm > 0``), then

    * 'sgd': L2 weight decay added to the gradient (``weight_decay > 0``, kernels only), SGD with ``momentum``
      (the paper: 0.99) and ``nesterov``;
    * 'adam': the same coupled L2 weight decay, then Adam;
    * 'adamw': Adam with decoupled weight decay (kernels only);

    with the learning rate of ``create_learning_rate_schedule``. ``grad_accum_steps > 1`` wraps all of it in
    ``optax.MultiSteps``: gradients of that many train steps are averaged and applied in one update (the other
    steps leave the parameters unchanged).

    Parameters
    ----------
    optimizer_config : ConfigDict
        ``config.optimizer``.
    num_steps : int
        ``config.train.num_steps``, for the schedules.

    Returns
    -------
    optax.GradientTransformation
    """
    return _optimizer_with_schedule(optimizer_config, create_learning_rate_schedule(optimizer_config, num_steps))


def _optimizer_with_schedule(optimizer_config, schedule: optax.Schedule) -> optax.GradientTransformation:
    """``create_optimizer`` with its learning-rate schedule given (so that one schedule object serves both)."""
    o = optimizer_config
    parts = []
    if o.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(float(o.grad_clip_norm)))
    if o.name == "adamw":
        parts.append(optax.adamw(schedule, weight_decay=float(o.weight_decay), mask=_decay_mask))
    else:
        if o.weight_decay > 0:
            parts.append(optax.add_decayed_weights(float(o.weight_decay), mask=_decay_mask))
        if o.name == "sgd":
            parts.append(optax.sgd(schedule, momentum=float(o.momentum) or None, nesterov=bool(o.nesterov)))
        else:
            parts.append(optax.adam(schedule))
    tx = optax.chain(*parts) if len(parts) > 1 else parts[0]
    if o.grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=int(o.grad_accum_steps))
    return tx


def create_train_state(key: jax.Array, config, model: UNet, input_channels: int,
                       optimizer: Optional[optax.GradientTransformation] = None) -> TrainState:
    """Initialise parameters (He normal, paper section 3), optimizer state and the run's key (host arrays).

    Parameters
    ----------
    key : PRNG key
        Split into the initialisation key and the state's training key.
    config : ConfigDict
        Full experiment config (``optimizer`` and ``train.num_steps`` build the optimizer unless given).
    model : UNet
    input_channels : int
        Channels C of the (N, H, W, C) input images.
    optimizer : optax.GradientTransformation or None
        Default ``create_optimizer(config.optimizer, config.train.num_steps)``.

    Returns
    -------
    TrainState with ``step = 0`` (unreplicated, on the default device).
    """
    input_channels = _positive_int("input_channels", input_channels)
    if optimizer is None:
        optimizer = create_optimizer(config.optimizer, config.train.num_steps)
    init_key, train_key = jax.random.split(key)
    size = valid_input_size(1, model.depth, model.padding)   # parameters do not depend on the tile size
    init = jax.jit(functools.partial(model.init, train=False)).lower(
        init_key, jax.ShapeDtypeStruct((1, size, size, input_channels), jnp.float32))
    # Initialisation runs once; on CPU, XLA's optimiser spends seconds on its random-number code (about 1 s per
    # parameter tensor), so compile it unoptimised there. Parameters are reproducible either way.
    options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
    variables = init.compile(options)(init_key, jnp.zeros((1, size, size, input_channels), jnp.float32))
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=optimizer.init(params), key=train_key)


# ----------------------------------------------------------------------------------------------------------------
# The train step
# ----------------------------------------------------------------------------------------------------------------

def train_step(state: TrainState, dataset, *, model: UNet, optimizer: optax.GradientTransformation,
               sample_fn: Callable, augment_fn: Optional[Callable], global_batch: int, num_devices: int,
               dice_weight: float = 0.0) -> tuple:
    """One optimisation step on one device; run under ``jax.pmap(..., axis_name='batch')`` (see
    ``make_train_step``, which binds the keyword arguments from a config). Pure jax.

    Parameters
    ----------
    state : TrainState
        This device's replica.
    dataset : DeviceDataset
        The on-device training set (``unet_jax.data.sampler.to_device_dataset``), replicated.
    model, optimizer
        From ``create_model`` / ``create_optimizer``.
    sample_fn : callable
        ``(dataset, key) -> (image (T, T, C) float32, labels (T, T) int32, weights (T, T) float32)``: one tile.
    augment_fn : callable or None
        ``(key, image, labels, weights) -> same``: one example's augmentation.
    global_batch, num_devices : int
        Global batch B (all devices of all processes) and the number of devices n; each device does B / n.
    dice_weight : float
        Weight of the soft Dice loss (``unet_jax.losses.soft_dice_loss``, per image, zero-weight pixels left
        out) added to the weighted cross-entropy; 0 = the paper's loss alone.

    Returns
    -------
    (new_state, metrics): metrics are float32 scalars averaged over the global batch: 'loss' (the weighted
    cross-entropy of ``unet_jax.losses``, plus ``dice_weight`` times the soft Dice loss), 'pixel_mismatch' (fraction of output pixels whose arg-max class is wrong,
    unweighted), 'grad_norm' (global norm of the averaged gradient, before clipping) and 'params_finite' (1.0 if
    every updated parameter is finite, else 0.0).

    Randomness and device independence: the state holds one PRNG key that never changes. Step ``s`` (the step
    counter before the update) uses ``step_key = fold_in(key, s)``; sample ``i`` of the global batch
    (``0 <= i < global_batch``) uses ``fold_in(step_key, i)``, split into its tile-sampling, augmentation and
    dropout keys. Device ``d`` of ``n`` computes the samples ``d * B/n ... (d + 1) * B/n - 1``
    (``d = lax.axis_index('batch')``, global over all processes), so the global batch, and the result, do not
    depend on how it is split over devices or hosts. The loss is the weighted mean over the whole global batch
    (numerator and denominator each averaged over devices), exactly as on one device. With ``model.norm='batch'``
    the forward pass runs over each device's part of the batch at once (batch statistics are per device, then
    averaged) and dropout uses one key per device, so only that setting depends on the device split.
    """
    local_batch = global_batch // num_devices
    device = lax.axis_index(AXIS)
    step_key = jax.random.fold_in(state.key, state.step)
    sample_ids = device * local_batch + jnp.arange(local_batch)
    keys = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(step_key, i), 3))(sample_ids)   # (b, 3, 2)

    def one_example(k_tile, k_aug):
        image, labels, weights = sample_fn(dataset, k_tile)
        if augment_fn is not None:
            image, labels, weights = augment_fn(k_aug, image, labels, weights)
        return image, labels, weights

    images, labels, weights = jax.vmap(one_example)(keys[:, 0], keys[:, 1])
    batch_norm = bool(state.batch_stats)

    def loss_fn(params):
        variables = {"params": params}
        if batch_norm:
            variables["batch_stats"] = state.batch_stats
            # Batch statistics need the device's whole batch at once; dropout then gets one key per device.
            logits, updates = model.apply(variables, images, train=True, mutable=["batch_stats"],
                                          rngs={"dropout": jax.random.fold_in(keys[0, 2], 1 << 20)})
            new_stats = updates["batch_stats"]
        else:
            # One forward pass per example (vmapped: the batch dimension is the same convolutions' N), so every
            # example's dropout mask comes from its own key.
            logits = jax.vmap(lambda x, k: model.apply(variables, x[None], train=True, rngs={"dropout": k})[0]
                              )(images, keys[:, 2])
            new_stats = {}
        out = logits.shape[1:3]
        local_den = center_crop(weights, out).astype(jnp.float32).sum()
        mean_den = lax.pmean(local_den, AXIS)
        # weighted_softmax_cross_entropy divides by this device's weight sum; rescale so that the mean over
        # devices is sum(w * ce) / sum(w) over the global batch (the loss a single device would compute).
        local_loss = weighted_softmax_cross_entropy(logits, labels, weights)
        local_loss = local_loss * (local_den / jnp.where(mean_den > 0, mean_den, 1.0))
        if dice_weight:   # a mean over this device's images: the mean over devices is the global batch's
            local_loss = local_loss + dice_weight * soft_dice_loss(logits, labels, weights)
        errors = (jnp.argmax(logits, axis=-1) != center_crop(labels, out)).astype(jnp.float32).mean()
        return local_loss, (errors, new_stats)

    (loss, (pixel_mismatch, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = lax.pmean(grads, AXIS)
    metrics = {"loss": lax.pmean(loss, AXIS), "pixel_mismatch": lax.pmean(pixel_mismatch, AXIS),
               "grad_norm": _global_norm(grads)}
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = [jnp.all(jnp.isfinite(p)) for p in jax.tree_util.tree_leaves(params)]
    metrics[PARAMS_FINITE] = jnp.all(jnp.stack(finite)).astype(jnp.float32)
    if batch_norm:
        new_stats = lax.pmean(new_stats, AXIS)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              batch_stats=new_stats if batch_norm else state.batch_stats)
    return new_state, metrics


def _global_norm(tree) -> jax.Array:
    """L2 norm of all leaves of a pytree together (float32 scalar)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree_util.tree_leaves(tree)))


def _step_cache_key(config, num_devices: int) -> str:
    """The ``_STEP_CACHE`` key: JSON of every config field ``_build_step_parts`` reads (the model, the optimizer
    and its schedule, the train step), so configs with equal keys build equal parts."""
    d = config.to_dict()
    keep = {k: d[k] for k in ("model", "optimizer", "augment", "loss")}
    keep["train"] = {k: d["train"][k] for k in ("tile_size", "batch_size", "num_steps", "foreground_fraction")}
    keep["num_devices"] = num_devices
    return json.dumps(keep, sort_keys=True, default=str)


def make_train_step(config, num_devices: Optional[int] = None) -> Callable:
    """The pmapped train step of a config: ``p_step(state, dataset) -> (state, metrics)``.

    ``state`` and ``dataset`` are replicated over the local devices (``replicate``); ``metrics`` come back with a
    leading local-device axis (all equal). The state argument is donated. Built functions are cached per (model,
    optimizer, augment, tile/batch size, num_steps, device count), so repeated calls with an equal config reuse
    the compiled step.

    Parameters
    ----------
    config : ConfigDict
        Full experiment config.
    num_devices : int or None
        Global device count (default ``jax.device_count()``); must divide ``train.batch_size``.
    """
    num_devices = jax.device_count() if num_devices is None else _positive_int("num_devices", num_devices)
    if config.train.batch_size % num_devices:
        raise ValueError(f"config.train.batch_size must be a multiple of the number of devices ({num_devices}), "
                         f"got {config.train.batch_size}")
    return _step_parts(config, num_devices).p_step


class _StepParts(NamedTuple):
    """What a config's train step is built from, and the step: built once per ``_step_cache_key``."""
    model: UNet
    optimizer: optax.GradientTransformation
    schedule: optax.Schedule        # the optimizer's learning-rate schedule (for logging)
    p_step: Callable                # the pmapped step, made with this model and optimizer


# Cached per config (``_step_cache_key``), so that runs with equal configs (ablation sweeps, tests) reuse the
# compiled step. ``train_and_evaluate`` takes its model and optimizer from here too, so a run builds them once.
_STEP_CACHE: Dict[str, _StepParts] = {}


def _step_parts(config, num_devices: int) -> _StepParts:
    """The cached ``_StepParts`` of a config (built on first use)."""
    key = _step_cache_key(config, num_devices)
    if key not in _STEP_CACHE:
        _STEP_CACHE[key] = _build_step_parts(config, num_devices)
    return _STEP_CACHE[key]


def _build_step_parts(config, num_devices: int) -> _StepParts:
    model = create_model(config)
    schedule = create_learning_rate_schedule(config.optimizer, config.train.num_steps)
    optimizer = _optimizer_with_schedule(config.optimizer, schedule)
    tile = int(config.train.tile_size)
    out = output_size(tile, model.depth, model.padding)
    aug_config = augment_lib.read_config(config.augment)

    foreground = float(config.train.foreground_fraction)

    def sample_fn(dataset, key):
        images, labels, weights = sampler.sample_tiles(dataset, key, 1, tile, out, foreground)
        return images[0], labels[0], weights[0]

    def augment_fn(key, image, labels, weights):
        return augment_lib.augment(key, image, labels, weights, aug_config)

    step = functools.partial(train_step, model=model, optimizer=optimizer, sample_fn=sample_fn,
                             augment_fn=augment_fn if aug_config.enabled else None,
                             global_batch=int(config.train.batch_size), num_devices=num_devices,
                             dice_weight=float(config.loss.dice_weight))
    return _StepParts(model=model, optimizer=optimizer, schedule=schedule,
                      p_step=jax.pmap(step, axis_name=AXIS, donate_argnums=(0,)))


def replicate(tree):
    """Replicate a pytree (a TrainState, a DeviceDataset) over the local devices: leading axis = local device count.

    The arrays are sharded over a mesh whose axis is named ``'batch'``, as the pmapped step's outputs are, so
    feeding a step's output back in does not recompile it.
    """
    return flax.jax_utils.replicate(tree, axis_name=AXIS)


def shard_state(state: TrainState) -> TrainState:
    """Replicate a host/one-device state over the local devices (``replicate``)."""
    return replicate(state)


def unshard_state(state: TrainState) -> TrainState:
    """The first local replica of a replicated state (all replicas are equal)."""
    return flax.jax_utils.unreplicate(state)


# ----------------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------------

def initialize_distributed(train_config) -> None:
    """``jax.distributed.initialize`` from ``config.train`` (no-op when already initialised).

    Empty ``coordinator_address``, ``num_processes <= 0`` and ``process_id < 0`` leave those to JAX's cluster
    auto-detection (or the ``JAX_COORDINATOR_ADDRESS`` environment variable). Must run before any JAX computation.
    """
    if jax.distributed.is_initialized():
        return
    kwargs = {}
    if train_config.get("coordinator_address"):
        kwargs["coordinator_address"] = str(train_config.coordinator_address)
    if train_config.get("num_processes", 0) > 0:
        kwargs["num_processes"] = int(train_config.num_processes)
    if train_config.get("process_id", -1) >= 0:
        kwargs["process_id"] = int(train_config.process_id)
    jax.distributed.initialize(**kwargs)
    logger.info("jax.distributed initialised: process %d of %d, %d local / %d global devices",
                jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())


# Settings that say how a run is carried out, not what it computes: they may change between a run and its resume.
# train.num_steps too: a finished run continues with more steps (train longer), its schedule spread over them.
RUN_CONTROL_KEYS = ("train.num_steps", "train.time_limit", "train.log_every", "train.allow_config_change",
                    "train.distributed", "train.coordinator_address", "train.num_processes", "train.process_id",
                    "data.data_dir", "eval.batch_size")
# Fields train derives from the data (``resolve_target``, ``learn_object_area``): not a change of the config.
DERIVED_KEYS = ("eval.object_area",)
CONFIG_HISTORY_FILE = "config_history.jsonl"


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


def _has_checkpoints(workdir: Path) -> bool:
    directory = ckpt_lib.checkpoint_dir(workdir)
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def _check_workdir_config(config, workdir: Path) -> list:
    """Refuse to resume a workdir whose checkpoints were trained with another config (always for another model;
    for other fields unless ``train.allow_config_change``); returns the changes that were allowed."""
    if not (workdir / ckpt_lib.CONFIG_FILE).exists() or not _has_checkpoints(workdir):
        return []
    old = ckpt_lib.load_config(workdir)
    if old.get("model") is not None and old.model.to_dict() != config.model.to_dict():
        raise ValueError(f"workdir {str(workdir)!r} holds checkpoints of a different model (config.json model "
                         f"{old.model.to_dict()} vs {config.model.to_dict()}); use a new workdir")
    changes = config_changes(old.to_dict(), config.to_dict())
    if changes and not config.train.get("allow_config_change", False):
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes[:5])
        more = f" and {len(changes) - 5} more" if len(changes) > 5 else ""
        raise ValueError(f"workdir {str(workdir)!r} holds a run trained with another config ({listed}{more}); "
                         f"use a new --workdir, or continue this run with the new settings by adding "
                         f"--config.train.allow_config_change=true (the earlier config is kept in "
                         f"{CONFIG_HISTORY_FILE})")
    return changes


def _record_config(config, workdir: Path, step: int, changes: list) -> None:
    """Write ``config.json`` and append the config this run starts (or resumes at ``step``) with to the
    workdir's ``config_history.jsonl``, with the changes from the previous one."""
    row = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "step": int(step),
           "changes": [{"key": k, "old": a, "new": b} for k, a, b in changes], "config": config.to_dict()}
    with open(workdir / CONFIG_HISTORY_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True, default=str) + "\n")
    ckpt_lib.save_config(config, workdir)


def resolve_target(config) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``data.target='auto'`` decided (``unet_jax.data.resolve_target``): 'distance' sets
    ``model.num_classes`` 5 and ``eval.instances`` 'centres' in place of the default 'watershed'. Says what it
    chose and why on the summary log."""
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


def _other_network(ckpts, model) -> str:
    """How the latest checkpoint's network differs from ``model`` (``model.check_params``), or '' if it does not
    or cannot be read."""
    try:
        variables = ckpts.restore(ckpts.latest_step(), with_train=False)[ckpt_lib.VARIABLES]
    except Exception:  # noqa: BLE001 - unreadable: the caller reports the restore error
        return ""
    try:
        check_params(model, variables["params"])
    except ValueError as e:
        return str(e).split(": ", 1)[-1]
    return ""


def _show(caught) -> None:
    """Emit again the warnings caught by ``warnings.catch_warnings(record=True)``."""
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _schedule_note(config, previous_steps: int, start: int) -> str:
    """One line on what a changed ``train.num_steps`` does to a resumed run and its learning-rate schedule."""
    o = config.optimizer
    steps = int(config.train.num_steps)
    update = start // int(o.grad_accum_steps)
    before = float(create_learning_rate_schedule(o, previous_steps)(update))
    now = float(create_learning_rate_schedule(o, steps)(update))
    head = f"train.num_steps {previous_steps} -> {steps}: continuing from step {start} to step {steps}; "
    if o.schedule == "constant" or before == now:
        return head + f"the learning rate continues as it was ({now:.3g})"
    return head + (f"the {o.schedule} learning-rate schedule now spans {steps} steps: the rate at step {start} is "
                   f"{now:.3g} (it was {before:.3g} on the {previous_steps}-step schedule) and decays to 0 by step "
                   f"{steps}")


def _load_validation(config) -> list:
    """The labelled validation examples, or [] (with a warning) when the data set has no validation split."""
    try:
        examples = load_split(config.data, config.weights, "validation")
    except MissingSplitError as e:
        logger.warning("no validation split (%s): training without validation; best checkpoint = latest", e)
        return []
    return [ex for ex in examples if ex.get("labelled", True)]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir, *,
                       callbacks: Sequence[Callable[[int, TrainState], None]] = ()) -> Dict[str, float]:
    """Train a U-Net as ``config`` says, validating and checkpointing into ``workdir``; resume if it has
    checkpoints. Host-side driver of the jit-compiled ``make_train_step``.

    Writes ``workdir/config.json`` (the resolved config; ``unet_jax.checkpoint.load_config``),
    ``workdir/metrics.jsonl`` (records ``{"step", "split": "train" | "validation", ...}``), TensorBoard event
    files in ``workdir/tensorboard/``, ``workdir/training_curves.png`` and ``workdir/checkpoints/<step>/``.

    Every ``train.log_every`` steps (and before every checkpoint) the metrics of the steps since the last check are
    fetched: a NaN or Inf loss, gradient norm or parameter, or a loss spike (``unet_jax.guard``), sends the run back
    to its last healthy state with half the learning rate; after ``train.max_rollbacks`` of them it raises
    ``NonFiniteLossError`` (or ``DivergenceError`` for spikes) naming the step. A
    checkpoint is saved every ``train.checkpoint_every`` steps, at every validation (every ``train.eval_every``
    steps) and at the end; the latest ``train.keep_checkpoints`` and the best by validation
    ``train.best_metric`` are kept. Restarting the same command continues from the newest readable checkpoint
    (a corrupt one is skipped with a warning) and ends bitwise identical to an uninterrupted run on CPU.
    ``train.time_limit > 0`` (seconds since this call started) ends the run after the step where it passes, which is
    then validated and checkpointed like the last step (the returned 'step' tells which); the learning-rate
    schedule still counts ``train.num_steps``, and running again resumes towards them. SIGTERM, SIGINT and SIGUSR1
    (``unet_jax.signals``) save the step the run is at and raise ``TrainingInterrupted``. A larger
    ``train.num_steps`` continues a finished run, its learning-rate schedule recomputed over the new total.

    One process trains in a workdir at a time: a second gets a ValueError naming the first (an exclusive lock on
    ``WORKDIR/.train.lock``, released however the run ends). Several processes (``train.distributed=True``,
    README "Running on GPU/TPU and on several hosts") run the same command on a shared workdir;
    ``train.batch_size`` is the global batch over all devices of all processes.

    Parameters
    ----------
    config : ConfigDict
        Full experiment config (``unet_jax.config.base_config()`` schema).
    workdir : str or Path
        Output directory (created).
    callbacks : sequence of callables
        Each is called as ``cb(step, state)`` on the host after every train step (``state`` replicated, on
        device, valid until the next step, which donates its buffers); for monitoring and tests.

    Returns
    -------
    dict of the final metrics: 'step', 'train_loss', 'train_pixel_mismatch', 'train_grad_norm' (means over the last
    logging window; absent when the run was already complete) and 'validation_<name>' for each validation metric
    of the final step.
    """
    held: list = []
    try:
        return _train_and_evaluate(config, workdir, callbacks=callbacks, held=held)
    finally:
        for f in held:
            f.close()


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir, *,
                        callbacks: Sequence[Callable[[int, TrainState], None]] = (), held: list
                        ) -> Dict[str, float]:
    """The body of ``train_and_evaluate``; appends the workdir lock it takes to ``held``."""
    validate(config)
    config = resolve_target(config)
    t_start = time.monotonic()
    for cb in callbacks:
        if not callable(cb):
            raise ValueError(f"callbacks must be callables, got {cb!r}")
    if config.train.distributed:
        initialize_distributed(config.train)

    check = check_writable_directory if jax.process_index() == 0 else check_directory   # process 0 writes
    workdir = check(workdir, "workdir").resolve()
    is_main = jax.process_index() == 0
    tcfg = config.train
    _check_workdir_config(config, workdir)   # before the data are prepared: a refused resume costs nothing
    num_devices = jax.device_count()
    if tcfg.batch_size % num_devices:
        raise ValueError(f"config.train.batch_size must be a multiple of the number of devices ({num_devices}), "
                         f"got {tcfg.batch_size}")
    parts = _step_parts(config, num_devices)   # the model, optimizer and schedule of the step (built once)
    model = parts.model
    tile = int(tcfg.tile_size)
    out = output_size(tile, model.depth, model.padding)

    train_examples = load_split(config.data, config.weights, "train")
    val_examples = _load_validation(config)
    if not train_examples:
        raise ValueError(f"data {config.data.name!r} has no training examples")
    check_class_ids(train_examples + val_examples, model.num_classes)
    learn_object_area(config, train_examples)
    channels = int(np.asarray(train_examples[0]["image"]).shape[-1])
    if not sampler.fits_on_device(train_examples, tile_size=tile, out_size=out):
        logger.warning("the training set (%.0f MB padded) may not fit on the device next to the model; the train "
                       "step samples tiles from an on-device copy", sampler.device_dataset_nbytes(
                           train_examples, tile, out) / 2 ** 20)
    dataset = sampler.to_device_dataset(train_examples, tile, out)

    schedule = parts.schedule
    state = jax.device_get(create_train_state(jax.random.PRNGKey(config.seed), config, model, channels,
                                              parts.optimizer))

    changes: list = []
    previous_steps = None     # the num_steps of the run this one continues
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        held.append(ckpt_lib.lock_workdir(workdir))   # one train process per workdir; released by the caller
        changes = _check_workdir_config(config, workdir)
        if _has_checkpoints(workdir):
            previous_steps = ckpt_lib.load_config(workdir).train.get("num_steps")
    ckpts = ckpt_lib.Checkpoints(ckpt_lib.checkpoint_dir(workdir), keep=int(tcfg.keep_checkpoints),
                                 best_metric=tcfg.best_metric or None, best_mode=tcfg.best_mode)
    with warnings.catch_warnings(record=True) as fallbacks:   # steps that failed to load: shown below, if wanted
        warnings.simplefilter("always")
        try:
            step0, restored = ckpts.restore_latest(state.variables(), _train_part(state))
        except ckpt_lib.CheckpointRestoreError as e:
            other = _other_network(ckpts, model)
            if other:       # config.json edited to match the config: the checkpoints hold another network
                ckpts.close()
                raise ValueError(f"the checkpoints in {workdir} hold another network than the config ({other}); "
                                 f"use a new --workdir") from e
            if not changes:
                _show(fallbacks)
                raise
            ckpts.close()
            raise ValueError(f"the checkpoints in {workdir} do not fit the changed config ("
                             + "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes)
                             + "): a change of the optimizer's state (another optimizer, clipping, weight decay or "
                             "accumulation) cannot be resumed; use a new --workdir") from e
    _show(fallbacks)
    if restored is not None:
        v, t = restored[ckpt_lib.VARIABLES], restored[ckpt_lib.TRAIN]
        try:
            check_params(model, v["params"])      # orbax restores saved arrays of other shapes without a word
        except ValueError as e:
            ckpts.close()
            raise ValueError(f"the checkpoints in {workdir} hold another network than the config "
                             f"({str(e).split(': ', 1)[-1]}); use a new --workdir") from None
        state = state.replace(params=v["params"], batch_stats=v.get("batch_stats", {}), step=t["step"],
                              key=t["key"], opt_state=t["opt_state"])
        if int(state.step) != step0:
            raise ValueError(f"checkpoint step {step0} holds state.step {int(state.step)}")
        ckpts.set_aside_after(step0)   # newer steps failed to restore (warned); this run saves them again
        logger.info("resuming from checkpoint step %d in %s", step0, ckpts.directory)
    start = int(state.step)
    if restored is not None and previous_steps not in (None, tcfg.num_steps) and start < tcfg.num_steps:
        logger.warning(_schedule_note(config, previous_steps, start))
    if is_main:
        _record_config(config, workdir, start, changes if restored is not None else [])
        if changes and restored is not None:
            logger.warning("continuing step %d with a changed config (train.allow_config_change): %s", start,
                           "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes))
    writer = MetricWriter(workdir, enabled=is_main)
    writer.truncate_after(start)

    guard = DivergenceGuard(max_rollbacks=int(tcfg.max_rollbacks))
    guard.load(workdir, start)
    if guard.lr_scale != 1.0:
        logger.warning("learning rate scaled by %g after %d earlier divergence rollback(s) (%s)", guard.lr_scale,
                       len(guard.events), workdir / GUARD_FILE)
    p_step = make_train_step(_scaled_learning_rate(config, guard.lr_scale), num_devices)
    guard.remember(start, state)
    r_state = shard_state(state)
    r_data = replicate(dataset)
    del state, dataset

    num_steps = int(tcfg.num_steps)
    final_step = max(num_steps, start)   # a run resumed past a lowered num_steps reports the step it holds
    if start > num_steps:
        logger.warning("the workdir's checkpoint is at step %d, past train.num_steps=%d: nothing to train; "
                       "validating step %d", start, num_steps, start)
    time_limit = float(tcfg.get("time_limit", 0.0) or 0.0)
    deadline = t_start + time_limit if time_limit > 0 else None
    accum = int(config.optimizer.grad_accum_steps)
    pending = []
    last_train: Dict[str, float] = {}
    last_eval: Dict[str, float] = {}
    last_eval_step = None
    stopped = None      # the signal (SIGTERM, SIGINT) that ends the run after the current step
    window_start = time.perf_counter()
    bar = _progress_bar(num_steps, start, enabled=is_main)

    def flush(step):
        nonlocal pending, window_start, last_train
        if not pending:
            return
        host = jax.device_get([m for _, m in pending])
        rows = [{k: float(np.asarray(v).reshape(-1)[0]) for k, v in h.items()} for h in host]
        bad = None
        for (s, _), r in zip(pending, rows):
            finite = r.pop(PARAMS_FINITE) == 1.0
            if bad is None and not (math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) and finite):
                bad = NonFiniteLossError(s, r["loss"], r["grad_norm"], finite)
        reason = guard.check([r["loss"] for r in rows], finite=bad is None)
        if reason:
            pending = []
            raise _Diverged(step, reason, bad)
        elapsed = time.perf_counter() - window_start
        last_train = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        last_train["learning_rate"] = float(schedule((step - 1) // accum))
        last_train["tiles_per_second"] = len(rows) * int(tcfg.batch_size) / max(elapsed, 1e-9)
        writer.write_scalars(step, last_train, "train")
        bar.set_postfix(loss=f"{last_train['loss']:.4f}", tiles_s=f"{last_train['tiles_per_second']:.1f}")
        pending = []
        window_start = time.perf_counter()

    def run_step(step) -> bool:
        """One train step and what follows it (log, validate, checkpoint); True if it was the last."""
        nonlocal r_state, last_eval, last_eval_step, window_start, stopped
        r_state, metrics = p_step(r_state, r_data)
        pending.append((step, metrics))
        bar.update(1)
        for cb in callbacks:
            cb(step, r_state)
        stopped = stops.requested(step, int(tcfg.log_every))   # SIGTERM / SIGINT: save this step and stop
        is_last = stopped is not None or step == num_steps or _time_is_up(deadline, step, int(tcfg.log_every))
        if is_last and step < num_steps and stopped is None:
            logger.warning("train.time_limit (%.0f s) reached after step %d of %d: validating and saving a "
                           "checkpoint; run the same command again to continue", time_limit, step, num_steps)
        do_eval = stopped is None and (is_last or (tcfg.eval_every > 0 and step % tcfg.eval_every == 0))
        do_ckpt = do_eval or is_last or (tcfg.checkpoint_every > 0 and step % tcfg.checkpoint_every == 0)
        if do_ckpt or step % tcfg.log_every == 0 or step == start + 1:
            flush(step)   # after the first step too: the compilation stays out of the tiles/s of the log
            if guard.max_rollbacks:
                guard.remember(step, jax.device_get(unshard_state(r_state)))
        if do_eval:
            if val_examples:
                last_eval = evaluate_examples(model, unshard_state(r_state).variables(), val_examples, config)[0]
                writer.write_scalars(step, last_eval, "validation")
                logger.info("step %d validation %s", step, last_eval)
                warn_if_trivial(step, last_eval)
            last_eval_step = step
        if do_ckpt:
            host = unshard_state(r_state)
            ckpts.save(step, host.variables(), _train_part(host),
                       metrics=last_eval if (do_eval and last_eval) else None)
        if do_eval or do_ckpt:
            window_start = time.perf_counter()   # tiles/s counts train steps only
        return is_last

    def rollback(d: _Diverged) -> int:
        """Go back to the last healthy state with half the learning rate (or raise); returns its step."""
        nonlocal p_step, schedule
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
                       len(guard.events), guard.max_rollbacks, workdir / GUARD_FILE)
        if is_main:
            guard.save(workdir)
        scaled = _scaled_learning_rate(config, guard.lr_scale)
        p_step = make_train_step(scaled, num_devices)
        schedule = _step_parts(scaled, num_devices).schedule
        # Fresh random tiles from here on: the same ones might lead the same way.
        guard.good_state = guard.good_state.replace(
            key=jax.random.fold_in(guard.good_state.key, len(guard.events)))
        writer.truncate_after(back)
        bar.n = back
        bar.refresh()
        return back

    trivial_steps: list = []   # validations that did not beat the trivial predictions

    def warn_if_trivial(step, metrics):
        trivial = metrics.get("trivial_iou")
        if trivial is None or metrics["iou"] > trivial + TRIVIAL_MARGIN:
            return
        which = "all background" if trivial == 0 else "all foreground"
        logger.warning("step %d: validation IoU %.3f does not beat the trivial prediction (%s: IoU %.3f); the model "
                       "has not learned the foreground (yet). Train longer, check that the masks mark the objects "
                       "(%.1f%% foreground in validation), or try --config.loss.dice_weight=1 and "
                       "--config.train.foreground_fraction=0.33 (experiments/folder.py)", step, metrics["iou"],
                       which, trivial, 100 * metrics.get("foreground_fraction", float("nan")))
        trivial_steps.append(step)

    step = start
    try:
        with StopSignals() as stops:
            while step < num_steps:
                step += 1
                try:
                    is_last = run_step(step)
                except _Diverged as d:
                    step = rollback(d)
                    r_state = shard_state(guard.good_state)
                    continue
                if is_last:
                    final_step = step
                    break
            if stopped is not None:
                ckpts.wait()
                raise TrainingInterrupted(stopped, step, ckpts.directory)
        if last_eval_step != final_step and val_examples:   # resumed a finished run: validate the final state
            last_eval = evaluate_examples(model, unshard_state(r_state).variables(), val_examples, config)[0]
        ckpts.wait()
        best_step = ckpts.best_step() if tcfg.best_metric else None
        best_metrics = (ckpts.metrics(best_step) or {}) if best_step is not None else {}
    finally:
        bar.close()
        ckpts.close()
        writer.close()
        if is_main:
            try:
                plot_training_curves(writer.jsonl_path, workdir / "training_curves.png")
            except Exception as e:  # noqa: BLE001 - a plotting failure must not hide the run's outcome
                logger.warning("could not plot training curves: %s", e)
    result = {"step": final_step, "best_step": best_step, "best_validation": dict(best_metrics),
              "rollbacks": len(guard.events), "trivial_warnings": len(trivial_steps)}
    result.update({f"train_{k}": v for k, v in last_train.items()})
    result.update({f"validation_{k}": v for k, v in last_eval.items()})
    return result


def _time_is_up(deadline: Optional[float], step: int, log_every: int) -> bool:
    """Whether ``train.time_limit`` has passed (``deadline``: ``time.monotonic()`` value, None = no limit).

    One process checks after every step; several processes decide together every ``log_every`` steps (process 0's
    clock, broadcast), so that all of them stop after the same step.
    """
    if deadline is None:
        return False
    if jax.process_count() == 1:
        return time.monotonic() >= deadline
    if step % log_every:
        return False
    from jax.experimental import multihost_utils
    return bool(multihost_utils.broadcast_one_to_all(np.int32(time.monotonic() >= deadline)))


def _scaled_learning_rate(config, scale: float):
    """``config`` itself (scale 1) or a copy with ``optimizer.learning_rate`` multiplied by ``scale``."""
    if scale == 1.0:
        return config
    scaled = ml_collections.ConfigDict(config.to_dict())
    scaled.optimizer.learning_rate = float(config.optimizer.learning_rate) * scale
    return scaled


def _train_part(state: TrainState) -> dict:
    return {"step": state.step, "key": state.key, "opt_state": state.opt_state}


def _progress_bar(total: int, initial: int, enabled: bool):
    # disable is passed only to switch the bar off, so tqdm's TQDM_DISABLE=1 environment override still works.
    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr,
                **({} if enabled else {"disable": True}))
