"""Configuration: the schema every experiment starts from, the built-in default experiment, and its checks.

Experiments are Python files (experiments/*.py) whose ``get_config()`` starts from ``base_config()`` and changes
what the experiment is about. ``base_config()`` holds the paper's settings; ``synthetic_config()`` is the
built-in default (``unet-jax train`` with no --config), the same as experiments/synthetic.py.
"""
from __future__ import annotations

import ml_collections

DATA_SETS = ("synthetic_cells", "isbi2012", "ctc", "folder")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
DTYPES = ("float32", "bfloat16")


def base_config() -> ml_collections.ConfigDict:
    """The full schema with the paper's defaults (features 64, depth 4, VALID, 572 tiles, SGD momentum 0.99)."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    # unet_jax.model.UNet fields; dtype is the compute dtype ('float32' or 'bfloat16'), params stay float32.
    c.model = ml_collections.ConfigDict(dict(
        num_classes=2, features=64, depth=4, padding="VALID", dropout_rate=0.5, norm="",
        upsample="transpose", dtype="float32"))

    # unet_jax.data: which TFDS builder and where its files are.
    c.data = ml_collections.ConfigDict(dict(
        name="synthetic_cells",     # 'synthetic_cells' | 'isbi2012' | 'ctc' | 'folder'
        builder_config="",          # ctc: 'phc_c2dh_u373' or 'dic_c2dh_hela'
        root="",                    # manual directory with the downloaded files (isbi2012, ctc, folder)
        data_dir="",                # where TFDS writes prepared data ('' = ~/.cache/unet_jax/tfds)
        validation_slices=5,        # isbi2012: the last N of the 30 training slices are validation
        validation_fraction=0.2,    # ctc / folder: fraction of examples held out for validation
        mask_type="auto",           # folder: 'auto' | 'binary' | 'instance' (unet_jax.data.io.mask_to_instances)
        num_train=24, num_validation=6, image_size=256, seed=0))   # synthetic_cells: size and generator seed

    # unet_jax.weights.unet_weight_map (precomputed per example when the data set is prepared).
    c.weights = ml_collections.ConfigDict(dict(w0=10.0, sigma=5.0, class_weights="balanced"))

    # unet_jax.losses, in the train step: the weighted cross-entropy (the paper's energy) plus dice_weight times
    # the soft Dice loss of the foreground (unet_jax.losses.soft_dice_loss; 0 = the paper's loss alone).
    c.loss = ml_collections.ConfigDict(dict(dice_weight=0.0))

    # unet_jax.augment.augment, inside the train step.
    c.augment = ml_collections.ConfigDict(dict(
        enabled=True,
        elastic=True, elastic_grid=3, elastic_sigma=10.0,
        rotate=True, max_rotation=180.0,      # degrees, uniform in [-max, max]
        flip=True,                            # random flips and 90-degree rotations (8 symmetries)
        shift=0.0,                            # pixels, uniform in [-shift, shift]
        scale=0.0,                            # relative, uniform in [1 - scale, 1 + scale]
        brightness=0.1, contrast=0.1, gamma=0.1, noise=0.02))

    # unet_jax.train.create_optimizer. Paper: SGD, momentum 0.99, one large tile per step. Schedules and
    # warmup_steps count optimizer updates (train steps // grad_accum_steps); weight_decay applies to kernels only
    # (coupled L2 for sgd/adam, decoupled for adamw); grad_clip_norm 0 = no clipping; grad_accum_steps > 1
    # averages that many steps' gradients per update (optax.MultiSteps).
    c.optimizer = ml_collections.ConfigDict(dict(
        name="sgd",                  # 'sgd' | 'adam' | 'adamw'
        learning_rate=0.01, momentum=0.99, nesterov=False, weight_decay=0.0,
        schedule="constant",         # 'constant' | 'cosine' | 'warmup_cosine'
        warmup_steps=0, grad_accum_steps=1, grad_clip_norm=0.0))

    # unet_jax.train.train_and_evaluate. eval_every / checkpoint_every 0 = only at the end (the last step is always
    # validated and saved; every validation step is saved too). keep_checkpoints latest steps are kept plus the
    # best by the validation metric best_metric, best_mode 'max' or 'min' ('' = latest only): 'iou' (foreground IoU,
    # the default: an all-background or all-foreground prediction cannot win it), 'loss', 'pixel_mismatch', or
    # one of the ISBI measures 'pixel_error', 'rand_error', 'warping_error', 'vrand_thinned', 'vinfo_thinned'.
    # distributed=True calls jax.distributed.initialize; coordinator_address ('host:port' of process 0),
    # num_processes and process_id may stay ''/0/-1 where JAX detects the cluster (SLURM, Open MPI, TPU, ...).
    # max_rollbacks: how often a diverging loss (a spike or NaN, unet_jax.guard) may send the run back to its last
    # healthy state with half the learning rate before it stops (0 = stop at once).
    # time_limit > 0 (seconds since training started, data loading and compilation included) ends the run early:
    # the step where it passes is validated and checkpointed like a last step; the same command resumes it.
    # Resuming a workdir with a config that differs in anything but run-control settings (train.RUN_CONTROL_KEYS:
    # time_limit, log_every, the cluster fields, data.data_dir, eval.batch_size) is refused unless
    # allow_config_change; each start is recorded in WORKDIR/config_history.jsonl.
    c.train = ml_collections.ConfigDict(dict(
        tile_size=572,               # input tile; the output (and the labels used) is output_size(tile_size)
        batch_size=1,                # global batch, split over all devices (of all processes)
        foreground_fraction=0.0,     # share of tiles centred on a foreground pixel (the rest uniform; paper 0)
        num_steps=10000, log_every=50, eval_every=1000, checkpoint_every=1000, keep_checkpoints=3,
        best_metric="iou", best_mode="max", time_limit=0.0, max_rollbacks=3, allow_config_change=False,
        distributed=False, coordinator_address="", num_processes=0, process_id=-1))

    # Overlap-tile inference for validation, evaluate and predict.
    c.eval = ml_collections.ConfigDict(dict(tile_size=572, batch_size=4, tta=False, threshold=0.5))
    return c


def ctc_config(builder_config: str) -> ml_collections.ConfigDict:
    """A cell tracking data set ('phc_c2dh_u373' or 'dic_c2dh_hela') with the paper's settings: the base schema
    with the ``ctc`` builder, 20000 steps and the checkpoint kept by the highest validation IoU (the paper's
    measure on these data sets)."""
    c = base_config()
    c.data.name = "ctc"
    c.data.builder_config = builder_config
    c.train.num_steps = 20000
    c.train.best_metric = "iou"
    c.train.best_mode = "max"
    return c


def synthetic_config() -> ml_collections.ConfigDict:
    """The built-in default: a small U-Net on the procedural synthetic cells, minutes on 2 CPU cores."""
    c = base_config()
    c.model.features = 8
    c.model.depth = 3
    c.model.dropout_rate = 0.1
    c.data.name = "synthetic_cells"
    c.data.num_train = 16
    c.data.num_validation = 4
    c.data.image_size = 192
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.momentum = 0.9
    c.optimizer.schedule = "warmup_cosine"
    c.optimizer.warmup_steps = 20
    c.train.tile_size = 124          # -> 36x36 output at depth 3
    c.train.batch_size = 4
    c.train.num_steps = 600
    c.train.log_every = 25
    c.train.eval_every = 200
    c.train.checkpoint_every = 200
    c.eval.tile_size = 188           # -> 100x100 output
    c.eval.batch_size = 4
    return c


def validate_config(config) -> None:
    """Check a config before any work starts; raises ValueError naming the field and what is expected."""
    from unet_jax.model import NORMS, PADDINGS, UPSAMPLES, output_size

    def one_of(name, value, allowed):
        if value not in allowed:
            raise ValueError(f"config.{name} must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}")

    m = config.model
    one_of("model.padding", m.padding, PADDINGS)
    one_of("model.norm", m.norm or None, NORMS)
    one_of("model.upsample", m.upsample, UPSAMPLES)
    one_of("model.dtype", m.dtype, DTYPES)
    one_of("data.name", config.data.name, DATA_SETS)
    one_of("optimizer.name", config.optimizer.name, OPTIMIZERS)
    one_of("optimizer.schedule", config.optimizer.schedule, SCHEDULES)
    for name in ("model.features", "model.depth", "model.num_classes", "train.batch_size", "train.num_steps",
                 "eval.batch_size"):
        section, key = name.split(".")
        value = config[section][key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"config.{name} must be a positive integer, got {value!r}")
    for name in ("train.tile_size", "eval.tile_size"):
        section, key = name.split(".")
        try:
            output_size(config[section][key], m.depth, m.padding)
        except ValueError as e:
            raise ValueError(f"config.{name}: {e}") from None
    if config.data.name in ("isbi2012", "ctc", "folder") and not config.data.root:
        raise ValueError(f"config.data.root must name the directory with the downloaded {config.data.name} files "
                         f"(e.g. --config.data.root=/path/to/{config.data.name})")
