"""The command line used carelessly or against its grain (issue 26): a workdir whose config.json names another
network width, inputs and output folders it cannot use, two runs into one folder, config files that exit, a sweep
whose last variant fails, a full disk. Each ends in one line and exit code 2 (or a warning), never a traceback,
never exit 0 after dropping data. In-process (``cli.main``) on one tiny trained workdir."""
import errno
import fcntl
import json
import logging
import os
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from tiny_config import tiny_config  # tests/tiny_config.py
from unet_jax import checkpoint as ck
from unet_jax import cli, predict
from unet_jax import io
from unet_jax.workdir import lock_workdir



def _main(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line(err):
    """One error line, the last one, and no traceback (progress bars and warnings may come before it)."""
    lines = [line for line in err.splitlines() if line.startswith("unet-jax: error: ")]
    return len(lines) == 1 and err.rstrip().endswith(lines[0]) and "Traceback" not in err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("misuse")
    (root / "tiny.py").write_text(tiny_config(root / "tfds", num_steps=4, log_every=2, every=4, warmup=1))
    assert cli.main(["train", "--config", str(root / "tiny.py"), "--workdir", str(root / "run")]) == 0
    return root


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "in.png"
    iio.imwrite(path, np.random.default_rng(0).integers(0, 255, (40, 44), np.uint8))
    return path


def test_checkpoint_of_another_width_is_one_line(capsys, tiny, tmp_path, image):
    """config.json says features 8, the checkpoint holds features 4: evaluate, predict and export say which
    fields disagree (exit 2), not a flax shape traceback."""
    work = tmp_path / "run"
    shutil.copytree(tiny / "run", work)
    config = json.loads((work / "config.json").read_text())
    config["model"]["features"] = 8
    (work / "config.json").write_text(json.dumps(config))
    for argv in (("evaluate", "--workdir", work, "--no-images"),
                 ("predict", "--workdir", work, "--input", image, "--output", tmp_path / "o"),
                 ("export", "--workdir", work, "--format", "stablehlo", "--output", tmp_path / "x.stablehlo")):
        code, _, err = _main(capsys, *argv)
        assert code == 2 and _one_line(err), err
        assert "model.features is 8 there, 4 in the checkpoint" in err and "config.json" in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "x.stablehlo").exists()
    # train with a config that matches the edited config.json: the checkpoints still hold the other network
    code, _, err = _main(capsys, "train", "--config", tiny / "tiny.py", "--workdir", work, "--config.model.features=8")
    assert code == 2 and _one_line(err) and "hold another network than the config (model.features is 8" in err


def test_predict_refuses_pages_of_different_sizes(capsys, tiny, tmp_path, image):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(image, folder / "a.png")
    with tifffile.TiffWriter(folder / "p.tif") as w:
        for shape in ((64, 64), (96, 80), (64, 64)):
            w.write(np.zeros(shape, np.uint8), photometric="minisblack")
    code, out, err = _main(capsys, "predict", "--workdir", tiny / "run", "--input", folder, "--output",
                           tmp_path / "o")
    assert code == 2 and "Traceback" not in err and "wrote" not in out
    assert "1 of 2 input file(s) could not be read" in err and "p.tif holds 3 pages of different sizes" in err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a_labels.tif", "a_overlay.png", "a_prob.tif"]


def test_predict_checks_the_output_folder_first(capsys, tiny, tmp_path, image, monkeypatch):
    """An output folder it cannot write to: one line naming it, before the model is loaded."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:      # root writes anywhere: simulate what everyone else meets
        def denied(directory):
            raise PermissionError(errno.EACCES, "Permission denied", str(directory))
        monkeypatch.setattr(io, "_probe_write", denied)

    def never(*a, **k):
        raise AssertionError("the model was loaded before the output folder was checked")
    monkeypatch.setattr(predict, "load_model", never)
    try:
        code, _, err = _main(capsys, "predict", "--workdir", tiny / "run", "--input", image, "--output", folder)
    finally:
        folder.chmod(0o755)
    assert code == 2 and _one_line(err) and "cannot write in" in err and str(folder) in err


def test_predict_reruns_and_concurrent_runs(capsys, tiny, tmp_path, image):
    """A rerun into its own output folder names its earlier outputs as such; a second predict writing into a
    folder at the same time is refused (they would overwrite each other's files)."""
    out = tmp_path / "o"
    code, stdout, _ = _main(capsys, "predict", "--workdir", tiny / "run", "--input", image, "--output", out)
    assert code == 0 and "wrote 3 files" in stdout
    code, _, err = _main(capsys, "predict", "--workdir", tiny / "run", "--input", image, "--output", out)
    assert code == 2 and _one_line(err) and "from an earlier predict run" in err and "did not write" not in err
    fd = os.open(out, os.O_RDONLY)            # what a running predict holds
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        code, _, err = _main(capsys, "predict", "--workdir", tiny / "run", "--input", image, "--output", out,
                             "--overwrite")
    finally:
        os.close(fd)
    assert code == 2 and _one_line(err) and "being written by another unet-jax predict" in err
    (tmp_path / "bad.png").write_bytes(b"not a png")
    code, _, err = _main(capsys, "predict", "--workdir", tiny / "run", "--input", tmp_path / "bad.png",
                         "--output", tmp_path / "new")
    assert code == 2 and "bad.png" in err
    assert not (tmp_path / "new").exists()     # a run that wrote nothing leaves no empty output folder behind


def test_predict_warns_about_a_blank_image(capsys, caplog, tiny, tmp_path):
    tifffile.imwrite(tmp_path / "blank.tif", np.full((40, 40), 700, np.uint16))
    with caplog.at_level(logging.WARNING):
        code, _, err = _main(capsys, "predict", "--workdir", tiny / "run", "--input", tmp_path / "blank.tif",
                             "--output", tmp_path / "o")
    assert code == 0 and "blank.tif: the image is blank (every pixel the same value)" in caplog.text


def test_augment_preview_into_a_folder(capsys, tiny, tmp_path):
    code, out, err = _main(capsys, "augment-preview", "--config", tiny / "tiny.py", "--output", tmp_path, "-n", 2)
    assert code == 0, err
    assert (tmp_path / "augment_preview.png").is_file() and str(tmp_path / "augment_preview.png") in out
    code, _, err = _main(capsys, "augment-preview", "--config", tiny / "tiny.py", "--output", tmp_path / "a.jpg")
    assert code == 2 and _one_line(err) and "must name a .png file or a folder" in err


@pytest.mark.parametrize("text, expected", [
    ("import sys\nsys.exit(0)\n", "exits.py' called sys.exit(0) at line 2 while it was loaded"),
    ("import sys\n\n\ndef get_config():\n    sys.exit(0)\n", "exits.py' called sys.exit(0) at line 5; it must return")])
def test_config_file_that_exits_is_an_error_not_success(capsys, tmp_path, text, expected):
    (tmp_path / "exits.py").write_text(text)
    code, _, err = _main(capsys, "train", "--config", tmp_path / "exits.py", "--workdir", tmp_path / "w")
    assert code == 2 and _one_line(err) and expected in err, err
    assert not (tmp_path / "w").exists()


def test_ablate_keeps_and_reports_the_runs_before_a_failing_one(capsys, tiny, tmp_path):
    """Variant c diverges (learning rate 1e30, no rollbacks): a and b are trained, tabulated and kept; the
    command says which run failed (exit 2); running it again would skip a and b."""
    (tmp_path / "sweep.py").write_text(
        f"import sys\nsys.path.insert(0, {str(tiny)!r})\nfrom tiny import get_config  # noqa: F401\nSEEDS = 1\n\n\n"
        "def get_sweep():\n    return {'a': {}, 'b': {'weights.w0': 0.0},\n"
        "            'c': {'optimizer.learning_rate': 1e30, 'train.max_rollbacks': 0}}\n")
    code, out, err = _main(capsys, "ablate", "--config", tmp_path / "sweep.py", "--workdir", tmp_path / "s")
    assert code == 2 and _one_line(err), err
    assert "1 of 3 run(s) of the sweep failed (c seed 0: NonFiniteLossError" in err
    assert "| a | 1 |" in out and "| b | 1 |" in out and "| c |" not in out
    for name in ("a", "b"):
        assert (tmp_path / "s" / name / "seed_0" / "final_metrics.json").is_file()
    assert not (tmp_path / "s" / "c" / "seed_0" / "final_metrics.json").exists()


def test_second_ablate_in_one_workdir_is_refused(capsys, tiny, tmp_path):
    (tmp_path / "sweep.py").write_text(
        f"import sys\nsys.path.insert(0, {str(tiny)!r})\nfrom tiny import get_config  # noqa: F401\nSEEDS = 1\n\n\n"
        "def get_sweep():\n    return {'a': {}}\n")
    (tmp_path / "s").mkdir()
    with lock_workdir(tmp_path / "s", "ablate", ".ablate.lock"):     # as a running sweep holds it
        code, _, err = _main(capsys, "ablate", "--config", tmp_path / "sweep.py", "--workdir", tmp_path / "s")
    assert code == 2 and _one_line(err) and "in use by another ablate process" in err
    assert not (tmp_path / "s" / "a").exists()


def test_full_disk_during_train_is_one_line_naming_the_folder(capsys, tiny, tmp_path, monkeypatch):
    """orbax reports a full disk as 'RESOURCE_EXHAUSTED' from its save threads (a traceback per thread): one line
    naming the checkpoint folder instead."""
    def full(self, *a, **k):
        raise ValueError('RESOURCE_EXHAUSTED: Error writing "params.head.kernel/0" in OCDBT database at local file '
                         '"/x/checkpoints/4.orbax-checkpoint-tmp/": Failed writing: No space left on device')
    monkeypatch.setattr(ck.ocp.CheckpointManager, "wait_until_finished", full)
    record = logging.LogRecord("absl", logging.ERROR, "/site-packages/orbax/checkpoint/_src/futures/future.py", 1,
                               "_SignalingThread.run() raised an exception", None, None)
    assert not ck._BackgroundNoise().filter(record)          # dropped: the main thread reports the error once
    code, _, err = _main(capsys, "train", "--config", tiny / "tiny.py", "--workdir", tmp_path / "w")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"unet-jax: error: no space left on the device while writing "
                                            f"{tmp_path / 'w' / 'checkpoints'}; free space there or choose another "
                                            f"folder (--workdir, --output)")
