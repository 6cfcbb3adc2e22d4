import jax.numpy as jnp
import numpy as np
import pytest

from unet_jax.losses import center_crop, weighted_softmax_cross_entropy


def test_loss_equals_hand_computation_2x2():
    logits = np.array([[[[2.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [-1.0, 3.0]]]], np.float32)  # (1, 2, 2, 2)
    labels = np.array([[[0, 1], [1, 0]]], np.int32)
    weights = np.array([[[1.0, 2.0], [0.5, 4.0]]], np.float32)
    ce = []
    for (i, j) in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        z = logits[0, i, j]
        ce.append(-(z[labels[0, i, j]] - np.log(np.exp(z).sum())))
    w = weights[0].ravel()
    expected = (w * np.array(ce)).sum() / w.sum()
    got = weighted_softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(weighted_softmax_cross_entropy(logits, labels, None), np.mean(ce), rtol=1e-6)


def test_zero_weight_pixels_are_ignored():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 4, 4, 2)).astype(np.float32)
    labels = rng.integers(0, 2, size=(1, 4, 4)).astype(np.int32)
    weights = np.ones((1, 4, 4), np.float32)
    weights[0, :2] = 0
    base = weighted_softmax_cross_entropy(logits, labels, weights)
    labels2 = labels.copy()
    labels2[0, :2] = 1 - labels2[0, :2]  # change labels where weight is 0
    np.testing.assert_allclose(weighted_softmax_cross_entropy(logits, labels2, weights), base, rtol=1e-6)
    np.testing.assert_allclose(base, weighted_softmax_cross_entropy(logits[:, 2:], labels[:, 2:]), rtol=1e-6)
    assert float(weighted_softmax_cross_entropy(logits, labels, np.zeros_like(weights))) == 0.0


def test_labels_are_center_cropped_to_logits():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=(2, 10, 10)).astype(np.int32)
    weights = rng.uniform(size=(2, 10, 10)).astype(np.float32)
    logits = rng.normal(size=(2, 6, 6, 2)).astype(np.float32)
    a = weighted_softmax_cross_entropy(logits, labels, weights)
    b = weighted_softmax_cross_entropy(logits, labels[:, 2:8, 2:8], weights[:, 2:8, 2:8])
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_center_crop():
    x = np.arange(2 * 7 * 9 * 3).reshape(2, 7, 9, 3)
    np.testing.assert_array_equal(center_crop(x, (3, 5)), x[:, 2:5, 2:7])
    np.testing.assert_array_equal(center_crop(x[0], 3, axes=(0, 1)), x[0, 2:5, 3:6])
    with pytest.raises(ValueError, match="size"):
        center_crop(x, (8, 8))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="logits"):
        weighted_softmax_cross_entropy(np.zeros((4, 4, 2)), np.zeros((1, 4, 4), np.int32))
    with pytest.raises(ValueError, match="labels"):
        weighted_softmax_cross_entropy(np.zeros((1, 4, 4, 2)), np.zeros((4, 4), np.int32))
