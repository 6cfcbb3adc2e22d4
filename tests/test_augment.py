"""Tests for unet_jax.augment: on-accelerator data augmentation (paper section 3.1). Small arrays, CPU, seconds."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from jax.scipy.ndimage import map_coordinates

from unet_jax.config import base_config
from unet_jax import augment as aug

H = W = 64


def make_config(**overrides):
    """The augment config section (unet_jax.config.base_config) with every part off, then ``overrides``."""
    cfg = base_config().augment
    cfg.update(dict(enabled=True, elastic=False, elastic_sigma=0.0, rotate=False, max_rotation=0.0, flip=False,
                    shift=0.0, scale=0.0, brightness=0.0, contrast=0.0, gamma=0.0, noise=0.0))
    cfg.update(overrides)
    return cfg


def smooth_image(h=H, w=W, channels=None, seed=0):
    """Low-frequency float32 image in [0, 1] (interpolation errors stay small)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    img = np.zeros((h, w))
    for _ in range(3):
        fy, fx, ph = rng.uniform(-1, 1, 3) * (2 * np.pi / 40, 2 * np.pi / 40, np.pi)
        img += np.cos(fy * yy + fx * xx + ph)
    img = (img - img.min()) / (img.max() - img.min())
    if channels is not None:
        img = np.stack([img ** (1 + c) for c in range(channels)], -1)
    return img.astype(np.float32)


def blob_labels(h=H, w=W, seed=0):
    """Instance labels: 0 background, 1..K large blobs (Voronoi-ish cells)."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, [h, w], (9, 2))
    yy, xx = np.mgrid[:h, :w]
    d = (yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2
    lab = d.argmin(-1).astype(np.int32) + 1
    lab[np.sort(d, -1)[..., 1] - np.sort(d, -1)[..., 0] < 20] = 0   # membranes between cells
    return lab


@pytest.fixture(scope="module")
def example():
    rng = np.random.default_rng(1)
    image = jnp.asarray(smooth_image())
    labels = jnp.asarray(blob_labels())
    weights = jnp.asarray(rng.uniform(0.5, 10, (H, W)).astype(np.float32))
    return image, labels, weights


@functools.lru_cache(maxsize=None)
def jitted_augment(cfg_items):
    cfg = make_config(**dict(cfg_items))
    return jax.jit(lambda k, i, l, w: aug.augment(k, i, l, w, cfg))


def run_augment(key, image, labels, weights, **overrides):
    return jitted_augment(tuple(sorted(overrides.items())))(key, image, labels, weights)


_elastic = jax.jit(aug.elastic_warp, static_argnames=("grid", "sigma"))
_warp = jax.jit(aug.warp)


# ----------------------------------------------------------------------------------------------------------------
# Identity and invariants
# ----------------------------------------------------------------------------------------------------------------

def test_identity_when_everything_is_off(example):
    image, labels, weights = example
    key = jax.random.PRNGKey(0)
    for out in (aug.elastic_warp(key, image, labels, weights, sigma=0.0),
                run_augment(key, image, labels, weights, elastic=True, elastic_sigma=0.0),
                run_augment(key, image, labels, weights, enabled=False, elastic=True, elastic_sigma=10.0,
                            rotate=True, max_rotation=90.0, noise=0.1)):
        for got, want in zip(out, example):
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_identity_coordinate_map_resamples_exactly(example):
    image, labels, weights = example
    coords = aug.coordinate_map((H, W))
    np.testing.assert_array_equal(np.asarray(coords), np.mgrid[:H, :W].astype(np.float32))
    zero_grid = jnp.zeros((2, 3, 3), jnp.float32)
    for c in (coords, aug.coordinate_map((H, W), matrix=jnp.eye(2), grid_displacements=zero_grid)):
        for got, want in zip(_warp(image, labels, weights, c), example):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_labels_keep_their_value_set(example):
    image, labels, weights = example
    values = set(np.unique(np.asarray(labels)).tolist())
    assert len(values) > 5
    for seed in range(4):
        key = jax.random.PRNGKey(seed)
        _, lab1, _ = _elastic(key, image, labels, weights, grid=3, sigma=10.0)
        _, lab2, _ = run_augment(key, image, labels, weights, elastic=True, elastic_sigma=10.0, rotate=True,
                                 max_rotation=180.0, flip=True, scale=0.2, shift=5.0)
        for lab in (lab1, lab2):
            got = set(np.unique(np.asarray(lab)).tolist())
            assert got <= values
            assert not np.array_equal(np.asarray(lab), np.asarray(labels))   # it did move


def test_same_key_same_output_different_keys_differ(example):
    image, labels, weights = example
    kw = dict(elastic=True, elastic_sigma=10.0, rotate=True, max_rotation=180.0, flip=True, brightness=0.1,
              contrast=0.1, gamma=0.1, noise=0.02)
    a = run_augment(jax.random.PRNGKey(3), image, labels, weights, **kw)
    b = run_augment(jax.random.PRNGKey(3), image, labels, weights, **kw)
    c = run_augment(jax.random.PRNGKey(4), image, labels, weights, **kw)
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        assert not np.array_equal(np.asarray(x), np.asarray(z))
    e1 = _elastic(jax.random.PRNGKey(5), image, labels, weights, grid=3, sigma=10.0)
    e2 = _elastic(jax.random.PRNGKey(5), image, labels, weights, grid=3, sigma=10.0)
    e3 = _elastic(jax.random.PRNGKey(6), image, labels, weights, grid=3, sigma=10.0)
    np.testing.assert_array_equal(np.asarray(e1[0]), np.asarray(e2[0]))
    assert not np.array_equal(np.asarray(e1[0]), np.asarray(e3[0]))


# ----------------------------------------------------------------------------------------------------------------
# The elastic field
# ----------------------------------------------------------------------------------------------------------------

def test_displacement_grid_statistics():
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    grids = np.asarray(jax.vmap(lambda k: aug.sample_displacement_grid(k, 3, 10.0))(keys))
    assert grids.shape == (4000, 2, 3, 3) and grids.dtype == np.float32
    # 72,000 draws: the sample std is within ~0.5% of sigma; the mean within ~0.1 px of 0.
    assert abs(grids.std() - 10.0) < 0.2
    assert abs(grids.mean()) < 0.2
    # every grid point and both components have the same spread, and they are uncorrelated
    np.testing.assert_allclose(grids.std(axis=0), 10.0, rtol=0.08)
    corr = np.corrcoef(grids.reshape(4000, -1), rowvar=False)
    assert np.abs(corr - np.eye(18)).max() < 0.1
    small = np.asarray(jax.vmap(lambda k: aug.sample_displacement_grid(k, (2, 4), 2.5))(keys[:2000]))
    assert small.shape == (2000, 2, 2, 4) and abs(small.std() - 2.5) < 0.1


def test_displacement_field_is_bicubic_interpolation_of_the_grid():
    g = aug.sample_displacement_grid(jax.random.PRNGKey(1), (3, 4), 10.0)
    h, w = 37, 49   # grid points fall on whole pixels
    field = np.asarray(aug.displacement_field(g, (h, w)))
    assert field.shape == (2, h, w) and field.dtype == np.float32
    # grid points sit on pixels a (H-1)/(gy-1), b (W-1)/(gx-1) and keep their values
    rows = np.round(np.arange(3) * (h - 1) / 2).astype(int)
    cols = np.round(np.arange(4) * (w - 1) / 3).astype(int)
    np.testing.assert_allclose(field[:, rows][:, :, cols], np.asarray(g), atol=1e-4)
    # between them: scipy's cubic spline (order 3, mirror) evaluated at the fractional grid positions
    ty, tx = np.meshgrid(np.linspace(0, 2, h), np.linspace(0, 3, w), indexing="ij")
    ref = np.stack([scipy.ndimage.map_coordinates(np.asarray(g[k], np.float64), [ty, tx], order=3, mode="mirror")
                    for k in range(2)])
    np.testing.assert_allclose(field, ref, atol=1e-4)
    # smooth and not piecewise linear: the field's midpoints differ from linear interpolation
    lin = np.stack([scipy.ndimage.map_coordinates(np.asarray(g[k], np.float64), [ty, tx], order=1)
                    for k in range(2)])
    assert np.abs(field - lin).max() > 0.1
    # constants are reproduced exactly (partition of unity)
    const = np.asarray(aug.displacement_field(jnp.full((2, 3, 3), 2.5), (h, w)))
    np.testing.assert_allclose(const, 2.5, atol=1e-5)


def test_elastic_warp_is_the_documented_composition(example):
    image, labels, weights = example
    key = jax.random.PRNGKey(7)
    coords = aug.coordinate_map((H, W), grid_displacements=aug.sample_displacement_grid(key, 3, 10.0))
    field = np.asarray(aug.displacement_field(aug.sample_displacement_grid(key, 3, 10.0), (H, W)))
    np.testing.assert_allclose(np.asarray(coords), np.mgrid[:H, :W] + field, atol=1e-4)
    got = _elastic(key, image, labels, weights, grid=3, sigma=10.0)
    want = _warp(image, labels, weights, coords)
    np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))
    np.testing.assert_allclose(np.asarray(got[2]), np.asarray(want[2]), atol=1e-3)   # rough weights, ~1e-5 px


# ----------------------------------------------------------------------------------------------------------------
# Resampling and geometry
# ----------------------------------------------------------------------------------------------------------------

def test_warp_equals_map_coordinates_with_mirror_boundary(example):
    image, labels, weights = example
    rng = np.random.default_rng(0)
    # positions inside and far outside the image (several reflections)
    coords = jnp.asarray(rng.uniform(-2.5 * H, 3.5 * H, (2, 40, 30)).astype(np.float32))
    img3 = jnp.asarray(smooth_image(channels=3))
    out_img, out_lab, out_w = _warp(img3, labels, weights, coords)
    assert out_img.shape == (40, 30, 3) and out_lab.shape == (40, 30) and out_w.shape == (40, 30)
    for c in range(3):
        ref = map_coordinates(img3[..., c], [coords[0], coords[1]], order=1, mode="mirror")
        np.testing.assert_allclose(np.asarray(out_img[..., c]), np.asarray(ref), atol=1e-5)
    ref_w = map_coordinates(weights, [coords[0], coords[1]], order=1, mode="mirror")
    np.testing.assert_allclose(np.asarray(out_w), np.asarray(ref_w), rtol=1e-5, atol=1e-4)
    ref_lab = map_coordinates(labels, [coords[0], coords[1]], order=0, mode="mirror")
    assert (np.asarray(out_lab) == np.asarray(ref_lab)).mean() > 0.99   # ties at .5 may round either way


def test_rotations_by_90_degrees_equal_np_rot90(example):
    image, labels, weights = example
    img, lab, wt = (np.asarray(a) for a in example)
    for k in range(8):
        coords = aug.coordinate_map((H, W), matrix=aug.dihedral_matrix(k))
        out = _warp(image, labels, weights, coords)
        for got, a in zip(out, (img, lab, wt)):
            want = np.rot90(a, k % 4)
            want = np.fliplr(want) if k >= 4 else want
            np.testing.assert_array_equal(np.asarray(got), want)
    # any-angle rotation by exactly 90 degrees (cos is not exactly 0 in float32)
    out = _warp(image, labels, weights, aug.coordinate_map((H, W), matrix=aug.rotation_matrix(np.pi / 2)))
    np.testing.assert_allclose(np.asarray(out[0]), np.rot90(img), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(out[1]), np.rot90(lab))
    out = _warp(image, labels, weights, aug.coordinate_map((H, W), matrix=aug.rotation_matrix(-np.pi / 2)))
    np.testing.assert_array_equal(np.asarray(out[1]), np.rot90(lab, -1))
    # non-square images: the shape-keeping symmetries
    rect = np.asarray(smooth_image(20, 32))
    for k, want in ((2, np.rot90(rect, 2)), (4, np.fliplr(rect)), (6, np.flipud(rect))):
        got, _, _ = aug.warp(jnp.asarray(rect), None, None, aug.coordinate_map(rect.shape, aug.dihedral_matrix(k)))
        np.testing.assert_array_equal(np.asarray(got), want)


def test_composed_single_resampling_equals_sequential_resampling():
    image = jnp.asarray(smooth_image(seed=3))
    labels = jnp.asarray(blob_labels(seed=3))
    grid = aug.sample_displacement_grid(jax.random.PRNGKey(11), 3, 4.0)
    matrix = aug.rotation_matrix(np.deg2rad(30.0)) @ aug.dihedral_matrix(5) / 1.1
    offset = jnp.array([1.5, -2.0])
    # sequential: affine first, then the elastic deformation of the result (two interpolations)
    affine = aug.coordinate_map((H, W), matrix=matrix, offset=offset)
    elastic = aug.coordinate_map((H, W), grid_displacements=grid)
    img1, lab1, _ = aug.warp(image, labels, None, affine)
    img2, lab2, _ = aug.warp(img1, lab1, None, elastic)
    # composed: one coordinate map, one interpolation
    composed = aug.coordinate_map((H, W), matrix=matrix, offset=offset, grid_displacements=grid)
    img3, lab3, _ = aug.warp(image, labels, None, composed)
    # compare where the intermediate positions lie inside the image (no boundary handling in between)
    e = np.asarray(elastic)
    inside = (e[0] >= 0) & (e[0] <= H - 1) & (e[1] >= 0) & (e[1] <= W - 1)
    assert inside.mean() > 0.7
    diff = np.abs(np.asarray(img3) - np.asarray(img2))[inside]
    assert diff.max() < 0.03 and diff.mean() < 0.005          # interpolation error of a smooth image
    # nearest neighbour twice moves some border pixels by one (about 96% agree; the wrong order gives about 65%)
    assert (np.asarray(lab3) == np.asarray(lab2))[inside].mean() > 0.93
    # the other order (elastic first, then affine) is a different map: the test would see it
    wrong = aug.warp(aug.warp(image, None, None, elastic)[0], None, None, affine)[0]
    assert np.abs(np.asarray(wrong) - np.asarray(img2))[inside].mean() > 4 * diff.mean()


# ----------------------------------------------------------------------------------------------------------------
# The whole chain, gray values, shapes, dtypes, jit and vmap
# ----------------------------------------------------------------------------------------------------------------

def test_flip_only_gives_one_of_the_eight_symmetries(example):
    image, labels, weights = example
    img = np.asarray(image)
    candidates = [np.rot90(img, k % 4) if k < 4 else np.fliplr(np.rot90(img, k % 4)) for k in range(8)]
    seen = set()
    for seed in range(24):
        out, _, _ = run_augment(jax.random.PRNGKey(seed), image, labels, weights, flip=True)
        match = [k for k, c in enumerate(candidates) if np.array_equal(np.asarray(out), c)]
        assert len(match) == 1
        seen.add(match[0])
    assert len(seen) >= 6


def test_gray_values_touch_only_the_image_and_stay_in_range(example):
    image, labels, weights = example
    kw = dict(brightness=0.3, contrast=0.5, gamma=0.5, noise=0.05)
    for seed in range(3):
        img, lab, wt = run_augment(jax.random.PRNGKey(seed), image, labels, weights, **kw)
        np.testing.assert_array_equal(np.asarray(lab), np.asarray(labels))
        np.testing.assert_array_equal(np.asarray(wt), np.asarray(weights))
        assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
        assert not np.array_equal(np.asarray(img), np.asarray(image))
    # brightness alone adds one constant (where not clipped)
    img = np.asarray(aug.gray_value_augment(jax.random.PRNGKey(0), image * 0.5 + 0.25, brightness=0.2))
    delta = img - np.asarray(image * 0.5 + 0.25)
    assert 0 < np.abs(delta).max() <= 0.2 and np.ptp(delta) < 1e-6
    # noise alone: zero-mean, the requested std
    flat = jnp.full((128, 128), 0.5)
    noisy = np.asarray(aug.gray_value_augment(jax.random.PRNGKey(1), flat, noise=0.05)) - 0.5
    assert abs(noisy.std() - 0.05) < 0.003 and abs(noisy.mean()) < 0.003
    # gamma alone is monotonic and keeps 0 and 1
    ramp = jnp.linspace(0, 1, 101)
    g = np.asarray(aug.gray_value_augment(jax.random.PRNGKey(2), ramp, gamma=0.5))
    assert g[0] == 0 and g[-1] == 1 and np.all(np.diff(g) >= 0) and not np.allclose(g, np.asarray(ramp))


@pytest.mark.parametrize("channels,img_dtype,lab_dtype", [(None, jnp.float32, jnp.int32),
                                                           (3, jnp.float32, jnp.int32),
                                                           (1, jnp.bfloat16, jnp.uint8)])
def test_shapes_and_dtypes_are_kept(example, channels, img_dtype, lab_dtype):
    _, labels, weights = example
    image = jnp.asarray(smooth_image(channels=channels)).astype(img_dtype)
    labels = labels.astype(lab_dtype)
    cfg = base_config().augment   # the full default chain
    out = aug.augment(jax.random.PRNGKey(0), image, labels, weights, cfg)
    for got, want in zip(out, (image, labels, weights)):
        assert got.shape == want.shape and got.dtype == want.dtype
    out = aug.elastic_warp(jax.random.PRNGKey(0), image, labels, weights)
    for got, want in zip(out, (image, labels, weights)):
        assert got.shape == want.shape and got.dtype == want.dtype


def test_augment_batch_under_jit_matches_per_example_augment(example):
    image, labels, weights = example
    cfg = make_config(elastic=True, elastic_sigma=10.0, rotate=True, max_rotation=180.0, flip=True, scale=0.1,
                      shift=3.0, brightness=0.1, contrast=0.1, gamma=0.1, noise=0.02)
    b = 3
    images = jnp.stack([image[..., None]] * b)
    labs, wts = jnp.stack([labels] * b), jnp.stack([weights] * b)
    key = jax.random.PRNGKey(42)
    out = jax.jit(lambda k, i, l, w: aug.augment_batch(k, i, l, w, cfg))(key, images, labs, wts)
    assert [o.shape for o in out] == [(b, H, W, 1), (b, H, W), (b, H, W)]
    assert [o.dtype for o in out] == [jnp.float32, jnp.int32, jnp.float32]
    keys = jax.random.split(key, b)
    single = jax.jit(lambda k, i, l, w: aug.augment(k, i, l, w, cfg))
    for n in range(b):
        ref = single(keys[n], images[n], labs[n], wts[n])
        np.testing.assert_allclose(np.asarray(out[0][n]), np.asarray(ref[0]), atol=1e-5)
        np.testing.assert_array_equal(np.asarray(out[1][n]), np.asarray(ref[1]))
        np.testing.assert_allclose(np.asarray(out[2][n]), np.asarray(ref[2]), rtol=1e-5, atol=1e-5)
    assert not np.array_equal(np.asarray(out[1][0]), np.asarray(out[1][1]))   # each example its own draw
    # augment itself vmaps too (a batched gather instead of augment_batch's flat one): the same result
    vm = jax.jit(jax.vmap(lambda k, i, l, w: aug.augment(k, i, l, w, cfg)))(keys, images, labs, wts)
    np.testing.assert_allclose(np.asarray(vm[0]), np.asarray(out[0]), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(vm[1]), np.asarray(out[1]))


# ----------------------------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------------------------

def test_bad_arguments_raise_value_error(example):
    image, labels, weights = example
    key = jax.random.PRNGKey(0)
    cfg = base_config().augment
    with pytest.raises(ValueError, match="labels"):
        aug.augment(key, image, labels[:10], weights, cfg)
    with pytest.raises(ValueError, match="labels"):
        aug.augment(key, image, labels.astype(jnp.float32), weights, cfg)
    with pytest.raises(ValueError, match="weights"):
        aug.elastic_warp(key, image, labels, weights[None])
    with pytest.raises(ValueError, match="image"):
        aug.elastic_warp(key, image[None, None], labels, weights)
    with pytest.raises(ValueError, match="image"):
        aug.elastic_warp(key, (image * 255).astype(jnp.uint8), labels, weights)
    with pytest.raises(ValueError, match="grid"):
        aug.elastic_warp(key, image, labels, weights, grid=1)
    with pytest.raises(ValueError, match="sigma"):
        aug.elastic_warp(key, image, labels, weights, sigma=-1.0)
    with pytest.raises(ValueError, match="images"):
        aug.augment_batch(key, image, labels, weights, cfg)
    bad = base_config().augment
    bad.scale = 1.5
    with pytest.raises(ValueError, match="scale"):
        aug.augment(key, image, labels, weights, bad)
    bad = base_config().augment.to_dict()
    del bad["noise"]
    with pytest.raises(ValueError, match="noise"):
        aug.augment(key, image, labels, weights, bad)
    with pytest.raises(ValueError, match="matrix"):
        aug.coordinate_map((H, W), matrix=jnp.eye(3))
    with pytest.raises(ValueError, match="coords"):
        aug.warp(image, labels, weights, jnp.zeros((3, H, W)))
    # the whole experiment config is accepted too
    out = aug.augment(key, image, labels, weights, base_config())
    assert out[0].shape == image.shape


def test_augment_preview_writes_a_png_with_label_borders(tmp_path):
    from skimage.io import imread
    from unet_jax.preview import BORDER_COLOR, augment_preview
    images = [(smooth_image(seed=s) * 255).astype(np.uint8) for s in range(2)]
    labels = [blob_labels(seed=s) for s in range(2)]
    path = tmp_path / "sub" / "preview.png"
    pic = augment_preview(images, labels, make_config(flip=True), path, n=3, seed=0, tile=32, columns=2)
    assert pic.shape == (2 * 32 + 4, 2 * 32 + 4, 3) and pic.dtype == np.uint8
    np.testing.assert_array_equal(imread(path), pic)
    border = np.all(pic == np.round(np.array(BORDER_COLOR) * 255).astype(np.uint8), axis=-1)
    assert 0.02 < border[:32, :32].mean() < 0.5          # borders drawn, not everywhere
    assert np.all(pic[32:, 36:] == 255)                  # the fourth cell of the grid stays empty (white)
    with pytest.raises(ValueError, match="tile"):
        augment_preview(images, labels, make_config(), path, tile=65)
