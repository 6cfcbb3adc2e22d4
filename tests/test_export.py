"""Model export (unet_jax.export): the StableHLO and ONNX exports give the JAX model's probabilities, the
StableHLO file runs without unet_jax, bioimage.io packages are complete, and bad input fails cleanly."""
import json
import os
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unet_jax import export
from unet_jax.checkpoint import Checkpoints, checkpoint_dir, save_config
from unet_jax.config import synthetic_config
from unet_jax.model import UNet

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


def test_bioimageio_package(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    yaml = pytest.importorskip("yaml")
    model, variables, tile = make()
    out, = export.export_network(model, variables, "bioimageio", tmp_path / "pkg", tile, step=5,
                                 source=tmp_path / "my.run")
    names = {p.name for p in out.iterdir()}
    assert {"rdf.yaml", "README.md", "model.onnx", "test_input.npy", "test_output.npy", "cover.png"} <= names
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]            # no temporary folder left
    rdf = yaml.safe_load((out / "rdf.yaml").read_text())
    assert rdf["type"] == "model" and rdf["format_version"].startswith("0.5") and rdf["name"].endswith("step 5")
    axes = rdf["inputs"][0]["axes"]
    assert [a["type"] for a in axes] == ["batch", "channel", "space", "space"] and axes[2]["size"] == tile
    assert rdf["outputs"][0]["axes"][2]["size"]["offset"] == -40                # halo 20 a side
    assert rdf["inputs"][0]["preprocessing"][0]["kwargs"]["max_percentile"] == 99.8
    assert rdf["weights"]["onnx"]["sha256"] == export._sha256(out / "model.onnx")
    raw, expected = np.load(out / "test_input.npy"), np.load(out / "test_output.npy")
    assert raw.shape == (1, 1, tile, tile) and expected.shape == (1, 2, 20, 20)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": export.preprocess(raw)})[0], expected, atol=ATOL)
    z, = export.export_network(model, variables, "bioimageio", tmp_path / "pkg.zip", tile)
    assert "rdf.yaml" in zipfile.ZipFile(z).namelist()


def test_bioimageio_package_validates_with_spec(tmp_path):
    pytest.importorskip("onnx")
    spec = pytest.importorskip("bioimageio.spec")
    model, variables, tile = make(channels=3)
    out, = export.export_network(model, variables, "bioimageio", tmp_path / "pkg", tile)
    descr = spec.load_description(out / "rdf.yaml", perform_io_checks=True)
    assert descr.validation_summary.status in ("valid-format", "passed"), descr.validation_summary


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
    model, variables, tile = make()

    def fail(*args):
        raise OSError("disk full")
    monkeypatch.setattr(export, "_write_cover", fail)
    with pytest.raises(OSError, match="disk full"):
        export.export_network(model, variables, "bioimageio", tmp_path / "pkg", tile)
    assert list(tmp_path.iterdir()) == []


def test_missing_onnx_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'unet-jax\[export\]'"):
        export.import_onnx()


def test_unwritable_output_folder(tmp_path, monkeypatch):
    model, variables, tile = make()
    monkeypatch.setattr(export.os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError, match="cannot write to the --output folder"):
        export.export_network(model, variables, "onnx", tmp_path / "m.onnx", tile)


def test_output_channel_names_follow_the_training_target():
    assert export.class_names(2) == ["background", "cell"]
    assert export.class_names(3) == ["background", "class1", "class2"]
    assert export.class_names(3, "contours") == ["background", "interior", "contour"]
