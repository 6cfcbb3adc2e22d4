"""Tests for unet_jax.data.sampler: tiles come from the right places, the sampling law, streaming, budgets."""
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from unet_jax import tiling
from unet_jax.data.sampler import (PAD_MODE, DeviceDataset, device_dataset_nbytes, fits_on_device, gather_tiles,
                                   sample_origins, sample_tiles, to_device_dataset)

T, O = 14, 6          # tile and output size: border 4
B = (T - O) // 2


def _example(rng, h, w, c=1):
    inst = rng.integers(0, 4, size=(h, w)).astype(np.int32)
    return {"image": rng.uniform(size=(h, w, c)).astype(np.float32), "instances": inst,
            "weights": rng.uniform(0.5, 3.0, size=(h, w)).astype(np.float32), "name": f"{h}x{w}"}


@pytest.fixture(scope="module")
def examples():
    rng = np.random.default_rng(0)
    # Different sizes, non-square, one smaller than O in height (4 < 6) and one smaller in both.
    return [_example(rng, 11, 9), _example(rng, 8, 13), _example(rng, 4, 10), _example(rng, 3, 2)]


@pytest.fixture(scope="module")
def dataset(examples):
    return to_device_dataset(examples, T, O)


def _reference(ex, pad_mode=PAD_MODE):
    """numpy reference: image/labels/weights of one example padded as documented (np.pad), as (E+2b, F+2b)."""
    h, w = ex["instances"].shape
    eh, ew = max(h, O), max(w, O)
    top, left = (eh - h) // 2, (ew - w) // 2
    pad = ((B + top, B + eh - h - top), (B + left, B + ew - w - left))
    img = np.pad(ex["image"], pad + ((0, 0),), mode=pad_mode)
    lab = np.pad((ex["instances"] > 0).astype(np.int32), pad, mode=pad_mode)
    wts = np.pad(ex["weights"], pad, mode=pad_mode)
    extension = np.zeros((eh + 2 * B, ew + 2 * B), bool)
    extension[B:B + eh, B:B + ew] = True
    extension[B + top:B + top + h, B + left:B + left + w] = False
    wts = np.where(extension, 0, wts)
    return img, lab, wts, (eh, ew)


def test_pad_mode_is_the_tiling_default():
    assert PAD_MODE == inspect.signature(tiling.iter_tile_batches).parameters["pad_mode"].default


def test_device_dataset_layout(examples, dataset):
    assert isinstance(dataset, DeviceDataset)
    hp = max(max(e["image"].shape[0], O) for e in examples) + 2 * B
    wp = max(max(e["image"].shape[1], O) for e in examples) + 2 * B
    assert dataset.images.shape == (4, hp, wp, 1) and dataset.images.dtype == jnp.float32
    assert dataset.labels.shape == (4, hp, wp) and dataset.labels.dtype == jnp.int32
    assert dataset.weights.shape == (4, hp, wp) and dataset.weights.dtype == jnp.float32
    np.testing.assert_array_equal(dataset.sizes, [[11, 9], [8, 13], [6, 10], [6, 6]])
    for i, ex in enumerate(examples):
        img, lab, wts, (eh, ew) = _reference(ex)
        np.testing.assert_array_equal(np.asarray(dataset.images[i, :eh + 2 * B, :ew + 2 * B]), img)
        np.testing.assert_array_equal(np.asarray(dataset.labels[i, :eh + 2 * B, :ew + 2 * B]), lab)
        np.testing.assert_array_equal(np.asarray(dataset.weights[i, :eh + 2 * B, :ew + 2 * B]), wts)
        assert not np.asarray(dataset.images[i, eh + 2 * B:]).any()
    # The extension of the 4-row image holds mirrored pixels but zero weights; its real pixels keep theirs.
    ex = examples[2]
    np.testing.assert_array_equal(np.asarray(dataset.weights[2, B + 1:B + 5, B:B + 10]), ex["weights"])
    assert not np.asarray(dataset.weights[2, B, B:B + 10]).any()
    assert not np.asarray(dataset.weights[2, B + 5, B:B + 10]).any()


def test_tiles_are_crops_of_the_mirror_padded_image(examples, dataset):
    key = jax.random.PRNGKey(3)
    index, origins = sample_origins(dataset, key, 64, O)
    images, labels, weights = gather_tiles(dataset, index, origins, T)
    assert images.shape == (64, T, T, 1) and labels.shape == (64, T, T) and weights.shape == (64, T, T)
    assert images.dtype == jnp.float32 and labels.dtype == jnp.int32 and weights.dtype == jnp.float32
    refs = [_reference(ex) for ex in examples]
    for b in range(64):
        i, (oy, ox) = int(index[b]), np.asarray(origins[b])
        img, lab, wts, (eh, ew) = refs[i]
        assert 0 <= oy <= eh - O and 0 <= ox <= ew - O
        np.testing.assert_array_equal(np.asarray(images[b]), img[oy:oy + T, ox:ox + T])
        np.testing.assert_array_equal(np.asarray(labels[b]), lab[oy:oy + T, ox:ox + T])
        np.testing.assert_array_equal(np.asarray(weights[b]), wts[oy:oy + T, ox:ox + T])
    # sample_tiles is exactly sample_origins + gather_tiles, and works inside a user's jit.
    s_img, s_lab, s_wts = jax.jit(lambda d, k: sample_tiles(d, k, 64, T, O))(dataset, key)
    np.testing.assert_array_equal(np.asarray(s_img), np.asarray(images))
    np.testing.assert_array_equal(np.asarray(s_lab), np.asarray(labels))
    np.testing.assert_array_equal(np.asarray(s_wts), np.asarray(weights))


def test_output_window_of_a_large_image_is_the_image_itself():
    """Centre-cropping a tile to O gives the unpadded image pixels at the origin (no mirroring inside)."""
    rng = np.random.default_rng(5)
    ex = _example(rng, 20, 17)
    ds = to_device_dataset([ex], T, O)
    index, origins = sample_origins(ds, jax.random.PRNGKey(0), 32, O)
    images, _, weights = gather_tiles(ds, index, origins, T)
    for b in range(32):
        oy, ox = np.asarray(origins[b])
        np.testing.assert_array_equal(np.asarray(images[b, B:B + O, B:B + O]), ex["image"][oy:oy + O, ox:ox + O])
        np.testing.assert_array_equal(np.asarray(weights[b, B:B + O, B:B + O]),
                                      ex["weights"][oy:oy + O, ox:ox + O])


def test_sampling_is_uniform_and_covers_every_pixel(examples, dataset):
    """Image index uniform over images; origin uniform over the valid positions; every pixel in some window."""
    n = 20000
    index, origins = sample_origins(dataset, jax.random.PRNGKey(11), n, O)
    index, origins = np.asarray(index), np.asarray(origins)
    counts = np.bincount(index, minlength=4)
    assert stats.chisquare(counts).pvalue > 1e-3
    sizes = np.asarray(dataset.sizes)
    for i in range(4):
        o = origins[index == i]
        eh, ew = sizes[i]
        assert o[:, 0].min() == 0 and o[:, 0].max() == eh - O and o[:, 1].min() == 0 and o[:, 1].max() == ew - O
        cells = np.zeros((eh - O + 1, ew - O + 1), int)
        np.add.at(cells, (o[:, 0], o[:, 1]), 1)
        assert cells.min() > 0
        if cells.size > 1:
            assert stats.chisquare(cells.ravel()).pvalue > 1e-3
        covered = np.zeros((eh, ew), bool)
        for oy, ox in o[:500]:
            covered[oy:oy + O, ox:ox + O] = True
        assert covered.all()


def test_small_image_fits_one_window_with_weights_only_on_real_pixels():
    rng = np.random.default_rng(2)
    ex = _example(rng, 3, 4)
    ds = to_device_dataset([ex], T, O)
    images, labels, weights = sample_tiles(ds, jax.random.PRNGKey(0), 3, T, O)
    assert images.shape == (3, T, T, 1)
    # Only one origin (0, 0): the image sits at rows B+1..B+3, columns B+1..B+4 of every tile.
    for b in range(3):
        np.testing.assert_array_equal(np.asarray(images[b, B + 1:B + 4, B + 1:B + 5]), ex["image"])
        w = np.asarray(weights[b, B:B + O, B:B + O])
        np.testing.assert_array_equal(w[1:4, 1:5], ex["weights"])
        assert (w > 0).sum() == ex["weights"].size  # the mirrored extension carries no weight
        assert np.asarray(labels[b]).max() <= 1


def test_fits_on_device_counts_the_padded_arrays(examples, dataset):
    nbytes = device_dataset_nbytes(examples, T, O)
    actual = sum(np.asarray(a).nbytes for a in dataset)
    assert nbytes == actual
    assert fits_on_device(examples, nbytes, T, O)
    assert not fits_on_device(examples, nbytes - 1, T, O)
    assert fits_on_device(examples)  # default budget: free memory


def test_bad_arguments_raise(examples):
    with pytest.raises(ValueError, match="out_size"):
        to_device_dataset(examples, 14, 7)
    with pytest.raises(ValueError, match="out_size"):
        to_device_dataset(examples, 6, 14)
    with pytest.raises(ValueError, match="examples"):
        to_device_dataset([], T, O)
    rgb = dict(examples[0], image=np.zeros((11, 9, 3), np.float32))
    with pytest.raises(ValueError, match="channels"):
        to_device_dataset([examples[0], rgb], T, O)
    with pytest.raises(ValueError, match="weights"):
        to_device_dataset([dict(examples[0], weights=np.zeros((3, 3), np.float32))], T, O)
    with pytest.raises(ValueError, match="pad_mode"):
        to_device_dataset(examples, T, O, pad_mode="wrap")
    with pytest.raises(ValueError, match="batch_size"):
        sample_tiles(to_device_dataset(examples, T, O), jax.random.PRNGKey(0), 0, T, O)
    with pytest.raises(ValueError, match="tile_size"):
        sample_tiles(to_device_dataset(examples, T, O), jax.random.PRNGKey(0), 1, 40, 32)
