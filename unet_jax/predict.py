"""Segment users' images with a trained workdir: 2-D images or stacks (tif/png) to probability TIFFs, instance
label TIFFs and overlay PNGs. Host-side driver; the network runs jit-compiled through overlap-tile inference.

Entry point: ``predict_paths`` (``unet-jax predict``; the files it writes are listed in its docstring); helpers
``list_inputs``, ``read_input``, ``planned_outputs``.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from tqdm.auto import tqdm

from unet_jax.checks import InvalidInputError
from unet_jax.data.io import read_image, tiff_shape, to_float_image
from unet_jax.inference import foreground_probability, objects_of, predict_probabilities
from unet_jax.instances import as_label_dtype
from unet_jax.io import check_writable_directory, overlay, read_pixel_size, write_png, write_tiff
from unet_jax.workdir import load_model

log = logging.getLogger(__name__)

SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
OUTPUT_ENDINGS = ("_prob.tif", "_labels.tif", "_classes.tif", "_overlay.png")    # what predict writes; never read back as input


def list_inputs(path) -> List[Path]:
    """The image files named by ``path``: one file, or the image files of a folder (sorted). Host-side."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() not in SUFFIXES:
            raise InvalidInputError(f"input {str(path)!r} is not an image file; expected one of {', '.join(SUFFIXES)}")
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        own = [p for p in files if p.name.endswith(OUTPUT_ENDINGS)]
        if own:
            log.warning("%s: skipping %d files named like predict's outputs (*%s), e.g. %s", path, len(own),
                        ", *".join(OUTPUT_ENDINGS), own[0].name)
            files = [p for p in files if p not in own]
        if not files:
            raise InvalidInputError(f"input folder {str(path)!r} holds no image files ({', '.join(SUFFIXES)})")
        return files
    raise FileNotFoundError(f"input {str(path)!r} does not exist")


def read_input(path, channels: int) -> Tuple[np.ndarray, bool]:
    """Read an image or stack as float32 in [0, 1]: ((H, W, C) or (Z, H, W, C), is_stack). Host-side.

    Every image is normalised per image by percentiles, whatever its bit depth (``unet_jax.data.io.to_float_image``).
    RGB-saved greyscale is reduced to one channel when the model takes one. A multi-page TIFF, or a 3-D array
    whose last axis is not a channel axis (more than 4), is a stack of 2-D slices.
    """
    arr = np.asarray(read_image(path))
    is_stack = arr.ndim == 4 or (arr.ndim == 3 and arr.shape[-1] > 4)
    if arr.ndim not in (2, 3, 4):
        raise InvalidInputError(f"input {str(path)!r} has shape {arr.shape}; expected a 2-D image (H, W[, C]) or a "
                         f"stack (Z, H, W[, C])")
    slices = list(arr) if is_stack else [arr]
    out = []
    for s in slices:
        img = to_float_image(s, path, greyscale_rgb=channels == 1)
        if img.ndim == 2:
            img = img[..., None]
        if img.shape[-1] != channels:
            if channels == 1:
                img = img.mean(axis=-1, keepdims=True)
                log.warning("%s: %d channels averaged to the model's 1 channel", path, s.shape[-1])
            else:
                raise InvalidInputError(f"input {str(path)!r} has {img.shape[-1]} channels; the model takes {channels}")
        out.append(img.astype(np.float32))
    return (np.stack(out) if is_stack else out[0]), is_stack


def output_stems(files: Sequence[Path]) -> List[str]:
    """Output name stems, unique: the file's stem, or stem_suffix where two inputs share a stem (x.png, x.tif)."""
    counts: dict = {}
    for f in files:
        counts[f.stem] = counts.get(f.stem, 0) + 1
    return [f.stem if counts[f.stem] == 1 else f"{f.stem}_{f.suffix.lstrip('.').lower()}" for f in files]


def planned_outputs(files: Sequence[Path], read_stack, num_classes: int = 2) -> List[Tuple[Path, str, List[str]]]:
    """(input, stem, output file names) for each input; ``read_stack(path)`` tells whether it is a stack; more
    than two classes add a class map."""
    plan = []
    for path, stem in zip(files, output_stems(files)):
        n = read_stack(path)
        overlays = [f"{stem}_z{z:03d}_overlay.png" for z in range(n)] if n else [f"{stem}_overlay.png"]
        classes = [f"{stem}_classes.tif"] if num_classes > 2 else []
        plan.append((path, stem, [f"{stem}_prob.tif", f"{stem}_labels.tif"] + classes + overlays))
    return plan


def _stack_depth(path: Path) -> int:
    """Slices of a stack input (0 for a 2-D image), from the file's header where possible."""
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            shape = tiff_shape(path)
        except (ValueError, OSError):  # an unreadable file fails later, with its own message
            return 0
    else:
        try:
            shape = np.shape(read_image(path))
        except (ValueError, OSError):  # reported with the other unreadable files after the readable ones
            return 0
    is_stack = len(shape) == 4 or (len(shape) == 3 and shape[-1] > 4)
    return int(shape[0]) if is_stack else 0


def predict_paths(workdir, inputs, output_dir, tta: bool = False, step: Optional[int] = None,
                  overrides: Sequence[Tuple[str, str]] = (), overwrite: bool = False) -> List[Path]:
    """Predict every image named by ``inputs`` (file or folder) with the workdir's model; returns files written.

    For each input NAME it writes to ``output_dir`` (NAME is the file's stem, or stem_suffix when two inputs share
    a stem, e.g. x.png and x.tif; files named like these outputs are not taken as inputs)::

        NAME_prob.tif      float32 cell probability, (H, W) or (Z, H, W) for a stack
        NAME_labels.tif    uint16 object labels (uint32 past 65535 objects), 0 = background: by default a seeded
                           watershed of prob > eval.threshold that splits touching objects (eval.instances,
                           unet_jax.instances); 'components' gives its 4-connected components
                           (a data.target='contours' network: its predicted interiors grown over the foreground;
                           a 'distance' network: its predicted object centres grown over the foreground)
        NAME_classes.tif   more than two classes (class masks): uint8 arg-max class per pixel, 0 = background; then
                           NAME_prob.tif holds every class's probability, (H, W, K) or (Z, H, W, K)
        NAME_overlay.png   the image with the predicted cell borders (a stack: NAME_zNNN_overlay.png per slice)

    The TIFFs keep the input's pixel size and unit (``unet_jax.io.read_pixel_size``; ImageJ metadata where the
    layout allows), so Fiji and napari measure in the microscope's units; the napari plugin opens NAME_labels.tif
    as a Labels layer.

    Files already in ``output_dir`` under an output's name are never replaced unless ``overwrite``: the run
    stops first, before writing anything, naming them (they may be the user's own files, e.g. ground truth)."""
    files = list_inputs(inputs)
    out = check_writable_directory(output_dir, "--output")     # before the model is loaded and anything predicted
    model, config, variables, _ = load_model(workdir, step, overrides)
    # class masks write a class map and every class's probability; two classes and contours networks P(object)
    k = 2 if config.data.target in ("contours", "distance") else model.num_classes
    plan = planned_outputs(files, _stack_depth, k)
    _refuse_existing(plan, out, overwrite)
    with _output_lock(out):
        _refuse_existing(plan, out, overwrite)      # again: another run may have finished writing meanwhile
        return _predict_plan(plan, out, model, config, variables, k, tta)


def _refuse_existing(plan, out: Path, overwrite: bool) -> None:
    existing = [out / name for _, _, names in plan for name in names if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{len(existing)} output file(s) already exist in {out}, e.g. {existing[0].name} "
                              f"(from an earlier predict run, or your own files): predict replaces nothing "
                              f"unless --overwrite; choose another --output or pass --overwrite")


@contextlib.contextmanager
def _output_lock(out: Path):
    """Hold an exclusive lock on the output folder (created if missing, removed again if left empty) while
    predict writes, so that two runs into one folder cannot overwrite each other's outputs."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InvalidInputError(f"--output {str(out)!r} is being written by another unet-jax predict; wait for it "
                             f"to finish or choose another --output") from None
        except OSError as e:      # a file system without locks: go on unguarded
            log.info("cannot lock %s (%s); not guarded against another predict writing there", out, e)
        yield
    finally:
        os.close(fd)
        if created and not any(out.iterdir()):
            out.rmdir()


def _predict_plan(plan, out: Path, model, config, variables, k: int, tta: bool) -> List[Path]:
    """Predict and write the planned outputs (``predict_paths`` under the output lock); returns files written."""
    channels = int(_in_channels(variables))
    threshold = config.eval.threshold
    written, failed = [], []
    for path, stem, _ in tqdm(plan, desc="predict", unit="file"):
        try:
            image, is_stack = read_input(path, channels)
        except (ValueError, OSError) as e:   # one unreadable file does not stop the others
            failed.append(f"{path.name}: {str(e).splitlines()[0]}")
            continue
        stack = image if is_stack else image[None]
        if any(float(s.min()) == float(s.max()) for s in stack):
            log.warning("%s: the image is blank (every pixel the same value)%s; its prediction says nothing about "
                        "it: check how it was exported", path, " in some slices" if is_stack else "")
        full = np.stack([predict_probabilities(model, variables, s, config.eval, tta=tta) for s in stack])
        probs = foreground_probability(full)     # P(object): any class but background
        labels = as_label_dtype(np.stack([objects_of(f, config) for f in full]))
        if not labels.any():
            log.warning("%s: no foreground predicted (no pixel with probability above %g, maximum %.3f); if the "
                        "image does hold objects, the model did not learn them or the image differs from the "
                        "training images (brightness, scale, modality)", path, threshold, float(probs.max()))
        saved = probs if k == 2 else full       # more classes: (..., H, W, K), one channel per class
        size, axes = read_pixel_size(path), "ZYX" if is_stack else "YX"    # the input's calibration, kept
        written.append(write_tiff(out / f"{stem}_prob.tif", saved if is_stack else saved[0], size,
                                  axes if k == 2 else axes + "C"))
        written.append(write_tiff(out / f"{stem}_labels.tif", labels if is_stack else labels[0], size, axes))
        if k > 2:
            classes = full.argmax(-1).astype(np.uint8 if k <= 256 else np.uint16)
            written.append(write_tiff(out / f"{stem}_classes.tif", classes if is_stack else classes[0], size, axes))
        for z, (img, p) in enumerate(zip(stack, probs)):
            name = f"{stem}_z{z:03d}_overlay.png" if is_stack else f"{stem}_overlay.png"
            written.append(write_png(out / name, overlay(img, p, threshold)))
    if failed:
        raise InvalidInputError(f"{len(failed)} of {len(plan)} input file(s) could not be read (the other "
                         f"{len(plan) - len(failed)} were predicted, {len(written)} files written to {out}):\n  "
                         + "\n  ".join(failed))
    return written


def _in_channels(variables) -> int:
    """Input channels of a U-Net from its first convolution kernel (3, 3, C_in, F)."""
    return variables["params"]["down_0"]["Conv_0"]["kernel"].shape[2]
