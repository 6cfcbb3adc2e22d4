"""The cell-tracking experiment configs (experiments/phc_u373.py, experiments/dic_hela.py) end to end on tiny
synthetic stand-ins in the Cell Tracking Challenge layout (scripts/make_ctc_standin.py): `unet-jax train` then
`unet-jax evaluate`, in-process so both runs share one compiled train step."""
import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from unet_jax import cli
from unet_jax.config import resolve_config
from unet_jax.geometry import output_size, valid_input_size

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_ctc_standin", REPO / "scripts" / "make_ctc_standin.py")
ctc_standin = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ctc_standin)

DEPTH = 2
TRAIN_TILE = valid_input_size(40, DEPTH)      # 80 -> 40
EVAL_TILE = valid_input_size(56, DEPTH)       # 96 -> 56: 2 x 2 tiles per 96-pixel image
CASES = {  # config file, builder config, folder, stand-in size
    "phc_u373": ("phc_u373.py", "phc_c2dh_u373", "PhC-C2DH-U373", (96, 96)),
    "dic_hela": ("dic_hela.py", "dic_c2dh_hela", "DIC-C2DH-HeLa", (96, 96)),
}
TINY = {"model.features": 4, "model.depth": DEPTH, "train.tile_size": TRAIN_TILE, "train.batch_size": 2,
        "train.num_steps": 6, "train.log_every": 3, "train.eval_every": 3, "train.checkpoint_every": 3,
        "eval.tile_size": EVAL_TILE, "eval.batch_size": 4}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both configs trained on a tiny stand-in (2 sequences x 4 frames, 3 of them annotated) and evaluated."""
    base = tmp_path_factory.mktemp("ctc_experiments")
    results = {}
    for short, (config, _, folder, size) in CASES.items():
        data = ctc_standin.write_ctc_standin(base / "data", folder, num_sequences=2, frames=4, annotated=3,
                                             size=size, seed=1)
        workdir = base / short
        args = ["train", "--config", str(REPO / "experiments" / config), f"--config.data.root={data}",
                f"--config.data.data_dir={base / 'tfds'}", "--workdir", str(workdir)]
        args += [f"--config.{k}={v}" for k, v in TINY.items()]
        train_code = cli.main(args)
        eval_code = cli.main(["evaluate", "--workdir", str(workdir)])
        results[short] = dict(data=data, workdir=workdir, train_code=train_code, eval_code=eval_code)
    return base, results


@pytest.mark.parametrize("short", sorted(CASES))
def test_config_trains_and_evaluates_on_standin(runs, short):
    base, results = runs
    r = results[short]
    config_file, builder_config, folder, _ = CASES[short]
    assert r["train_code"] == 0 and r["eval_code"] == 0
    # The experiment's own settings reached the run, with the ctc builder on the stand-in.
    config = json.loads((r["workdir"] / "config.json").read_text())
    assert config["data"]["name"] == "ctc" and config["data"]["builder_config"] == builder_config
    assert config["data"]["root"] == str(r["data"]) and r["data"].name == folder
    assert config["weights"]["w0"] == 10.0 and config["weights"]["sigma"] == 5.0
    assert config["model"]["features"] == 4 and config["model"]["depth"] == DEPTH
    assert len(list((base / "tfds" / "ctc").glob(f"{builder_config}-*"))) == 1   # prepared by that config
    # Training validated on the held-out frames.
    records = [json.loads(line) for line in (r["workdir"] / "metrics.jsonl").read_text().splitlines() if line]
    assert sorted(rec["step"] for rec in records if rec.get("split") == "validation") == [3, 6]
    # evaluate: one row per validation frame (the last annotated frame, t003, of each sequence), the mean, and
    # the challenge measures of all frames pooled as a stack.
    rows = list(csv.DictReader(open(r["workdir"] / "eval_validation" / "metrics.csv")))
    assert [row["name"] for row in rows] == ["01/t003", "02/t003", "mean", "stack"]
    iou = [float(row["iou"]) for row in rows[:3]]
    assert all(0.0 <= v <= 1.0 for v in iou)
    assert iou[-1] == pytest.approx(np.mean(iou[:-1]), abs=1e-9)
    # Same frame number in both sequences: one probability map each, not one overwriting the other.
    assert sorted(p.name for p in (r["workdir"] / "eval_validation").glob("*_prob.tif")) == [
        "01_t003_prob.tif", "02_t003_prob.tif"]


def test_standin_layout_dtypes_and_determinism(tmp_path):
    phc = ctc_standin.write_ctc_standin(tmp_path / "a", "phc_c2dh_u373", num_sequences=2, frames=5, annotated=3,
                                        size=(32, 40))
    assert phc == tmp_path / "a" / "PhC-C2DH-U373"
    assert sorted(p.name for p in phc.iterdir()) == ["01", "01_GT", "02", "02_GT"]
    assert sorted(p.name for p in (phc / "02").iterdir()) == [f"t{t:03d}.tif" for t in range(5)]
    assert sorted(p.name for p in (phc / "02_GT" / "SEG").iterdir()) == ["man_seg000.tif", "man_seg002.tif",
                                                                         "man_seg004.tif"]
    frame = tifffile.imread(phc / "01" / "t002.tif")
    mask = tifffile.imread(phc / "01_GT" / "SEG" / "man_seg002.tif")
    assert frame.dtype == np.uint16 and frame.shape == (32, 40) and frame.max() > 255
    assert mask.dtype == np.uint16 and mask.shape == (32, 40)
    ids = np.unique(mask)
    np.testing.assert_array_equal(ids, np.arange(ids.size))          # 0 and 1..K without gaps
    hela = ctc_standin.write_ctc_standin(tmp_path / "a", "DIC-C2DH-HeLa", num_sequences=1, frames=2, size=24)
    assert tifffile.imread(hela / "01" / "t000.tif").dtype == np.uint8
    assert (hela / "01_GT" / "SEG" / "man_seg001.tif").exists() and not (hela / "02").exists()
    # Same arguments -> same files; another seed -> other files.
    again = ctc_standin.write_ctc_standin(tmp_path / "b", "phc_c2dh_u373", num_sequences=2, frames=5,
                                          annotated=3, size=(32, 40))
    np.testing.assert_array_equal(tifffile.imread(again / "01" / "t002.tif"), frame)
    other = ctc_standin.write_ctc_standin(tmp_path / "c", "phc_c2dh_u373", num_sequences=1, frames=3, size=(32, 40),
                                          seed=5)
    assert not np.array_equal(tifffile.imread(other / "01" / "t002.tif"), frame)


def test_standin_bad_arguments(tmp_path):
    write = ctc_standin.write_ctc_standin
    for kwargs, text in [(dict(name="hela"), "name must be one of"), (dict(frames=0), "frames must be"),
                         (dict(frames=2, annotated=3), "annotated must be at most frames"),
                         (dict(size=8), "size must be"), (dict(size=(16, 16, 16)), "size must be"),
                         (dict(num_sequences=True), "num_sequences must be"), (dict(seed=-1), "seed must be")]:
        args = dict(name="phc_c2dh_u373", frames=2, size=16) | kwargs
        with pytest.raises(ValueError, match=text):
            write(tmp_path, **args)
    path = write(tmp_path, "phc_c2dh_u373", num_sequences=1, frames=2, size=16)
    with pytest.raises(ValueError, match="already holds files"):
        write(tmp_path, "phc_c2dh_u373", num_sequences=1, frames=2, size=16)
    write(tmp_path, "phc_c2dh_u373", num_sequences=1, frames=1, size=16, overwrite=True)
    assert sorted(p.name for p in (path / "01").iterdir()) == ["t000.tif"]      # the old frames are gone


def test_standin_command_line_prints_runnable_commands(tmp_path, capsys):
    assert ctc_standin.main(["--out", str(tmp_path), "--frames", "2", "--annotated", "1", "--size", "20"]) == 0
    out = capsys.readouterr().out
    for short, (config, _, folder, _) in CASES.items():
        assert (tmp_path / folder / "01_GT" / "SEG" / "man_seg000.tif").exists()
        train = [line for line in out.splitlines() if line.startswith("unet-jax train")
                 and f"experiments/{config}" in line and "_cpu" in line]
        assert len(train) == 1 and f"--config.data.root={tmp_path / folder}" in train[0]
        # The printed CPU-sized command is a valid config (tile sizes, keys, values).
        rest, overrides = cli.split_overrides(train[0].split()[2:])
        config_path = REPO / rest[rest.index("--config") + 1]
        c = resolve_config(str(config_path), overrides)
        assert c.data.name == "ctc" and c.data.builder_config == CASES[short][1]
        assert output_size(c.train.tile_size, c.model.depth) >= 64      # a useful output tile, not a few pixels
    assert ctc_standin.main(["--out", str(tmp_path), "--frames", "2", "--size", "20"]) == 2   # exists already
