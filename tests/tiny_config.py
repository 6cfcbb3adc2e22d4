"""The tiny synthetic-cells experiment file the command-line tests train (features 4, depth 2, 64-pixel images)."""

TEMPLATE = """
from unet_jax.config import synthetic_config


def get_config():
    c = synthetic_config()
    c.model.features = 4
    c.model.depth = 2
    c.data.num_train = 4
    c.data.num_validation = 2
    c.data.image_size = 64
    c.data.data_dir = {data_dir!r}
    c.train.tile_size = 60
    c.train.batch_size = 2
    c.train.num_steps = {num_steps}
    c.train.log_every = {log_every}
    c.train.eval_every = {every}
    c.train.checkpoint_every = {every}
    c.optimizer.warmup_steps = {warmup}
    c.eval.tile_size = 76
    c.eval.batch_size = 2
    return c
"""


def tiny_config(data_dir, num_steps: int, log_every: int, every: int, warmup: int) -> str:
    """The text of a config file: ``num_steps`` steps, validated and checkpointed every ``every``."""
    return TEMPLATE.format(data_dir=str(data_dir), num_steps=num_steps, log_every=log_every, every=every,
                           warmup=warmup)
