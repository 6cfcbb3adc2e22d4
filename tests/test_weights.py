"""Tests for unet_jax.weights: the paper's weight map (eq. 2), its brute-force reference, and label helpers."""
import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from unet_jax.weights import (BORDER_TOL, class_labels, contour_classes, instances_from_mask, separation_border,
                              unet_weight_map, unet_weight_map_reference)

TOL = 1e-4  # required agreement (absolute) between the fast map and the reference


def border_term(w0, sigma, d1, d2):
    """The paper's border term for given distances to the nearest and second-nearest object."""
    return w0 * np.exp(-((d1 + d2) ** 2) / (2.0 * sigma ** 2))


# ----------------------------------------------------------------------------------------------------------------
# Synthetic instance maps
# ----------------------------------------------------------------------------------------------------------------

def voronoi_cells(shape=(96, 112), n_seeds=30, seed=0):
    """Touching cells separated by 1-px membranes (ISBI-like), with non-consecutive ids and an empty region."""
    rng = np.random.default_rng(seed)
    h, w = shape
    seeds = np.stack([rng.integers(0, h, n_seeds), rng.integers(0, w, n_seeds)], axis=1)
    yy, xx = np.mgrid[:h, :w]
    d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    lab = d.argmin(-1) + 1
    edge = np.zeros(shape, bool)  # membrane: pixel whose right or lower neighbour is another cell
    edge[:, :-1] |= lab[:, :-1] != lab[:, 1:]
    edge[:-1, :] |= lab[:-1, :] != lab[1:, :]
    ids = rng.permutation(np.arange(1, 4 * n_seeds))[:n_seeds]  # non-consecutive, shuffled ids
    inst = np.where(edge, 0, ids[lab - 1])
    inst[: h // 4, : w // 3] = 0  # a wide empty region: far pixels, sparse neighbours
    return inst.astype(np.int32)


def special_objects():
    """Objects touching with no gap, a ring around another object, a label in two pieces, objects on the edge."""
    inst = np.zeros((70, 80), np.int32)
    inst[0:10, 0:12] = 3            # in the corner
    inst[0:10, 12:20] = 4           # touches 3 directly (no membrane)
    yy, xx = np.mgrid[:70, :80]
    r = np.hypot(yy - 40, xx - 40)
    inst[(r >= 12) & (r < 16)] = 7  # ring
    inst[r < 6] = 8                 # object inside the ring's hole
    inst[60:70, 5:9] = 11           # label 11 in two disconnected pieces
    inst[55:58, 70:80] = 11
    inst[30:33, 75:80] = 2          # thin object on the right edge
    return inst


@pytest.fixture(scope="module")
def isbi_labels(isbi_dir):
    return tifffile.imread(isbi_dir / "train-labels.tif")


# ----------------------------------------------------------------------------------------------------------------
# Fast map == reference
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("w0,sigma", [(10.0, 5.0), (10.0, 2.0), (3.0, 12.0), (25.0, 1.0), (1e-7, 5.0)])
@pytest.mark.parametrize("make", [voronoi_cells, special_objects])
def test_matches_reference_synthetic(make, w0, sigma):
    inst = make()
    fast = unet_weight_map(inst, w0=w0, sigma=sigma)
    ref = unet_weight_map_reference(inst, w0=w0, sigma=sigma)
    assert fast.dtype == np.float32 and fast.shape == inst.shape
    assert np.abs(fast - ref).max() <= TOL
    # Tighter, as documented: only border contributions below BORDER_TOL are dropped (plus float32 rounding).
    assert np.all(np.abs(fast - ref) <= BORDER_TOL + np.spacing(np.abs(ref)))
    if w0 >= 1:  # the border term is really there, so the comparison is not trivial
        assert (ref - unet_weight_map_reference(inst, w0=0.0)).max() > 0.05 * w0


def test_matches_reference_with_huge_ids_and_unsigned_dtype():
    inst = voronoi_cells(shape=(48, 56), n_seeds=12, seed=3).astype(np.int64)
    ids = np.unique(inst)[1:]
    huge = inst.copy()
    for i, k in enumerate(ids):
        huge[inst == k] = 2 ** 40 + 7919 * i  # far beyond the pixel count
    ref = unet_weight_map_reference(inst)
    np.testing.assert_allclose(unet_weight_map(huge), ref, rtol=0, atol=TOL)
    np.testing.assert_allclose(unet_weight_map(inst.astype(np.uint16)), ref, rtol=0, atol=TOL)
    # No background at all: every pixel belongs to an object, so there is no border term.
    full = huge + 1
    np.testing.assert_array_equal(unet_weight_map(full), np.ones(full.shape, np.float32))


def test_matches_reference_on_isbi_slice(isbi_labels):
    inst = instances_from_mask(isbi_labels[0])
    assert inst.max() > 100  # a real slice: ~130 cells
    fast = unet_weight_map(inst)
    ref = unet_weight_map_reference(inst)
    assert np.abs(fast - ref).max() <= TOL
    bg = inst == 0
    # The border term lives on the membranes, and is large there (thin membranes between touching cells).
    assert fast[bg].max() > fast[~bg].max() + 5.0


def test_matches_reference_on_isbi_crop_other_parameters(isbi_labels):
    inst = instances_from_mask(isbi_labels[1][100:356, 200:456])
    kw = dict(w0=5.0, sigma=8.0, class_weights={0: 2.0, 1: 0.5})
    np.testing.assert_allclose(unet_weight_map(inst, **kw), unet_weight_map_reference(inst, **kw), rtol=0, atol=TOL)


# ----------------------------------------------------------------------------------------------------------------
# Shape of the border term
# ----------------------------------------------------------------------------------------------------------------

def two_blocks(gap, width=120):
    inst = np.zeros((41, width), np.int32)
    inst[5:36, 5:20] = 1
    inst[5:36, 20 + gap:35 + gap] = 2
    return inst


@pytest.mark.parametrize("make", [unet_weight_map, unet_weight_map_reference])
def test_border_term_peaks_in_narrow_gap_and_vanishes_far_away(make):
    w0, sigma = 10.0, 5.0
    inst = two_blocks(gap=2)
    w = make(inst, w0=w0, sigma=sigma, class_weights=None)
    bg = inst == 0
    gap = np.zeros_like(bg)
    gap[5:36, 20:22] = True
    # In the 2-px gap d1 = 1 and d2 = 2.
    np.testing.assert_allclose(w[gap], 1.0 + border_term(w0, sigma, 1.0, 2.0), rtol=1e-6)
    # The gap holds the maximum; every other background pixel is lower.
    assert w[bg & ~gap].max() < w[gap].min()
    # Object pixels get no border term.
    np.testing.assert_array_equal(w[inst > 0], 1.0)
    # Along a row through the gap, leaving it to the right, the term decreases ...
    row = w[20, 37:]
    assert np.all(np.diff(row) <= 0) and row[0] > row[-1]
    # ... and it vanishes far from both objects (d1 + d2 > 2 * 35 px here).
    np.testing.assert_allclose(w[:, 85:], 1.0, rtol=0, atol=1e-5)


def test_narrower_gap_gives_larger_peak():
    peaks = [unet_weight_map(two_blocks(gap), class_weights=None).max() for gap in (1, 2, 4, 8)]
    assert all(a > b for a, b in zip(peaks, peaks[1:]))
    np.testing.assert_allclose(peaks[0], 1.0 + border_term(10.0, 5.0, 1.0, 1.0), rtol=1e-6)


@pytest.mark.parametrize("make", [unet_weight_map, unet_weight_map_reference])
def test_fewer_than_two_objects_have_no_border_term(make):
    one = np.zeros((30, 40), np.int32)
    one[5:15, 5:20] = 4
    one[20:25, 30:35] = 4  # one label in two pieces is still one object
    np.testing.assert_array_equal(make(one, class_weights=None), np.ones(one.shape, np.float32))
    none = np.zeros((30, 40), np.int32)
    np.testing.assert_array_equal(make(none), np.ones(none.shape, np.float32))
    np.testing.assert_array_equal(make(one), make(one, w0=0.0))


def test_w0_zero_disables_border_term():
    inst = voronoi_cells(shape=(40, 48), n_seeds=10)
    np.testing.assert_array_equal(unet_weight_map(inst, w0=0.0, class_weights=None), 1.0)
    np.testing.assert_array_equal(unet_weight_map(inst, w0=0.0),
                                  unet_weight_map(inst, w0=0.0, class_weights="balanced"))
    assert unet_weight_map(inst, w0=10.0).max() > unet_weight_map(inst, w0=0.0).max() + 1.0


# ----------------------------------------------------------------------------------------------------------------
# Class weights
# ----------------------------------------------------------------------------------------------------------------

def test_balanced_class_weights_are_inverse_frequency_and_average_one():
    inst = np.zeros((40, 40), np.int32)
    inst[:20, :10] = 1
    inst[20:, 30:] = 2  # 400 of 1600 pixels are foreground
    w = unet_weight_map(inst, w0=0.0)
    fg = inst > 0
    wf, wb = np.unique(w[fg]), np.unique(w[~fg])
    assert wf.size == 1 and wb.size == 1
    np.testing.assert_allclose(wf[0] / wb[0], (~fg).sum() / fg.sum(), rtol=1e-6)  # inverse frequency
    np.testing.assert_allclose(w.mean(dtype=np.float64), 1.0, rtol=1e-6)          # normalised: mean 1
    assert wf[0] > wb[0]  # the rarer class weighs more
    # With the border term on, object pixels keep exactly their class weight.
    np.testing.assert_array_equal(unet_weight_map(inst)[fg], w[fg])
    np.testing.assert_array_equal(unet_weight_map_reference(inst, w0=0.0), w)


def test_balanced_with_a_single_class_is_all_ones():
    all_fg = np.full((10, 12), 5, np.int32)
    all_bg = np.zeros((10, 12), np.int32)
    for inst in (all_fg, all_bg):
        np.testing.assert_array_equal(unet_weight_map(inst), np.ones(inst.shape, np.float32))


def test_class_weights_none_and_mapping():
    inst = voronoi_cells(shape=(40, 48), n_seeds=10)
    fg = inst > 0
    np.testing.assert_array_equal(unet_weight_map(inst, w0=0.0, class_weights=None), np.ones(inst.shape))
    w = unet_weight_map(inst, w0=0.0, class_weights={0: 0.25, 1: 3.0})
    np.testing.assert_array_equal(w[~fg], np.float32(0.25))
    np.testing.assert_array_equal(w[fg], np.float32(3.0))
    wb = unet_weight_map(inst, w0=10.0, class_weights={0: 0.25, 1: 3.0})
    np.testing.assert_array_equal(wb[fg], np.float32(3.0))
    assert np.all(wb[~fg] >= np.float32(0.25)) and wb[~fg].max() > 5.0
    # The border term is independent of the class weights.
    np.testing.assert_allclose(wb - w, unet_weight_map(inst, class_weights=None) - 1.0, rtol=0, atol=1e-5)


@pytest.mark.parametrize("bad", ["inverse", "Balanced", {0: 1.0}, {0: 1.0, 1: 2.0, 2: 3.0}, {0: -1.0, 1: 1.0},
                                 {0: float("nan"), 1: 1.0}, {0: "a", 1: 1.0}, [1.0, 2.0], 3.0])
@pytest.mark.parametrize("make", [unet_weight_map, unet_weight_map_reference])
def test_bad_class_weights_raise(make, bad):
    with pytest.raises(ValueError, match="class_weights"):
        make(np.zeros((4, 4), np.int32), class_weights=bad)


# ----------------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((4, 4), bool), np.zeros((2, 4, 4), np.int32),
                                 np.zeros(4, np.int32), np.array([[0, -1], [2, 3]]), np.zeros((0, 3), np.int32)])
@pytest.mark.parametrize("make", [unet_weight_map, unet_weight_map_reference, class_labels])
def test_bad_instances_raise(make, bad):
    with pytest.raises(ValueError, match="instances"):
        make(bad)


@pytest.mark.parametrize("kw,name", [(dict(sigma=0.0), "sigma"), (dict(sigma=-2.0), "sigma"),
                                     (dict(sigma=float("nan")), "sigma"), (dict(sigma="5"), "sigma"),
                                     (dict(w0=-1.0), "w0"), (dict(w0=float("inf")), "w0"), (dict(w0=None), "w0")])
@pytest.mark.parametrize("make", [unet_weight_map, unet_weight_map_reference])
def test_bad_parameters_raise(make, kw, name):
    with pytest.raises(ValueError, match=name):
        make(np.zeros((4, 4), np.int32), **kw)


# ----------------------------------------------------------------------------------------------------------------
# instances_from_mask and class_labels
# ----------------------------------------------------------------------------------------------------------------

def diagonal_membrane_mask():
    """0/255 ISBI-style mask: two cells split by a diagonal 1-px membrane plus a third cell beyond a straight one."""
    m = np.full((8, 12), 255, np.uint8)
    yy, xx = np.mgrid[:8, :12]
    m[yy + xx == 7] = 0  # diagonal membrane: the two triangles touch only at corners
    m[:, 8] = 0          # straight membrane
    return m


def test_instances_from_mask_uses_four_connectivity():
    m = diagonal_membrane_mask()
    inst = instances_from_mask(m)
    assert inst.dtype == np.int32 and inst.shape == m.shape
    assert set(np.unique(inst)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(inst == 0, m == 0)
    # The two triangles are different cells (8-connectivity would merge them).
    assert inst[0, 0] != inst[7, 7] and inst[0, 0] > 0 and inst[7, 7] > 0
    assert ndi.label(m > 0, structure=np.ones((3, 3)))[1] == 2


@pytest.mark.parametrize("convert", [
    lambda m: m > 0,                                    # bool
    lambda m: (m > 0).astype(np.uint8),                 # 0/1
    lambda m: (m > 0).astype(np.int64),                 # 0/1 int64
    lambda m: (m > 0).astype(np.uint16) * 65535,        # 0/65535
    lambda m: (m > 0).astype(np.float32),               # 0./1.
    lambda m: m.astype(np.float64) / 255.0 * 0.6,       # any maximum: 0/0.6
])
def test_instances_from_mask_encodings(convert):
    m = diagonal_membrane_mask()
    np.testing.assert_array_equal(instances_from_mask(convert(m)), instances_from_mask(m))


def test_instances_from_mask_anti_aliased_thresholds_at_half_max():
    m = diagonal_membrane_mask()
    clean = instances_from_mask(m)
    aa = m.astype(np.float32)
    near_membrane = ndi.binary_dilation(m == 0) & (m > 0)
    aa[near_membrane] = 140.0            # grey cell edge, above 255 / 2
    aa[m == 0] = 100.0                   # grey membrane, below 255 / 2
    aa[0, 0] = 255.0                     # the maximum stays 255
    np.testing.assert_array_equal(instances_from_mask(aa), clean)
    np.testing.assert_array_equal(instances_from_mask(aa.astype(np.uint8)), clean)
    # The threshold follows the maximum: with maximum 200, 90 is membrane and 110 is cell.
    scaled = np.where(m > 0, 200, 0).astype(np.uint8)
    scaled[near_membrane] = 110
    scaled[m == 0] = 90
    np.testing.assert_array_equal(instances_from_mask(scaled), clean)
    scaled[m == 0] = 110  # now the membranes are cell: everything is one object
    np.testing.assert_array_equal(instances_from_mask(scaled), 1)


def test_instances_from_mask_foreground_value_and_empty():
    m = diagonal_membrane_mask()
    np.testing.assert_array_equal(instances_from_mask(255 - m, foreground=0), instances_from_mask(m))
    np.testing.assert_array_equal(instances_from_mask(np.zeros((5, 6), np.uint8)), 0)


def test_instances_from_mask_on_isbi_slice(isbi_labels):
    lab = isbi_labels[0]
    inst = instances_from_mask(lab)
    np.testing.assert_array_equal(inst > 0, lab == 255)
    assert inst.dtype == np.int32
    assert np.array_equal(np.unique(inst), np.arange(inst.max() + 1))  # 0..K, consecutive
    assert inst.max() > 100


@pytest.mark.parametrize("bad", [np.zeros((2, 4, 4), np.uint8), np.zeros(5, np.uint8), np.zeros((0, 4)),
                                 np.array([[0.0, np.nan]]), np.array([[0, -3], [5, 5]]), np.array([["a", "b"]])])
def test_instances_from_mask_bad_input_raises(bad):
    with pytest.raises(ValueError, match="mask"):
        instances_from_mask(bad)


def test_instances_from_mask_bad_foreground_raises():
    with pytest.raises(ValueError, match="foreground"):
        instances_from_mask(np.zeros((3, 3), np.uint8), foreground=[0, 1])


def test_class_labels():
    inst = special_objects()
    c = class_labels(inst)
    assert c.dtype == np.int32 and c.shape == inst.shape
    np.testing.assert_array_equal(c, (inst > 0).astype(np.int32))
    assert set(np.unique(c)) == {0, 1}


def test_separation_border_carves_only_where_objects_touch():
    inst = np.zeros((10, 12), np.int32)
    inst[1:5, 1:5] = 1
    inst[1:5, 5:9] = 2          # touches 1 along a column
    inst[6:9, 9:11] = 3         # touches 2 only diagonally, and nothing else
    inst[5, 9] = 0
    border = separation_border(inst)
    want = np.zeros_like(border)
    want[1:5, 4:6] = True       # one column of each of the two touching objects
    np.testing.assert_array_equal(border, want)
    c = class_labels(inst, separate=True)
    np.testing.assert_array_equal(c, ((inst > 0) & ~want).astype(np.int32))
    np.testing.assert_array_equal(class_labels(inst), (inst > 0).astype(np.int32))
    # the carved target keeps every object, now 4-disconnected from its neighbours
    assert ndi.label(c, structure=ndi.generate_binary_structure(2, 1))[1] == 3
    assert not separation_border(special_objects() * 0).any()


def test_contour_classes_outline_every_object_and_split_touching_ones():
    inst = np.zeros((12, 16), np.int32)
    inst[1:11, 1:8] = 1
    inst[1:11, 8:15] = 2        # touches 1 along a column
    c = contour_classes(inst)
    assert c.dtype == np.int32 and set(np.unique(c)) == {0, 1, 2}
    np.testing.assert_array_equal(c > 0, inst > 0)
    # a 2-pixel outline on every side, also where the objects touch: interiors 4 pixels apart
    want = np.zeros_like(c)
    want[3:9, 3:6] = want[3:9, 10:13] = 1
    np.testing.assert_array_equal(c == 1, want == 1)
    assert (contour_classes(inst, width=1) == 1).sum() == 2 * 8 * 5
    assert ndi.label(c == 1)[1] == 2
    with pytest.raises(ValueError, match="width"):
        contour_classes(inst, width=0)
