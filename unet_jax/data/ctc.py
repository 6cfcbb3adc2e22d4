"""Cell Tracking Challenge 2-D data sets (paper section 4: PhC-U373 and DIC-HeLa) as the TFDS builder ``ctc``.

Host-side. ``Ctc`` (its docstring: the manual directory's layout, conversion, splits and names) has the configs
``phc_c2dh_u373`` and ``dic_c2dh_hela``; ``make_config`` names a config from its settings.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import tensorflow_datasets as tfds

from unet_jax.checks import InvalidInputError
from unet_jax.data import io, masks
from unet_jax.data.common import (UNetBuilder, UNetConfig, config_name, fingerprint_hash, progress,
                                  validation_count)

URL = "https://celltrackingchallenge.net/2d-datasets/"
DATASETS = {"phc_c2dh_u373": "PhC-C2DH-U373", "dic_c2dh_hela": "DIC-C2DH-HeLa"}

__all__ = ["Ctc", "CtcConfig", "make_config", "DATASETS", "URL"]

_SEG = re.compile(r"^man_seg(\d+)\.tiff?$")
_SEQ = re.compile(r"^\d{2,}$")


@dataclasses.dataclass(eq=False, kw_only=True)
class CtcConfig(UNetConfig):
    """CTC config: the weight-map fields, the data set folder name and ``validation_fraction``."""
    dataset: str
    validation_fraction: float


def make_config(builder_config: str, weights: dict, *, validation_fraction: float, root=None) -> CtcConfig:
    """A config named ``<builder_config>-<hash>`` ('phc_c2dh_u373' or 'dic_c2dh_hela') of the weights settings
    (``common.weight_settings``), the split and the fingerprint of the files in ``root`` (if given)."""
    fp = ""
    if root:
        fp = fingerprint_hash(io.file_fingerprint(root, (f"{DATASETS[builder_config]}/**/*.tif", "[0-9]*/*.tif",
                                                         "[0-9]*_GT/SEG/*.tif")))
    cfg = CtcConfig(name="tmp", dataset=DATASETS[builder_config], validation_fraction=validation_fraction,
                    fingerprint=fp, **weights)
    cfg.name = config_name(builder_config, cfg.params())
    cfg.description = f"{cfg.dataset} with " + ", ".join(f"{k}={v!r}" for k, v in sorted(cfg.params().items()))
    return cfg


class Ctc(UNetBuilder):
    """TFDS builder ``ctc``: Cell Tracking Challenge 2-D training data (PhC-C2DH-U373, DIC-C2DH-HeLa), annotated
    frames only, the end of each sequence held out (layout and splits: docs/data.md)."""
    name = "ctc"
    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.", "1.1.0": "classes feature.",
                     "1.2.0": "images normalised by percentiles whatever the bit depth "
                               "(unet_jax.data.io.to_float_image, as predict does) (8-bit was / 255)."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (f"Download the training data set from {URL}, unzip it and pass the folder "
                                    f"holding 01/, 01_GT/SEG/, 02/, 02_GT/SEG/ (or its parent) as the manual "
                                    f"directory (unet_jax: data.root).")
    DESCRIPTION = __doc__
    URL = URL
    CHANNELS = 1

    @property
    def EXPECTED(self):  # noqa: N802 (TFDS-style constant, per config)
        d = self.builder_config.dataset
        return (f"[{d}/]01/t000.tif, ..., [{d}/]01_GT/SEG/man_seg000.tif, ... (and 02/, 02_GT/SEG/ likewise: "
                f"the Cell Tracking Challenge training data of {d})")

    def _dataset_dir(self, root: Path) -> Path:
        """``root/<dataset>`` if present, else ``root`` itself, unless that is the other data set's folder."""
        sub = root / self.builder_config.dataset
        if sub.is_dir():
            return sub
        others = [name for name in DATASETS.values() if name != self.builder_config.dataset]
        if root.name in others:
            wanted = self.builder_config.dataset
            raise InvalidInputError(f"data.root {str(root)!r} is the {root.name} folder, but data.builder_config "
                                    f"asks for {wanted}; point data.root at the {wanted} folder or use the matching "
                                    f"experiment config")
        return root

    def _split_generators(self, dl_manager):
        root = self._dataset_dir(self.manual_root(dl_manager))
        sequences = sorted(p.name for p in root.iterdir() if p.is_dir() and _SEQ.match(p.name)
                           and (root / f"{p.name}_GT" / "SEG").is_dir())
        if not sequences:
            raise FileNotFoundError(self.missing_message(root, ["01/ with 01_GT/SEG/ (no sequence folder with "
                                                                "SEG annotations found)"]))
        fraction = self.builder_config.validation_fraction
        train, validation = [], []
        for seq in sequences:
            pairs = []
            seg_dir = root / f"{seq}_GT" / "SEG"
            for mask_path in sorted(seg_dir.iterdir()):
                m = _SEG.match(mask_path.name)
                if not m:
                    continue
                frame = m.group(1)
                image_path = root / seq / f"t{frame}.tif"
                if not image_path.is_file():
                    raise InvalidInputError(f"annotation {mask_path} has no image: expected {image_path} (each "
                                            f"man_seg<NNN>.tif needs the frame t<NNN>.tif of sequence {seq}); restore "
                                            f"the missing frame or remove the annotation")
                pairs.append((f"{seq}/t{frame}", image_path, mask_path))
            if not pairs:
                raise FileNotFoundError(self.missing_message(seg_dir, [f"{seq}_GT/SEG/man_seg<NNN>.tif"]))
            k = validation_count(len(pairs), fraction)
            train += pairs[:len(pairs) - k]
            validation += pairs[len(pairs) - k:]
        splits = {"train": self._generate_examples(train)}
        if validation:
            splits["validation"] = self._generate_examples(validation)
        return splits

    @staticmethod
    def _read(image_path: Path, mask_path: Path):
        image = io.to_float_image(io.read_tiff(image_path), image_path)
        if image.shape[-1] != 1:
            raise InvalidInputError(f"image {image_path} has {image.shape[-1]} colour channels; expected a greyscale "
                                    f"frame")
        instances = masks.mask_to_instances(io.read_tiff(mask_path), mask_path, mask_type="instance")
        masks.check_same_shape(image, instances, image_path, mask_path)
        return image, instances

    def _generate_examples(self, pairs):
        for name, image_path, mask_path in progress(pairs, len(pairs), f"ctc {self.builder_config.dataset}"):
            image, instances = self._read(image_path, mask_path)
            yield name, self.make_example(image, instances, name)
