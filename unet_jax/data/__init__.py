"""Data: TFDS builders for the paper's data sets and your own, a host loader, and the on-device tile sampler.

Builders (``DATASETS``; formats in each builder class's docstring): ``synthetic_cells`` (generated, the default),
``isbi2012``, ``ctc`` and ``folder`` (your own images/ and masks/), written as array_record and read with
``as_data_source()`` (no TensorFlow needed). Host API: ``load_split(data_config, weights_config, split)``
(``make_builder``, ``prepare``). Device API (``unet_jax.data.sampler``): ``to_device_dataset`` / ``sample_tiles``.
"""
from __future__ import annotations

import fcntl
import logging
import shutil
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from unet_jax.data.common import TARGETS, field, weight_settings
from unet_jax.data.sampler import (PAD_MODE, DeviceDataset, device_dataset_nbytes, fits_on_device,  # noqa: F401
                                   gather_tiles, sample_origins, sample_tiles, to_device_dataset)

DATASETS = ("synthetic_cells", "isbi2012", "ctc", "folder")
SPLITS = ("train", "validation", "test")
DEFAULT_DATA_DIR = "~/.cache/unet_jax/tfds"

log = logging.getLogger("unet_jax.data")

__all__ = ["load_split", "make_builder", "resolve_target", "MissingSplitError", "prepare", "check_class_ids", "DATASETS", "SPLITS",
           "DEFAULT_DATA_DIR", "DeviceDataset", "to_device_dataset", "sample_tiles", "sample_origins", "gather_tiles", "fits_on_device",
           "device_dataset_nbytes", "PAD_MODE"]


class MissingSplitError(ValueError):
    """The data set has no such split (e.g. no validation split when its size setting is 0)."""


def make_builder(data_config, weights_config=None):
    """The TFDS builder (not yet prepared) and manual directory for a data config. Host-side.

    =================== =============================================== ====================================
    ``data.name``       builder (``tfds.core.GeneratorBasedBuilder``)   input
    =================== =============================================== ====================================
    ``synthetic_cells`` ``unet_jax.data.synthetic.SyntheticCells``      generated (default; no download)
    ``isbi2012``        ``unet_jax.data.isbi2012.Isbi2012``             manual dir with the challenge's TIFFs
    ``ctc``             ``unet_jax.data.ctc.Ctc`` (``builder_config``   manual dir, Cell Tracking Challenge
                        ``phc_c2dh_u373`` or ``dic_c2dh_hela``)         layout
    ``folder``          ``unet_jax.data.folder.Folder``                 manual dir with images/ and masks/
    =================== =============================================== ====================================

    Importing a builder's module registers it with TFDS under its name. The weight-map settings, the split
    settings and a fingerprint of the input files are part of the builder config and its name, so changing them
    prepares a new data set rather than reusing stale maps.

    Parameters
    ----------
    data_config : ml_collections.ConfigDict or mapping
        The ``data`` section of ``unet_jax.config.base_config()``: ``name``, ``builder_config``, ``root``, ``data_dir``,
        ``validation_slices`` (isbi2012), ``validation_fraction`` (ctc, folder), ``mask_type`` (folder),
        ``num_train``, ``num_validation``, ``image_size``, ``seed`` (synthetic_cells).
    weights_config : ConfigDict or mapping, optional
        ``w0``, ``sigma``, ``class_weights`` for ``unet_jax.weights.unet_weight_map`` (default: the paper's).

    Returns
    -------
    (builder, root): a ``tfds.core.GeneratorBasedBuilder`` writing array_record files under the data dir, and the
    manual directory (``pathlib.Path``) or None for ``synthetic_cells``.

    Raises
    ------
    ValueError
        For an unknown ``name``, a bad setting, or an empty ``root`` where one is needed.
    FileNotFoundError
        If ``root`` does not exist (the message lists the files expected there).
    """
    name = field(data_config, "name", "synthetic_cells")
    if name not in DATASETS:
        raise ValueError(f"data.name must be one of {DATASETS}, got {name!r}")
    weights = weight_settings(weights_config)
    weights["target"] = resolve_target(data_config)[0]
    if weights["target"] not in TARGETS:
        raise ValueError(f"data.target must be one of {TARGETS} or 'auto', got {weights['target']!r}")
    builder_config = field(data_config, "builder_config", "") or ""
    if name != "ctc" and builder_config not in ("", "default"):
        raise ValueError(f"data.builder_config must be '' for {name}, got {builder_config!r}")
    root = field(data_config, "root", "") or ""
    root = Path(root).expanduser() if root else None
    if name == "synthetic_cells":
        from unet_jax.data import synthetic as mod

        cfg = mod.make_config(weights, num_train=field(data_config, "num_train", 24),
                              num_validation=field(data_config, "num_validation", 6),
                              image_size=field(data_config, "image_size", 256), seed=field(data_config, "seed", 0))
        cls = mod.SyntheticCells
        root = None
    elif name == "isbi2012":
        from unet_jax.data import isbi2012 as mod

        cfg = mod.make_config(weights, validation_slices=field(data_config, "validation_slices", 5), root=root)
        cls = mod.Isbi2012
    elif name == "ctc":
        from unet_jax.data import ctc as mod

        if not builder_config:
            raise ValueError(f"data.builder_config must name the CTC data set, one of {sorted(mod.DATASETS)}, "
                             f"got ''")
        cfg = mod.make_config(builder_config, weights,
                              validation_fraction=field(data_config, "validation_fraction", 0.2), root=root)
        cls = mod.Ctc
    else:
        from unet_jax.data import folder as mod

        cfg = mod.make_config(weights, validation_fraction=field(data_config, "validation_fraction", 0.2),
                              mask_type=field(data_config, "mask_type", "auto"), root=root)
        cls = mod.Folder
    data_dir = Path(field(data_config, "data_dir", "") or DEFAULT_DATA_DIR).expanduser()
    tfds_logger = logging.getLogger("absl")
    level = tfds_logger.level
    tfds_logger.setLevel(logging.ERROR)  # "Using custom data configuration ...": every config here is custom
    try:
        builder = cls(config=cfg, data_dir=str(data_dir), file_format="array_record")
    finally:
        tfds_logger.setLevel(level)
    if name != "synthetic_cells":
        if root is None:
            raise ValueError(f"data.root must be set for {name}: the directory holding "
                             f"{builder.EXPECTED}" + (f" (from {builder.URL})" if builder.URL else ""))
        if not root.is_dir():
            raise FileNotFoundError(builder.missing_message(root, [f"the directory {root} itself"]))
    return builder, root


def resolve_target(data_config) -> tuple:
    """(target, masks with touching objects, masks scanned): ``data.target`` itself, or for 'auto' 'distance' when
    a folder data set's binary or instance masks hold objects that touch one another (a target made for
    instances), else 'foreground' (the paper's; class masks and the other data sets). Host-side."""
    target = field(data_config, "target", "foreground")
    mask_type = field(data_config, "mask_type", "auto")
    if target != "auto":
        return target, 0, 0
    if field(data_config, "name", "synthetic_cells") != "folder" or mask_type == "classes":
        return "foreground", 0, 0
    from unet_jax.data.folder import touching_objects
    touching, total = touching_objects(field(data_config, "root", ""), mask_type)
    return ("distance" if touching else "foreground"), touching, total


def prepare(builder, root=None):
    """``builder.download_and_prepare`` with ``root`` as the manual directory (no-op if already prepared).

    Host-side. TFDS writes into an ``incomplete.*`` folder that it renames when every split is written, so a build
    that fails leaves no partial data set behind. Builds of one data set config take turns (a lock file beside
    its folder); whatever an interrupted build left (``incomplete.*`` folders, killed before TFDS could remove
    them) is removed before the next one starts, and a failed first build leaves no empty folder behind.
    """

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
    """ValueError naming the first example whose class ids (``classes``) reach ``num_classes``."""
    for ex in examples:
        top = int(np.max(ex["classes"])) if "classes" in ex and np.size(ex["classes"]) else 0
        if top >= num_classes:
            raise ValueError(f"{ex['name']}: mask has class id {top} but model.num_classes is {num_classes} (ids "
                             f"0..{num_classes - 1}, 0 = background); set --config.model.num_classes={top + 1}, "
                             f"or fix the mask (an instance mask needs data.mask_type='instance' or 'auto')")


def load_split(data_config, weights_config, split: str) -> list:
    """Load one split as a list of example dicts, preparing the TFDS data set first if needed. Host-side.

    The data set is prepared (``prepare``) in ``data_config.data_dir`` (default ``DEFAULT_DATA_DIR``,
    ``~/.cache/unet_jax/tfds``) and read with ``as_data_source()``.

    Parameters
    ----------
    data_config : the ``data`` config section (see ``make_builder``)
    weights_config : the ``weights`` config section (``w0``, ``sigma``, ``class_weights``) or None
    split : {'train', 'validation', 'test'}
        isbi2012 has all three (test unlabelled); synthetic_cells, ctc and folder have train and validation
        (validation only if its size setting is > 0).

    Returns
    -------
    list of dicts, sorted by name: ``image`` float32 (H, W, C) in [0, 1], ``instances`` int32 (H, W), ``classes``
    int32 (H, W) (class ids, 0 = background), ``weights`` float32 (H, W), ``name`` str, ``labelled`` bool (False: no ground truth; instances and weights are 0).

    Raises
    ------
    ValueError
        Bad split or settings, or bad input files (the message names the file); ``MissingSplitError`` (a
        ValueError) for a split this data set lacks.
    FileNotFoundError
        Missing input files (the message lists what is expected, where it was searched, where to get it).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    builder, root = make_builder(data_config, weights_config)
    prepare(builder, root)
    available = sorted(builder.info.splits.keys())
    if split not in available:
        raise MissingSplitError(f"the {builder.name} data set ({builder.builder_config.name}) has no {split!r} split; "
                         f"it has {available} (a validation split needs validation_slices / validation_fraction "
                         f"/ num_validation > 0)")
    source = builder.as_data_source(split=split)
    examples = [_to_example(source[i]) for i in range(len(source))]
    examples.sort(key=lambda e: e["name"])
    return examples
