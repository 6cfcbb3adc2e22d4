"""The train step (paper section 3): the state, optimizer and schedule, and one jit-compiled optimisation step.

``train_step`` is a whole step on the accelerator (tile sampling, augmentation, forward pass, weighted loss,
gradients averaged over devices, optax update); ``make_train_step`` pmaps it for a config and caches it. The
random-key scheme and why a run does not depend on its device split: docs/training.md.
"""
from __future__ import annotations

import functools
import json
from typing import Any, Callable, Dict, NamedTuple, Optional

import flax
import flax.jax_utils
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from unet_jax import augment as augment_lib
from unet_jax import checks
from unet_jax.data import sampler
from unet_jax.geometry import output_size, valid_input_size
from unet_jax.losses import center_crop, soft_dice_loss, weighted_softmax_cross_entropy
from unet_jax.model import UNet, create_model

AXIS = "batch"
PARAMS_FINITE = "params_finite"

__all__ = ["TrainState", "create_learning_rate_schedule", "create_optimizer", "create_train_state", "train_step",
           "make_train_step", "step_parts", "replicate", "shard_state", "unshard_state"]


@flax.struct.dataclass
class TrainState:
    """Everything a training run is, as one pytree: ``step`` (int32, train steps done), ``params`` (float32),
    ``batch_stats`` (``{}`` unless ``model.norm='batch'``), ``opt_state`` (optax) and ``key`` (the run's constant
    PRNG key). Resuming is exact because this is all there is."""
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

    def train_items(self) -> dict:
        """What resuming needs beyond the variables (the checkpoint's 'train' item)."""
        return {"step": self.step, "key": self.key, "opt_state": self.opt_state}


def create_learning_rate_schedule(optimizer_config, num_steps: int) -> optax.Schedule:
    """The learning rate by optimizer update (``num_steps // grad_accum_steps`` updates in all; warmup counts
    updates too): 'constant' (after a linear warmup from 0 if ``warmup_steps``), 'cosine' (to 0 over all updates)
    or 'warmup_cosine' (linear from 0 over ``warmup_steps``, then a cosine to 0)."""
    o = optimizer_config
    lr, warmup = o.learning_rate, o.warmup_steps
    updates = max(num_steps // o.grad_accum_steps, 1)
    if o.schedule == "constant":
        if warmup == 0:
            return optax.constant_schedule(lr)
        return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
    if o.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, decay_steps=updates)
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps=warmup, decay_steps=updates, end_value=0.0)


def _decay_mask(params):
    """Weight decay applies to convolution kernels only (not to biases or normalisation scales/offsets)."""
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def create_optimizer(optimizer_config, num_steps: int) -> optax.GradientTransformation:
    """The optax optimizer of ``config.optimizer``: clipping by global norm (``grad_clip_norm > 0``), then 'sgd'
    (coupled L2 weight decay on kernels, momentum, nesterov), 'adam' (the same decay) or 'adamw' (decoupled decay
    on kernels), at the rate of ``create_learning_rate_schedule``; ``grad_accum_steps > 1`` wraps it all in
    ``optax.MultiSteps`` (that many steps' gradients averaged into one update)."""
    return _optimizer_with_schedule(optimizer_config, create_learning_rate_schedule(optimizer_config, num_steps))


def _optimizer_with_schedule(o, schedule: optax.Schedule) -> optax.GradientTransformation:
    parts = []
    if o.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
    if o.name == "adamw":
        parts.append(optax.adamw(schedule, weight_decay=o.weight_decay, mask=_decay_mask))
    else:
        if o.weight_decay > 0:
            parts.append(optax.add_decayed_weights(o.weight_decay, mask=_decay_mask))
        if o.name == "sgd":
            parts.append(optax.sgd(schedule, momentum=o.momentum or None, nesterov=o.nesterov))
        else:
            parts.append(optax.adam(schedule))
    tx = optax.chain(*parts) if len(parts) > 1 else parts[0]
    if o.grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=o.grad_accum_steps)
    return tx


def create_train_state(key: jax.Array, config, model: UNet, input_channels: int,
                       optimizer: Optional[optax.GradientTransformation] = None) -> TrainState:
    """A fresh state at step 0 (host arrays): He-normal parameters (paper section 3), the optimizer's state
    (default ``create_optimizer`` of the config) and the run's key, both split from ``key``."""
    input_channels = checks.integer("input_channels", input_channels, 1)
    if optimizer is None:
        optimizer = create_optimizer(config.optimizer, config.train.num_steps)
    init_key, train_key = jax.random.split(key)
    size = valid_input_size(1, model.depth, model.padding)   # parameters do not depend on the tile size
    init = jax.jit(functools.partial(model.init, train=False)).lower(
        init_key, jax.ShapeDtypeStruct((1, size, size, input_channels), jnp.float32))
    # On CPU, XLA's optimiser spends about 1 s per parameter tensor on the random-number code of this one-off
    # function: compile it unoptimised there (the parameters are the same either way).
    options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
    variables = init.compile(options)(init_key, jnp.zeros((1, size, size, input_channels), jnp.float32))
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get("batch_stats", {}),
                      opt_state=optimizer.init(params), key=train_key)


def train_step(state: TrainState, dataset, lr_scale=None, *, model: UNet, optimizer: optax.GradientTransformation,
               sample_fn: Callable, augment_fn: Optional[Callable], global_batch: int, num_devices: int,
               dice_weight: float = 0.0) -> tuple:
    """One optimisation step on one device, under ``jax.pmap(..., axis_name='batch')``; pure jax.

    ``sample_fn(dataset, key)`` gives one (image, labels, weights) tile, ``augment_fn(key, image, labels,
    weights)`` augments it (None: off). ``lr_scale`` (a float32 scalar; None: 1) multiplies the optimizer's
    updates, i.e. its learning rate (a divergence rollback halves it without a new compilation). Sample ``i`` of
    step ``s`` uses ``split(fold_in(fold_in(key, s), i), 3)`` (tile, augmentation, dropout): device ``d`` of
    ``num_devices`` computes its slice of the ``global_batch`` samples, so the result does not depend on the split.

    Returns ``(new_state, metrics)``: 'loss' (weighted cross-entropy, plus ``dice_weight`` times the soft Dice
    loss), 'pixel_mismatch', 'grad_norm' (before clipping) and 'params_finite' (1.0 or 0.0), float32 scalars
    averaged over the global batch.
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
            # One forward pass per example (vmapped), so every example's dropout mask comes from its own key.
            logits = jax.vmap(lambda x, k: model.apply(variables, x[None], train=True, rngs={"dropout": k})[0]
                              )(images, keys[:, 2])
            new_stats = {}
        out = logits.shape[1:3]
        local_den = center_crop(weights, out).astype(jnp.float32).sum()
        mean_den = lax.pmean(local_den, AXIS)
        # Rescale this device's weighted mean so that the mean over devices is sum(w * ce) / sum(w) over the
        # global batch (what a single device would compute).
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
    if lr_scale is not None:   # every optimizer's update is linear in its learning rate; x * 1.0 is exact
        updates = jax.tree_util.tree_map(lambda u: u * lr_scale.astype(u.dtype), updates)
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


class StepParts(NamedTuple):
    """What a config's train step is built from, and the step: built once per ``_step_cache_key``."""
    model: UNet
    optimizer: optax.GradientTransformation
    schedule: optax.Schedule        # the optimizer's learning-rate schedule (for logging)
    p_step: Callable                # ``p_step(state, dataset, lr_scale=1.0) -> (state, metrics)``


# Runs with equal configs (ablation sweeps, tests) reuse one compiled step.
_STEP_CACHE: Dict[str, StepParts] = {}


def _step_cache_key(config, num_devices: int) -> str:
    """JSON of every config field ``_build_step_parts`` reads, and the device count."""
    d = config.to_dict()
    keep = {k: d[k] for k in ("model", "optimizer", "augment", "loss")}
    keep["train"] = {k: d["train"][k] for k in ("tile_size", "batch_size", "num_steps", "foreground_fraction")}
    keep["num_devices"] = num_devices
    return json.dumps(keep, sort_keys=True, default=str)


def step_parts(config, num_devices: int) -> StepParts:
    """The cached ``StepParts`` of a validated config for ``num_devices`` global devices (which must divide
    ``train.batch_size``)."""
    num_devices = checks.integer("num_devices", num_devices, 1)
    if config.train.batch_size % num_devices:
        raise checks.InvalidInputError(f"config.train.batch_size must be a multiple of the number of devices "
                                       f"({num_devices}), got {config.train.batch_size}")
    key = _step_cache_key(config, num_devices)
    if key not in _STEP_CACHE:
        _STEP_CACHE[key] = _build_step_parts(config, num_devices)
    return _STEP_CACHE[key]


def make_train_step(config, num_devices: Optional[int] = None) -> Callable:
    """The pmapped train step of a config: ``p_step(state, dataset, lr_scale=1.0) -> (state, metrics)``.

    ``state`` (donated) and ``dataset`` are replicated over the local devices (``replicate``); metrics come back
    with a leading local-device axis. ``lr_scale`` multiplies the learning rate without recompiling.
    ``num_devices``: the global device count (default ``jax.device_count()``)."""
    return step_parts(config, jax.device_count() if num_devices is None else num_devices).p_step


def _build_step_parts(config, num_devices: int) -> StepParts:
    model = create_model(config)
    schedule = create_learning_rate_schedule(config.optimizer, config.train.num_steps)
    optimizer = _optimizer_with_schedule(config.optimizer, schedule)
    tile = config.train.tile_size
    out = output_size(tile, model.depth, model.padding)
    aug_config = augment_lib.read_config(config.augment)
    foreground = config.train.foreground_fraction

    def sample_fn(dataset, key):
        images, labels, weights = sampler.sample_tiles(dataset, key, 1, tile, out, foreground)
        return images[0], labels[0], weights[0]

    def augment_fn(key, image, labels, weights):
        return augment_lib.augment(key, image, labels, weights, aug_config)

    step = functools.partial(train_step, model=model, optimizer=optimizer, sample_fn=sample_fn,
                             augment_fn=augment_fn if aug_config.enabled else None,
                             global_batch=config.train.batch_size, num_devices=num_devices,
                             dice_weight=config.loss.dice_weight)
    pmapped = jax.pmap(step, axis_name=AXIS, in_axes=(0, 0, None), donate_argnums=(0,))

    def p_step(state, dataset, lr_scale=1.0):
        return pmapped(state, dataset, np.float32(lr_scale))

    return StepParts(model=model, optimizer=optimizer, schedule=schedule, p_step=p_step)


def replicate(tree):
    """Replicate a pytree (a TrainState, a DeviceDataset) over the local devices (leading axis), sharded over a
    mesh axis named 'batch' as the step's outputs are, so feeding an output back in does not recompile."""
    return flax.jax_utils.replicate(tree, axis_name=AXIS)


def shard_state(state: TrainState) -> TrainState:
    """Replicate a host/one-device state over the local devices (``replicate``)."""
    return replicate(state)


def unshard_state(state: TrainState) -> TrainState:
    """The first local replica of a replicated state (all replicas are equal)."""
    return flax.jax_utils.unreplicate(state)
