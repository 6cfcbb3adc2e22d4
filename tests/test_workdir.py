"""unet_jax.workdir: config.json, the lock, the resume check and restoring a run's network (restore_params)."""
import warnings

import ml_collections
import numpy as np
import pytest

from unet_jax import checkpoint as ck
from unet_jax import workdir as wd
from unet_jax.checks import InvalidInputError
from test_checkpoint import _assert_tree_equal, _big, _corrupt, _flip_bytes, _toy


def _workdir(tmp_path, best_mode="min"):
    config = ml_collections.ConfigDict({"model": {"features": 4}, "train": {"best_metric": "pixel_mismatch",
                                                                            "best_mode": best_mode}})
    wd.save_config(config, tmp_path)
    saved = {}
    with ck.Checkpoints(ck.checkpoint_dir(tmp_path), keep=3, best_metric="pixel_mismatch", best_mode=best_mode) as c:
        for s, pe in ((1, 0.3), (2, 0.1), (3, 0.2)):
            v, t = _toy(s)
            v["batch_stats"] = {"mean": np.full((4,), s, np.float32)}
            c.save(s, v, t, metrics={"pixel_mismatch": pe})
            saved[s] = v
    return config, saved


def test_restore_params_best_explicit_and_config(tmp_path):
    config, saved = _workdir(tmp_path)
    variables, cfg, _ = wd.restore_params(tmp_path)
    assert set(variables) == {"params", "batch_stats"}          # no optimizer state
    _assert_tree_equal(variables, saved[2])                       # best pixel error
    assert cfg.to_dict() == config.to_dict()
    variables, _, _ = wd.restore_params(tmp_path, step=3)
    _assert_tree_equal(variables, saved[3])
    with pytest.raises(InvalidInputError, match="step must be one of"):
        wd.restore_params(tmp_path, step=7)


def test_restore_params_corrupt_best_falls_back(tmp_path):
    _, saved = _workdir(tmp_path)
    _corrupt(ck.checkpoint_dir(tmp_path) / "2")
    with pytest.warns(RuntimeWarning, match="step 2"):
        variables, _, _ = wd.restore_params(tmp_path)
    _assert_tree_equal(variables, saved[3])                       # then newest first


def test_changed_bytes_are_caught_by_the_checksum(tmp_path):
    """Bytes changed on disk (same size) used to load silently as other weights: the SHA-256 saved with each
    step catches it; the best step falls back to the next with a warning, an explicit step is a clear error."""
    wd.save_config(ml_collections.ConfigDict({"train": {"best_metric": "iou", "best_mode": "max"}}), tmp_path)
    with ck.Checkpoints(ck.checkpoint_dir(tmp_path), best_metric="iou", best_mode="max") as c:
        for s, iou in ((1, 0.5), (2, 0.9), (3, 0.7)):
            c.save(s, *_big(s), metrics={"iou": iou})
    _flip_bytes(ck.checkpoint_dir(tmp_path) / "2")
    with pytest.warns(RuntimeWarning, match="step 2 .*checksum"):
        variables, _, step = wd.restore_params(tmp_path)
    assert step == 3
    _assert_tree_equal(variables, _big(3)[0])
    with pytest.raises(ck.CheckpointRestoreError, match=r"step 2 .*checksum.*try another --step: .*\[1, 3\]"):
        wd.restore_params(tmp_path, step=2)
    _flip_bytes(ck.checkpoint_dir(tmp_path) / "3", ck.TRAIN)      # the optimizer state is checked when resuming
    with ck.Checkpoints(ck.checkpoint_dir(tmp_path)) as c:
        with pytest.warns(RuntimeWarning, match="step 3 .*train arrays"):
            step, restored = c.restore_with_fallback([3, 1], *_big(0))
    assert step == 1
    _assert_tree_equal(restored[ck.TRAIN], _big(1)[1])


def test_restore_params_bad_workdir(tmp_path):
    with pytest.raises(InvalidInputError, match="config.json"):
        wd.restore_params(tmp_path)
    wd.save_config(ml_collections.ConfigDict({"train": {"best_metric": "loss"}}), tmp_path)
    with pytest.raises(InvalidInputError, match="checkpoints"):
        wd.restore_params(tmp_path)


def test_broken_config_json_is_named(tmp_path):
    (tmp_path / "config.json").write_text('{"model": ')
    with pytest.raises(InvalidInputError, match=r"config.json is not valid JSON"):
        wd.load_config(tmp_path)
    (tmp_path / "config.json").write_text('[1, 2]')
    with pytest.raises(InvalidInputError, match=r"config.json holds a list, not a config"):
        wd.load_config(tmp_path)


def test_config_round_trip(tmp_path):
    from unet_jax.config import base_config
    config = base_config()
    config.model.features = 8
    wd.save_config(config, tmp_path)
    assert wd.load_config(tmp_path).to_dict() == config.to_dict()


def test_save_config_refuses_other_objects(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidInputError, match="config"):
            wd.save_config("not a config", tmp_path)


def test_lock_is_exclusive_and_released_on_close(tmp_path):
    held = wd.lock_workdir(tmp_path)
    with pytest.raises(InvalidInputError, match=r"in use by another train process \(pid \d+\)"):
        wd.lock_workdir(tmp_path)
    held.close()
    wd.lock_workdir(tmp_path).close()


def test_config_changes_leave_out_run_control_and_new_fields():
    old = {"train": {"num_steps": 10, "batch_size": 2}, "model": {"features": 4}, "eval": {"object_area": 3.0}}
    new = {"train": {"num_steps": 20, "batch_size": 4, "new_field": 1}, "model": {"features": 4},
           "eval": {"object_area": 5.0}}
    assert wd.config_changes(old, new) == [("train.batch_size", 2, 4)]
