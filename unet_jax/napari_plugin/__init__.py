"""napari plugin (npe2 manifest ``napari.yaml``; ``pip install 'unet-jax[napari]'``): a reader that opens
``unet-jax predict``'s outputs with their pixel size (``NAME_labels.tif`` / ``NAME_classes.tif`` as Labels layers,
``NAME_prob.tif`` as an Image layer), and a widget that segments an image layer with a trained workdir or an
exported bioimage.io package, by predict's overlap-tile inference. Host-side.

``load_segmenter`` and ``segment`` are the widget's work, usable without a viewer; ``SegmentWidget`` is the dock
widget (napari and Qt are imported only when it is made).
"""
from __future__ import annotations

import logging
import re
import zipfile
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np
import tifffile

from unet_jax.checks import InvalidInputError
from unet_jax.io import read_pixel_size

log = logging.getLogger(__name__)

LABEL_SUFFIXES = ("_labels", "_classes")
BROWSE_MODES = {"workdir or package folder": "d", "package .zip": "r"}     # the path field's file dialog
OUTPUT_PATTERN = re.compile(r".*(_labels|_classes|_prob)\.tiff?$", re.IGNORECASE)

__all__ = ["napari_get_reader", "read_outputs", "load_segmenter", "segment", "SegmentWidget"]


# ----------------------------------------------------------------------------------------------------------------
# Reader
# ----------------------------------------------------------------------------------------------------------------

def napari_get_reader(path):
    """The reader for one of predict's output TIFFs (``*_labels.tif``, ``*_classes.tif``, ``*_prob.tif``), else
    None (napari then asks other readers)."""
    if isinstance(path, (list, tuple)):
        return read_outputs if path and all(OUTPUT_PATTERN.match(str(p)) for p in path) else None
    return read_outputs if OUTPUT_PATTERN.match(str(path)) else None


def read_outputs(path) -> list:
    """napari layer data of predict's outputs: ``(data, {'name', 'scale', 'metadata'}, 'labels' | 'image')``, the
    scale (and unit) from the file's calibration, which predict copies from its input."""
    paths = path if isinstance(path, (list, tuple)) else [path]
    layers = []
    for p in map(Path, paths):
        data = tifffile.imread(p)
        size = read_pixel_size(p)
        stem = p.name.rsplit(".", 1)[0]
        kind = "labels" if stem.lower().endswith(LABEL_SUFFIXES) else "image"
        meta = {"name": stem, "metadata": {"source": str(p)}}
        channel_last = kind == "image" and data.ndim in (3, 4) and not _imagej_stack(p)
        spatial = data.ndim - (1 if channel_last else 0)
        if size is not None:
            scale = (size.y, size.x) if spatial == 2 else ((size.z or 1.0), size.y, size.x)
            meta["scale"] = scale[-spatial:]
            meta["metadata"]["unit"] = size.unit
        if kind == "image":
            if channel_last:            # class probabilities (..., K): one layer per class
                meta["channel_axis"] = data.ndim - 1
                meta["name"] = [f"{stem} class {k}" for k in range(data.shape[-1])]
            if data.dtype == np.float32:     # probabilities
                meta.update(contrast_limits=[0.0, 1.0], colormap="magma")
        layers.append((data, meta, kind))
    return layers


def _imagej_stack(path: Path) -> bool:
    """Whether an output TIFF is an ImageJ (Z, H, W) stack (predict writes class probabilities as plain TIFFs)."""
    with tifffile.TiffFile(path) as f:
        return bool(f.imagej_metadata) and f.series[0].ndim == 3


# ----------------------------------------------------------------------------------------------------------------
# Segmentation (the widget's work, without a viewer)
# ----------------------------------------------------------------------------------------------------------------

class _Segmenter:
    """A loaded network: ``channels`` it takes, ``name``, ``config`` (eval settings for objects) and
    ``probabilities(image (H, W, C) float32 in [0, 1], progress) -> (H, W, K)``."""
    channels: int
    name: str
    config: object

    def probabilities(self, image: np.ndarray, progress=None) -> np.ndarray:
        raise NotImplementedError


class _WorkdirSegmenter(_Segmenter):
    def __init__(self, workdir: Path):
        from unet_jax.workdir import load_model
        from unet_jax.export.common import in_channels

        self.model, self.config, self.variables, self.step = load_model(workdir)
        self.channels = in_channels(self.variables)
        self.name = f"{workdir.name} (step {self.step})"

    def probabilities(self, image, progress=None):
        from unet_jax.inference import predict_probabilities

        return predict_probabilities(self.model, self.variables, image, self.config.eval, progress=progress or False)


class _PackageSegmenter(_Segmenter):
    """A bioimage.io package written by ``unet-jax export``, run with onnxruntime: its ``model.onnx`` does predict's
    overlap-tile inference on the whole image."""

    def __init__(self, path: Path):
        import yaml
        from unet_jax.config import base_config

        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError("running a bioimage.io package needs onnxruntime: pip install 'unet-jax[napari]'") \
                from err
        files = _package_files(path)
        rdf = yaml.safe_load(files["rdf.yaml"])
        info = (rdf.get("config") or {}).get("unet_jax")
        if not info:
            raise InvalidInputError(f"{path} is not a bioimage.io package written by unet-jax export (no "
                                    f"config.unet_jax in its rdf.yaml); choose a workdir or a package exported by "
                                    f"unet-jax")
        source = rdf["weights"]["onnx"]["source"]
        self.session = ort.InferenceSession(files[source], providers=["CPUExecutionProvider"])
        self.channels = int(info["channels"])
        self.name = rdf.get("name", path.name)
        self.config = base_config()
        self.config.data.target = info.get("target", self.config.data.target)
        self.config.eval.update({k: v for k, v in (info.get("eval") or {}).items() if k in self.config.eval})

    def probabilities(self, image, progress=None):
        out = self.session.run(None, {"input": image.transpose(2, 0, 1)[None].astype(np.float32)})[0]
        return out[0].transpose(1, 2, 0)


def _package_files(path: Path) -> dict:
    """rdf.yaml (text) and the weights (bytes) of a package folder or zip, by name."""
    if path.is_dir():
        return {"rdf.yaml": (path / "rdf.yaml").read_text(),
                **{p.name: p.read_bytes() for p in path.glob("*.onnx")}}
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        rdf = next((n for n in ("rdf.yaml", "bioimageio.yaml") if n in names), None)
        if rdf is None:
            raise InvalidInputError(f"{path} holds no rdf.yaml: not a bioimage.io model package")
        return {"rdf.yaml": z.read(rdf).decode(), **{n: z.read(n) for n in names if n.endswith(".onnx")}}


def load_segmenter(path) -> _Segmenter:
    """A trained workdir (``unet-jax train --workdir``) or a bioimage.io package (.zip or folder) written by
    ``unet-jax export``, ready to segment. ValueError / FileNotFoundError naming what the path is not."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; choose a unet-jax workdir or an exported bioimage.io "
                                f"package (.zip or folder)")
    if path.is_dir() and (path / "config.json").exists():
        return _WorkdirSegmenter(path)
    if (path.is_dir() and (path / "rdf.yaml").exists()) or (path.is_file() and zipfile.is_zipfile(path)):
        return _PackageSegmenter(path)
    raise InvalidInputError(f"{path} is neither a unet-jax workdir (a folder with config.json) nor a bioimage.io "
                            f"package (.zip, or a folder with rdf.yaml)")


def segment(segmenter: _Segmenter, data, rgb: bool = False, progress: Optional[Callable] = None
            ) -> Tuple[np.ndarray, np.ndarray]:
    """(probability, objects) of a napari image layer's data, as ``unet-jax predict`` makes them: the image
    normalised like predict reads a file (``to_float_image``), the overlap-tile probabilities, P(object) for two
    classes (all classes (..., K) else) and the objects of ``objects_of`` (uint16/uint32 labels). A 3-D layer that
    is not RGB is a stack of 2-D images, segmented slice by slice. ``progress``: a tqdm-like class (napari's)."""
    from unet_jax.data.io import to_float_image
    from unet_jax.inference import foreground_probability, is_foreground, objects_of
    from unet_jax.instances import as_label_dtype

    data = np.asarray(data)
    stack = data.ndim == 4 or (data.ndim == 3 and not rgb)
    slices = data if stack else data[None]
    probs, labels = [], []
    for s in slices:
        image = to_float_image(s, "the image layer", greyscale_rgb=segmenter.channels == 1)
        if image.shape[-1] != segmenter.channels:
            if segmenter.channels != 1:
                raise InvalidInputError(f"the image layer has {image.shape[-1]} channels; the network takes "
                                        f"{segmenter.channels}")
            image = image.mean(axis=-1, keepdims=True)
        full = segmenter.probabilities(image, progress)
        labels.append(objects_of(full, segmenter.config))
        probs.append(foreground_probability(full) if is_foreground(full, segmenter.config) else full)
    probs, labels = np.stack(probs), as_label_dtype(np.stack(labels))
    return (probs, labels) if stack else (probs[0], labels[0])


# ----------------------------------------------------------------------------------------------------------------
# Widget
# ----------------------------------------------------------------------------------------------------------------

def SegmentWidget(napari_viewer):  # noqa: N802 - napari instantiates widget contributions like classes
    """The dock widget: a model path (workdir or package), the image layer, Run. The work runs in a thread with a
    progress bar over the tiles (workdirs) and adds '<image> probability' and '<image> objects' layers with the
    image's scale and translation."""
    from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton

    viewer = napari_viewer
    kind = ComboBox(label="model", choices=list(BROWSE_MODES), value="workdir or package folder")
    model_edit = FileEdit(label="path", mode=BROWSE_MODES[kind.value])
    layer_box = ComboBox(label="image", choices=_image_layers(viewer))
    run = PushButton(text="Segment")
    status = Label(value="")
    box = Container(widgets=[kind, model_edit, layer_box, run, status])
    cache = {}
    kind.changed.connect(lambda value: setattr(model_edit, "mode", BROWSE_MODES[value]))

    def refresh(*_):
        layer_box.choices = _image_layers(viewer)
    viewer.layers.events.inserted.connect(refresh)
    viewer.layers.events.removed.connect(refresh)

    def work():
        path = Path(str(model_edit.value))
        key = str(path.resolve())
        if key not in cache:
            cache.clear()
            cache[key] = load_segmenter(path)
        layer = layer_box.value
        if layer is None:
            raise InvalidInputError("no image layer to segment: open an image first")
        from napari.utils import progress
        probs, labels = segment(cache[key], layer.data, rgb=bool(getattr(layer, "rgb", False)), progress=progress)
        return layer, cache[key], probs, labels

    def done(result):
        layer, segmenter, probs, labels = result
        add_results(viewer, layer, probs, labels)
        status.value = f"segmented {layer.name} with {segmenter.name}"

    def start(sync: bool = False):
        status.value = "running..."
        if sync:
            return done(work())
        from napari.qt.threading import create_worker

        worker = create_worker(work, _progress={"desc": "U-Net"})
        worker.returned.connect(done)
        worker.errored.connect(lambda e: setattr(status, "value", f"error: {e}"))
        worker.start()
        return worker
    run.changed.connect(lambda *_: start())
    box.start = start
    box.model_path, box.image_layer = model_edit, layer_box
    return box


def _image_layers(viewer):
    from napari.layers import Image

    return [layer for layer in viewer.layers if isinstance(layer, Image)]


def add_results(viewer, layer, probs: np.ndarray, labels: np.ndarray) -> None:
    """Add the probability and the objects beside ``layer`` (its scale and translation, so they overlay it)."""
    spatial = labels.ndim
    geometry = {"scale": tuple(layer.scale)[-spatial:], "translate": tuple(layer.translate)[-spatial:]}
    if probs.ndim == spatial:
        viewer.add_image(probs, name=f"{layer.name} probability", colormap="magma", contrast_limits=(0.0, 1.0),
                         blending="additive", **geometry)
    else:                             # class probabilities (..., K): one layer per class
        viewer.add_image(probs, name=[f"{layer.name} class {k}" for k in range(probs.shape[-1])],
                         channel_axis=probs.ndim - 1, contrast_limits=(0.0, 1.0), **geometry)
    viewer.add_labels(labels, name=f"{layer.name} objects", **geometry)
