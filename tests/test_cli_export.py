"""`unet-jax export` (issue 18): the command line of unet_jax.export. A successful export gives the model's
probabilities; bad input (no checkpoint, existing output, unwritable folder, config overrides, missing onnx) is one
line on stderr, exit code 2, and leaves nothing behind. The workdir holds saved checkpoints of a tiny network
(features 4, depth 2) with random weights: no training, so the file stays fast."""
import os
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unet_jax import cli, export
from unet_jax.checkpoint import Checkpoints, checkpoint_dir
from unet_jax.config import synthetic_config
from unet_jax.model import create_model
from unet_jax.workdir import save_config

TILE = 60            # depth 2, VALID: 60 -> 20, halo 20
ATOL = 1e-4
STEPS = (4, 8)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A workdir with config.json and checkpoints at steps 4 and 8 (different weights); returns (path, model,
    {step: variables})."""
    config = synthetic_config()
    config.model.features, config.model.depth = 4, 2
    config.eval.tile_size = TILE
    model = create_model(config)
    path = tmp_path_factory.mktemp("export") / "run"
    save_config(config, path)
    # The parameter shapes only (model.init compiles every initializer: ~20 s on 2 busy cores), filled from numpy.
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, TILE, TILE, 1)), train=False))
    saved = {}
    with Checkpoints(checkpoint_dir(path), async_save=False) as ckpt:
        for step in STEPS:
            rng = np.random.default_rng(step)
            variables = jax.tree_util.tree_map(lambda a: _random(rng, a.shape), dict(shapes))
            ckpt.save(step, variables, {"step": np.asarray(step)})
            saved[step] = variables
    return path, model, saved


def _random(rng, shape):
    """He-scaled normal kernels ((..., C_in, C_out): fan-in = all but the last axis), N(0, 0.1) biases."""
    std = np.sqrt(2.0 / np.prod(shape[:-1])) if len(shape) > 1 else 0.1
    return rng.normal(0, std, shape).astype(np.float32)


def _main(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code, err):
    return code == 2 and "Traceback" not in err and err.count("\n") == 1 and err.startswith("unet-jax: error: ")


def _reference(model, variables, x):
    return np.asarray(jax.nn.softmax(model.apply(variables, x, train=False), axis=-1))


def _tiles(n, tile=TILE, seed=1):
    return np.random.default_rng(seed).random((n, tile, tile, 1), dtype=np.float32)


def test_help_lists_export():
    assert "export" in cli.build_parser().format_help()


def test_export_stablehlo(capsys, workdir, tmp_path):
    path, model, saved = workdir
    out = tmp_path / "m.stablehlo"
    code, stdout, err = _main(capsys, "export", "--workdir", path, "--format", "stablehlo", "--output", out)
    assert code == 0, err
    assert stdout == (f"wrote {out} (stablehlo, checkpoint step 8, input tile 60 -> output 20, halo 20; "
                      f"{out}.json)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.stablehlo", "m.stablehlo.json"]   # no temporary files
    exported = jax.export.deserialize(out.read_bytes())
    x = _tiles(2)
    np.testing.assert_allclose(np.asarray(exported.call(x)), _reference(model, saved[8], x), atol=ATOL)


def test_export_step_and_tile_size(capsys, workdir, tmp_path):
    path, model, saved = workdir
    out = tmp_path / "m4.stablehlo"
    code, stdout, err = _main(capsys, "export", "--workdir", path, "--format", "stablehlo", "--output", out,
                              "--step", 4, "--tile-size", 76)
    assert code == 0, err
    assert "checkpoint step 4, input tile 76 -> output 36, halo 20" in stdout
    x = _tiles(1, 76)
    y = np.asarray(jax.export.deserialize(out.read_bytes()).call(x))
    np.testing.assert_allclose(y, _reference(model, saved[4], x), atol=ATOL)


def test_invalid_tile_size_writes_nothing(capsys, workdir, tmp_path):
    path, _, _ = workdir
    code, _, err = _main(capsys, "export", "--workdir", path, "--format", "stablehlo",
                         "--output", tmp_path / "sub" / "m.stablehlo", "--tile-size", 61)
    assert _one_line_error(code, err), err
    assert "tile_size" in err and "nearest valid sizes: (60, 64)" in err
    assert list(tmp_path.iterdir()) == []                 # not even the output folder


def test_workdir_without_checkpoint(capsys, tmp_path):
    code, _, err = _main(capsys, "export", "--workdir", tmp_path / "absent", "--format", "stablehlo",
                         "--output", tmp_path / "out" / "m.stablehlo")
    assert _one_line_error(code, err) and "does not exist" in err and "train first" in err, err
    save_config(synthetic_config(), tmp_path / "run")     # a run that saved no checkpoint yet
    code, _, err = _main(capsys, "export", "--workdir", tmp_path / "run", "--format", "stablehlo",
                         "--output", tmp_path / "out" / "m.stablehlo")
    assert _one_line_error(code, err) and "checkpoint" in err, err
    assert not (tmp_path / "out").exists()


def test_workdir_without_checkpoint_from_console_script(tmp_path):
    """In a fresh process: one line on stderr (no checkpoint-library noise), exit code 2, nothing written."""
    save_config(synthetic_config(), tmp_path / "run")
    r = subprocess.run([sys.executable, "-m", "unet_jax.cli", "export", "--workdir", str(tmp_path / "run"),
                        "--format", "stablehlo", "--output", str(tmp_path / "m.stablehlo")],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stderr.startswith("unet-jax: error: ") and r.stderr.count("\n") == 1, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_existing_output_is_kept_and_overwrite_replaces_it(capsys, workdir, tmp_path):
    path, model, saved = workdir
    out = tmp_path / "m.stablehlo"
    out.write_bytes(b"mine")
    argv = ["export", "--workdir", path, "--format", "stablehlo", "--output", out]
    code, _, err = _main(capsys, *argv)
    assert _one_line_error(code, err) and "already exists" in err and "--overwrite" in err, err
    assert out.read_bytes() == b"mine" and sorted(p.name for p in tmp_path.iterdir()) == ["m.stablehlo"]
    code, _, err = _main(capsys, *argv, "--overwrite")
    assert code == 0, err
    x = _tiles(1)
    y = np.asarray(jax.export.deserialize(out.read_bytes()).call(x))
    np.testing.assert_allclose(y, _reference(model, saved[8], x), atol=ATOL)


def test_unwritable_output_folder(capsys, workdir, tmp_path, monkeypatch):
    path, _, _ = workdir
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):             # root ignores the mode: make the check see what a user would
            real = os.access
            monkeypatch.setattr(export.os, "access", lambda p, mode: os.path.abspath(p) != str(folder)
                                and real(p, mode))
        for out in (folder / "m.stablehlo", folder / "sub" / "m.stablehlo"):
            code, _, err = _main(capsys, "export", "--workdir", path, "--format", "stablehlo", "--output", out)
            assert _one_line_error(code, err) and "cannot write" in err and str(folder) in err, err
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_output_folder_that_is_a_file(capsys, workdir, tmp_path):
    path, _, _ = workdir
    (tmp_path / "f").write_text("x")
    code, _, err = _main(capsys, "export", "--workdir", path, "--format", "stablehlo",
                         "--output", tmp_path / "f" / "m.stablehlo")
    assert _one_line_error(code, err) and "is a file" in err, err
    assert (tmp_path / "f").read_text() == "x"


def test_config_overrides_are_refused(capsys, workdir, tmp_path):
    path, _, _ = workdir
    code, _, err = _main(capsys, "export", "--workdir", path, "--format", "stablehlo", "--output",
                         tmp_path / "m.stablehlo", "--config.eval.tile_size=76")
    assert _one_line_error(code, err) and "no config overrides" in err and "--tile-size" in err, err
    assert list(tmp_path.iterdir()) == []


def test_unknown_format(capsys, workdir, tmp_path):
    path, _, _ = workdir
    with pytest.raises(SystemExit) as e:
        cli.main(["export", "--workdir", str(path), "--format", "tflite", "--output", str(tmp_path / "m")])
    assert e.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_missing_onnx_says_how_to_install(capsys, workdir, tmp_path, monkeypatch):
    path, _, _ = workdir
    monkeypatch.setitem(sys.modules, "onnx", None)             # as if not installed
    for fmt, out in (("onnx", tmp_path / "m.onnx"), ("bioimageio", tmp_path / "pkg.zip")):
        code, _, err = _main(capsys, "export", "--workdir", path, "--format", fmt, "--output", out)
        assert _one_line_error(code, err) and "pip install 'unet-jax[export]'" in err, err
    assert list(tmp_path.iterdir()) == []


def test_missing_flatbuffers_says_how_to_install(capsys, workdir, tmp_path, monkeypatch):
    path, _, _ = workdir
    monkeypatch.setitem(sys.modules, "flatbuffers", None)      # jax.export's serialisation needs it
    code, _, err = _main(capsys, "export", "--workdir", path, "--format", "stablehlo", "--output", tmp_path / "m")
    assert _one_line_error(code, err) and "flatbuffers" in err and "pip install 'unet-jax[export]'" in err, err
    assert list(tmp_path.iterdir()) == []


def test_export_onnx(capsys, workdir, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    path, model, saved = workdir
    out = tmp_path / "m.onnx"
    code, stdout, err = _main(capsys, "export", "--workdir", path, "--format", "onnx", "--output", out)
    assert code == 0, err
    assert stdout == f"wrote {out} (onnx, checkpoint step 8, input tile 60 -> output 20, halo 20)\n"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = _tiles(2)
    y = session.run(None, {"input": x.transpose(0, 3, 1, 2)})[0]                  # NCHW
    np.testing.assert_allclose(y.transpose(0, 2, 3, 1), _reference(model, saved[8], x), atol=ATOL)


def test_export_bioimageio_zip_validates(capsys, workdir, tmp_path):
    pytest.importorskip("onnx")
    path, _, _ = workdir
    out = tmp_path / "unet.zip"
    code, stdout, err = _main(capsys, "export", "--workdir", path, "--format", "bioimageio", "--output", out)
    assert code == 0, err
    assert stdout.startswith(f"wrote {out} (bioimageio, checkpoint step 8,")
    assert [p.name for p in tmp_path.iterdir()] == ["unet.zip"]                   # no temporary folder left
    assert {"rdf.yaml", "model.onnx", "test_input.npy", "test_output.npy"} <= set(zipfile.ZipFile(out).namelist())
    spec = pytest.importorskip("bioimageio.spec")
    descr = spec.load_description(out, perform_io_checks=True)                     # offline: all files are local
    summary = descr.validation_summary
    assert summary.status in ("valid-format", "passed"), summary.format()
    assert not [e for d in summary.details for e in d.errors]
