import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unet_jax.layers import Conv3x3, UpConv2x2, conv3x3_shift, max_pool_2x2, upconv2x2


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


# ---------------------------------------------------------------------------------------------------------------
# Optimised formulations against the plain ones, outputs and gradients
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
