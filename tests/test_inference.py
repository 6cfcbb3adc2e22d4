"""unet_jax.inference: the one prediction path and the one evaluator of validation and `unet-jax evaluate`."""
import functools

import jax
import ml_collections
import numpy as np
import pytest

from unet_jax import metrics, tiling
from unet_jax.model import create_model
from unet_jax.step import create_train_state
from unet_jax.config import base_config
from unet_jax.inference import evaluate_examples, predict_probabilities


@pytest.mark.parametrize("padding, tile", [("VALID", 60), ("SAME", 32)])
def test_predict_probabilities_matches_tiling(padding, tile):
    """The validation predictor (parameters as an argument) equals unet_jax.tiling.predict_tiled."""
    c = base_config()
    c.model.update(features=4, depth=2, padding=padding, dropout_rate=0.0)
    model = create_model(c)
    state = create_train_state(jax.random.PRNGKey(0), c, model, 1)
    image = np.random.default_rng(0).uniform(size=(50, 70, 1)).astype(np.float32)
    got = predict_probabilities(model, state.variables(), image, ml_collections.ConfigDict(dict(tile_size=tile, batch_size=3)))
    want = tiling.predict_tiled(functools.partial(model.apply, state.variables()), image, tile, depth=2,
                                padding=padding, batch_size=3)
    assert got.shape == (50, 70, 2)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


def _examples(rng):
    out = []
    for i in range(2):
        inst = np.zeros((48, 56), np.int32)
        inst[4:20, 6:30], inst[24:44, 10:50] = 1, 2
        image = (inst > 0).astype(np.float32)[..., None] * 0.6 + rng.uniform(0, 0.3, (48, 56, 1)).astype(np.float32)
        out.append({"image": image, "instances": inst, "weights": np.ones((48, 56), np.float32),
                    "name": f"ex{i}", "labelled": True})
    out.append(dict(out[0], name="unlabelled", instances=np.zeros((48, 56), np.int32), labelled=False))
    return out


def test_evaluator_pools_and_sweeps_consistently():
    """Validation (one threshold) and evaluate (sweep) share every measure they both report; the per-image
    rows are metrics.threshold_metrics of the predicted probabilities; unlabelled images are predicted, not scored."""
    c = base_config()
    c.model.update(features=4, depth=2, dropout_rate=0.0)
    c.eval.update(tile_size=60, batch_size=2)
    c.data.name = "isbi2012"                      # the challenge measures at eval.threshold in validation
    model = create_model(c)
    variables = create_train_state(jax.random.PRNGKey(0), c, model, 1).variables()
    examples = _examples(np.random.default_rng(0))
    seen = []
    valid, rows = evaluate_examples(model, variables, examples, c, on_prediction=lambda ex, p: seen.append(
        ex["name"]))
    swept, swept_rows = evaluate_examples(model, variables, examples, c, sweep=True)
    assert seen == ["ex0", "ex1", "unlabelled"] and rows[2] == {"name": "unlabelled"}
    for key in ("loss", "pixel_mismatch", "iou", "trivial_iou", "foreground_fraction"):
        assert valid[key] == pytest.approx(swept[key], abs=1e-12), key
    assert valid["iou"] == pytest.approx(np.mean([r["iou"] for r in rows[:2]]))
    assert "pixel_error_threshold" in swept and "pixel_error_threshold" not in valid
    assert swept["rand_error"] <= valid["rand_error"] + 1e-12      # the sweep includes eval.threshold
    probs = predict_probabilities(model, variables, examples[1]["image"], c.eval)
    want = metrics.threshold_metrics(probs[..., 1], examples[1]["instances"], c.eval.threshold)
    assert {k: rows[1][k] for k in want} == pytest.approx(want)
    assert set(swept_rows[1]) > set(rows[1])                        # plus the image's own isbi2012
    with pytest.raises(ValueError, match="non-empty"):
        evaluate_examples(model, variables, [], c)
