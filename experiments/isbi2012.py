"""ISBI 2012 EM segmentation, the paper's recipe (section 3): U-Net with 64 features, depth 4, VALID convolutions,
572x572 input tiles (388x388 output), one tile per step, SGD with momentum 0.99, border weights w0=10 sigma=5,
elastic deformation on a 3x3 grid with 10 px standard deviation. Meant for a GPU/TPU.

    unet-jax train --config experiments/isbi2012.py --config.data.root=/path/to/isbi2012 --workdir runs/isbi2012

Train = slices 0-24, validation = slices 25-29 of train-volume.tif.
"""
from unet_jax.config import base_config


def get_config():
    # base_config() holds the paper's settings (network, weights, augmentation, SGD, 572 tiles, batch 1).
    c = base_config()
    c.data.name = "isbi2012"
    c.train.best_metric = "vrand_thinned"   # the challenge's ranking measure (higher is better)         # data.root: the folder with train-volume.tif, train-labels.tif, test-volume.tif
    c.train.num_steps = 20000
    c.train.log_every = 100
    return c
