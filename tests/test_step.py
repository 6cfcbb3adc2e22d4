"""unet_jax.step: schedules and optimizers, and the learning-rate scale passed into the pmapped step (a divergence
rollback's lower rate without a new compilation)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from unet_jax import step
from unet_jax.config import base_config
from unet_jax.data import sampler
from unet_jax.geometry import output_size
from unet_jax.model import create_model

# ----------------------------------------------------------------------------------------------------------------
# Schedules and optimizers (cheap: no U-Net)
# ----------------------------------------------------------------------------------------------------------------

def _opt_config(**kw):
    c = base_config().optimizer
    c.update(kw)
    return c


def test_schedules():
    lr = 0.5
    const = step.create_learning_rate_schedule(_opt_config(learning_rate=lr), 100)
    assert float(const(0)) == float(const(99)) == lr
    warm_const = step.create_learning_rate_schedule(_opt_config(learning_rate=lr, warmup_steps=10), 100)
    assert float(warm_const(0)) == 0.0 and float(warm_const(5)) == pytest.approx(lr / 2)
    assert float(warm_const(50)) == lr
    cos = step.create_learning_rate_schedule(_opt_config(learning_rate=lr, schedule="cosine"), 100)
    assert float(cos(0)) == pytest.approx(lr) and float(cos(50)) == pytest.approx(lr / 2)
    assert float(cos(100)) == pytest.approx(0.0, abs=1e-7)
    wc = step.create_learning_rate_schedule(
        _opt_config(learning_rate=lr, schedule="warmup_cosine", warmup_steps=10, grad_accum_steps=2), 200)
    # 200 train steps / 2 accumulated = 100 updates: warmup over 10, cosine down to 0 at 100.
    assert float(wc(0)) == 0.0 and float(wc(10)) == pytest.approx(lr) and float(wc(100)) == pytest.approx(0.0)


def _run_opt(tx, params, grads_seq):
    state = tx.init(params)
    out = []
    for g in grads_seq:
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
        out.append(params)
    return out


def test_sgd_momentum_matches_formula():
    tx = step.create_optimizer(_opt_config(learning_rate=0.1, momentum=0.99), 10)
    p0 = {"w": jnp.array([1.0, -2.0])}
    g1, g2 = {"w": jnp.array([0.5, 1.0])}, {"w": jnp.array([-1.0, 2.0])}
    p1, p2 = _run_opt(tx, p0, [g1, g2])
    v1 = g1["w"]
    v2 = 0.99 * v1 + g2["w"]
    np.testing.assert_allclose(p1["w"], p0["w"] - 0.1 * v1, rtol=1e-6)
    np.testing.assert_allclose(p2["w"], p0["w"] - 0.1 * v1 - 0.1 * v2, rtol=1e-6)


def test_grad_accumulation_averages_k_steps():
    p0 = {"w": jnp.array([1.0, -2.0, 3.0])}
    g1, g2 = {"w": jnp.array([0.5, 1.0, -1.0])}, {"w": jnp.array([1.5, -3.0, 2.0])}
    accum = step.create_optimizer(_opt_config(name="adam", learning_rate=0.1, grad_accum_steps=2), 10)
    a1, a2 = _run_opt(accum, p0, [g1, g2])
    np.testing.assert_array_equal(a1["w"], p0["w"])                       # first micro-step: no update
    single = step.create_optimizer(_opt_config(name="adam", learning_rate=0.1), 10)
    (s1,) = _run_opt(single, p0, [jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)])
    np.testing.assert_allclose(a2["w"], s1["w"], rtol=1e-6)


def test_grad_clipping_bounds_the_update():
    tx = step.create_optimizer(_opt_config(learning_rate=0.1, momentum=0.0, grad_clip_norm=1.0), 10)
    p0 = {"w": jnp.zeros(4)}
    (p1,) = _run_opt(tx, p0, [{"w": jnp.array([300.0, 400.0, 0.0, 0.0])}])
    np.testing.assert_allclose(p1["w"], [-0.06, -0.08, 0.0, 0.0], rtol=1e-5)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_weight_decay_hits_kernels_not_biases(name):
    tx = step.create_optimizer(_opt_config(name=name, learning_rate=0.1, momentum=0.0, weight_decay=0.5), 10)
    p0 = {"conv": {"kernel": jnp.ones((3, 3, 1, 2)), "bias": jnp.ones((2,))}}
    zero = jax.tree.map(jnp.zeros_like, p0)
    (p1,) = _run_opt(tx, p0, [zero])
    assert float(p1["conv"]["kernel"].max()) < 1.0
    np.testing.assert_array_equal(p1["conv"]["bias"], p0["conv"]["bias"])




# ----------------------------------------------------------------------------------------------------------------
# The learning-rate scale of the step (a tiny U-Net on random tiles; no data set)
# ----------------------------------------------------------------------------------------------------------------

STEPS = 3


def _config(learning_rate=1e-2):
    c = base_config()
    c.model.update(features=4, depth=2, dropout_rate=0.5)
    c.train.update(tile_size=60, batch_size=2, num_steps=100)
    c.augment.enabled = False          # keeps the compilations short
    c.optimizer.update(name="adam", learning_rate=learning_rate)
    return c


@pytest.fixture(scope="module")
def setup():
    """(initial host state, replicated on-device data set) of the tiny config."""
    c = _config()
    rng = np.random.default_rng(0)
    examples = [dict(image=rng.uniform(size=(64, 64, 1)).astype(np.float32),
                     instances=rng.integers(0, 3, size=(64, 64)).astype(np.int32),
                     weights=rng.uniform(0.5, 2.0, size=(64, 64)).astype(np.float32)) for _ in range(2)]
    data = step.replicate(jax.device_get(sampler.to_device_dataset(examples, 60, output_size(60, 2))))
    state = jax.device_get(step.create_train_state(jax.random.PRNGKey(0), c, create_model(c), 1))
    return state, data


def _run(p_step, state, data, *scale):
    r = step.shard_state(state)
    for _ in range(STEPS):
        r, _ = p_step(r, data, *scale)
    return jax.tree_util.tree_leaves(jax.device_get(step.unshard_state(r).params))


def test_scaled_step_equals_a_config_with_the_scaled_learning_rate(setup):
    """A rollback used to rebuild (and recompile) the step from a copy of the config with the learning rate times
    the scale; the scale passed into the step gives the same parameters (0.5: the guard's halving)."""
    state, data = setup
    scaled = _run(step.make_train_step(_config(), 1), state, data, 0.5)
    rebuilt = _run(step.make_train_step(_config(learning_rate=0.5e-2), 1), state, data)
    unscaled = _run(step.make_train_step(_config(), 1), state, data)
    for a, b, c in zip(scaled, rebuilt, unscaled):
        np.testing.assert_array_equal(a, b)     # a power of 2: exact
        assert not np.array_equal(a, c) or a.size == 0


def test_scale_one_is_the_unscaled_step_bitwise(setup):
    """lr_scale=1 multiplies the updates by exactly 1: the same bits as the step without the scale."""
    state, data = setup
    c = _config()
    parts = step.step_parts(c, 1)
    out = output_size(60, 2)

    def sample_fn(dataset, key):
        images, labels, weights = sampler.sample_tiles(dataset, key, 1, 60, out, 0.0)
        return images[0], labels[0], weights[0]

    plain = jax.pmap(functools.partial(step.train_step, model=parts.model, optimizer=parts.optimizer,
                                       sample_fn=sample_fn, augment_fn=None, global_batch=2, num_devices=1),
                     axis_name=step.AXIS)
    for a, b in zip(_run(plain, state, data), _run(parts.p_step, state, data, 1.0)):
        np.testing.assert_array_equal(a, b)


def test_devices_must_divide_the_batch():
    from unet_jax.checks import InvalidInputError
    with pytest.raises(InvalidInputError, match="multiple of the number of devices"):
        step.make_train_step(_config(), 3)
