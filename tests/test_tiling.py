"""Overlap-tile inference: exactness for VALID, smooth blending for SAME, bounded memory, TTA."""
import functools
import gc
import inspect
import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage as ndi

from unet_jax import tiling
from unet_jax.geometry import border, output_size, valid_input_size
from unet_jax.model import UNet


def _smooth_image(shape, seed):
    """A smooth random image in [0, 1] (so a random network gives structured, not pure-noise, outputs)."""
    rs = np.random.RandomState(seed)
    img = ndi.gaussian_filter(rs.rand(*shape), (2, 2) + (0,) * (len(shape) - 2))
    return ((img - img.min()) / (img.max() - img.min())).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _net(depth, padding, channels=1):
    """A tiny random-init U-Net: (model, variables, apply_fn); apply_fn is one object per net (cache reuse)."""
    model = UNet(num_classes=2, features=4, depth=depth, padding=padding, dropout_rate=0.0)
    size = valid_input_size(4, depth, padding)
    variables = _random_variables(model, (1, size, size, channels), seed=depth)
    return model, variables, functools.partial(model.apply, variables)


def _random_variables(model, input_shape, seed):
    """He-normal random parameters drawn with numpy (jax's PRNG compiles slowly on CPU; the values are the same
    kind as ``model.init``'s): kernels N(0, 2 / fan_in), biases N(0, 0.1^2)."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct(input_shape, jnp.float32))
    rs = np.random.RandomState(seed)

    def draw(s):
        if len(s.shape) > 1:
            return jnp.asarray(rs.randn(*s.shape) * np.sqrt(2.0 / np.prod(s.shape[:-1])), jnp.float32)
        return jnp.asarray(0.1 * rs.randn(*s.shape), jnp.float32)
    return jax.tree_util.tree_map(draw, shapes)


@functools.lru_cache(maxsize=None)
def _whole_fn(depth, padding, channels=1):
    model, variables, _ = _net(depth, padding, channels)
    return jax.jit(lambda x: jax.nn.softmax(model.apply(variables, x), axis=-1))


def _whole_valid(image, depth, channels=1):
    """One pass over the whole image, mirror-padded ('symmetric') by the border and up to a valid size."""
    img = image if image.ndim == 3 else image[..., None]
    h, w = img.shape[:2]
    b = border(depth)
    sh, sw = valid_input_size(h, depth), valid_input_size(w, depth)
    padded = np.pad(img, ((b, sh - b - h), (b, sw - b - w), (0, 0)), mode="symmetric")
    return np.asarray(_whole_fn(depth, "VALID", channels)(padded[None]))[0, :h, :w]


# ------------------------------------------------------------------------------------------------------------
# Geometry
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", tiling.PAD_MODES)
@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_mirror_indices_match_np_pad(mode, size):
    x = np.arange(size) * 10 + 1
    before, after = 23, 31                    # wider than the axis: mirroring repeats
    ref = np.pad(x, (before, after), mode=mode)
    idx = tiling.mirror_indices(-before, size + before + after, size, mode)
    np.testing.assert_array_equal(x[idx], ref)


def test_tile_grid_paper_geometry():
    g = tiling.tile_grid((512, 512), 572, depth=4)
    assert (g.out_size, g.step, g.overlap, g.pad_before) == (388, 384, 4, 92)
    assert g.origins_y == (0, 384) and g.padded_shape == (572 + 384, 572 + 384)
    # Origins on the 16-pixel pooling grid, outputs cover the image.
    assert all(o % 16 == 0 for o in g.origins_y)
    assert g.origins_y[-1] + g.out_size >= 512


@pytest.mark.parametrize("depth,tile,size", [(2, 44, 1), (2, 52, 37), (3, 100, 200), (4, 204, 1000)])
def test_tile_grid_covers_image(depth, tile, size):
    g = tiling.tile_grid((size, size + 3), tile, depth=depth)
    o = output_size(tile, depth)
    assert g.step % 2 ** depth == 0 and 0 < g.step <= o and o - g.step < 2 ** depth
    assert g.origins_x[-1] + o >= size + 3 and g.origins_x[-1] < size + 3   # covers, no useless tile
    gs = tiling.tile_grid((size, size), 64, depth=2, padding="SAME")
    assert gs.pad_before == gs.overlap == 32 and gs.step == 32
    assert gs.origins_y[-1] - gs.pad_before + 32 >= size        # every pixel on some window peak/plateau


def test_tile_grid_rejects_bad_arguments():
    with pytest.raises(ValueError, match="tile_size"):
        tiling.tile_grid((10, 10), 50, depth=2)              # not a valid VALID size
    with pytest.raises(ValueError, match="tile_size"):
        tiling.tile_grid((10, 10), 188, depth=4)             # 4 output pixels: less than the 16-pixel grid
    with pytest.raises(ValueError, match="overlap"):
        tiling.tile_grid((10, 10), 44, depth=2, overlap=4)   # VALID fixes the overlap
    with pytest.raises(ValueError, match="overlap"):
        tiling.tile_grid((10, 10), 64, depth=2, padding="SAME", overlap=6)
    with pytest.raises(ValueError, match="image_shape"):
        tiling.tile_grid((0, 10), 44, depth=2)
    with pytest.raises(ValueError, match="padding"):
        tiling.tile_grid((10, 10), 44, depth=2, padding="valid")


def test_blend_window_partition_of_unity():
    for t, r in ((64, 32), (64, 16), (48, 16)):
        w = tiling.blend_window(t, r)
        assert w.min() > 0 and np.allclose(w, w[::-1])
        step = t - r
        total = np.zeros(step * 6 + t)
        for k in range(7):
            total[k * step:k * step + t] += w
        np.testing.assert_allclose(total[step:6 * step + r], 1.0, atol=1e-12)
    # The tile grid puts every image pixel where the windows sum to one (the normalisation is then exact).
    for shape, t, ov in (((70, 93), 64, None), ((70, 93), 64, 16), ((5, 200), 48, 16)):
        g = tiling.tile_grid(shape, t, depth=2, padding="SAME", overlap=ov)
        np.testing.assert_allclose(tiling._window_sum(g, 0), 1.0, atol=1e-12)
        np.testing.assert_allclose(tiling._window_sum(g, 1), 1.0, atol=1e-12)


# ------------------------------------------------------------------------------------------------------------
# VALID: tiled == one pass over the whole mirror-padded image
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth,tile,shape,batch", [
    (2, 44, (37, 53), 3),     # O = 4: 140 tiles, last batch padded
    (2, 52, (37, 53), 4),
    (2, 64, (37, 53), 2),
    (2, 52, (5, 3), 4),       # image smaller than a tile
    (3, 100, (61, 29), 2),    # depth 3: O = 12, step 8, overlapping outputs
])
def test_valid_tiled_equals_whole(depth, tile, shape, batch):
    image = _smooth_image(shape, seed=sum(shape))
    _, _, apply_fn = _net(depth, "VALID")
    probs = tiling.predict_tiled(apply_fn, image, tile, depth=depth, batch_size=batch, num_classes=2)
    assert probs.shape == shape + (2,) and probs.dtype == np.float32
    ref = _whole_valid(image, depth)
    np.testing.assert_allclose(probs, ref, atol=1e-5, rtol=0)
    assert ref[..., 1].std() > 1e-3          # the network output is not trivially constant


def test_valid_tiled_multichannel_and_stack():
    _, _, apply_fn = _net(2, "VALID", channels=2)
    stack = _smooth_image((3, 29, 41, 2), seed=5)
    out = tiling.predict_stack(apply_fn, stack, 52, depth=2, batch_size=4)
    assert out.shape == (3, 29, 41, 2)
    for z in range(3):
        np.testing.assert_allclose(out[z], _whole_valid(stack[z], 2, channels=2), atol=1e-5, rtol=0)


def test_predict_stack_single_channel_slices():
    _, _, apply_fn = _net(2, "VALID")
    stack = _smooth_image((2, 21, 30), seed=9)
    out = tiling.predict_stack(apply_fn, stack, 52, depth=2)
    for z in range(2):
        np.testing.assert_array_equal(out[z], tiling.predict_tiled(apply_fn, stack[z], 52, depth=2))


# ------------------------------------------------------------------------------------------------------------
# SAME: blended tiles, no seams
# ------------------------------------------------------------------------------------------------------------

def test_same_blending_has_no_seams():
    image = _smooth_image((100, 120), seed=3)
    _, _, apply_fn = _net(2, "SAME")
    m = 48                                       # generous mirrored context for the whole-image reference
    padded = np.pad(image, ((m, m + 4), (m, m)), mode="symmetric")     # sizes multiples of 4
    ref = np.asarray(_whole_fn(2, "SAME")(padded[None, ..., None]))[0, m:m + 100, m:m + 120]
    blended = tiling.predict_tiled(apply_fn, image, 64, depth=2, padding="SAME", batch_size=4)
    hard = tiling.predict_tiled(apply_fn, image, 64, depth=2, padding="SAME", overlap=0)
    # Normalised weights: probabilities still sum to one everywhere.
    np.testing.assert_allclose(blended.sum(-1), 1.0, atol=1e-5)
    err_blend = np.abs(blended - ref).max()
    err_hard = np.abs(hard - ref).max()
    assert err_blend < 0.05
    assert err_blend < 0.25 * err_hard       # hard tile edges leave seams, the window removes them
    # No seam: the row-to-row change of the blended map is no larger than the reference's anywhere.
    jump_blend = np.abs(np.diff(blended[..., 1], axis=0)).max()
    jump_ref = np.abs(np.diff(ref[..., 1], axis=0)).max()
    assert jump_blend < jump_ref + 0.02


# ------------------------------------------------------------------------------------------------------------
# Generator: one batch at a time, right tiles
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,mode", [((70, 95), "symmetric"), ((160, 131), "reflect"), ((9, 30), "symmetric"),
                                        ((9, 30), "reflect")])
def test_iter_tile_batches_yields_padded_crops(shape, mode):
    """Tiles inside the image (slices), across one or two borders, and in images smaller than the tile's halo
    (mirrored more than once) all equal the crops of the np.pad-ded image."""
    h, w = shape
    image = _smooth_image((h, w, 2), seed=1)
    grid = tiling.tile_grid((h, w), 52, depth=2)
    hp, wp = grid.padded_shape
    b = grid.pad_before
    padded = np.pad(image, ((b, hp - b - h), (b, wp - b - w), (0, 0)), mode=mode)
    gen = tiling.iter_tile_batches(image, grid, batch_size=3, pad_mode=mode)
    assert inspect.isgenerator(gen)
    seen = []
    for batch in gen:
        assert batch.tiles.shape == (3, 52, 52, 2) and batch.tiles.dtype == np.float32
        assert 1 <= batch.count <= 3 and batch.origins.shape == (batch.count, 2)
        for i, (y, x) in enumerate(batch.origins):
            np.testing.assert_array_equal(batch.tiles[i], padded[y:y + 52, x:x + 52])
        assert not batch.tiles[batch.count:].any()        # padding of the last batch
        seen.append(batch.origins)
    np.testing.assert_array_equal(np.concatenate(seen), grid.origins())


def test_iter_tile_batches_memory_is_one_batch():
    image = np.random.RandomState(0).rand(1500, 1300).astype(np.float32)    # 7.8 MB
    grid = tiling.tile_grid(image.shape, 64, depth=2)
    batch_bytes = 4 * 64 * 64 * 4
    tracemalloc.start()
    try:
        n = 0
        for batch in tiling.iter_tile_batches(image, grid, batch_size=4):
            n += batch.count
            del batch
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == grid.num_tiles
    assert peak < 3 * batch_bytes + 256 * 1024, peak      # far below the image, let alone the padded image


@pytest.mark.parametrize("padding,tile", [("VALID", 140), ("SAME", 128)])
def test_predict_tiled_memory_is_output_plus_batches(padding, tile):
    image = np.random.RandomState(1).rand(1000, 900).astype(np.float32)
    o = output_size(tile, 2, padding)
    b = (tile - o) // 2

    @jax.jit
    def apply_fn(x):                                   # cheap stand-in network: centre crop, 2 logits
        c = x[:, b:b + o, b:b + o, :]
        return jnp.concatenate([c, -c], axis=-1)

    out_bytes = image.size * 2 * 4
    batch_bytes = 4 * tile * tile * 4 + 4 * o * o * 2 * 4
    tracemalloc.start()
    try:
        probs = tiling.predict_tiled(apply_fn, image, tile, depth=2, padding=padding, batch_size=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert probs.shape == (1000, 900, 2)
    np.testing.assert_allclose(probs[..., 1], 1 / (1 + np.exp(2 * image)), atol=1e-5)
    assert peak < out_bytes + 4 * batch_bytes + 1024 * 1024, (peak, out_bytes)


# ------------------------------------------------------------------------------------------------------------
# Test-time augmentation
# ------------------------------------------------------------------------------------------------------------

def _crop_fn(tile, depth, shift):
    o = output_size(tile, depth)
    b = (tile - o) // 2
    dy, dx = shift

    def apply_fn(x):
        c = x[:, b + dy:b + dy + o, b + dx:b + dx + o, :1]
        return jnp.concatenate([jnp.zeros_like(c), 3.0 * c], axis=-1)
    return apply_fn


def test_tta_of_equivariant_function_is_identity():
    image = _smooth_image((45, 70), seed=2)
    fn = _crop_fn(52, 2, (0, 0))             # pointwise + centre crop: commutes with flips and rotations
    plain = tiling.predict_tiled(fn, image, 52, depth=2)
    tta = tiling.predict_tiled(fn, image, 52, depth=2, tta=True)
    np.testing.assert_allclose(tta, plain, atol=1e-6)


def test_tta_maps_each_prediction_back():
    # apply_fn reads the pixel one row below: under the 8 symmetries (each mapped back) that neighbour becomes
    # each of the 4 direct neighbours twice, so TTA must give the mean over the 4 neighbours.
    image = _smooth_image((33, 47), seed=4)
    fn = _crop_fn(52, 2, (1, 0))
    tta = tiling.predict_tiled(fn, image, 52, depth=2, tta=True)
    p = np.pad(image, 1, mode="symmetric")
    sig = 1 / (1 + np.exp(-3.0 * p))
    expect = (sig[2:, 1:-1] + sig[:-2, 1:-1] + sig[1:-1, 2:] + sig[1:-1, :-2]) / 4
    np.testing.assert_allclose(tta[..., 1], expect, atol=1e-5)
    plain = tiling.predict_tiled(fn, image, 52, depth=2)
    np.testing.assert_allclose(plain[..., 1], sig[2:, 1:-1], atol=1e-5)


def test_dihedral_transforms_are_a_group_with_inverses():
    x = jnp.arange(2 * 5 * 5 * 1, dtype=jnp.float32).reshape(2, 5, 5, 1)
    outs = set()
    for fwd, inv in tiling.dihedral_transforms():
        np.testing.assert_array_equal(inv(fwd(x)), x)
        outs.add(np.asarray(fwd(x)).tobytes())
    assert len(outs) == 8


# ------------------------------------------------------------------------------------------------------------
# Compilation cache and argument checks
# ------------------------------------------------------------------------------------------------------------

def test_predictor_cache_reuses_and_does_not_leak():
    def fn(x):
        return jnp.concatenate([x, -x], axis=-1)
    p1 = tiling.make_batch_predictor(fn)
    assert tiling.make_batch_predictor(fn) is p1
    assert tiling.make_batch_predictor(fn, tta=True) is not p1
    n = len(tiling._PREDICTOR_CACHE)
    del fn, p1
    gc.collect()
    assert len(tiling._PREDICTOR_CACHE) == n - 1


def test_predict_tiled_rejects_bad_arguments():
    fn = _crop_fn(52, 2, (0, 0))
    img = np.zeros((10, 10), np.float32)
    with pytest.raises(ValueError, match="image"):
        tiling.predict_tiled(fn, np.zeros((2, 3, 4, 5)), 52, depth=2)
    with pytest.raises(ValueError, match="batch_size"):
        tiling.predict_tiled(fn, img, 52, depth=2, batch_size=0)
    with pytest.raises(ValueError, match="tile_size"):
        tiling.predict_tiled(fn, img, 50, depth=2)
    with pytest.raises(ValueError, match="num_classes"):
        tiling.predict_tiled(fn, img, 52, depth=2, num_classes=3)
    with pytest.raises(ValueError, match="pad_mode"):
        tiling.predict_tiled(fn, img, 52, depth=2, pad_mode="wrap")
    with pytest.raises(ValueError, match="apply_fn"):
        tiling.predict_tiled(lambda x: x[:, :5, :5], img, 52, depth=2)
    with pytest.raises(ValueError, match="apply_fn"):
        tiling.predict_tiled("not callable", img, 52, depth=2)
    with pytest.raises(ValueError, match="stack"):
        tiling.predict_stack(fn, img, 52, depth=2)


def test_variables_passed_as_arguments_equal_closure():
    """predict_tiled(model.apply, ..., variables=v) equals the closure form and reuses one compilation."""
    import functools

    import jax

    from unet_jax.model import UNet
    model = UNet(features=4, depth=2, dropout_rate=0.0)
    image = np.random.default_rng(5).uniform(size=(37, 41)).astype(np.float32)
    v1 = model.init(jax.random.PRNGKey(0), np.zeros((1, 60, 60, 1), np.float32))
    v2 = model.init(jax.random.PRNGKey(1), np.zeros((1, 60, 60, 1), np.float32))
    predict_tiled = tiling.predict_tiled
    a = predict_tiled(model.apply, image, 60, depth=2, batch_size=2, variables=v1)
    b = predict_tiled(functools.partial(model.apply, v1), image, 60, depth=2, batch_size=2)
    np.testing.assert_allclose(a, b, atol=1e-6)
    c = predict_tiled(model.apply, image, 60, depth=2, batch_size=2, variables=v2)
    assert not np.allclose(a, c)   # the variables really are an input, not a cached constant
