"""The own-data recipe (experiments/folder.py) at a tiny width: a rare foreground is learned, the kept checkpoint
is chosen by a measure an empty prediction cannot win, and a model that learned nothing is called so."""
import importlib.util
import logging
from pathlib import Path

import imageio.v3 as iio
import jax
import ml_collections
import numpy as np
import pytest

from unet_jax import checkpoint as ck
from unet_jax import train
from unet_jax.model import create_model
from unet_jax.workdir import restore_params
from unet_jax.data import load_split
from unet_jax.inference import evaluate_examples

REPO = Path(__file__).resolve().parents[1]


def folder_config():
    spec = importlib.util.spec_from_file_location("folder_experiment", REPO / "experiments" / "folder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _rare_folder(root: Path, n=8, size=96, seed=0) -> float:
    """Textured images with two or three small bright-rimmed blobs each: about 5% foreground, 0/255 PNG masks."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    fractions = []
    for i in range(n):
        mask = np.zeros((size, size), bool)
        for _ in range(rng.integers(2, 4)):
            cy, cx = rng.integers(10, size - 10, 2)
            mask |= np.hypot(yy - cy, xx - cx) < rng.uniform(4, 6)
        image = 0.35 + 0.1 * rng.standard_normal((size, size)) + 0.35 * mask
        iio.imwrite(root / "images" / f"im{i}.png", (np.clip(image, 0, 1) * 255).astype(np.uint8))
        iio.imwrite(root / "masks" / f"im{i}.png", mask.astype(np.uint8) * 255)
        fractions.append(mask.mean())
    return float(np.mean(fractions))


def tiny(config, root, data_dir):
    """The recipe as it is, only narrower, smaller and shorter (what the tests can afford on 2 cores)."""
    config.data.update(root=str(root), data_dir=str(data_dir), validation_fraction=0.25)
    config.model.update(features=8, depth=2)
    config.train.update(tile_size=64, num_steps=150, eval_every=50, checkpoint_every=50, log_every=25)
    config.optimizer.warmup_steps = 10
    config.eval.tile_size = 64
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recipe")
    fraction = _rare_folder(tmp / "data")
    assert 0.02 < fraction < 0.08
    config = tiny(folder_config(), tmp / "data", tmp / "tfds")
    result = train.train_and_evaluate(config, tmp / "w")
    return config, result, tmp / "w"


def test_default_recipe_learns_a_rare_foreground(trained):
    config, result, _ = trained
    assert result["validation_iou"] > result["validation_trivial_iou"] + 0.3, result
    assert result["validation_foreground_fraction"] < 0.1            # trivial = all background, or 5% all-fg
    assert result["best_validation"]["iou"] == max(result["best_validation"]["iou"], result["validation_iou"])


def test_selection_never_keeps_an_all_background_checkpoint(trained, tmp_path):
    """The same model made to predict nothing (output bias) has a lower pixel mismatch on a 5% foreground, but
    the recipe's measure (foreground IoU, higher is better) keeps the learned one."""
    config, _, workdir = trained
    variables, _, _ = restore_params(workdir)
    model = create_model(config)
    val = load_split(config.data, config.weights, "validation")
    empty = jax.tree_util.tree_map(lambda x: x, variables)
    empty["params"]["head"]["bias"] = np.array([50.0, -50.0], np.float32)
    m_learned = evaluate_examples(model, variables, val, config)[0]
    m_empty = evaluate_examples(model, empty, val, config)[0]
    assert m_empty["iou"] == 0.0 and m_empty["iou"] <= m_empty["trivial_iou"]
    assert config.train.best_metric == "iou" and config.train.best_mode == "max"
    for metric, mode, keep_learned in ((config.train.best_metric, config.train.best_mode, True),
                                       ("pixel_mismatch", "min", m_empty["pixel_mismatch"] >
                                        m_learned["pixel_mismatch"])):
        with ck.Checkpoints(tmp_path / metric, keep=1, best_metric=metric, best_mode=mode) as c:
            for step, (v, m) in enumerate(((variables, m_learned), (empty, m_empty)), start=1):
                c.save(step, v, {"step": np.int32(step)}, metrics=m)
            c.wait()
            assert (c.best_step() == 1) == keep_learned


def test_a_model_that_learned_nothing_says_so(trained, tmp_path, caplog, capsys):
    """Validation warns when the model does not beat all-background / all-foreground, and the train command's
    summary says so and names the next command."""
    from unet_jax.cli import _print_train_summary
    config = ml_collections.ConfigDict(trained[0].to_dict())
    config.optimizer.learning_rate = 1e-9                         # learns nothing in 150 steps
    with caplog.at_level(logging.WARNING, logger="unet_jax.train"):
        result = train.train_and_evaluate(config, tmp_path / "w")
    assert result["trivial_warnings"] == 3
    assert "does not beat the trivial prediction" in caplog.text
    _print_train_summary(config, tmp_path / "w", result)
    out = capsys.readouterr().out
    assert "kept checkpoint: step" in out and "learned nothing useful" in out
    assert f"unet-jax predict --workdir {tmp_path / 'w'}" in out


def test_predict_warns_when_an_image_gets_no_foreground(trained, tmp_path, caplog):
    from unet_jax.predict import predict_paths
    _, _, workdir = trained
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(5)
    blank = (np.clip(0.35 + 0.1 * rng.standard_normal((80, 72)), 0, 1) * 255).astype(np.uint8)   # no blobs
    iio.imwrite(tmp_path / "in" / "blank.png", blank)
    with caplog.at_level(logging.WARNING, logger="unet_jax.predict"):
        written = predict_paths(workdir, tmp_path / "in", tmp_path / "out")
    assert len(written) == 3
    assert "blank.png: no foreground predicted" in caplog.text
