"""unet_jax.checkpoint: orbax round trips, retention (latest K + best), corrupt-step fallback, digests."""
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

from unet_jax import checkpoint as ck


def _toy(seed=0):
    """Variables and a train part shaped like the trainer's (params, MultiSteps optax state, step, key)."""
    rng = np.random.default_rng(seed)
    params = {"conv": {"kernel": rng.normal(size=(3, 3, 1, 4)).astype(np.float32),
                       "bias": rng.normal(size=(4,)).astype(np.float32)}}
    tx = optax.MultiSteps(optax.chain(optax.clip_by_global_norm(1.0),
                                      optax.add_decayed_weights(1e-4, mask=lambda p: jax.tree.map(
                                          lambda x: x.ndim > 1, p)),
                                      optax.sgd(0.1, momentum=0.99)), every_k_schedule=2)
    opt_state = tx.init(params)
    # Make the optimizer state non-trivial: one update with random gradients.
    grads = jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
    _, opt_state = tx.update(grads, opt_state, params)
    train = {"step": np.asarray(seed + 1, np.int32), "key": np.asarray(jax.random.PRNGKey(seed)),
             "opt_state": ck.to_host(opt_state)}
    return {"params": params}, train


def _assert_tree_equal(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _corrupt(step_dir: Path):
    """Overwrite every file of a step's array items with garbage."""
    files = [p for item in (ck.VARIABLES, ck.TRAIN) for p in (step_dir / item).rglob("*") if p.is_file()]
    assert files
    for p in files:
        p.write_bytes(b"\x00garbage" * 3)


def test_round_trip_is_bitwise_and_keeps_optax_structure(tmp_path):
    variables, train = _toy()
    with ck.Checkpoints(tmp_path / "c", keep=2) as c:
        c.save(1, variables, train)
    c = ck.Checkpoints(tmp_path / "c", keep=2)
    restored = c.restore(1, variables, train)
    c.close()
    _assert_tree_equal(restored[ck.VARIABLES], variables)
    _assert_tree_equal(restored[ck.TRAIN], train)
    assert type(restored[ck.TRAIN]["opt_state"]) is type(train["opt_state"])


@pytest.mark.parametrize("mode", ["min", "max"])
def test_keeps_latest_k_and_the_best(tmp_path, mode):
    variables, train = _toy()
    values = {1: 0.5, 2: 0.1, 3: 0.9, 4: 0.3, 5: 0.4}          # best: step 2 (min) or 3 (max)
    best = 2 if mode == "min" else 3
    with ck.Checkpoints(tmp_path / mode, keep=2, best_metric="pixel_mismatch", best_mode=mode) as c:
        for s, v in values.items():
            c.save(s, variables, train, metrics={"pixel_mismatch": v, "loss": 1.0})
        c.wait()
        assert c.all_steps() == sorted({best, 4, 5})
        assert c.best_step() == best
        assert c.metrics(best)["pixel_mismatch"] == pytest.approx(values[best])


def test_steps_without_metrics_only_kept_while_latest(tmp_path):
    variables, train = _toy()
    with ck.Checkpoints(tmp_path / "c", keep=1, best_metric="pixel_mismatch") as c:
        c.save(1, variables, train, metrics={"pixel_mismatch": 0.2})
        for s in (2, 3, 4):
            c.save(s, variables, train)
        c.wait()
        assert c.all_steps() == [1, 4]
        assert c.best_step() == 1


def test_corrupt_latest_falls_back_to_previous_with_warning(tmp_path):
    (v1, t1), (v2, t2) = _toy(1), _toy(2)
    with ck.Checkpoints(tmp_path / "c", keep=3) as c:
        c.save(10, v1, t1)
        c.save(20, v2, t2)
    _corrupt(tmp_path / "c" / "20")
    with ck.Checkpoints(tmp_path / "c", keep=3) as c:
        with pytest.warns(RuntimeWarning, match="step 20"):
            step, restored = c.restore_latest(v1, t1)
    assert step == 10
    _assert_tree_equal(restored[ck.VARIABLES], v1)
    _assert_tree_equal(restored[ck.TRAIN], t1)
    # The run continues from 10 and saves step 20 again once the unreadable one is set aside.
    with ck.Checkpoints(tmp_path / "c", keep=3) as c:
        assert c.set_aside_after(step) == [20]
        assert c.all_steps() == [10]
        c.save(20, v2, t2)
        c.wait()
        assert c.all_steps() == [10, 20]
        _assert_tree_equal(c.restore(20, v2, t2)[ck.TRAIN], t2)
    assert len(list((tmp_path / "c" / "unreadable").iterdir())) == 1


def test_all_corrupt_raises_and_empty_returns_none(tmp_path):
    v, t = _toy()
    with ck.Checkpoints(tmp_path / "empty") as c:
        assert c.restore_latest(v, t) == (None, None)
    with ck.Checkpoints(tmp_path / "c") as c:
        c.save(1, v, t)
    _corrupt(tmp_path / "c" / "1")
    with ck.Checkpoints(tmp_path / "c") as c:
        with pytest.warns(RuntimeWarning), pytest.raises(ck.CheckpointRestoreError, match="no checkpoint"):
            c.restore_latest(v, t)


def test_unfinished_save_directory_is_ignored(tmp_path):
    v, t = _toy()
    with ck.Checkpoints(tmp_path / "c") as c:
        c.save(1, v, t)
    # What a process killed in the middle of an orbax save leaves behind.
    (tmp_path / "c" / "2.orbax-checkpoint-tmp-1234" / ck.VARIABLES).mkdir(parents=True)
    with ck.Checkpoints(tmp_path / "c") as c:
        assert c.all_steps() == [1]
        assert c.restore_latest(v, t)[0] == 1


def _flip_bytes(step_dir: Path, item=ck.VARIABLES):
    """Change 8 bytes in the middle of an item's largest data file, keeping its size (a bit rot, a bad copy)."""
    files = sorted((p for p in (step_dir / item).rglob("*") if p.is_file() and p.parent.name == "d"),
                   key=lambda p: p.stat().st_size)
    data = bytearray(files[-1].read_bytes())
    mid = len(data) // 2
    data[mid:mid + 8] = bytes(255 - b for b in data[mid:mid + 8])
    files[-1].write_bytes(bytes(data))


def _big(seed):
    """Variables and train part whose kernel (36 KiB of random floats) dominates the data files."""
    rng = np.random.default_rng(seed)
    v = {"params": {"conv": {"kernel": rng.normal(size=(3, 3, 16, 64)).astype(np.float32),
                             "bias": np.zeros(64, np.float32)}}}
    t = {"step": np.asarray(seed, np.int32), "key": np.asarray(jax.random.PRNGKey(seed)),
         "opt_state": {"mu": rng.normal(size=(3, 3, 16, 64)).astype(np.float32)}}
    return v, t


def test_non_finite_parameters_and_missing_metadata_count_as_damaged(tmp_path):
    v, t = _toy()
    v["params"]["conv"]["bias"][0] = np.nan
    with ck.Checkpoints(tmp_path / "c") as c:
        c.save(1, v, t)
        c.save(2, *_toy(2))
    with ck.Checkpoints(tmp_path / "c") as c:
        with pytest.raises(ck.CorruptCheckpointError, match=r"NaN or Inf parameters \(\['params'\]\['conv'\]"):
            c.restore(1)
    (tmp_path / "c" / "2" / ck.VARIABLES / "_METADATA").unlink()   # readable with a target, not without one:
    with ck.Checkpoints(tmp_path / "c") as c:                      # damaged for train and evaluate alike
        for target in (None, _toy(2)[0]):
            with pytest.raises(ck.CorruptCheckpointError, match="variables/_METADATA is missing"):
                c.restore(2, target, with_train=False)


@pytest.mark.parametrize("kwargs, match", [(dict(keep=0), "keep"), (dict(best_mode="avg"), "best_mode"),
                                           (dict(best_metric=""), "best_metric")])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ck.Checkpoints(tmp_path / "c", **kwargs)
    v, t = _toy()
    with ck.Checkpoints(tmp_path / "ok") as c, pytest.raises(ValueError, match="step"):
        c.save(-1, v, t)
