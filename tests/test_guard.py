"""Divergence guard (unet_jax.guard) and its use in training: a loss spike sends the run back to its last healthy
state with half the learning rate, and the run ends healthy."""
import json
import warnings

import jax
import numpy as np
import pytest

from unet_jax import train
from unet_jax import workdir as wd
from unet_jax.guard import DivergenceGuard
from test_train import tiny_config, _records  # noqa: F401 - the module-scoped data set fixture below

from test_train import data_dir  # noqa: F401,E402


def test_guard_flags_spikes_and_non_finite_windows_only():
    g = DivergenceGuard(factor=3.0, history=5, min_history=3)
    for loss in (0.9, 0.6, 0.5, 0.45):
        assert g.check([loss, loss]) is None
    assert g.check([0.5, 1.1]) is None                          # 0.8 < 3 x median 0.55: noise, not divergence
    reason = g.check([2.0, 2.2])
    assert reason and "x the recent median" in reason           # 2.1 > 3 x 0.55
    assert g.check([0.4, float("nan")]) == "a non-finite loss, gradient or parameter"
    assert g.check([0.4], finite=False)
    fresh = DivergenceGuard()
    assert fresh.check([50.0]) is None and fresh.check([40.0]) is None   # too little history to judge


def test_guard_rollback_halves_the_learning_rate_and_persists(tmp_path):
    g = DivergenceGuard(max_rollbacks=2)
    with pytest.raises(RuntimeError, match="no healthy state"):
        g.rollback(10, "spike")
    g.remember(8, "state-8")
    assert g.rollback(10, "spike") == 8 and g.lr_scale == 0.5
    assert g.rollback(12, "spike") == 8 and g.lr_scale == 0.25
    with pytest.raises(RuntimeError, match="limit 2"):
        g.rollback(14, "spike")
    g.save(tmp_path)
    resumed = DivergenceGuard()
    resumed.load(tmp_path, resume_step=9)
    assert resumed.lr_scale == 0.25 and len(resumed.events) == 2
    earlier = DivergenceGuard()
    earlier.load(tmp_path, resume_step=5)                        # resumed from before the rollbacks' target
    assert earlier.lr_scale == 1.0 and not earlier.events


def test_training_recovers_from_an_injected_spike(tmp_path, data_dir, monkeypatch):  # noqa: F811
    """Parameters blown up 30x at step 22 (as a bad batch with a large learning rate would): the loss spikes, the
    run goes back to step 20 with half the learning rate (passed into the same compiled step) and fresh tiles,
    and ends as healthy as before."""
    config = tiny_config(data_dir)
    config.train.update(checkpoint_every=0, eval_every=0)
    real = train.make_train_step
    calls = {"n": 0, "built": 0, "scales": []}

    def make(cfg, num_devices=None):
        calls["built"] += 1
        p_step = real(cfg, num_devices)

        def step(state, data, lr_scale=1.0):
            calls["n"] += 1
            calls["scales"].append(lr_scale)
            if calls["n"] == 22:
                state = state.replace(params=jax.tree_util.tree_map(lambda p: p * 30.0, state.params))
            return p_step(state, data, lr_scale)
        return step

    monkeypatch.setattr(train, "make_train_step", make)
    result = train.train_and_evaluate(config, tmp_path / "w")
    assert result["step"] == config.train.num_steps and result["rollbacks"] == 1
    record = json.loads((tmp_path / "w" / "guard.json").read_text())
    assert record["lr_scale"] == 0.5
    assert record["rollbacks"][0]["back_to"] == 20 and record["rollbacks"][0]["step"] == 25
    assert calls["built"] == 1                                   # one step: the lower rate is an argument
    assert calls["scales"][:25] == [1.0] * 25 and calls["scales"][25:] == [0.5] * (len(calls["scales"]) - 25)
    rows = _records(tmp_path / "w", "train")
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps))                           # the diverged window left no rows
    before = np.mean([r["loss"] for r in rows if r["step"] <= 20])
    assert rows[-1]["loss"] < 2 * before and np.isfinite(rows[-1]["loss"])
    lr = [r["learning_rate"] for r in rows]
    assert lr[-1] == pytest.approx(0.5 * config.optimizer.learning_rate)


def test_second_train_process_on_a_workdir_is_refused(tmp_path, data_dir):  # noqa: F811
    """A workdir in use (its lock held, as by another train process) is refused with one clear error; the lock is
    released when a run ends, also by an error."""
    config = tiny_config(data_dir)
    config.train.num_steps = 2
    (tmp_path / "w").mkdir()
    held = wd.lock_workdir(tmp_path / "w")
    with pytest.raises(ValueError, match=r"in use by another train process \(pid \d+\)"):
        train.train_and_evaluate(config, tmp_path / "w")
    held.close()
    assert train.train_and_evaluate(config, tmp_path / "w")["step"] == 2
    config.model.features = 8                                    # refused after the lock was taken
    with pytest.raises(ValueError, match="different model"):
        train.train_and_evaluate(config, tmp_path / "w")
    config.model.features, config.train.num_steps, config.loss.dice_weight = 4, 3, 0.5
    with pytest.raises(ValueError, match=r"another config \(loss.dice_weight: 0.0 -> 0.5\).*allow_config_change"):
        train.train_and_evaluate(config, tmp_path / "w")              # also refused: any other change
    config.train.allow_config_change = True           # (more steps alone would continue: test_signals.py)
    assert train.train_and_evaluate(config, tmp_path / "w")["step"] == 3
    history = [json.loads(line) for line in (tmp_path / "w" / wd.CONFIG_HISTORY_FILE).read_text().splitlines()]
    assert [h["step"] for h in history] == [0, 2]                 # the refused run left no trace
    assert history[1]["changes"] == [{"key": "loss.dice_weight", "old": 0.0, "new": 0.5}]
    assert history[0]["config"]["loss"]["dice_weight"] == 0.0     # the earlier config is kept
    config.train.num_steps = 2                                    # lowered below the step the workdir holds:
    result = train.train_and_evaluate(config, tmp_path / "w")   # the true step, validated
    assert result["step"] == 3 and "validation_iou" in result
    config.train.time_limit = 100.0                               # run-control settings may change freely
    config.train.allow_config_change = False
    config.train.num_steps = 2
    assert train.train_and_evaluate(config, tmp_path / "w")["step"] == 3
    config.train.allow_config_change, config.train.num_steps = True, 4   # allowed, but the optimizer's state
    config.optimizer.update(name="sgd", momentum=0.9)                    # cannot carry over: one clear error,
    with warnings.catch_warnings(record=True) as caught, pytest.raises(   # without a warning per checkpoint first
            ValueError, match=r"optimizer.name: 'adam' -> 'sgd'.*cannot be resumed"):
        warnings.simplefilter("always")
        train.train_and_evaluate(config, tmp_path / "w")
    assert not [w for w in caught if "could not be restored" in str(w.message)]
