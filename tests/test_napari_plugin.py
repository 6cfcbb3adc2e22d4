"""The napari plugin (unet_jax.napari_plugin), headless: the reader opens predict's labels as a Labels layer with
the input's pixel size; the widget's work (``segment``) gives predict's probability and objects from a workdir and
from an exported package; the dock widget runs in a worker thread and adds its layers. Qt runs offscreen; the viewer
is napari's ``ViewerModel`` (no canvas: the CI machine has no OpenGL, which napari's ``make_napari_viewer`` needs)."""
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import imageio.v3 as iio  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tifffile  # noqa: E402

napari = pytest.importorskip("napari")
pytest.importorskip("magicgui")

from napari.components import ViewerModel  # noqa: E402
from napari.layers import Image, Labels  # noqa: E402

from test_bioimageio import NETWORKS, _workdir  # noqa: E402
from unet_jax.export import export_model  # noqa: E402
from unet_jax.io import PixelSize, write_tiff  # noqa: E402
from unet_jax.napari_plugin import SegmentWidget, load_segmenter, napari_get_reader, segment  # noqa: E402
from unet_jax.predict import predict_paths  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def plugins():
    """Register installed napari plugins (napari does it when its window starts): ours, from its entry point."""
    import npe2

    npe2.PluginManager.instance().discover()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny VALID workdir, its exported package, an 8-bit image (not a tile size) with a pixel size, and what
    ``unet-jax predict`` made of it."""
    root = tmp_path_factory.mktemp("napari")
    workdir = _workdir(root / "run", **NETWORKS["valid"])
    package = export_model(workdir, "bioimageio", root / "unet.zip")[0]
    rng = np.random.default_rng(3)
    image = np.clip(rng.normal(120, 40, (90, 130)), 0, 255).astype(np.uint8)
    (root / "in").mkdir()
    tifffile.imwrite(root / "in" / "cells.tif", image, imagej=True, resolution=(1 / 0.325, 1 / 0.325),
                     metadata={"unit": "micron"})
    predict_paths(workdir, root / "in", root / "out")
    return workdir, package, image, root / "out"


def test_reader_opens_labels_as_labels_with_the_pixel_size(run):
    _, _, _, out = run
    viewer = ViewerModel()
    layers = viewer.open(out / "cells_labels.tif", plugin="unet-jax")
    assert len(layers) == 1 and isinstance(layers[0], Labels)
    np.testing.assert_array_equal(layers[0].data, tifffile.imread(out / "cells_labels.tif"))
    np.testing.assert_allclose(layers[0].scale, (0.325, 0.325))
    prob, = viewer.open(out / "cells_prob.tif", plugin="unet-jax")
    assert isinstance(prob, Image) and tuple(prob.contrast_limits) == (0.0, 1.0)
    np.testing.assert_allclose(prob.scale, (0.325, 0.325))
    assert napari_get_reader(str(out / "cells_overlay.png")) is None and napari_get_reader("x.tif") is None


def test_reader_stack_and_class_probabilities(tmp_path):
    size = PixelSize(0.5, 0.25, "micron", 2.0)
    write_tiff(tmp_path / "s_labels.tif", np.arange(24, dtype=np.uint16).reshape(2, 3, 4), size, axes="ZYX")
    write_tiff(tmp_path / "s_prob.tif", np.full((3, 4, 3), 0.5, np.float32), size, axes="YXC")
    (labels, meta, kind), = napari_get_reader(str(tmp_path / "s_labels.tif"))(str(tmp_path / "s_labels.tif"))
    assert kind == "labels" and labels.shape == (2, 3, 4) and meta["scale"] == (2.0, 0.5, 0.25)
    (probs, meta, kind), = napari_get_reader(str(tmp_path / "s_prob.tif"))(str(tmp_path / "s_prob.tif"))
    assert kind == "image" and probs.shape == (3, 4, 3) and meta["channel_axis"] == 2 and len(meta["name"]) == 3


@pytest.mark.parametrize("which", ["workdir", "package"])
def test_segment_gives_predicts_outputs(run, which):
    workdir, package, image, out = run
    segmenter = load_segmenter(workdir if which == "workdir" else package)
    prob, labels = segment(segmenter, image)
    np.testing.assert_allclose(prob, tifffile.imread(out / "cells_prob.tif"), atol=1e-4)
    np.testing.assert_array_equal(labels, tifffile.imread(out / "cells_labels.tif"))
    stack_prob, stack_labels = segment(segmenter, np.stack([image, image[::-1]]))       # (Z, H, W): per slice
    assert stack_prob.shape == (2,) + image.shape and stack_labels.shape == (2,) + image.shape
    np.testing.assert_allclose(stack_prob[0], prob, atol=1e-4)


def test_load_segmenter_names_what_the_path_is_not(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_segmenter(tmp_path / "missing")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="neither a unet-jax workdir"):
        load_segmenter(tmp_path / "folder")


def test_widget_adds_probability_and_objects(run, qtbot):
    """The dock widget as napari makes it, offscreen: a worker thread segments the selected layer and adds the
    probability and the objects with the layer's scale."""
    workdir, _, image, out = run
    viewer = ViewerModel()
    viewer.add_image(np.asarray(iio.imread(out / "cells_overlay.png"))[..., 0], name="other")
    viewer.add_image(image, name="cells", scale=(0.325, 0.325))
    widget = SegmentWidget(viewer)
    qtbot.addWidget(widget.native)
    widget[0].value = "package .zip"                              # the file dialog picks a .zip file
    assert widget.model_path.mode.value == "r"
    widget[0].value = "workdir or package folder"                 # ... or a folder
    assert widget.model_path.mode.value == "d"
    widget.model_path.value = str(workdir)
    widget.image_layer.value = viewer.layers["cells"]
    worker = widget.start()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    qtbot.waitUntil(lambda: "cells objects" in viewer.layers, timeout=10_000)
    objects, prob = viewer.layers["cells objects"], viewer.layers["cells probability"]
    assert isinstance(objects, Labels) and isinstance(prob, Image)
    np.testing.assert_array_equal(objects.data, tifffile.imread(out / "cells_labels.tif"))
    np.testing.assert_allclose(objects.scale, (0.325, 0.325))
    assert widget[-1].value.startswith("segmented cells")
