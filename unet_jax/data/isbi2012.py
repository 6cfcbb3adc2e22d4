"""ISBI 2012 EM segmentation challenge (paper section 4, first data set) as the TFDS builder ``isbi2012``.

Host-side. ``Isbi2012`` (its docstring: the three files of the manual directory, splits, conversion and names);
``make_config`` names a config from its settings.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from unet_jax.checks import InvalidInputError
from unet_jax.data import io
from unet_jax.data.common import UNetBuilder, UNetConfig, config_name, fingerprint_hash, progress
from unet_jax.weights import instances_from_mask

URL = "https://imagej.net/events/isbi-2012-segmentation-challenge"
FILES = ("train-volume.tif", "train-labels.tif", "test-volume.tif")

__all__ = ["Isbi2012", "Isbi2012Config", "make_config", "FILES", "URL"]


@dataclasses.dataclass(eq=False, kw_only=True)
class Isbi2012Config(UNetConfig):
    """ISBI 2012 config: the weight-map fields plus ``validation_slices`` (last N training slices)."""
    validation_slices: int


def make_config(weights: dict, *, validation_slices: int, root=None) -> Isbi2012Config:
    """A config named ``default-<hash>`` of ``weights`` (``common.weight_settings``), the split setting and the
    fingerprint of the three files in ``root`` (if given). Host-side."""
    fp = fingerprint_hash(io.file_fingerprint(root, FILES)) if root else ""
    cfg = Isbi2012Config(name="tmp", validation_slices=validation_slices, fingerprint=fp, **weights)
    cfg.name = config_name("default", cfg.params())
    cfg.description = "ISBI 2012 with " + ", ".join(f"{k}={v!r}" for k, v in sorted(cfg.params().items()))
    return cfg


def _stack(arr: np.ndarray, path) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InvalidInputError(f"{path} has shape {arr.shape}: expected a stack of 2-D greyscale slices (N, H, W); "
                                f"download the challenge file again")
    return arr


class Isbi2012(UNetBuilder):
    """TFDS builder ``isbi2012``: the ISBI 2012 EM segmentation challenge's training and test stacks (manual
    directory, splits and names: docs/data.md)."""
    name = "isbi2012"
    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.", "1.1.0": "classes feature.",
                     "1.2.0": "images normalised by percentiles whatever the bit depth "
                               "(unet_jax.data.io.to_float_image, as predict does) (was / 255)."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (f"Download {', '.join(FILES)} from {URL} and pass their directory as the "
                                    f"manual directory (unet_jax: data.root).")
    DESCRIPTION = __doc__
    URL = URL
    EXPECTED = ", ".join(FILES) + " (the challenge's 30 x 512 x 512 TIFF stacks)"
    CHANNELS = 1

    def _split_generators(self, dl_manager):
        root = self.manual_root(dl_manager)
        missing = [f for f in FILES if not (root / f).is_file()]
        if missing:
            raise FileNotFoundError(self.missing_message(root, missing))
        vol_path, lab_path, test_path = (root / f for f in FILES)
        volume = _stack(io.read_tiff(vol_path), vol_path)
        labels = _stack(io.read_tiff(lab_path), lab_path)
        test = _stack(io.read_tiff(test_path), test_path)
        if volume.shape != labels.shape:
            raise InvalidInputError(f"{vol_path} has shape {volume.shape} but {lab_path} has shape {labels.shape}: the "
                                    f"image and label stacks must have the same number and size of slices; download "
                                    f"both again from {URL}")
        values = np.unique(labels)
        if not np.isin(values, (0, 255)).all():
            more = " ..." if values.size > 10 else ""
            raise InvalidInputError(f"{lab_path} has values {values[:10].tolist()}{more}; expected only 0 (membrane) "
                                    f"and 255 (cell); download the label stack again from {URL}")
        for arr, path in ((volume, vol_path), (test, test_path)):
            if arr.dtype != np.uint8:
                raise InvalidInputError(f"{path} has dtype {arr.dtype}; expected the challenge's 8-bit (uint8) stack")
        n = volume.shape[0]
        v = self.builder_config.validation_slices
        if v >= n:
            raise InvalidInputError(f"validation_slices must be smaller than the number of training slices ({n}), got "
                                    f"{v}")
        width = max(2, len(str(max(n, test.shape[0]) - 1)))
        splits = {"train": self._generate_examples(volume, labels, range(0, n - v), "train-volume", width)}
        if v:
            splits["validation"] = self._generate_examples(volume, labels, range(n - v, n), "train-volume", width)
        splits["test"] = self._generate_examples(test, None, range(test.shape[0]), "test-volume", width)
        return splits

    def _generate_examples(self, volume, labels, indices, stem, width):
        indices = list(indices)
        for z in progress(indices, len(indices), f"isbi2012 {stem} slices {indices[0]}-{indices[-1]}"):
            name = f"{stem}_z{z:0{width}d}"
            image = io.to_float_image(volume[z], f"{stem} slice {z}")
            instances = None if labels is None else instances_from_mask(labels[z] == 255)
            yield name, self.make_example(image, instances, name)
