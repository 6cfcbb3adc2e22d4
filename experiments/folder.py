"""Your own data: a folder with images/ and masks/ holding files of the same names (png or tif; 8- or 16-bit;
masks binary (cells > 0) or instance labels). A CPU-sized network by default; raise model.features on a GPU.

    unet-jax train --config experiments/folder.py --config.data.root=/path/to/mydata --workdir runs/mine
"""
from unet_jax.config import base_config


def get_config():
    c = base_config()
    c.data.name = "folder"
    c.model.features = 16
    c.optimizer.name = "adam"
    c.optimizer.learning_rate = 1e-3
    c.train.tile_size = 316
    c.train.batch_size = 2
    c.train.num_steps = 3000
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
    return c
