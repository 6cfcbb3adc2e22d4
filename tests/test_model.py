import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unet_jax import model as model_lib
from unet_jax.model import (Conv3x3, UNet, UpConv2x2, border, conv3x3_shift, count_convs, count_params, max_pool_2x2,
                            output_size, unet_flops, upconv2x2, valid_input_size, valid_input_sizes)


def _shapes(model, size, channels=1):
    x = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)
    y = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
    return variables, y


def test_paper_network_shapes_params_and_convs():
    variables, y = _shapes(UNet(), 572)
    assert y.shape == (1, 388, 388, 2)
    assert y.dtype == jnp.float32
    assert count_params(variables["params"]) == 31_030_658
    assert count_convs(variables["params"]) == 23
    kernels = [p.shape for p in jax.tree_util.tree_leaves(variables["params"]) if p.ndim == 4]
    assert sum(k[:2] == (3, 3) for k in kernels) == 18
    assert sum(k[:2] == (2, 2) for k in kernels) == 4
    assert sum(k[:2] == (1, 1) for k in kernels) == 1


@pytest.mark.parametrize("size,depth", [(64, 4), (48, 3), (40, 3)])
def test_same_padding_keeps_size(size, depth):
    if size % 2 ** depth:
        with pytest.raises(ValueError, match="nearest valid"):
            _shapes(UNet(features=4, depth=depth, padding="SAME"), size)
        return
    _, y = _shapes(UNet(features=4, depth=depth, padding="SAME"), size)
    assert y.shape == (1, size, size, 2)


def test_small_network_runs_and_matches_output_size():
    model = UNet(features=4, depth=2, num_classes=3, norm="group")
    size = valid_input_size(20, depth=2)
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, size, size, 1))
    variables = model.init(jax.random.PRNGKey(0), x)
    y = model.apply(variables, x)
    assert y.shape == (2, output_size(size, 2), output_size(size, 2), 3)
    assert np.isfinite(np.asarray(y)).all()
    # Drop-out is active only in training and is then key-dependent.
    y1 = model.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    y2 = model.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
    assert not np.allclose(y1, y2)
    np.testing.assert_array_equal(model.apply(variables, x), y)


def test_batchnorm_and_bilinear_and_bf16():
    model = UNet(features=4, depth=2, norm="batch", upsample="bilinear", dtype=jnp.bfloat16)
    x = jnp.ones((1, 44, 44, 1))
    variables = model.init(jax.random.PRNGKey(0), x)
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables["params"]))
    y, updates = model.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(0)},
                             mutable=["batch_stats"])
    assert y.dtype == jnp.float32 and "batch_stats" in updates


def test_he_normal_init_std():
    variables, _ = _shapes(UNet(features=16, depth=2), 44)
    params = UNet(features=16, depth=2).init(jax.random.PRNGKey(0), jnp.zeros((1, 44, 44, 1)))["params"]
    k = np.asarray(params["up_0"]["Conv_1"]["kernel"])  # 3x3 conv on 16 channels: N = 144
    assert abs(k.std() - np.sqrt(2 / (9 * 16))) < 0.1 * np.sqrt(2 / (9 * 16))


def test_max_pool_equals_reduce_window():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 6, 3))
    np.testing.assert_array_equal(max_pool_2x2(x), nn.max_pool(x, (2, 2), strides=(2, 2)))


def test_upconv_equals_conv_transpose():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 7, 6))
    ours = UpConv2x2(4)
    v = ours.init(jax.random.PRNGKey(1), x)
    ref = nn.ConvTranspose(4, (2, 2), strides=(2, 2), padding="VALID")
    y_ref = ref.apply({"params": v["params"]}, x)
    np.testing.assert_allclose(ours.apply(v, x), y_ref, atol=1e-5)
    assert y_ref.shape == (2, 10, 14, 4)


def test_output_size_and_valid_input_size_round_trip():
    assert output_size(572) == 388
    assert valid_input_size(388) == 572
    assert border() == 92
    for depth in (2, 3, 4, 5):
        sizes = valid_input_sizes(depth, upto=800)
        assert sizes and all(output_size(s, depth) > 0 for s in sizes)
        for s in sizes:
            o = output_size(s, depth)
            assert valid_input_size(o, depth) == s
            assert (s - o) % 2 == 0 and (s - o) // 2 == border(depth)
        # Every size between valid sizes is invalid.
        for s in range(sizes[0], sizes[-1]):
            if s not in sizes:
                with pytest.raises(ValueError):
                    output_size(s, depth)
    assert valid_input_size(389) == 588
    assert output_size(64, 4, "SAME") == 64
    assert valid_input_size(50, 4, "SAME") == 64


def test_output_size_errors_name_nearest():
    with pytest.raises(ValueError, match=r"556, 572"):
        output_size(570)
    with pytest.raises(ValueError, match=r"188"):
        output_size(100)
    with pytest.raises(ValueError, match="padding"):
        output_size(572, padding="valid")
    with pytest.raises(ValueError, match="depth"):
        output_size(572, depth=0)
    with pytest.raises(ValueError, match="size must be positive"):
        output_size(-4)
    with pytest.raises(ValueError, match="min_output"):
        valid_input_size(0)
    with pytest.raises(ValueError, match="NHWC"):
        UNet(features=4, depth=2).init(jax.random.PRNGKey(0), jnp.zeros((44, 44, 1)))


def test_flop_count_paper():
    # Direct count: (convs of the paper network at 572) about 2 * 150 GMAC.
    f = unet_flops(572)
    assert 2.5e11 < f < 3.5e11
    assert unet_flops(572, features=32) < f / 3.5


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_fast_formulation_equals_plain(padding):
    """The optimised layers (reshape pool, matmul up-conv) give the plain flax network's output and gradients."""
    size = 44 if padding == "VALID" else 32
    x = jax.random.uniform(jax.random.PRNGKey(3), (2, size, size, 1))
    fast = UNet(features=4, depth=2, padding=padding, impl="fast")
    plain = UNet(features=4, depth=2, padding=padding, impl="plain")
    variables = fast.init(jax.random.PRNGKey(0), x)
    assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(plain.init(
        jax.random.PRNGKey(0), x))
    np.testing.assert_allclose(fast.apply(variables, x), plain.apply(variables, x), atol=1e-5)
    g_fast = jax.grad(lambda v: fast.apply(v, x).sum())(variables)
    g_plain = jax.grad(lambda v: plain.apply(v, x).sum())(variables)
    for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_plain)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Optimised formulations (impl='fast') against the plain ones, outputs and gradients
# ---------------------------------------------------------------------------------------------------------------

def _lax_conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _grads(f, *args):
    """Value and gradients (all arguments) of a non-linear scalar of ``f(*args)`` (so that each output matters)."""
    return jax.value_and_grad(lambda *a: jnp.sum(jnp.sin(f(*a)) * jnp.arange(f(*a).size).reshape(f(*a).shape)
                                                 / f(*a).size), argnums=tuple(range(len(args))))(*args)


@pytest.mark.parametrize("c_in", [1, 3])
def test_conv3x3_shift_equals_lax_conv(c_in):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 7, c_in))
    k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, c_in, 5))
    np.testing.assert_allclose(conv3x3_shift(x, k), _lax_conv(x, k), rtol=1e-5, atol=1e-5)
    (v_shift, g_shift), (v_lax, g_lax) = _grads(conv3x3_shift, x, k), _grads(_lax_conv, x, k)
    np.testing.assert_allclose(v_shift, v_lax, rtol=1e-5)
    for a, b in zip(g_shift, g_lax):   # input and kernel gradients
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("c_in,padding,dtype", [(1, "VALID", None), (1, "SAME", None), (6, "VALID", None),
                                                (6, "SAME", jnp.bfloat16), (1, "VALID", jnp.bfloat16)])
def test_conv3x3_equals_nn_conv(c_in, padding, dtype):
    """Both Conv3x3 formulations (shift for 1 input channel, lax for 6) give nn.Conv's parameters and results."""
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 10, c_in))
    ours = Conv3x3(4, padding, dtype=dtype)
    ref = nn.Conv(4, (3, 3), padding=padding, dtype=dtype, param_dtype=jnp.float32)
    v = ours.init(jax.random.PRNGKey(1), x)
    assert jax.tree_util.tree_map(jnp.shape, v) == jax.tree_util.tree_map(jnp.shape, ref.init(
        jax.random.PRNGKey(1), x))
    v = jax.tree_util.tree_map(lambda p: p + 0.1, v)   # nonzero bias
    tol = 2e-2 if dtype == jnp.bfloat16 else 1e-5
    y, y_ref = ours.apply(v, x), ref.apply(v, x)
    assert y.dtype == y_ref.dtype and y.shape == y_ref.shape
    np.testing.assert_allclose(np.float32(y), np.float32(y_ref), rtol=tol, atol=tol)
    g = jax.grad(lambda v, x: jnp.sum(jnp.sin(ours.apply(v, x).astype(jnp.float32))), argnums=(0, 1))(v, x)
    g_ref = jax.grad(lambda v, x: jnp.sum(jnp.sin(ref.apply(v, x).astype(jnp.float32))), argnums=(0, 1))(v, x)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(g_ref)):
        np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=tol, atol=tol * np.abs(np.float32(b)).max())


@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_gradient_equals_reduce_window(ties):
    """The custom max-pool VJP sends each window's gradient to its first maximum, like nn.max_pool's."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 6, 3))
    if ties:   # many equal values, as after a ReLU, and equal positive maxima
        x = jnp.maximum(jnp.round(x * 2) / 2, 0.0)
    g = jax.grad(lambda x: jnp.sum(jnp.sin(max_pool_2x2(x)) * jnp.arange(72.0).reshape(2, 4, 3, 3)))(x)
    g_ref = jax.grad(lambda x: jnp.sum(jnp.sin(nn.max_pool(x, (2, 2), strides=(2, 2)))
                                       * jnp.arange(72.0).reshape(2, 4, 3, 3)))(x)
    np.testing.assert_array_equal(g, g_ref)
    assert (np.asarray(g) != 0).sum() <= 72   # one input per window at most


def test_upconv_gradients_equal_conv_transpose():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 7, 6))
    k = jax.random.normal(jax.random.PRNGKey(1), (2, 2, 6, 4))
    ref = nn.ConvTranspose(4, (2, 2), strides=(2, 2), padding="VALID", use_bias=False)
    (v, g), (v_ref, g_ref) = _grads(upconv2x2, x, k), _grads(lambda x, k: ref.apply({"params": {"kernel": k}}, x),
                                                             x, k)
    np.testing.assert_allclose(v, v_ref, rtol=1e-5)
    for a, b in zip(g, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_fast_network_equals_plain_bf16():
    """The bfloat16 compute path of the whole network (conv3x3_shift with C_in = 3 is checked above)."""
    dtype = jnp.bfloat16
    x = jax.random.uniform(jax.random.PRNGKey(3), (1, 44, 44, 1))
    fast = UNet(features=4, depth=2, impl="fast", dtype=dtype)
    plain = UNet(features=4, depth=2, impl="plain", dtype=dtype)
    variables = fast.init(jax.random.PRNGKey(0), x)
    tol = 5e-2
    np.testing.assert_allclose(fast.apply(variables, x), plain.apply(variables, x), rtol=tol, atol=tol)
    g_fast = jax.grad(lambda v: jnp.sum(jnp.sin(fast.apply(v, x))))(variables)
    g_plain = jax.grad(lambda v: jnp.sum(jnp.sin(plain.apply(v, x))))(variables)
    for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_plain)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max()))


# ---------------------------------------------------------------------------------------------------------------
# XLA:CPU flags set at import
# ---------------------------------------------------------------------------------------------------------------

_FLAG_PROBE = """
import os, jax, jax.numpy as jnp
import unet_jax.model as m
x, k = jnp.ones((1, 10, 10, 32)), jnp.ones((3, 3, 32, 32))
hlo = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), 'VALID',
              dimension_numbers=('NHWC', 'HWIO', 'NHWC'))).lower(x, k).compile().as_text()
print(m.xla_cpu_flags_applied(), repr(os.environ.get('XLA_FLAGS', '')), '__ynn_fusion' in hlo)
"""


@pytest.mark.parametrize("opt_out", [False, True])
def test_xla_cpu_flags_set_at_import_unless_opted_out(opt_out):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", model_lib.XLA_CPU_FLAGS_ENV)}
    env["JAX_PLATFORMS"] = "cpu"
    if opt_out:
        env[model_lib.XLA_CPU_FLAGS_ENV] = "0"
    out = subprocess.run([sys.executable, "-c", _FLAG_PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    applied, flags, conv_in_ynnpack = out.stdout.split()
    if opt_out:
        assert applied == "False" and model_lib.XLA_CPU_FLAGS[0] not in flags
    else:
        assert applied == "True" and model_lib.XLA_CPU_FLAGS[0] in flags
        assert conv_in_ynnpack == "False"   # the convolution runs on Eigen


def test_xla_cpu_flags_respect_user_flags_and_started_backend(monkeypatch):
    user = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
    monkeypatch.setenv("XLA_FLAGS", user)
    model_lib._apply_xla_cpu_flags()
    assert os.environ["XLA_FLAGS"] == user   # the user's own setting wins
    monkeypatch.delenv("XLA_FLAGS")
    jnp.ones(1).block_until_ready()          # the backend has started: too late, warn and change nothing
    if jax.default_backend() == "cpu" and model_lib._jaxlib_version() >= model_lib._MIN_JAXLIB:
        with pytest.warns(UserWarning, match="not in effect"):
            model_lib._apply_xla_cpu_flags()
    assert "XLA_FLAGS" not in os.environ
