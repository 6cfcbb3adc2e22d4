"""unet_jax.train: optimizers, the pmapped step, device/host independence, exact resume, NaN stop.

Runs a tiny U-Net (features 4, depth 2, 60-pixel tiles) on tiny synthetic data with the real data, augment and
model modules. Subprocesses cover what needs a fresh process: 2 simulated devices, 2 processes joined by
jax.distributed, and SIGKILL + restart.
"""
import json
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from unet_jax import checkpoint as ck
from unet_jax import logging_utils as lu
from unet_jax import train
from unet_jax.config import base_config, validate
from unet_jax.geometry import output_size
from unet_jax.model import create_model
from unet_jax.step import create_train_state
from unet_jax.workdir import load_config, restore_params

REPO = Path(__file__).resolve().parents[1]
NUM_STEPS = 30
# Subprocesses compile without XLA's backend optimisation (3x faster to compile); runs compared bitwise all use it,
# and rounding differences to the optimised in-process compilation stay within the tolerances used.
FAST_COMPILE = "--xla_backend_optimization_level=0"


def tiny_config(data_dir) -> ml_collections.ConfigDict:
    c = base_config()
    c.model.features, c.model.depth, c.model.dropout_rate = 4, 2, 0.5   # dropout on: per-sample keys are tested
    c.data.update(num_train=4, num_validation=2, image_size=64, data_dir=str(data_dir))
    c.train.update(tile_size=60, batch_size=2, num_steps=NUM_STEPS, log_every=5, eval_every=10,
                   checkpoint_every=5, keep_checkpoints=5)
    c.eval.update(tile_size=60, batch_size=4)
    c.optimizer.update(name="adam", learning_rate=1e-2)
    return c


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A prepared synthetic data set (prepared once here, so subprocesses only read it)."""
    from unet_jax.data import load_split
    d = tmp_path_factory.mktemp("tfds")
    c = tiny_config(d)
    assert len(load_split(c.data, c.weights, "train")) == 4
    return d


# ----------------------------------------------------------------------------------------------------------------
# Subprocess helpers
# ----------------------------------------------------------------------------------------------------------------

SCRIPT = r"""
import json, sys, time
import ml_collections
import unet_jax
unet_jax.configure_cpu()
from unet_jax import train
from unet_jax.config import base_config
workdir, config_path, sleep = sys.argv[1], sys.argv[2], float(sys.argv[3])
config = ml_collections.ConfigDict(json.load(open(config_path)))
seen = []
def callback(step, state):
    if not seen:
        seen.append(step)
        print(f"FIRST_STEP={step}", flush=True)
    time.sleep(sleep)
metrics = train.train_and_evaluate(config, workdir, callbacks=[callback])
print("RESULT=" + json.dumps(metrics), flush=True)
"""


def _launch(tmp_path, name, config, sleep=0.0, env=None, config_name=None, **popen):
    config_path = tmp_path / f"{config_name or name}.json"
    config_path.write_text(json.dumps(config.to_dict()))
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_DISABLE="1", **(env or {}))
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / name), str(config_path), str(sleep)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env, cwd=REPO,
                            **popen)


def _finish(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    result = re.findall(r"^RESULT=(.*)$", out, re.M)
    first = re.findall(r"FIRST_STEP=(\d+)", out)
    assert result, out[-4000:]
    return json.loads(result[-1]), (int(first[0]) if first else None), out


def _all_arrays(workdir, step):
    """Every array of a checkpoint (variables and train state) as a flat list, read without targets."""
    with ck.Checkpoints(ck.checkpoint_dir(workdir), read_only=True, async_save=False) as c:
        restored = c.restore(step)
    return jax.tree_util.tree_flatten_with_path(restored)[0]


def _params(workdir, step=NUM_STEPS):
    variables, _, _ = restore_params(workdir, step=step)
    return jax.tree_util.tree_leaves(variables["params"])


def _records(workdir, split):
    return [r for r in lu.read_jsonl(Path(workdir) / "metrics.jsonl") if r["split"] == split]


# ----------------------------------------------------------------------------------------------------------------
# Config checks (cheap: no U-Net)
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, match", [
    ("name", "rmsprop", "optimizer.name"), ("schedule", "step", "optimizer.schedule"),
    ("learning_rate", 0.0, "optimizer.learning_rate"), ("momentum", 1.5, "optimizer.momentum"),
    ("grad_accum_steps", 0, "optimizer.grad_accum_steps"), ("grad_clip_norm", -1.0, "optimizer.grad_clip_norm")])
def test_bad_optimizer_config(field, value, match):
    c = base_config()
    c.optimizer.update({field: value})
    with pytest.raises(ValueError, match=match):
        validate(c)


@pytest.mark.parametrize("value", ["balanced", None, "none", "None"])
def test_validate_accepts_every_class_weights_form_the_data_layer_takes(value):
    c = base_config()
    c.weights.class_weights = value
    validate(c)


def test_validate_contours_target_needs_three_classes_and_contours_instances_need_it():
    c = base_config()
    c.data.target = "contours"
    with pytest.raises(ValueError, match="num_classes=3"):
        validate(c)
    c.model.num_classes = 3
    c.eval.instances = "contours"
    validate(c)
    c.data.target = "foreground"
    with pytest.raises(ValueError, match="needs a model trained with data.target='contours'"):
        validate(c)
    c.data.target = "edges"
    with pytest.raises(ValueError, match="config.data.target must be one of"):
        validate(c)


@pytest.mark.parametrize("value", ["balance", "weighted", ""])
def test_validate_rejects_bad_class_weights(value):
    c = base_config()
    c.weights.class_weights = value
    with pytest.raises(ValueError, match="config.weights.class_weights"):
        validate(c)


def test_train_logs_the_network_size(tmp_path, data_dir, caplog):
    """Issue 28: one summary line on the network; 7,402 parameters counted by hand for features 4, depth 2, one
    input channel and two classes (3x3 convolutions 9 * in * out + out, 2x2 up-convolutions 4 * in * out + out)."""
    config = tiny_config(data_dir)
    config.train.update(num_steps=1, eval_every=0, checkpoint_every=0)
    with caplog.at_level(logging.INFO, logger="unet_jax.summary"):
        train.train_and_evaluate(config, tmp_path / "w")
    lines = [r.getMessage() for r in caplog.records if r.name == "unet_jax.summary" and "network" in r.getMessage()]
    assert lines == ["network: 13 convolutions, 7,402 parameters (0.0 M; features 4, depth 2, VALID), input tile "
                     "60 -> output 20"]


def test_bad_train_config(tmp_path):
    c = tiny_config(tmp_path)
    c.train.tile_size = 61
    with pytest.raises(ValueError, match="train.tile_size"):
        train.train_and_evaluate(c, tmp_path / "w")
    c = tiny_config(tmp_path)
    c.model.dtype = "float16"
    with pytest.raises(ValueError, match="model.dtype"):
        train.train_and_evaluate(c, tmp_path / "w")
    c = tiny_config(tmp_path)
    c.optimizer.update(schedule="warmup_cosine", warmup_steps=NUM_STEPS)
    with pytest.raises(ValueError, match="warmup_steps"):
        train.train_and_evaluate(c, tmp_path / "w")


def test_create_model_dtype_and_norm():
    c = base_config()
    c.model.dtype = "bfloat16"
    c.model.norm = ""
    m = create_model(c)
    assert m.dtype == jnp.bfloat16 and m.norm is None and m.features == c.model.features


# ----------------------------------------------------------------------------------------------------------------
# Training runs
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """An uninterrupted 1-device run in a subprocess: (workdir, environment for runs sharing its compilation)."""
    tmp = tmp_path_factory.mktemp("reference")
    env = {"XLA_FLAGS": FAST_COMPILE, "JAX_COMPILATION_CACHE_DIR": str(tmp / "jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    _finish(_launch(tmp, "ref", tiny_config(data_dir), env=env))
    return tmp / "ref", env


def test_loss_falls_and_outputs_are_written(reference, data_dir):
    ref_dir, _ = reference
    config = tiny_config(data_dir)
    # The loss falls within a few dozen steps, in training and on the validation images.
    tr = _records(ref_dir, "train")
    assert [r["step"] for r in tr] == [1, 5, 10, 15, 20, 25, 30]
    assert min(r["loss"] for r in tr[-3:]) < 0.75 * tr[0]["loss"]     # logged losses are single noisy batches
    va = _records(ref_dir, "validation")
    assert [r["step"] for r in va] == [10, 20, 30]
    assert va[-1]["loss"] < va[0]["loss"]
    assert 0.0 <= va[-1]["pixel_mismatch"] < 0.5 and 0.0 <= va[-1]["iou"] <= 1.0
    assert 0.5 < va[-1]["iou"] <= 1.0        # cells are most of the synthetic images
    assert tr[-1]["tiles_per_second"] > 0 and tr[-1]["learning_rate"] == pytest.approx(1e-2)
    assert all(0.0 <= r["pixel_mismatch"] <= 1.0 and r["grad_norm"] > 0 for r in tr)

    # Written: config, curves, TensorBoard events, checkpoints (the latest 5; the best is among them).
    saved = load_config(ref_dir).to_dict()      # the run's config, and the object size learned from its masks
    assert config.eval.object_area == 0 and saved["eval"].pop("object_area") > 0
    expected = config.to_dict()
    expected["eval"].pop("object_area")
    assert saved == expected
    assert (ref_dir / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    (events,) = (ref_dir / "tensorboard").iterdir()
    acc = EventAccumulator(str(events))   # tensorboard's own reader
    acc.Reload()
    tb = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert tb == [(r["step"], pytest.approx(r["loss"])) for r in tr]
    best = min(va, key=lambda r: r["pixel_mismatch"])["step"]
    with ck.Checkpoints(ck.checkpoint_dir(ref_dir), read_only=True) as c:
        assert c.all_steps() == [10, 15, 20, 25, 30]
        assert c.best_step() == best
        assert c.metrics(best)["pixel_mismatch"] == pytest.approx(min(r["pixel_mismatch"] for r in va))


# Runs that differ by float rounding only are compared over their first 10 steps: training amplifies rounding
# differences (after ~15 steps the losses of two such runs can part by 1e-3), and Adam, which divides by the root
# of the squared gradients, turns them into up to ~1e-3 of a learning-rate step for parameters with near-zero
# gradients. So the parameters are compared by the change of each tensor since initialisation: the two runs'
# changes agree to 1e-2 relative; a different global batch changes them by order one (and the losses from step 1).
SHORT = 10


def _short_config(data_dir):
    c = tiny_config(data_dir)
    c.train.num_steps = SHORT
    return c


def _assert_same_run(ref_dir, other_dir, data_dir):
    c = tiny_config(data_dir)
    init = jax.tree_util.tree_leaves(
        create_train_state(jax.random.PRNGKey(c.seed), c, create_model(c), 1).params)
    for p0, a, b in zip(init, _params(ref_dir, SHORT), _params(other_dir, SHORT)):
        change = np.linalg.norm(a - p0)
        assert change > 0 and np.linalg.norm(a - b) <= 1e-2 * change
    ref = [r for r in _records(ref_dir, "train") if r["step"] <= SHORT]
    other = _records(other_dir, "train")
    assert [r["step"] for r in other] == [r["step"] for r in ref]      # once each (one writer)
    np.testing.assert_allclose([r["loss"] for r in other], [r["loss"] for r in ref], rtol=1e-4)


def test_two_devices_equal_one(tmp_path, reference, data_dir):
    """2 simulated devices split the same global batch (per-sample keys): the 1-device result, to rounding."""
    env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count=2 {FAST_COMPILE}"}
    _finish(_launch(tmp_path, "two_devices", _short_config(data_dir), env=env))
    _assert_same_run(reference[0], tmp_path / "two_devices", data_dir)


def test_two_processes_equal_one(tmp_path, reference, data_dir):
    """2 processes joined by jax.distributed (CPU collectives, 1 device each): the 1-device result again."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for pid in range(2):
        c = _short_config(data_dir)
        c.train.update(distributed=True, coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)
        procs.append(_launch(tmp_path, "two_hosts", c, env={"XLA_FLAGS": FAST_COMPILE}, config_name=f"host_{pid}"))
    (res_a, _, _), (res_b, _, _) = [_finish(p) for p in procs]
    assert res_a["validation_loss"] == res_b["validation_loss"]          # both processes hold the same state
    _assert_same_run(reference[0], tmp_path / "two_hosts", data_dir)      # process 0 alone wrote the log


def test_kill_and_resume_is_bitwise_exact(tmp_path, reference, data_dir):
    """SIGKILL after a checkpoint, restart with the same command: final state bitwise equal to the uninterrupted
    run; a corrupt latest checkpoint is skipped with a warning; restore_params reads another process's workdir."""
    config = tiny_config(data_dir)
    ref_dir, env = reference                      # same flags and compilation cache: no recompilation
    killed = _launch(tmp_path, "resumed", config, sleep=0.1, env=env)
    ckpt_dir = ck.checkpoint_dir(tmp_path / "resumed")
    deadline = time.time() + 240
    while not (ckpt_dir.is_dir() and any(p.name.isdigit() and int(p.name) >= 10 for p in ckpt_dir.iterdir())):
        assert killed.poll() is None, killed.stdout.read()[-3000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    saved = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
    assert saved and max(saved) < NUM_STEPS, f"the run finished before it was killed: {saved}"

    result, first_step, _ = _finish(_launch(tmp_path, "resumed", config, sleep=0.1, env=env))
    assert first_step == max(saved) + 1                                   # resumed, not restarted
    assert result["step"] == NUM_STEPS

    full = _all_arrays(ref_dir, NUM_STEPS)
    resumed = _all_arrays(tmp_path / "resumed", NUM_STEPS)
    assert [p for p, _ in full] == [p for p, _ in resumed]
    for (path, a), (_, b) in zip(full, resumed):
        assert a.dtype == b.dtype and np.array_equal(a, b), jax.tree_util.keystr(path)
    # The log has each step once, in order, after the restart rewrote the steps past the checkpoint.
    steps = [r["step"] for r in _records(tmp_path / "resumed", "train")]
    assert steps == sorted(set(steps)) and steps[-1] == NUM_STEPS

    # A corrupt latest checkpoint: the same command warns, continues from the previous one and ends the same.
    for f in (ckpt_dir / str(NUM_STEPS) / ck.TRAIN).rglob("*"):
        if f.is_file():
            f.write_bytes(b"corrupt")
    _, first_step, out = _finish(_launch(tmp_path, "resumed", config, env=env))
    assert f"step {NUM_STEPS} in" in out and "could not be restored" in out
    assert first_step == NUM_STEPS - config.train.checkpoint_every + 1
    for (path, a), (_, b) in zip(full, _all_arrays(tmp_path / "resumed", NUM_STEPS)):
        assert np.array_equal(a, b), jax.tree_util.keystr(path)

    # restore_params (default: the best checkpoint) gives variables the model applies directly.
    variables, cfg, _ = restore_params(tmp_path / "resumed")
    assert set(variables) == {"params"}
    model = create_model(cfg)
    x = jnp.zeros((1, cfg.eval.tile_size, cfg.eval.tile_size, 1))
    assert model.apply(variables, x).shape == (1, output_size(60, 2), output_size(60, 2), 2)


def test_nonfinite_loss_stops_cleanly_bfloat16_batch_norm(tmp_path, data_dir):
    """lr=1e30 blows the parameters up: NonFiniteLossError names the step and the last checkpoint restores.

    The run uses bfloat16 compute and BatchNorm: its first-step loss matches a float32 recomputation from the
    documented sampling keys, and the checkpoint holds the updated batch statistics."""
    config = tiny_config(data_dir)
    config.optimizer.learning_rate = 1e30
    config.model.update(dtype="bfloat16", norm="batch", dropout_rate=0.0)
    config.train.checkpoint_every = 1
    config.augment.enabled = False     # keeps the recomputation below short
    with pytest.raises(train.NonFiniteLossError, match=r"non-finite training loss at step \d+") as err:
        train.train_and_evaluate(config, tmp_path / "w")
    bad = err.value.step
    assert bad == 2 and not math.isfinite(err.value.loss)                # step 1 is fine, then it diverges
    with ck.Checkpoints(ck.checkpoint_dir(tmp_path / "w"), read_only=True) as c:
        assert c.all_steps() and max(c.all_steps()) == bad - 1           # nothing from the bad step is saved
    variables, _, _ = restore_params(tmp_path / "w")
    assert set(variables) == {"params", "batch_stats"}
    assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(variables))
    first = _records(tmp_path / "w", "train")[0]
    assert first["step"] == 1 and math.isfinite(first["loss"])

    # Step 1 in float32, from the module docstring's key scheme: sample i of step s uses
    # split(fold_in(fold_in(key, s), i), 3) = (tile key, augmentation key, dropout key).
    from unet_jax.data import load_split, sampler
    from unet_jax.losses import weighted_softmax_cross_entropy
    config.model.dtype = "float32"
    model = create_model(config)
    state = create_train_state(jax.random.PRNGKey(config.seed), config, model, 1)
    ds = sampler.to_device_dataset(load_split(config.data, config.weights, "train"), 60, output_size(60, 2))

    @jax.jit
    def step1(variables):
        keys = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(jax.random.fold_in(state.key, 0), i), 3))(
            jnp.arange(config.train.batch_size))
        images, labels, weights = jax.vmap(lambda k: sampler.sample_tiles(ds, k, 1, 60, output_size(60, 2)))(
            keys[:, 0])
        logits, updates = model.apply(variables, images[:, 0], train=True, mutable=["batch_stats"])
        return weighted_softmax_cross_entropy(logits, labels[:, 0], weights[:, 0]), updates["batch_stats"]

    loss, stats = step1(state.variables())
    assert first["loss"] == pytest.approx(float(loss), rel=0.02)
    # The checkpoint (step 1) holds the statistics that step updated.
    for got, want, init in zip(*(jax.tree_util.tree_leaves(t) for t in (variables["batch_stats"], stats,
                                                                        state.batch_stats))):
        np.testing.assert_allclose(got, want, rtol=0.05, atol=1e-3)       # bfloat16 activations
        assert not np.allclose(got, init)


