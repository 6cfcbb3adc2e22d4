"""What every unet_jax data set builder shares: the example ``features``, the builder-config fields of the
target and weight map (``UNetConfig``) and the config names that keep prepared data sets apart (a hash of the
settings and input files; docs/data.md). Host-side; array_record files are read without TensorFlow."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import numpy as np
import tensorflow_datasets as tfds
from tqdm.auto import tqdm

from unet_jax.checks import InvalidInputError
from unet_jax.weights import (check_class_weights, contour_classes, distance_classes, separation_border,
                              unet_weight_map)

__all__ = ["TARGETS", "UNetConfig", "UNetBuilder", "features", "config_name", "normalize_class_weights"]


# What a two-class (binary or instance) mask trains: the paper's foreground, background / interior / contour, or
# background and the objects' normalised distance to their edge in DISTANCE_BINS classes (touching objects apart).
TARGETS = ("foreground", "contours", "distance")


def normalize_class_weights(class_weights):
    """'balanced' | None | 'none' | (wb, wf) | mapping {0|'0': wb, 1|'1': wf} -> 'balanced', None or (wb, wf),
    checked (``unet_jax.weights.check_class_weights``; ``config.validate`` calls it). Host-side. The result is
    JSON-friendly (for config hashing); ``class_weights_arg`` turns it into what ``unet_weight_map`` takes."""
    return check_class_weights(_as_mapping(class_weights))


def _as_mapping(class_weights):
    """The forms a config or JSON file holds -> 'balanced', None, {0: wb, 1: wf} or as given (for the check)."""
    if isinstance(class_weights, str) and class_weights.lower() == "none":
        return None
    if hasattr(class_weights, "to_dict"):  # ml_collections.ConfigDict
        class_weights = class_weights.to_dict()
    if isinstance(class_weights, Mapping):   # JSON and ConfigDict keys are strings
        return {int(k) if str(k) in ("0", "1") else k: v for k, v in class_weights.items()}
    if isinstance(class_weights, (tuple, list)):
        if len(class_weights) != 2:
            raise InvalidInputError(f"class_weights must be 'balanced', None or (w_background, w_cell), got "
                                    f"{class_weights!r}")
        return {0: class_weights[0], 1: class_weights[1]}
    return class_weights


def class_weights_arg(class_weights):
    """Normalised class weights -> the argument ``unet_weight_map`` takes ('balanced', None or {0: wb, 1: wf})."""
    if isinstance(class_weights, (tuple, list)):
        return {0: float(class_weights[0]), 1: float(class_weights[1])}
    return class_weights


@dataclasses.dataclass(eq=False, kw_only=True)
class UNetConfig(tfds.core.BuilderConfig):
    """Builder config fields shared by every unet_jax builder: the ``weights`` section (``weight_settings``), the
    resolved ``data.target`` and the input files' fingerprint ('' for generated data). No defaults: every value
    comes from the experiment config (``unet_jax.config.base_config``) through ``make_config``."""
    w0: float
    sigma: float
    class_weights: Any
    separation_border: bool
    target: str
    fingerprint: str = ""

    def params(self) -> dict:
        """All fields that determine the prepared data (everything except name/version/description/...)."""
        skip = {f.name for f in dataclasses.fields(tfds.core.BuilderConfig)}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}


def config_name(base: str, params: dict) -> str:
    """``f'{base}-{hash}'``: a 12-hex-digit SHA-256 of the JSON of ``params`` (sorted keys)."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return f"{base}-{hashlib.sha256(blob).hexdigest()[:12]}"


def fingerprint_hash(entries: list) -> str:
    """Short hash of a ``io.file_fingerprint`` list."""
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def weight_settings(weights) -> dict:
    """``{'w0', 'sigma', 'class_weights', 'separation_border'}`` of a validated ``weights`` section, class weights
    in their normalised form (part of the builder config and its name)."""
    cw = _as_mapping(weights.class_weights)
    if isinstance(cw, Mapping):
        cw = (float(cw[0]), float(cw[1]))
    return {"w0": weights.w0, "sigma": weights.sigma, "class_weights": cw,
            "separation_border": weights.separation_border}


def features(channels: Optional[int] = 1) -> tfds.features.FeaturesDict:
    """The example features (docs/data.md); ``channels=None`` allows 1 or 3 channels."""
    return tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(None, None, channels), dtype=np.float32, encoding="zlib"),
        "instances": tfds.features.Tensor(shape=(None, None), dtype=np.int32, encoding="zlib"),
        "classes": tfds.features.Tensor(shape=(None, None), dtype=np.int32, encoding="zlib"),
        "weights": tfds.features.Tensor(shape=(None, None), dtype=np.float32, encoding="zlib"),
        "labelled": tfds.features.Tensor(shape=(), dtype=np.bool_),
        "name": tfds.features.Text(),
    })


def progress(iterable, total: int, desc: str):
    """tqdm progress bar over a slow preparation loop (shown on a terminal, silent otherwise)."""

    return tqdm(iterable, total=total, desc=desc, unit="image", disable=None, leave=False)


class UNetBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the unet_jax builders (not registered): subclasses set ``VERSION``, ``DESCRIPTION``, ``CHANNELS``
    (1, or None for 1 or 3) and ``EXPECTED`` (the files a manual directory holds, for messages) and implement
    ``_split_generators``."""
    DESCRIPTION = ""
    CHANNELS: Optional[int] = 1
    EXPECTED = ""
    URL = ""

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        desc = self.DESCRIPTION
        if isinstance(cfg, UNetConfig):
            desc += "\n\nConfig parameters: " + json.dumps(cfg.params(), sort_keys=True, default=str)
        return tfds.core.DatasetInfo(builder=self, description=desc, features=features(self.CHANNELS),
                                     homepage=self.URL or None)

    # -- helpers for subclasses -------------------------------------------------------------------------------

    def manual_root(self, dl_manager):
        """The manual directory as a ``pathlib.Path``; FileNotFoundError listing what is expected if missing."""

        try:
            root = Path(str(dl_manager.manual_dir))
        except AssertionError as err:
            raise FileNotFoundError(f"{self.name}: the manual directory is missing or empty ({err}).\n"
                                    f"{self.missing_message(None)}") from None
        return root

    def missing_message(self, root, missing=()) -> str:
        """Text for a FileNotFoundError: what was searched, what is missing, what is expected, where to get it."""
        lines = []
        if root is not None:
            lines.append(f"{self.name}: searched {root}")
        if missing:
            lines.append("missing: " + ", ".join(str(m) for m in missing))
        lines.append("expected: " + self.EXPECTED)
        if self.URL:
            lines.append(f"get the data from {self.URL}")
        return "\n".join(lines)

    def make_example(self, image: np.ndarray, instances: Optional[np.ndarray], name: str,
                     classes: Optional[np.ndarray] = None) -> dict:
        """The feature dict of one example with its target and weight map (zeros and ``labelled=False`` when
        ``instances`` is None); ``classes``: class ids of a class mask, else None."""
        cfg = self.builder_config
        h, w = image.shape[:2]
        if instances is None:
            zeros = np.zeros((h, w), np.int32)
            return {"image": image.astype(np.float32), "instances": zeros, "classes": zeros,
                    "weights": np.zeros((h, w), np.float32), "labelled": False, "name": name}
        contours = classes is None and cfg.target == "contours"
        if contours:      # background, interior, contour of every object: weighted like class masks
            classes = contour_classes(instances)
        if not contours and (classes is None or classes.max() <= 1):     # the paper's target and weight map
            target = instances
            if cfg.separation_border:
                target = np.where(separation_border(instances), 0, instances)
            classes = distance_classes(target) if cfg.target == "distance" else (target > 0).astype(np.int32)
            weights = unet_weight_map(target, w0=cfg.w0, sigma=cfg.sigma,
                                      class_weights=class_weights_arg(cfg.class_weights))
        else:    # the border term between touching objects of any class, class weights per class id
            weights = (class_weight_map(classes, cfg.class_weights)
                       + unet_weight_map(instances, w0=cfg.w0, sigma=cfg.sigma, class_weights=None) - 1.0)
        return {"image": image.astype(np.float32), "instances": instances.astype(np.int32),
                "classes": classes.astype(np.int32), "weights": weights.astype(np.float32), "labelled": True,
                "name": name}


def class_weight_map(classes: np.ndarray, class_weights) -> np.ndarray:
    """w_c(x) float32 (H, W) of normalised ``class_weights`` for class ids: None -> 1; 'balanced' -> n / (classes
    present * pixels of the class); (wb, wf) -> wb on background, wf on every other class."""
    classes = np.asarray(classes)
    if class_weights is None:
        return np.ones(classes.shape, np.float32)
    if class_weights == "balanced":
        counts = np.bincount(classes.ravel())
        present = np.count_nonzero(counts)
        table = np.where(counts > 0, classes.size / (present * np.maximum(counts, 1)), 0.0)
        return table[classes].astype(np.float32)
    wb, wf = class_weights
    return np.where(classes > 0, wf, wb).astype(np.float32)


def validation_count(n: int, fraction: float) -> int:
    """How many of ``n`` examples are held out: ``round(fraction * n)``, at least 1 if fraction > 0 and n >= 2,
    at most n - 1 (the training split is never empty)."""
    if n < 2 or fraction <= 0:
        return 0
    return min(max(int(math.floor(fraction * n + 0.5)), 1), n - 1)
