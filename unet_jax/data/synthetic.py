"""Synthetic EM-like images of touching cells: the default data set (TFDS builder ``synthetic_cells``), generated
in seconds, no download (host-side; docs/data.md)."""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds
from scipy import ndimage as ndi
from scipy.spatial import cKDTree
from skimage.segmentation import find_boundaries, relabel_sequential

from unet_jax import checks
from unet_jax.checks import InvalidInputError
from unet_jax.data.common import UNetBuilder, UNetConfig, config_name, progress
from unet_jax.data.io import to_float_image

SPLITS = ("train", "validation")

__all__ = ["SyntheticCells", "SyntheticConfig", "make_config", "synthetic_cells", "synthetic_example"]


def synthetic_cells(size, rng: np.random.Generator, cell_diameter: float = 28.0):
    """One synthetic ISBI-like image, float32 (H, W) in [0, 1], and its int32 instances (0 = membrane, cells
    1..K, 4-connected, no gaps) for ``size`` (>= 16 a side), all randomness from ``rng``: a warped Voronoi tessellation
    of cells of ``cell_diameter`` pixels, 2-4 pixel dark membranes, textured interiors, blur and noise."""
    h, w = (size, size) if np.isscalar(size) else size
    h, w = int(h), int(w)
    if h < 16 or w < 16:
        raise InvalidInputError(f"size must be at least 16 x 16, got {(h, w)}")
    if not cell_diameter > 4:
        raise InvalidInputError(f"cell_diameter must be > 4 pixels, got {cell_diameter!r}")
    # Cells: nearest random seed on warped coordinates -> curved Voronoi cells that tile the plane.
    n = max(2, int(round(h * w / (0.8 * cell_diameter ** 2))))
    margin = cell_diameter
    seeds = rng.uniform((-margin, -margin), (h + margin, w + margin), size=(n, 2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    warp = ndi.gaussian_filter(rng.normal(size=(2, h, w)), sigma=(0, 12, 12), mode="wrap")
    warp *= 0.2 * cell_diameter / (warp.std() + 1e-12)
    coords = np.stack([yy + warp[0], xx + warp[1]], axis=-1).reshape(-1, 2)
    _, nearest = cKDTree(seeds).query(coords)
    cells = nearest.reshape(h, w).astype(np.int32) + 1
    # Membranes: the cell boundaries, thickened to 1-3 px (thicker pieces where a smooth random field is high).

    thin = find_boundaries(cells, connectivity=1, mode="inner")
    thickness = ndi.gaussian_filter(rng.normal(size=(h, w)), 10)
    thickness /= thickness.std() + 1e-12
    thick = ndi.binary_dilation(thin) & (thickness > 0.3)
    membrane = thin | (thick & ndi.binary_dilation(thin))
    instances = np.where(membrane, 0, cells)
    instances, _, _ = relabel_sequential(instances)
    # Split cells that the membranes cut into pieces, so that every id is one 4-connected region.
    instances = _split_disconnected(instances.astype(np.int32))
    # Appearance.
    k = int(instances.max())
    brightness = rng.uniform(0.55, 0.85, size=k + 1)
    image = brightness[instances]
    mottle = ndi.gaussian_filter(rng.normal(size=(h, w)), 3)
    image = image + 0.06 * mottle / (mottle.std() + 1e-12)
    vesicles = np.zeros((h, w))
    m = rng.poisson(h * w / 400.0)
    vy, vx = rng.integers(0, h, m), rng.integers(0, w, m)
    vesicles[vy, vx] = rng.uniform(0.5, 1.0, m)
    vesicles = ndi.gaussian_filter(vesicles, 1.2) * 2 * np.pi * 1.2 ** 2
    image = image - 0.35 * np.clip(vesicles, 0, 1.5) * (instances > 0)
    image = np.where(membrane, rng.uniform(0.08, 0.22) + 0.04 * rng.normal(size=(h, w)), image)
    image = ndi.gaussian_filter(image, rng.uniform(0.7, 1.2))
    image = image + rng.uniform(0.02, 0.05) * rng.normal(size=(h, w))
    return np.clip(image, 0.0, 1.0).astype(np.float32), instances.astype(np.int32)


def _split_disconnected(instances: np.ndarray) -> np.ndarray:
    """Renumber so that each 4-connected piece of each id is its own object, ids 1..K in raster order."""
    out = np.zeros_like(instances)
    nxt = 1
    four = ndi.generate_binary_structure(2, 1)
    for k, box in enumerate(ndi.find_objects(instances), start=1):
        if box is None:
            continue
        pieces, m = ndi.label(instances[box] == k, structure=four)
        sub = out[box]
        sub[pieces > 0] = pieces[pieces > 0] + (nxt - 1)
        nxt += m

    return relabel_sequential(out)[0].astype(np.int32)


def synthetic_example(seed: int, split: str, index: int, image_size: int):
    """Example ``index`` of ``split`` ('train' | 'validation') for ``seed``: (image (H, W, 1) float32, instances
    int32 (H, W), name). The image is normalised as predict reads a file (``to_float_image``), so a saved example
    predicts as it trained. Deterministic; host-side."""
    checks.one_of("split", split, SPLITS)
    rng = np.random.default_rng([int(seed), SPLITS.index(split), int(index)])
    image, instances = synthetic_cells(image_size, rng)
    name = f"{split}_{index:05d}"
    return to_float_image(image, name), instances, name


@dataclasses.dataclass(eq=False, kw_only=True)
class SyntheticConfig(UNetConfig):
    """Synthetic config: the weight-map fields plus the generator's settings (the ``data`` section's)."""
    num_train: int
    num_validation: int
    image_size: int
    seed: int


def make_config(weights: dict, *, num_train: int, num_validation: int, image_size: int,
                seed: int) -> SyntheticConfig:
    """A config named ``default-<hash>`` of the weights and generator settings (validated by
    ``unet_jax.config.validate``)."""
    cfg = SyntheticConfig(name="tmp", num_train=num_train, num_validation=num_validation, image_size=image_size,
                          seed=seed, **weights)
    cfg.name = config_name("default", cfg.params())
    cfg.description = "synthetic cells with " + ", ".join(f"{k}={v!r}" for k, v in sorted(cfg.params().items()))
    return cfg


class SyntheticCells(UNetBuilder):
    """TFDS builder ``synthetic_cells``: generated EM-like images of touching cells; example i of a split
    depends only on (seed, split, i, image_size) (docs/data.md)."""
    name = "synthetic_cells"
    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.", "1.1.0": "classes feature.",
                     "1.2.0": "images normalised by percentiles whatever the bit depth "
                               "(unet_jax.data.io.to_float_image, as predict does); was the generator's [0, 1]."}
    DESCRIPTION = __doc__
    CHANNELS = 1

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        splits = {"train": self._generate_examples("train", cfg.num_train)}
        if cfg.num_validation:
            splits["validation"] = self._generate_examples("validation", cfg.num_validation)
        return splits

    def _generate_examples(self, split, count):
        cfg = self.builder_config
        for i in progress(range(count), count, f"synthetic_cells {split}"):
            image, instances, name = synthetic_example(cfg.seed, split, i, cfg.image_size)
            yield name, self.make_example(image, instances, name)
