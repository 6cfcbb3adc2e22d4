"""Model export (unet_jax.export): the StableHLO and ONNX exports give the JAX model's probabilities, the
whole-image ONNX model gives predict's, the StableHLO file runs without unet_jax, bioimage.io packages are
complete, and bad input fails cleanly. bioimageio.core on the package: tests/test_bioimageio.py."""
import json
import os
import socket
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from unet_jax import export
from unet_jax.export import bioimageio as bioimageio_export
from unet_jax.inference import predict_probabilities
from unet_jax.checkpoint import Checkpoints, checkpoint_dir
from unet_jax.config import synthetic_config
from unet_jax.model import UNet
from unet_jax.workdir import save_config

TILES = {"VALID": 60, "SAME": 32}      # depth 2: 60 -> 20 (VALID), 32 -> 32 (SAME)
ATOL = 1e-4


def make(padding="VALID", channels=1, seed=0, **kw):
    """A tiny U-Net (features 4, depth 2) with random weights, biases and batch statistics made non-trivial."""
    model = UNet(features=4, depth=2, padding=padding, dropout_rate=0.1, **kw)
    tile = TILES[padding]
    variables = dict(model.init(jax.random.PRNGKey(seed), jnp.zeros((1, tile, tile, channels))))
    rng = np.random.default_rng(seed)
    variables["params"] = jax.tree_util.tree_map(
        lambda a: np.asarray(a) + rng.normal(0, 0.1, a.shape).astype(np.float32), variables["params"])
    if "batch_stats" in variables:
        variables["batch_stats"] = jax.tree_util.tree_map(
            lambda a: rng.uniform(0.5, 1.5, a.shape).astype(np.float32), variables["batch_stats"])
    return model, variables, tile


def tiles(n, tile, channels, seed=1):
    return np.random.default_rng(seed).random((n, tile, tile, channels), dtype=np.float32)


def reference(model, variables, x):
    return np.asarray(jax.nn.softmax(model.apply(variables, x, train=False), axis=-1))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_stablehlo_matches_jax(padding, channels, tmp_path):
    model, variables, tile = make(padding, channels)
    paths = export.export_network(model, variables, "stablehlo", tmp_path / "m.stablehlo", tile, step=3)
    assert paths == [tmp_path / "m.stablehlo", tmp_path / "m.stablehlo.json"]
    exported = jax.export.deserialize(paths[0].read_bytes())
    for n in (1, 3):                                        # the batch dimension is symbolic
        x = tiles(n, tile, channels)
        y = np.asarray(exported.call(x))
        np.testing.assert_allclose(y, reference(model, variables, x), atol=ATOL)
    meta = json.loads(paths[1].read_text())
    out = 20 if padding == "VALID" else 32
    assert meta["input_shape"] == ["batch", tile, tile, channels] and meta["output_shape"] == ["batch", out, out, 2]
    assert meta["halo"] == (20 if padding == "VALID" else 0) and meta["layout"] == "NHWC" and meta["step"] == 3
    assert meta["preprocessing"]["percentiles"] == [1.0, 99.8] and meta["channels"] == channels


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_onnx_matches_jax(padding, channels, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model, variables, tile = make(padding, channels)
    path, = export.export_network(model, variables, "onnx", tmp_path / "m.onnx", tile)
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"] and [o.name for o in session.get_outputs()] == ["output"]
    for n in (1, 3):                                        # dynamic batch, NCHW
        x = tiles(n, tile, channels)
        y = session.run(None, {"input": x.transpose(0, 3, 1, 2)})[0]
        np.testing.assert_allclose(y.transpose(0, 2, 3, 1), reference(model, variables, x), atol=ATOL)


@pytest.mark.parametrize("kw", [dict(norm="batch"), dict(norm="group"), dict(upsample="bilinear"),
                                dict(padding="SAME", norm="group", upsample="bilinear")])
def test_onnx_matches_jax_other_settings(kw):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model, variables, tile = make(**kw)
    session = ort.InferenceSession(export.onnx_model(model, variables, tile).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    x = tiles(2, tile, 1)
    y = session.run(None, {"input": x.transpose(0, 3, 1, 2)})[0]
    np.testing.assert_allclose(y.transpose(0, 2, 3, 1), reference(model, variables, x), atol=ATOL)


def test_onnx_unsupported_setting_is_named():
    model, variables, tile = make()
    with pytest.raises(ValueError, match="model.upsample='nearest'"):
        export.check_onnx_supported(model.clone(upsample="nearest"))


def test_stablehlo_runs_without_unet_jax(tmp_path):
    model, variables, tile = make()
    path = export.export_network(model, variables, "stablehlo", tmp_path / "m.stablehlo", tile)[0]
    x = tiles(2, tile, 1)
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, jax\n"
            f"exp = jax.export.deserialize(open({str(path)!r}, 'rb').read())\n"
            f"np.save({str(tmp_path / 'y.npy')!r}, np.asarray(exp.call(np.load({str(tmp_path / 'x.npy')!r}))))\n"
            "assert 'unet_jax' not in sys.modules, 'unet_jax was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert r.returncode == 0, r.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), reference(model, variables, x), atol=ATOL)


@pytest.mark.parametrize("kw", [dict(), dict(norm="group"), dict(padding="SAME", norm="group"),
                                dict(padding="SAME", upsample="bilinear")])
def test_onnx_image_model_is_predict(kw):
    """The whole-image ONNX model (the bioimage.io package's) gives predict's probabilities at any image size:
    one tile or several, odd sides, smaller than a tile, one pixel; VALID tiles written in order, SAME blended."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model, variables, tile = make(**kw)
    session = ort.InferenceSession(export.onnx_image_model(model, variables, tile).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    cfg = ml_collections.ConfigDict({"tile_size": tile, "batch_size": 4})
    for shape in ((1, 1), (5, 7), (tile, tile), (97, 131)):
        x = np.random.default_rng(0).random(shape + (1,), dtype=np.float32)
        y = session.run(None, {"input": x.transpose(2, 0, 1)[None]})[0][0].transpose(1, 2, 0)
        np.testing.assert_allclose(y, predict_probabilities(model, variables, x, cfg), atol=ATOL)


def test_bioimageio_package(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    yaml = pytest.importorskip("yaml")
    pytest.importorskip("bioimageio.spec")
    model, variables, tile = make()
    out, = export.export_network(model, variables, "bioimageio", tmp_path / "pkg", tile, step=5,
                                 source=tmp_path / "my.run")
    names = {p.name for p in out.iterdir()}
    assert {"rdf.yaml", "README.md", "model.onnx", "test_input.npy", "test_output.npy", "cover.png"} <= names
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]            # no temporary folder left
    rdf = yaml.safe_load((out / "rdf.yaml").read_text())
    assert rdf["type"] == "model" and rdf["format_version"].startswith("0.5") and rdf["name"].endswith("step 5")
    axes = rdf["inputs"][0]["axes"]
    assert [a["type"] for a in axes] == ["batch", "channel", "space", "space"]
    assert axes[2]["size"] == {"min": 1, "step": 1}                   # any size
    out_axes = rdf["outputs"][0]["axes"]
    assert out_axes[2]["size"] == {"tensor_id": "input", "axis_id": "y"} and "halo" not in out_axes[2]
    ops = [(p["id"], p["kwargs"]) for p in rdf["inputs"][0]["preprocessing"] if p["id"] != "ensure_dtype"]
    assert ops == [("scale_range", {"axes": ["channel", "y", "x"], "min_percentile": 1.0, "max_percentile": 99.8}),
                   ("clip", {"min": 0.0, "max": 1.0})]                 # scale_range's eps: its default, 1e-6
    raw, expected = np.load(out / "test_input.npy"), np.load(out / "test_output.npy")
    assert raw.shape == (1, 1, tile + 9, tile + 23) and expected.shape == (1, 2, tile + 9, tile + 23)
    assert raw.max() > 1000                                            # raw 16-bit-like intensities
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": export.preprocess(raw)})[0], expected, atol=ATOL)
    z, = export.export_network(model, variables, "bioimageio", tmp_path / "pkg.zip", tile)
    assert "rdf.yaml" in zipfile.ZipFile(z).namelist()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg", "pkg.zip"]


def test_stale_temporary_folder_of_a_killed_export_is_removed(tmp_path):
    """A killed export leaves its temporary folder beside the output; the next export removes it (its process is
    gone) but keeps the folder of an export that is still running."""
    pytest.importorskip("onnx")
    pytest.importorskip("bioimageio.spec")
    from unet_jax.export.bioimageio import TMP_TAG
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    killed = tmp_path / f".pkg.{TMP_TAG}.{host}.{dead.pid}.abc123"
    running = tmp_path / f".pkg.{TMP_TAG}.{host}.{os.getpid()}.def456"
    for folder in (killed, running):
        (folder / "src").mkdir(parents=True)
        (folder / "src" / "model.onnx").write_bytes(b"half")
    earlier = tmp_path / ".pkg.k2j4_x9q"                 # an earlier version's (mkdtemp) name and files
    earlier.mkdir()
    (earlier / "model.onnx").write_bytes(b"half")
    other = tmp_path / ".pkg.notmine1"                   # the same pattern holding other files: kept
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    model, variables, tile = make()
    export.export_network(model, variables, "bioimageio", tmp_path / "pkg", tile)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["pkg", running.name, other.name])


def test_export_model_from_workdir(tmp_path):
    """``export_model`` on a workdir with a saved checkpoint (no training: the tiny model's random weights)."""
    config = synthetic_config()
    config.model.features, config.model.depth = 4, 2
    config.eval.tile_size = 60
    model, variables, _ = make()
    workdir = tmp_path / "run"
    save_config(config, workdir)
    with Checkpoints(checkpoint_dir(workdir), async_save=False) as ckpt:
        ckpt.save(4, variables, {"step": np.asarray(4)})
    paths = export.export_model(workdir, "stablehlo", tmp_path / "m.stablehlo")
    meta = json.loads(paths[1].read_text())
    assert meta["step"] == 4 and meta["tile_size"] == 60 and meta["source"] == str(workdir)
    x = tiles(1, 60, 1)
    y = np.asarray(jax.export.deserialize(paths[0].read_bytes()).call(x))
    np.testing.assert_allclose(y, reference(model, variables, x), atol=ATOL)


# ----------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------

def test_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="stablehlo, onnx, bioimageio"):
        export.export_model(tmp_path, "tflite", tmp_path / "m.tflite")


def test_existing_output_is_kept_without_overwrite(tmp_path):
    model, variables, tile = make()
    (tmp_path / "m.stablehlo.json").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export.export_network(model, variables, "stablehlo", tmp_path / "m.stablehlo", tile)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.stablehlo.json"]
    assert (tmp_path / "m.stablehlo.json").read_text() == "mine"
    export.export_network(model, variables, "stablehlo", tmp_path / "m.stablehlo", tile, overwrite=True)
    assert json.loads((tmp_path / "m.stablehlo.json").read_text())["tile_size"] == tile


def test_existing_package_folder_without_overwrite(tmp_path):
    (tmp_path / "pkg").mkdir()
    with pytest.raises(FileExistsError):
        export.export_model(tmp_path / "run", "bioimageio", tmp_path / "pkg")


def test_workdir_without_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="train first"):
        export.export_model(tmp_path / "missing", "stablehlo", tmp_path / "m.stablehlo")
    save_config(synthetic_config(), tmp_path / "run")
    with pytest.raises(ValueError, match="checkpoint"):
        export.export_model(tmp_path / "run", "stablehlo", tmp_path / "m.stablehlo")
    assert not (tmp_path / "m.stablehlo").exists()


def test_invalid_tile_size_names_valid_ones(tmp_path):
    model, variables, _ = make()
    with pytest.raises(ValueError, match="tile_size: .*nearest valid sizes"):
        export.export_network(model, variables, "stablehlo", tmp_path / "m.stablehlo", 61)


def test_output_folder_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    model, variables, tile = make()
    with pytest.raises(ValueError, match="is a file"):
        export.export_network(model, variables, "stablehlo", tmp_path / "f" / "m.stablehlo", tile)


def test_failed_package_leaves_nothing(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("bioimageio.spec")
    model, variables, tile = make()

    def fail(*args):
        raise OSError("disk full")
    monkeypatch.setattr(bioimageio_export, "_write_cover", fail)
    with pytest.raises(OSError, match="disk full"):
        export.export_network(model, variables, "bioimageio", tmp_path / "pkg", tile)
    assert list(tmp_path.iterdir()) == []


def test_missing_onnx_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'unet-jax\[export\]'"):
        export.import_onnx()


def test_bioimageio_spec_with_a_pydantic_it_cannot_use_says_how_to_fix(monkeypatch):
    """bioimageio.spec 0.5.12 (the newest bioimageio.core's) cannot load or write packages with pydantic >= 2.12."""
    pydantic = pytest.importorskip("pydantic")
    spec = pytest.importorskip("bioimageio.spec")
    monkeypatch.setattr(spec, "__version__", "0.5.12.0")
    monkeypatch.setattr(pydantic, "VERSION", "2.12.3")
    with pytest.raises(ImportError, match=r"pip install 'pydantic<2.12'.*unet-jax\[export\]"):
        export.import_bioimageio_spec()
    monkeypatch.setattr(pydantic, "VERSION", "2.11.10")
    assert export.import_bioimageio_spec() is not None


def test_unwritable_output_folder(tmp_path, monkeypatch):
    model, variables, tile = make()
    monkeypatch.setattr(export.os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError, match="cannot write to the --output folder"):
        export.export_network(model, variables, "onnx", tmp_path / "m.onnx", tile)


def test_output_channel_names_follow_the_training_target():
    assert export.class_names(2) == ["background", "cell"]
    assert export.class_names(3) == ["background", "class1", "class2"]
    assert export.class_names(3, "contours") == ["background", "interior", "contour"]
