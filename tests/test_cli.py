"""End to end: `unet-jax train -> evaluate -> predict -> ablate` on tiny synthetic data, in subprocesses, and the
CLI's error handling (one line on stderr, exit code 2, no traceback)."""
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from tiny_config import tiny_config  # tests/tiny_config.py
from unet_jax import cli
from unet_jax.instances import label_instances


SWEEP = """
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny import get_config  # noqa: F401

SEEDS = 1


def get_sweep():
    return {"w0_10": {"weights.w0": 10.0}, "no_border": {"weights.w0": 0.0, "train.num_steps": 12}}
"""


def run_cli(*args, cwd=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "unet_jax.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=900)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "tiny.py").write_text(tiny_config(root / "tfds", num_steps=12, log_every=4, every=6, warmup=2))
    (root / "sweep.py").write_text(SWEEP)
    return root


@pytest.fixture(scope="module")
def trained(tiny):
    workdir = tiny / "run"
    r = run_cli("train", "--config", str(tiny / "tiny.py"), "--workdir", str(workdir),
                "--config.optimizer.learning_rate=0.005")
    assert r.returncode == 0, r.stderr[-3000:]
    return workdir, r


def test_train_writes_run(trained):
    workdir, r = trained
    assert "final:" in r.stdout and "pixel_mismatch=" in r.stdout
    config = json.loads((workdir / "config.json").read_text())
    assert config["optimizer"]["learning_rate"] == 0.005   # the override reached the run
    lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    assert lines and any("pixel_mismatch" in json.dumps(l) for l in lines)
    assert list(workdir.glob("*.png")), "training curve PNG missing"
    assert (workdir / "checkpoints").is_dir()


def test_evaluate_writes_metrics_and_images(trained):
    workdir, _ = trained
    r = run_cli("evaluate", "--workdir", str(workdir), "--tta")
    assert r.returncode == 0, r.stderr[-3000:]
    out = workdir / "eval_validation"
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [row["name"] for row in rows][-2:] == ["mean", "stack"] and len(rows) == 4    # 2 images, mean, stack
    for key in ("pixel_error", "rand_error", "warping_error", "vrand_thinned", "vinfo_thinned"):
        values = [float(row[key]) for row in rows]
        assert all(0.0 <= v <= 1.0 for v in values)
        assert abs(values[-2] - np.mean(values[:-2])) < 1e-9
        assert f"{key}=" in r.stdout
    probs = sorted(out.glob("*_prob.tif"))
    assert len(probs) == 2 and len(list(out.glob("*_overlay.png"))) == 2
    p = tifffile.imread(probs[0])
    assert p.shape == (64, 64) and p.dtype == np.float32 and 0 <= p.min() and p.max() <= 1
    saved = sorted(int(d.name) for d in (workdir / "checkpoints").iterdir() if d.name.isdigit())
    assert json.loads((out / "metrics.json").read_text())["step"] in saved     # which checkpoint was evaluated


def test_evaluate_and_training_validation_measure_alike(trained, tmp_path):
    """One evaluator: `evaluate` (no TTA) of a step gives the IoU and wrong-pixel share that training's
    validation logged for that step."""
    workdir, _ = trained
    validated = {r["step"]: r for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
                 if r["split"] == "validation"}
    step = max(validated)
    r = run_cli("evaluate", "--workdir", str(workdir), "--step", str(step), "--no-images", "--output",
                str(tmp_path / "e"))
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert result["mean"]["iou"] == pytest.approx(validated[step]["iou"], abs=1e-6)
    pooled = np.mean([row["pixel_mismatch"] for row in result["per_image"]])   # equal-size images
    assert pooled == pytest.approx(validated[step]["pixel_mismatch"], abs=1e-6)
    for key in ("object_f1", "mean_ap"):      # the same objects, matched the same way
        assert result["objects"][key] == pytest.approx(validated[step][key], abs=1e-9)


def test_predict_file_and_stack(trained, tmp_path):
    workdir, _ = trained
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(inputs / "one.tif", rng.integers(0, 255, (50, 70), dtype=np.uint8))
    tifffile.imwrite(inputs / "stack.tif", rng.integers(0, 65535, (3, 40, 45), dtype=np.uint16), photometric="minisblack")
    out = tmp_path / "out"
    r = run_cli("predict", "--workdir", str(workdir), "--input", str(inputs), "--output", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert tifffile.imread(out / "one_prob.tif").shape == (50, 70)
    labels = tifffile.imread(out / "one_labels.tif")
    assert labels.dtype == np.uint16   # as Fiji and napari read label images
    # the objects are eval.instances' (default: the watershed) of the written probability, less those under
    # eval.min_object_fraction of the object area train learned from the training masks
    e = json.loads((workdir / "config.json").read_text())["eval"]
    assert e["object_area"] > 0
    np.testing.assert_array_equal(labels, label_instances(tifffile.imread(out / "one_prob.tif"), 0.5, "watershed",
                                                          min_fraction=e["min_object_fraction"],
                                                          object_area=e["object_area"]))
    assert tifffile.imread(out / "stack_prob.tif").shape == (3, 40, 45)
    assert len(list(out.glob("stack_z*_overlay.png"))) == 3 and (out / "one_overlay.png").exists()
    assert "wrote 8 files" in r.stdout


def test_ablate_two_variants_and_resume(tiny):
    workdir = tiny / "sweep_run"
    r = run_cli("ablate", "--config", str(tiny / "sweep.py"), "--workdir", str(workdir))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = list(csv.DictReader(open(workdir / "results.csv")))
    assert {row["variant"] for row in rows} == {"w0_10", "no_border"}
    assert (workdir / "results.png").stat().st_size > 1000
    md = (workdir / "results.md").read_text()
    assert "w0_10" in md and "no_border" in md and "±" in md
    # The table shows the challenge metrics of the validation split and the last validation of training.
    for key in ("pixel_error", "rand_error", "warping_error", "validation_pixel_mismatch"):
        values = [float(row["mean"]) for row in rows if row["metric"] == key]
        assert key in md and len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
    done = workdir / "no_border" / "seed_0" / "final_metrics.json"
    assert done.exists()
    # Resuming skips finished runs: a second call trains nothing and gives the same table.
    r2 = run_cli("ablate", "--config", str(tiny / "sweep.py"), "--workdir", str(workdir))
    assert r2.returncode == 0 and "[ablate]" not in r2.stdout
    assert list(csv.DictReader(open(workdir / "results.csv"))) == rows


def test_help_lists_subcommands():
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("train", "evaluate", "predict", "ablate", "augment-preview"):
        assert cmd in r.stdout
    for cmd in ("train", "evaluate", "predict", "ablate", "augment-preview"):
        h = run_cli(cmd, "--help") if cmd == "train" else None
        if h is not None:
            assert "--workdir" in h.stdout and "--config" in h.stdout


def _main(capsys, *argv):
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    return code, err


def test_error_unknown_config_key(capsys, tiny, tmp_path):
    code, err = _main(capsys, "train", "--config", str(tiny / "tiny.py"), "--workdir", str(tmp_path / "w"),
                      "--config.optimizer.learning_rat=0.1")
    assert code == 2 and "unknown config key" in err and "learning_rate" in err and "Traceback" not in err
    assert not (tmp_path / "w").exists()


def test_error_invalid_tile_size(capsys, tiny, tmp_path):
    code, err = _main(capsys, "train", "--config", str(tiny / "tiny.py"), "--workdir", str(tmp_path / "w"),
                      "--config.train.tile_size=62")
    assert code == 2 and "tile_size" in err and "nearest valid sizes: (60, 64)" in err
    assert not (tmp_path / "w").exists()


def test_error_missing_data(capsys, tmp_path):
    code, err = _main(capsys, "train", "--config", "experiments/isbi2012_cpu.py", "--workdir", str(tmp_path / "w"),
                      f"--config.data.root={tmp_path / 'nowhere'}")
    assert code == 2 and "train-volume.tif" in err and str(tmp_path / "nowhere") in err


def test_error_missing_or_empty_workdir(capsys, tmp_path):
    code, err = _main(capsys, "evaluate", "--workdir", str(tmp_path / "absent"))
    assert code == 2 and "does not exist" in err
    (tmp_path / "empty").mkdir()
    code, err = _main(capsys, "predict", "--workdir", str(tmp_path / "empty"), "--input", str(tmp_path),
                      "--output", str(tmp_path / "o"))
    assert code == 2 and ("no training run" in err or "no image files" in err)


def test_error_unreadable_input(capsys, trained, tmp_path):
    workdir, _ = trained
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00not really a tiff")
    code, err = _main(capsys, "predict", "--workdir", str(workdir), "--input", str(bad),
                      "--output", str(tmp_path / "o"))
    assert code == 2 and "broken.tif" in err and "Traceback" not in err
    assert not list((tmp_path / "o").glob("*")) if (tmp_path / "o").exists() else True


def test_error_exit_code_from_console_script(tmp_path):
    r = run_cli("train", "--config", str(tmp_path / "missing.py"), "--workdir", str(tmp_path / "w"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "missing.py" in r.stderr and "Traceback" not in r.stderr


def test_atomic_write_permissions_and_no_partial_file(tmp_path):
    from unet_jax.io import atomic_write
    umask = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "out" / "a.txt", lambda p: open(p, "w").write("x"))
    finally:
        os.umask(umask)
    assert path.read_text() == "x" and (path.stat().st_mode & 0o777) == 0o644

    def fail(p):
        open(p, "w").write("half")
        raise OSError("disk full")
    with pytest.raises(OSError):
        atomic_write(tmp_path / "out" / "b.txt", fail)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt"]


def test_predict_never_replaces_files_it_did_not_write(trained, tmp_path):
    """--output = the input folder holding the user's own x_labels.tif: refused (exit 2, nothing written); its own
    outputs are not read back as inputs; x.png and x.tif get distinct names and the count is true."""
    workdir, _ = trained
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (40, 44), dtype=np.uint8)
    tifffile.imwrite(folder / "x.tif", img)
    iio.imwrite(folder / "x.png", img)
    truth = np.arange(40 * 44, dtype=np.int32).reshape(40, 44)
    tifffile.imwrite(folder / "x_tif_labels.tif", truth)          # the user's own file, with an output's name
    r = run_cli("predict", "--workdir", str(workdir), "--input", str(folder), "--output", str(folder))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "x_tif_labels.tif" in r.stderr and "--overwrite" in r.stderr
    np.testing.assert_array_equal(tifffile.imread(folder / "x_tif_labels.tif"), truth)   # untouched
    assert sorted(p.name for p in folder.iterdir()) == ["x.png", "x.tif", "x_tif_labels.tif"]
    (folder / "x_tif_labels.tif").unlink()
    r = run_cli("predict", "--workdir", str(workdir), "--input", str(folder), "--output", str(folder))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "wrote 6 files" in r.stdout
    assert {p.name for p in folder.iterdir()} >= {"x_png_prob.tif", "x_tif_prob.tif", "x_png_labels.tif",
                                                  "x_tif_labels.tif", "x_png_overlay.png", "x_tif_overlay.png"}
    # A rerun skips its own outputs as inputs and, with --overwrite, replaces only them.
    r = run_cli("predict", "--workdir", str(workdir), "--input", str(folder), "--output", str(folder),
                "--overwrite")
    assert r.returncode == 0 and "wrote 6 files" in r.stdout
    assert not list(folder.glob("*_prob_prob.tif")) and len(list(folder.iterdir())) == 8


def test_predict_goes_on_past_an_unreadable_file(trained, tmp_path):
    workdir, _ = trained
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for name in ("a", "c"):
        iio.imwrite(folder / f"{name}.png", rng.integers(0, 255, (36, 40), dtype=np.uint8))
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    r = run_cli("predict", "--workdir", str(workdir), "--input", str(folder), "--output", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "1 of 3 input file(s) could not be read" in r.stderr and "b.png" in r.stderr
    assert (out / "a_prob.tif").exists() and (out / "c_prob.tif").exists()       # the later file too


BROKEN_CONFIGS = {
    "syntax.py": ("def get_config(:\n", r"could not be run: line 1: SyntaxError"),
    "imports.py": ("import not_a_module_anywhere\n", r"could not be run: line 1: ModuleNotFoundError"),
    "raises.py": ("def get_config():\n    raise RuntimeError('boom')\n", r"get_config\(\) .* failed: line 2: "
                                                                          r"RuntimeError: boom"),
    "dict.py": ("def get_config():\n    return {'model': {}}\n", r"returned a dict; expected an ml_collections"),
    "noget.py": ("X = 1\n", r"has no get_config\(\) function"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_CONFIGS))
def test_broken_config_files_are_one_line_errors(capsys, tmp_path, name):
    text, match = BROKEN_CONFIGS[name]
    (tmp_path / name).write_text(text)
    code, err = _main(capsys, "train", "--config", str(tmp_path / name), "--workdir", str(tmp_path / "w"))
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert re.search(match, err) and name in err
    assert not (tmp_path / "w").exists()


def test_paths_that_are_files_and_section_overrides(capsys, trained, tmp_path):
    workdir, _ = trained
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, err = _main(capsys, "train", "--config.model=5", "--workdir", str(tmp_path / "w"))
    assert code == 2 and "--config.model is a section" in err and "Traceback" not in err
    code, err = _main(capsys, "train", "--workdir", str(afile))
    assert code == 2 and "is a file" in err and str(afile) in err
    code, err = _main(capsys, "evaluate", "--workdir", str(afile))
    assert code == 2 and "is a file" in err and "does not exist" not in err
    code, err = _main(capsys, "evaluate", "--workdir", str(workdir), "--output", str(afile))
    assert code == 2 and "--output" in err and "is a file" in err
    image = tmp_path / "in.png"
    iio.imwrite(image, np.zeros((40, 40), np.uint8))
    code, err = _main(capsys, "predict", "--workdir", str(workdir), "--input", str(image),
                      "--output", str(afile / "sub"))
    assert code == 2 and "--output" in err and "is a file" in err
    assert afile.read_text() == "x"


def test_full_disk_is_one_line_and_internal_bugs_keep_their_traceback(capsys, trained, tmp_path, monkeypatch):
    import errno

    from unet_jax import predict
    workdir, _ = trained
    image = tmp_path / "in.png"
    iio.imwrite(image, np.zeros((40, 40), np.uint8))

    def full(path, array, *rest):           # rest: the pixel size and axes predict passes
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(predict, "write_tiff", full)
    code, err = _main(capsys, "predict", "--workdir", str(workdir), "--input", str(image),
                      "--output", str(tmp_path / "o"))
    assert code == 2 and "no space left" in err and "in_prob.tif" in err and "Traceback" not in err

    def bug(*a, **k):
        raise TypeError("an internal bug")

    monkeypatch.setattr(predict, "write_tiff", bug)
    with pytest.raises(TypeError, match="an internal bug"):   # not a usage error: not hidden as one
        cli.main(["predict", "--workdir", str(workdir), "--input", str(image), "--output", str(tmp_path / "o2")])


def test_damaged_checkpoints_are_one_line_with_a_hint(trained, tmp_path):
    import shutil
    workdir, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    for data in (copy / "checkpoints").glob("*/variables/ocdbt.process_0/d/*"):
        data.write_bytes(b"\x7f" * data.stat().st_size)
    r = run_cli("evaluate", "--workdir", str(copy), "--no-images")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("unet-jax: error: no checkpoint in") and "train again" in lines[-1]
    assert "Traceback" not in r.stderr and "Event loop is closed" not in r.stderr
    assert all(line.startswith("unet-jax: ") for line in lines), lines    # warnings one line each too
    r = run_cli("evaluate", "--workdir", str(copy), "--no-images", "--step", "12")
    assert r.returncode == 2 and "try another --step" in r.stderr and "Traceback" not in r.stderr


def test_version(capsys, monkeypatch):
    import importlib.metadata

    import unet_jax
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert re.fullmatch(r"unet-jax \d+\.\d+\.\S+\n", capsys.readouterr().out)

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)   # not installed: the package's own version
    assert cli.package_version() == unet_jax.__version__


def test_config_show_prints_every_field(capsys, tiny):
    from unet_jax.config import base_config
    assert cli.main(["config", "show"]) == 0
    lines = capsys.readouterr().out.splitlines()
    base = base_config()
    assert len(lines) == sum(len(base[s]) if hasattr(base[s], "keys") else 1 for s in base)
    assert "train.num_steps = 10000" in lines and "data.name = 'synthetic_cells'" in lines and "seed = 0" in lines
    assert cli.main(["config", "show", "--config", str(tiny / "tiny.py"), "--config.train.num_steps=7",
                     "--config.data.target", "contours", "--config.model.num_classes=3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "train.num_steps = 7" in lines and "data.target = 'contours'" in lines
    folder = str(Path(__file__).resolve().parents[1] / "experiments" / "folder.py")
    code, err = _main(capsys, "config", "show", "--config", folder)        # the data folder comes at train time
    assert code == 0 and "--config.data.root=FOLDER" in err
    code, err = _main(capsys, "config", "show", "--config.train.num_steps=0")      # checked as train checks it
    assert code == 2 and err.startswith("unet-jax: error: config.train.num_steps") and "Traceback" not in err


def test_every_argument_has_help():
    import argparse

    def walk(parser, name):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    yield from walk(subparser, f"{name} {sub}")
            elif not isinstance(action, argparse._HelpAction):
                yield name, action

    missing = [f"{name} {'/'.join(a.option_strings) or a.dest}" for name, a in walk(cli.build_parser(), "unet-jax")
               if not a.help]
    assert not missing
    r = run_cli("predict", "--help")
    assert r.returncode == 0 and "a workdir written by" in r.stdout and "checkpoint step" in r.stdout


@pytest.mark.parametrize("error, code", [("InvalidInputError", 2), ("OSError", 2), ("DivergenceError", 2),
                                         ("ValueError", None), ("KeyError", None), ("TypeError", None)])
def test_only_user_and_run_errors_are_one_line(capsys, monkeypatch, error, code):
    """Invalid input, files and the run's own errors: one line, exit 2; a plain ValueError, KeyError or TypeError
    is a bug and keeps its traceback (raised out of main: exit 1 from the console script)."""
    import builtins

    from unet_jax.checks import InvalidInputError
    from unet_jax.train import DivergenceError
    kind = {"InvalidInputError": InvalidInputError, "DivergenceError": DivergenceError}.get(error) or \
        getattr(builtins, error)

    def fail(config):
        raise kind("what went wrong")

    monkeypatch.setattr(cli, "validate", fail)
    if code is None:
        with pytest.raises(kind, match="what went wrong"):
            cli.main(["config", "show"])
    else:
        got, err = _main(capsys, "config", "show")
        assert got == code and err == "unet-jax: error: what went wrong\n"
