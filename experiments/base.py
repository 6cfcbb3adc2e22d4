"""The full configuration schema with defaults; every experiment starts from ``base.get_config()``.

Sections: model (unet_jax.model.UNet fields), data (unet_jax.data), weights (unet_jax.weights.unet_weight_map),
augment (unet_jax.augment.augment), optimizer and train (unet_jax.train), eval (unet_jax.tiling / evaluate).
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.model = ml_collections.ConfigDict(dict(
        num_classes=2, features=64, depth=4, padding="VALID", dropout_rate=0.5, norm=None,
        upsample="transpose", dtype="float32"))   # dtype: 'float32' or 'bfloat16' (compute; params stay float32)

    c.data = ml_collections.ConfigDict(dict(
        name="synthetic_cells",     # 'synthetic_cells' | 'isbi2012' | 'ctc' | 'folder'
        builder_config="",          # TFDS builder config (ctc: 'phc_c2dh_u373' or 'dic_c2dh_hela')
        root="",                    # manual directory with the downloaded files (isbi2012, ctc, folder)
        data_dir="",                # where TFDS writes prepared data ('' = ~/.cache/unet_jax/tfds)
        validation_slices=5,        # isbi2012: the last N of the 30 training slices are validation
        validation_fraction=0.2,    # ctc / folder: fraction of examples held out for validation
        mask_type="auto",           # folder: 'auto' | 'binary' | 'instance' (unet_jax.data.io.mask_to_instances)
        num_train=24, num_validation=6, image_size=256, seed=0))   # synthetic_cells

    c.weights = ml_collections.ConfigDict(dict(w0=10.0, sigma=5.0, class_weights="balanced"))

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
    # best by the validation metric best_metric ('pixel_error', 'loss', 'rand_error'; '' = latest only).
    # distributed=True calls jax.distributed.initialize; coordinator_address ('host:port' of process 0),
    # num_processes and process_id may stay ''/0/-1 where JAX detects the cluster (SLURM, Open MPI, TPU, ...).
    c.train = ml_collections.ConfigDict(dict(
        tile_size=572,               # input tile; the output (and the labels used) is output_size(tile_size)
        batch_size=1,                # global batch, split over all devices (of all processes)
        num_steps=10000, log_every=50, eval_every=1000, checkpoint_every=1000, keep_checkpoints=3,
        best_metric="pixel_error", best_mode="min",
        distributed=False, coordinator_address="", num_processes=0, process_id=-1))

    c.eval = ml_collections.ConfigDict(dict(tile_size=572, batch_size=4, tta=False, threshold=0.5))
    return c
