"""Your own data: ``<root>/images/`` and ``<root>/masks/`` matched by name stem, as the TFDS builder ``folder``
(host-side; docs/data.md). File reading and conversion: ``unet_jax.data.io``."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from unet_jax.checks import InvalidInputError
from unet_jax.data import io, masks
from unet_jax.data.common import UNetBuilder, UNetConfig, config_name, fingerprint_hash, progress
from unet_jax.data.common import validation_count
from unet_jax.weights import separation_border

log = logging.getLogger("unet_jax.data")
summary = logging.getLogger("unet_jax.summary")    # shown by the command line without -v

__all__ = ["Folder", "FolderConfig", "make_config", "find_pairs", "touching_objects"]


@dataclasses.dataclass(eq=False, kw_only=True)
class FolderConfig(UNetConfig):
    """Folder config: the weight-map fields, ``validation_fraction`` and ``mask_type``."""
    validation_fraction: float
    mask_type: str


def make_config(weights: dict, *, validation_fraction: float, mask_type: str, root=None) -> FolderConfig:
    """A config named ``default-<hash>`` of the weights settings, split, mask type and input fingerprint."""
    fp = fingerprint_hash(io.file_fingerprint(root, ("images/*", "masks/*"))) if root else ""
    cfg = FolderConfig(name="tmp", validation_fraction=validation_fraction, mask_type=mask_type, fingerprint=fp,
                       **weights)
    cfg.name = config_name("default", cfg.params())
    cfg.description = "folder with " + ", ".join(f"{k}={v!r}" for k, v in sorted(cfg.params().items()))
    return cfg


def _by_stem(directory: Path, what: str) -> dict:
    out = {}
    for p in sorted(directory.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.suffix.lower() not in io.IMAGE_SUFFIXES:
            log.info("%s: skipping %s (not %s)", what, p, "/".join(io.IMAGE_SUFFIXES))
            continue
        if p.stem in out:
            raise InvalidInputError(f"{out[p.stem]} and {p} have the same name stem {p.stem!r}: masks are matched to "
                                    f"images by stem, so keep only one of them")
        out[p.stem] = p
    return out


def find_pairs(root) -> list:
    """Sorted ``[(name, image_path, mask_path)]`` of a folder data set. FileNotFoundError if ``images/`` or
    ``masks/`` is missing or empty; InvalidInputError for unmatched files or a shared stem."""
    root = Path(root)
    expected = (f"{root}/images/ and {root}/masks/ holding PNG or TIFF files with matching names "
                f"(images/a.png <-> masks/a.png)")
    for sub in ("images", "masks"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"folder data set: {root / sub} not found; expected {expected}")
    images, masks = _by_stem(root / "images", "images"), _by_stem(root / "masks", "masks")
    if not images:
        raise FileNotFoundError(f"folder data set: no PNG or TIFF image in {root / 'images'}; expected {expected}")
    no_mask = sorted(set(images) - set(masks))
    if no_mask:
        raise InvalidInputError(f"{len(no_mask)} image(s) without a mask in {root / 'masks'}: "
                                f"{_first(images[s].name for s in no_mask)}; add masks with the same names or "
                                f"remove the images")
    no_image = sorted(set(masks) - set(images))
    if no_image:
        raise InvalidInputError(f"{len(no_image)} mask(s) without an image in {root / 'images'}: "
                                f"{_first(masks[s].name for s in no_image)}; add the images or remove the masks")
    return [(images[s].name, images[s], masks[s]) for s in sorted(images)]


def _first(names, n: int = 10) -> str:
    """The first ``n`` names, comma-separated, ' ...' if there are more."""
    names = list(names)
    return ", ".join(names[:n]) + (" ..." if len(names) > n else "")


def touching_objects(root, mask_type: str = "auto") -> tuple:
    """(masks holding objects that touch one another, masks) of a folder data set: whether its annotations tell
    touching objects apart, which a binary mask cannot. Reads every mask (stops at the first bad one)."""
    pairs = find_pairs(root)
    touching = 0
    for _, _, mask_path in progress(pairs, len(pairs), "folder: looking for touching objects"):
        instances = masks.mask_to_instances(io.read_image(mask_path), mask_path, mask_type)
        touching += bool(separation_border(instances).any())
    return touching, len(pairs)


PLAUSIBLE_KEPT = 0.2    # binary masks: warn when thresholding keeps less of the pixels above the lowest value
LOSSY_LEVELS = 16       # JPEG masks whose two levels lie closer than this drown in the compression noise


def check_binary_reads(root, reports: list) -> None:
    """Warn when the binary masks of a data set look read wrong: thresholding kept under ``PLAUSIBLE_KEPT`` of
    the pixels above each mask's lowest value (the foreground would be the noise, not the cells), or JPEG masks
    whose levels are so close (0/1) that compression noise is as large as the mask. ``reports``: the
    ``report`` dicts of ``masks.mask_to_instances`` (with a 'name')."""
    binary = [r for r in reports if "kept" in r]
    kept, above = sum(r["kept"] for r in binary), sum(r["above_lowest"] for r in binary)
    if above and kept < PLAUSIBLE_KEPT * above:
        log.warning("folder %s: thresholding the binary masks kept %.1f%% of their pixels above the background "
                    "value as foreground (levels e.g. %s of %s): the masks may be read wrong; check how they were "
                    "saved, or set --config.data.mask_type to 'binary' or 'instance'", root, 100 * kept / above,
                    binary[0]["levels"], binary[0]["name"])
    close = [r["name"] for r in binary if r.get("lossy") and r["levels"][1] - r["levels"][0] < LOSSY_LEVELS]
    if close:
        log.warning("folder %s: %d mask(s) are JPEG-compressed with levels only %g apart (e.g. %s: %s): JPEG's "
                    "noise is as large as such a mask, so pixels along the edges are read wrong; save masks as PNG "
                    "or TIFF (lossless), 0/255 for binary", root, len(close),
                    min(r["levels"][1] - r["levels"][0] for r in binary if r["name"] in close), close[0],
                    next(r["levels"] for r in binary if r["name"] == close[0]))


class Folder(UNetBuilder):
    """TFDS builder ``folder``: your own ``images/`` and ``masks/`` under ``data.root``; files are checked
    (nothing is written if one is bad) and then read again to write the examples (layout, mask readings, what is
    refused, splits: docs/data.md)."""
    name = "folder"
    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.", "1.1.0": "classes feature (class masks).",
                     "1.2.0": "images normalised by percentiles whatever the bit depth "
                               "(unet_jax.data.io.to_float_image, as predict does) (8-bit was / 255)."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Put your images in <root>/images/ and their masks, with the same names, in "
                                    "<root>/masks/, and pass <root> as the manual directory (unet_jax: data.root).")
    DESCRIPTION = __doc__
    EXPECTED = "images/ and masks/ holding PNG or TIFF files with matching names (images/a.png <-> masks/a.png)"
    CHANNELS = None

    def _read(self, image_path: Path, mask_path: Path, channels: int = 0, report: dict | None = None):
        """(image, instances, classes or None) of one pair; ``classes`` only for ``mask_type='classes'``."""
        image = io.to_float_image(io.read_image(image_path), image_path)
        classes = None
        if self.builder_config.mask_type == "classes":
            classes, instances = masks.mask_to_classes(io.read_mask(mask_path), mask_path)
            if report is not None:
                report["kind"] = "classes"
        else:
            instances = masks.mask_to_instances(io.read_image(mask_path), mask_path, self.builder_config.mask_type,
                                             report)
        masks.check_same_shape(image, instances, image_path, mask_path)
        if channels == 3 and image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        return image, instances, classes

    def _split_generators(self, dl_manager):
        root = self.manual_root(dl_manager)
        pairs = find_pairs(root)
        channels, kinds, empty, full, fractions, ids = set(), {}, [], [], [], set()
        reports, blank = [], []
        for name, image_path, mask_path in progress(pairs, len(pairs), "folder: checking files"):
            report = {"name": mask_path.name}
            image, instances, classes = self._read(image_path, mask_path, report=report)
            if classes is not None:
                ids.update(np.unique(classes).tolist())
            channels.add(image.shape[-1])
            kinds[report["kind"]] = kinds.get(report["kind"], 0) + 1
            reports.append(report)
            fractions.append(float(np.mean(instances > 0)))
            (empty if fractions[-1] == 0 else full if fractions[-1] == 1 else []).append(name)
            if image.min() == image.max():
                blank.append(name)
        summary.info("folder %s: %d masks read as %s; foreground %.1f%% of the pixels (%.1f%%-%.1f%% per image)",
                     root, len(pairs), ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())), 100 * np.mean(fractions),
                     100 * min(fractions), 100 * max(fractions))
        if ids:
            summary.info("folder %s: class masks with the ids %s (0 = background)", root, sorted(ids))
        check_binary_reads(root, reports)
        if blank:
            log.warning("folder %s: %d of %d images are blank (every pixel the same value): %s%s; they hold nothing "
                        "to learn from (their masks are trained as they are); check how they were exported (a "
                        "16-bit image saved as 8-bit can come out blank) or remove them", root, len(blank),
                        len(pairs), ", ".join(blank[:5]), " ..." if len(blank) > 5 else "")
        for names, what in ((empty, "no foreground (all background)"), (full, "only foreground")):
            if names:
                log.warning("folder %s: %d of %d masks have %s: %s%s; check that they mark the objects (cells > 0) "
                            "and are not inverted", root, len(names), len(pairs), what, ", ".join(names[:5]),
                            " ..." if len(names) > 5 else "")
        if channels == {1, 3}:
            log.info("folder %s: some images are colour and some greyscale; the greyscale ones are repeated to "
                     "3 channels", root)
        c = max(channels)
        k = validation_count(len(pairs), self.builder_config.validation_fraction)
        perm = np.random.default_rng(0).permutation(len(pairs))
        held = set(perm[:k].tolist())
        splits = {"train": self._generate_examples([p for i, p in enumerate(pairs) if i not in held], c)}
        if k:
            splits["validation"] = self._generate_examples([p for i, p in enumerate(pairs) if i in held], c)
        return splits

    def _generate_examples(self, pairs, channels):
        for name, image_path, mask_path in progress(pairs, len(pairs), "folder: weight maps"):
            level = log.level
            log.setLevel(max(logging.WARNING, level))  # the checking pass already logged the conversions
            try:
                image, instances, classes = self._read(image_path, mask_path, channels)
            finally:
                log.setLevel(level)
            yield name, self.make_example(image, instances, name, classes)
