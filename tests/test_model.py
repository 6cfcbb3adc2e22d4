import jax
import jax.numpy as jnp
import numpy as np
import pytest

from unet_jax.geometry import output_size, valid_input_size
from unet_jax.model import UNet, count_convs, count_params

from unet_jax.plain_unet import PlainUNet


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


# ---------------------------------------------------------------------------------------------------------------
# The network on the fast layers (unet_jax.layers) against the plain flax one (tests/plain_unet.py)
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_fast_formulation_equals_plain(padding):
    """The optimised layers (reshape pool, matmul up-conv) give the plain flax network's output and gradients."""
    size = 44 if padding == "VALID" else 32
    x = jax.random.uniform(jax.random.PRNGKey(3), (2, size, size, 1))
    fast = UNet(features=4, depth=2, padding=padding)
    plain = PlainUNet(features=4, depth=2, padding=padding)
    variables = fast.init(jax.random.PRNGKey(0), x)
    assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(plain.init(
        jax.random.PRNGKey(0), x))
    np.testing.assert_allclose(fast.apply(variables, x), plain.apply(variables, x), atol=1e-5)
    g_fast = jax.grad(lambda v: fast.apply(v, x).sum())(variables)
    g_plain = jax.grad(lambda v: plain.apply(v, x).sum())(variables)
    for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_plain)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_fast_network_equals_plain_bf16():
    """The bfloat16 compute path of the whole network (conv3x3_shift with C_in = 3 is checked above)."""
    dtype = jnp.bfloat16
    x = jax.random.uniform(jax.random.PRNGKey(3), (1, 44, 44, 1))
    fast = UNet(features=4, depth=2, dtype=dtype)
    plain = PlainUNet(features=4, depth=2, dtype=dtype)
    variables = fast.init(jax.random.PRNGKey(0), x)
    tol = 5e-2
    np.testing.assert_allclose(fast.apply(variables, x), plain.apply(variables, x), rtol=tol, atol=tol)
    g_fast = jax.grad(lambda v: jnp.sum(jnp.sin(fast.apply(v, x))))(variables)
    g_plain = jax.grad(lambda v: jnp.sum(jnp.sin(plain.apply(v, x))))(variables)
    for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_plain)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max()))
