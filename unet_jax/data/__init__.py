"""Data: TFDS builders (``DATASETS``: synthetic_cells, isbi2012, ctc, folder; docs/data.md), the host loader
``load_split`` (``make_builder``, ``prepare``) and the on-device tile sampler (``unet_jax.data.sampler``)."""
from __future__ import annotations

import fcntl
import logging
import shutil
from pathlib import Path

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from unet_jax import checks
from unet_jax.checks import InvalidInputError
from unet_jax.data.common import weight_settings
from unet_jax.data.sampler import (PAD_MODE, DeviceDataset, device_dataset_nbytes, fits_on_device,  # noqa: F401
                                   gather_tiles, sample_origins, sample_tiles, to_device_dataset)

DATASETS = ("synthetic_cells", "isbi2012", "ctc", "folder")
SPLITS = ("train", "validation", "test")
DEFAULT_DATA_DIR = "~/.cache/unet_jax/tfds"

log = logging.getLogger("unet_jax.data")

__all__ = ["load_split", "make_builder", "resolve_target", "MissingSplitError", "prepare", "check_class_ids",
           "DATASETS", "SPLITS", "DEFAULT_DATA_DIR", "DeviceDataset", "to_device_dataset", "sample_tiles",
           "sample_origins", "gather_tiles", "fits_on_device", "device_dataset_nbytes", "PAD_MODE"]


class MissingSplitError(InvalidInputError):
    """The data set has no such split (e.g. no validation split when its size setting is 0)."""


def _section(name: str, values):
    """The validated ``data`` / ``weights`` section itself (read by attribute, trusted), or a plain mapping (or
    None) of some of its fields completed from ``base_config()`` and checked (``unet_jax.config.section``)."""
    if isinstance(values, ml_collections.ConfigDict):
        return values
    from unet_jax.config import section    # config imports this package: the one import going up, at call time
    return section(name, values)


def make_builder(data_config, weights_config=None):
    """The TFDS builder (not yet prepared) and the manual directory (or None) for the ``data`` and ``weights``
    config sections (ConfigDicts of a validated config, or plain mappings of some fields; see ``_section``).
    Host-side. Builders: ``data.name`` 'synthetic_cells' (generated), 'isbi2012', 'ctc' (``builder_config``
    'phc_c2dh_u373' or 'dic_c2dh_hela') or 'folder' (docs/data.md). Raises FileNotFoundError if ``root`` does
    not exist (listing the files expected there)."""
    data, weights = _section("data", data_config), _section("weights", weights_config)
    settings = weight_settings(weights)
    settings["target"] = resolve_target(data)[0]
    root = Path(data.root).expanduser() if data.root else None
    if data.name == "synthetic_cells":
        from unet_jax.data import synthetic as mod

        cfg = mod.make_config(settings, num_train=data.num_train, num_validation=data.num_validation,
                              image_size=data.image_size, seed=data.seed)
        cls = mod.SyntheticCells
        root = None
    elif data.name == "isbi2012":
        from unet_jax.data import isbi2012 as mod

        cfg = mod.make_config(settings, validation_slices=data.validation_slices, root=root)
        cls = mod.Isbi2012
    elif data.name == "ctc":
        from unet_jax.data import ctc as mod

        cfg = mod.make_config(data.builder_config, settings, validation_fraction=data.validation_fraction,
                              root=root)
        cls = mod.Ctc
    else:
        from unet_jax.data import folder as mod

        cfg = mod.make_config(settings, validation_fraction=data.validation_fraction, mask_type=data.mask_type,
                              root=root)
        cls = mod.Folder
    data_dir = Path(data.data_dir or DEFAULT_DATA_DIR).expanduser()
    tfds_logger = logging.getLogger("absl")
    level = tfds_logger.level
    tfds_logger.setLevel(logging.ERROR)  # "Using custom data configuration ...": every config here is custom
    try:
        builder = cls(config=cfg, data_dir=str(data_dir), file_format="array_record")
    finally:
        tfds_logger.setLevel(level)
    if root is not None and not root.is_dir():
        raise FileNotFoundError(builder.missing_message(root, [f"the directory {root} itself"]))
    return builder, root


def resolve_target(data_config) -> tuple:
    """(target, masks with touching objects, masks scanned): ``data.target`` itself, or for 'auto' 'distance' when
    a folder data set's binary or instance masks hold objects that touch one another (a target made for
    instances), else 'foreground' (the paper's; class masks and the other data sets). Host-side."""
    data = _section("data", data_config)
    if data.target != "auto":
        return data.target, 0, 0
    if data.name != "folder" or data.mask_type == "classes":
        return "foreground", 0, 0
    from unet_jax.data.folder import touching_objects
    touching, total = touching_objects(data.root, data.mask_type)
    return ("distance" if touching else "foreground"), touching, total


def prepare(builder, root=None):
    """``builder.download_and_prepare`` with ``root`` as the manual directory (a no-op once prepared). Builds of
    one config take turns (a lock file beside its folder); what an interrupted build left is removed first, and a
    failed first build leaves no empty folder."""

    kwargs = {}
    if root is not None:
        kwargs["download_config"] = tfds.download.DownloadConfig(manual_dir=str(root))
    version_dir = Path(builder.data_dir)
    if version_dir.is_dir():
        builder.download_and_prepare(**kwargs)   # prepared: a no-op
        return builder
    config_dir = version_dir.parent
    config_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(config_dir.parent / f".{config_dir.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # another process preparing the same data: wait for it
        for stale in sorted(config_dir.glob(f"{tfds.core.constants.INCOMPLETE_PREFIX}*")):
            log.warning("removing %s, left by an interrupted data preparation", stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            builder.download_and_prepare(**kwargs)
        except BaseException:
            if config_dir.is_dir() and not any(config_dir.iterdir()):
                config_dir.rmdir()
            raise
    return builder


def _to_example(record) -> dict:
    name = record["name"]
    return {"image": np.asarray(record["image"], np.float32),
            "instances": np.asarray(record["instances"], np.int32),
            "classes": np.asarray(record["classes"], np.int32),
            "weights": np.asarray(record["weights"], np.float32),
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "labelled": bool(record["labelled"])}


def check_class_ids(examples, num_classes: int) -> None:
    """InvalidInputError naming the first example whose class ids (``classes``) reach ``num_classes``."""
    for ex in examples:
        top = int(np.max(ex["classes"])) if "classes" in ex and np.size(ex["classes"]) else 0
        if top >= num_classes:
            raise InvalidInputError(f"{ex['name']}: mask has class id {top} but model.num_classes is {num_classes} "
                                    f"(ids 0..{num_classes - 1}, 0 = background); set --config.model.num_classes="
                                    f"{top + 1}, or fix the mask (an instance mask needs data.mask_type='instance' "
                                    f"or 'auto')")


def load_split(data_config, weights_config, split: str) -> list:
    """One split ('train', 'validation' or 'test') as a list of example dicts sorted by name, the data set prepared
    first if needed (``prepare``, in ``data.data_dir`` or ``DEFAULT_DATA_DIR``). Host-side. Sections as for
    ``make_builder``; example keys and splits per builder: docs/data.md. A split the data set lacks raises
    ``MissingSplitError``; missing input files FileNotFoundError."""
    checks.one_of("split", split, SPLITS)
    builder, root = make_builder(data_config, weights_config)
    prepare(builder, root)
    available = sorted(builder.info.splits.keys())
    if split not in available:
        raise MissingSplitError(f"the {builder.name} data set ({builder.builder_config.name}) has no {split!r} "
                                f"split; it has {available} (a validation split needs validation_slices / "
                                f"validation_fraction / num_validation > 0)")
    source = builder.as_data_source(split=split)
    examples = [_to_example(source[i]) for i in range(len(source))]
    examples.sort(key=lambda e: e["name"])
    return examples
