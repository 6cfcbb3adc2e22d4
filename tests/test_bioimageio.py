"""The bioimage.io package as a bioimage.io user runs it (issue 27): bioimageio.core's own ``test_model`` passes,
and ``bioimageio.core.predict`` on whole images of sizes other than the export tile (8-bit PNG, 16-bit TIFF) gives
``unet-jax predict``'s probabilities. Tiny networks (features 4, depth 2) with random weights; no training."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tifffile
import imageio.v3 as iio
from scipy import ndimage as ndi

from unet_jax.checkpoint import Checkpoints, checkpoint_dir
from unet_jax.config import synthetic_config
from unet_jax.export import export_model
from unet_jax.predict import predict_paths
from unet_jax.model import create_model
from unet_jax.workdir import save_config

core = pytest.importorskip("bioimageio.core")
pytest.importorskip("onnxruntime")

NETWORKS = {"valid": dict(padding="VALID", norm="", tile=60),          # the paper's kind: 60 -> 20
            "same_group": dict(padding="SAME", norm="group", tile=32)}  # the own-data recipe's kind


def _workdir(path, padding, norm, tile):
    """config.json and one checkpoint (step 3) of random weights: He-scaled kernels, norm scales near 1."""
    config = synthetic_config()
    config.model.update(features=4, depth=2, padding=padding, norm=norm)
    config.eval.tile_size = tile
    model = create_model(config)
    save_config(config, path)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, tile, tile, 1)), train=False))
    rng = np.random.default_rng(0)

    def fill(keypath, a):
        name = jax.tree_util.keystr(keypath)
        if len(a.shape) > 1:
            return rng.normal(0, np.sqrt(2.0 / np.prod(a.shape[:-1])), a.shape).astype(np.float32)
        return (("scale" in name) + rng.normal(0, 0.1, a.shape)).astype(np.float32)
    variables = jax.tree_util.tree_map_with_path(fill, dict(shapes))
    with Checkpoints(checkpoint_dir(path), async_save=False) as ckpt:
        ckpt.save(3, variables, {"step": np.asarray(3)})
    return path


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def package(request, tmp_path_factory):
    """(workdir, exported package zip) for each kind of network."""
    root = tmp_path_factory.mktemp(request.param)
    workdir = _workdir(root / "run", **NETWORKS[request.param])
    return workdir, export_model(workdir, "bioimageio", root / "unet.zip")[0]


def _images():
    """300x420 images (not a tile size, not square): 8-bit and 16-bit (12 bits used), smooth blobs and noise."""
    rng = np.random.default_rng(1)
    blobs = ndi.gaussian_filter(rng.random((300, 420)), 6)
    blobs = (blobs - blobs.min()) / (blobs.max() - blobs.min())
    return {"u8.png": np.clip(40 + 180 * blobs + rng.normal(0, 8, blobs.shape), 0, 255).astype(np.uint8),
            "u16.tif": np.clip(300 + 3000 * blobs + rng.normal(0, 60, blobs.shape), 0, 4095).astype(np.uint16)}


def test_bioimageio_core_test_model_passes(package):
    _, pkg = package
    summary = core.test_model(pkg)
    assert summary.status == "passed", summary.format()


def test_bioimageio_core_predict_equals_unet_jax_predict(package, tmp_path):
    """Whole images of a size other than the tile, 8-bit and 16-bit, through bioimageio.core's predict (the package's
    own pre-processing, the numpy array as a user passes it) and through ``unet-jax predict`` (files)."""
    workdir, pkg = package
    images = _images()
    (tmp_path / "in").mkdir()
    for name, image in images.items():
        (tifffile.imwrite if name.endswith(".tif") else iio.imwrite)(tmp_path / "in" / name, image)
    predict_paths(workdir, tmp_path / "in", tmp_path / "out")
    for name, image in images.items():
        ours = tifffile.imread(tmp_path / "out" / f"{name.split('.')[0]}_prob.tif")
        sample = core.predict(model=str(pkg), inputs=image)
        theirs = sample.members["output"].data.values        # (batch, class, y, x)
        assert theirs.shape == (1, 2, 300, 420)
        np.testing.assert_allclose(theirs[0, 1], ours, atol=1e-3, err_msg=name)
        assert np.ptp(ours) > 0.05                                       # not a constant output
