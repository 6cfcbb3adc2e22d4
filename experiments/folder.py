"""Your own data: a folder with images/ and masks/ holding files of the same names (png, tif or jpg; 8- or 16-bit;
masks binary (cells > 0) or instance labels). The default recipe for users, chosen by measured runs on real data
(README "Your own data", benchmarks/recipe_grid.py); the paper's recipe is experiments/isbi2012.py.

    unet-jax train --config experiments/folder.py --config.data.root=/path/to/mydata --workdir runs/mine

What differs from the paper, and why (measured on EM membranes, EM cells and fluorescence nuclei; README):
* SAME padding, 256-pixel tiles, 4 per step: every computed pixel is a trained pixel (the paper's unpadded
  network spends most of a small tile's work on context);
* group normalisation (per-image statistics, so brightness differences between images matter less; on par with
  none in the measured runs) and no dropout;
* cross-entropy plus soft Dice and no class weights: rare foregrounds (a few % of the pixels) are learned, not
  ignored, and a third of the tiles are centred on foreground;
* the paper's border weights (w0=10) on its separation borders between touching objects;
* the paper's two-class target (data.target='foreground') on every kind of mask: measured against the distance
  target (data.target='distance', or 'auto' to use it only when masks hold touching objects) and StarDist on
  BBBC039 and nuclei_bitdepth (benchmarks/objects_vs_stardist.py, results/objects_vs_stardist.md), it was as good
  or better in object F1 and AP; the distance target merges fewer touching nuclei but splits more;
* Adam with a short warmup, cosine decay and gradient clipping; the kept checkpoint is the one with the best
  validation foreground IoU, which an all-background or all-foreground prediction cannot win.
CPU-sized (features 16); on a GPU raise --config.model.features=32 (or 64) and --config.train.num_steps.
"""
from unet_jax.config import base_config


def get_config():
    c = base_config()
    c.data.update(name="folder", target="foreground")
    c.model.update(features=16, padding="SAME", norm="group", dropout_rate=0.0)
    c.weights.update(class_weights="none", w0=10.0)
    c.loss.dice_weight = 1.0
    c.optimizer.update(name="adam", learning_rate=1e-3, schedule="warmup_cosine", warmup_steps=50,
                       grad_clip_norm=1.0)
    c.train.update(tile_size=256, batch_size=4, foreground_fraction=0.33, num_steps=3000, eval_every=500,
                   checkpoint_every=500, best_metric="iou", best_mode="max")
    c.eval.tile_size = 256
    return c
