"""Evaluation metrics on hand-made cases, against scikit-image, and on a real ISBI 2012 slice."""
import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi
from skimage.metrics import adapted_rand_error, variation_of_information

from unet_jax import metrics as M

FOUR = ndi.generate_binary_structure(2, 1)
EIGHT = ndi.generate_binary_structure(2, 2)


def two_cells(h=12, w=15, col=7):
    """Two cells separated by a one-pixel vertical membrane at ``col`` (and a membrane frame): bool (h, w)."""
    m = np.ones((h, w), bool)
    m[:, col] = False
    m[0, :] = m[-1, :] = False
    m[:, 0] = m[:, -1] = False
    return m


def topology(mask):
    """(4-connected cell components, 8-connected membrane components with the outside as membrane)."""
    pad = np.pad(mask, 1)
    return ndi.label(pad, FOUR)[1], ndi.label(~pad, EIGHT)[1]


# ------------------------------------------------------------------------------------------------------------
# Simple points and warping
# ------------------------------------------------------------------------------------------------------------

def code(neigh):
    """8-bit code of a 3x3 neighbourhood given as rows (centre ignored), bit k clockwise from north."""
    n = np.asarray(neigh, bool)
    order = [(0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0), (0, 0)]
    return sum(int(n[p]) << k for k, p in enumerate(order))


def test_simple_point_lut_hand_cases():
    lut = M.simple_point_lut()
    assert not lut[code([[0, 0, 0], [0, 0, 0], [0, 0, 0]])]     # isolated cell pixel / new component
    assert not lut[code([[1, 1, 1], [1, 0, 1], [1, 1, 1]])]     # interior pixel: flip makes a hole
    assert lut[code([[0, 0, 0], [0, 0, 1], [0, 0, 0]])]         # end of a line
    assert not lut[code([[0, 0, 0], [1, 0, 1], [0, 0, 0]])]     # middle of a line: flip cuts it
    assert lut[code([[1, 1, 1], [1, 0, 1], [0, 0, 0]])]         # edge of a blob
    assert not lut[code([[1, 0, 0], [0, 0, 0], [0, 0, 1]])]     # two diagonal cells: 4-connectivity keeps apart
    assert not lut[code([[1, 1, 0], [1, 0, 0], [0, 1, 1]])]     # two cell parts: flip merges them
    assert lut[code([[1, 1, 0], [1, 0, 0], [0, 0, 1]])]         # a diagonal-only cell stays apart: simple
    # Symmetric under the 8 symmetries of the square.
    for c in range(256):
        n = np.zeros((3, 3), bool)
        order = [(0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0), (0, 0)]
        for k, p in enumerate(order):
            n[p] = c >> k & 1
        assert lut[code(np.rot90(n))] == lut[c] and lut[code(n.T)] == lut[c]


@pytest.mark.parametrize("seed", range(4))
def test_warp_preserves_topology_and_is_maximal(seed):
    rs = np.random.RandomState(seed)
    truth = ndi.gaussian_filter(rs.rand(48, 52), 2.0) > 0.5
    pred = ndi.gaussian_filter(rs.rand(48, 52), 2.0) > 0.5
    prio = rs.rand(48, 52) if seed % 2 else None
    warped = M.warp_to_truth(pred, truth, priority=prio)
    assert topology(warped) == topology(pred)
    assert (warped != truth).sum() < (pred != truth).sum()
    # No differing pixel left is simple: the warp ran to the end.
    lut = M.simple_point_lut()
    pad = np.pad(warped, 1).astype(int)
    order = [(-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1)]
    for y, x in zip(*np.nonzero(warped != truth)):
        c = sum(pad[y + 1 + dy, x + 1 + dx] << k for k, (dy, dx) in enumerate(order))
        assert not lut[c]


def test_one_pixel_break_is_one_merger():
    truth = two_cells()
    pred = truth.copy()
    pred[5, 7] = True                       # a one-pixel gap in the membrane joins the two cells
    assert M.label_cells(pred).max() == 1 and M.label_cells(truth).max() == 2
    w = M.warping_error(pred, truth)
    assert w["warping_error"] == pytest.approx(1 / truth.size)
    assert (w["mergers"], w["splits"], w["additions"], w["deletions"], w["other"]) == (1, 0, 0, 0, 0)


def test_shifted_boundary_is_no_warping_error():
    truth = two_cells(col=7)
    pred = two_cells(col=8)                 # same topology, boundary one pixel to the right
    assert M.pixel_mismatch(pred, truth) > 0
    w = M.warping_error(pred, truth, return_warped=True)
    assert w["warping_error"] == 0.0
    np.testing.assert_array_equal(w["warped"], truth)
    assert w["mergers"] == w["splits"] == 0


def test_extra_membrane_is_one_split_and_missing_cell_a_deletion():
    truth = two_cells(h=14, w=17, col=8)
    pred = truth.copy()
    pred[6, 1:8] = False                    # a membrane across the left cell cuts it in two
    w = M.warping_error(pred, truth)
    assert (w["splits"], w["mergers"]) == (1, 0)
    assert w["warping_error"] == pytest.approx(7 / truth.size)
    pred = truth.copy()
    pred[:, 9:] = False                     # the right cell is missing entirely
    w = M.warping_error(pred, truth)
    assert (w["deletions"], w["splits"], w["mergers"]) == (1, 0, 0)


def test_filled_hole_and_spurious_cell_are_not_mergers():
    truth = two_cells(h=14, w=17, col=8)
    truth[6:8, 3:5] = False                 # a membrane blob (hole) inside the left cell
    truth[1:13, 12:15] = False              # a thick membrane region in the right cell ...
    pred = truth.copy()
    pred[6:8, 3:5] = True                   # prediction fills the hole: 'other'
    pred[6, 13] = True                      # ... where the prediction has a spurious one-pixel cell: addition
    w = M.warping_error(pred, truth)
    assert (w["mergers"], w["splits"], w["additions"], w["other"]) == (0, 0, 1, 1)
    assert w["warping_error"] == pytest.approx(5 / truth.size)


def test_warping_on_isbi_slice_runs_to_a_topological_residue(isbi_dir):
    labels = tifffile.imread(isbi_dir / "train-labels.tif")[0] > 0
    rs = np.random.RandomState(0)
    prob = np.clip(ndi.gaussian_filter(labels.astype(float), 2.0)
                   + 0.4 * ndi.gaussian_filter(rs.randn(*labels.shape), 1.5), 0, 1)
    pred = prob > 0.5
    w = M.warping_error(pred, labels, priority=np.abs(prob - labels), return_warped=True)
    assert topology(w["warped"]) == topology(pred)
    assert 0 < w["warping_error"] < M.pixel_mismatch(pred, labels)
    assert w["mergers"] + w["splits"] > 0


# ------------------------------------------------------------------------------------------------------------
# Rand error, VI
# ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(3))
def test_rand_error_equals_scikit_image(seed):
    rs = np.random.RandomState(seed)
    truth = rs.randint(0, 6, (30, 40))
    pred = rs.randint(0, 9, (30, 40))
    err, prec, rec = adapted_rand_error(truth, pred, ignore_labels=(0,))
    r = M.rand_error(pred, truth)
    assert r["rand_error"] == pytest.approx(err) and r["precision"] == pytest.approx(prec)
    assert r["recall"] == pytest.approx(rec)
    # The sweep segments each thresholded map into 4-connected cells and keeps the best threshold.
    prob = ndi.gaussian_filter(rs.rand(30, 40), 1.0)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    inst = M.truth_instances(truth)
    ths = (0.3, 0.5, 0.7)
    per = [adapted_rand_error(inst, ndi.label(prob > t, FOUR)[0], ignore_labels=(0,))[0] for t in ths]
    sweep = M.rand_error_sweep(prob, inst, ths)
    np.testing.assert_allclose(sweep["errors"], per)
    assert sweep["rand_error"] == pytest.approx(min(per)) and sweep["threshold"] == ths[int(np.argmin(per))]


def test_rand_error_of_a_merge():
    n = 30
    truth = np.zeros((6, 10), int)
    truth[:3], truth[3:] = 1, 2
    pred = np.ones_like(truth)              # both cells merged into one
    # Pairs: sum n_ij(n_ij - 1) = 2 n(n-1); truth 2 n(n-1); prediction 2n(2n-1); F = 2 n(n-1) / (3n^2 - 2n).
    expect = 1 - 2 * n * (n - 1) / (0.5 * 2 * n * (n - 1) + 0.5 * 2 * n * (2 * n - 1))
    assert M.rand_error(pred, truth)["rand_error"] == pytest.approx(expect)
    assert M.rand_error(truth, truth)["rand_error"] == pytest.approx(0.0)


def test_vi_identical_is_zero_and_split_merge_parts():
    rs = np.random.RandomState(0)
    seg = rs.randint(1, 5, (20, 20))
    assert M.vi(seg, seg) == pytest.approx({"vi": 0.0, "vi_split": 0.0, "vi_merge": 0.0}, abs=1e-12)
    truth = np.ones((8, 8), int)
    halves = truth.copy()
    halves[:, 4:] = 2
    v = M.vi(halves, truth)                 # one true cell split in two equal halves: 1 bit of split
    assert v["vi_split"] == pytest.approx(1.0) and v["vi_merge"] == pytest.approx(0.0)
    v = M.vi(truth, halves)                 # the reverse: a merge
    assert v["vi_merge"] == pytest.approx(1.0) and v["vi_split"] == pytest.approx(0.0)
    split, merge = variation_of_information(halves, truth, ignore_labels=(0,))   # (truth, pred)
    assert (v["vi_split"], v["vi_merge"]) == pytest.approx((split, merge))


# ------------------------------------------------------------------------------------------------------------
# Pixel error, IoU, SEG
# ------------------------------------------------------------------------------------------------------------

def test_pixel_error_and_sweep():
    truth = two_cells()
    pred = truth.copy()
    pred[3, 3] = False
    pred[5, 7] = True
    assert M.pixel_mismatch(pred, truth) == pytest.approx(2 / truth.size)
    tp = truth.sum() - 1
    assert M.pixel_fscore(pred, truth) == pytest.approx(2 * tp / (2 * tp + 2))
    # Right only for thresholds in [0.3, 0.9): the sweep finds it and F = 1.
    s = M.pixel_error_sweep(np.where(truth, 0.9, 0.3), truth, thresholds=(0.2, 0.5, 0.95))
    assert s["pixel_error"] == 0.0 and s["threshold"] == 0.5
    np.testing.assert_allclose(s["mismatch"], [(~truth).mean(), 0.0, truth.mean()])


def test_iou():
    a = np.zeros((4, 4), bool)
    b = a.copy()
    a[:2] = True                # 8 pixels
    b[1:3] = True               # 8 pixels, 4 shared
    assert M.iou(a, b) == pytest.approx(4 / 12)
    assert M.iou(a, a) == 1.0 and M.iou(b & False, a & False) == 1.0


def test_seg_measure_hand_made():
    truth = np.zeros((10, 12), int)
    truth[0:2, 0:5] = 1                     # A: 10 pixels
    truth[4:6, 0:5] = 2                     # B: 10 pixels
    truth[8:10, 8:10] = 3                   # C: 4 pixels
    pred = np.zeros_like(truth)
    pred[0:2, 1:5] = 7                      # covers 8 of A ...
    pred[2, 0:4] = 7                        # ... plus 4 outside: J = 8 / (10 + 12 - 8)
    pred[4:6, 0:2] = 4
    pred[4, 2] = 4                          # covers exactly 5 of B (= half, not more): 0
    pred[5, 2:5] = 5
    pred[8:10, 8:10] = 9                    # C exact: 1
    expect = (8 / 14 + 0.0 + 1.0) / 3
    assert M.seg_measure(pred, truth) == pytest.approx(expect)
    assert M.seg_measure(truth, truth) == 1.0
    assert np.isnan(M.seg_measure(pred, np.zeros_like(truth)))


def test_truth_instances_binary_and_labels():
    t = two_cells().astype(np.uint8) * 255                 # ISBI style
    inst = M.truth_instances(t)
    assert inst.max() == 2 and set(np.unique(inst[t > 0])) == {1, 2}
    labels = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])        # touching instances kept apart
    np.testing.assert_array_equal(M.truth_instances(labels), labels)


def test_metrics_reject_bad_arguments():
    with pytest.raises(ValueError, match="cell_prob"):
        M.evaluate_slice(np.full((4, 4), 1.5), np.ones((4, 4), int))
    with pytest.raises(ValueError, match="truth"):
        M.evaluate_slice(np.zeros((4, 4)), np.ones((4, 5), int))
    with pytest.raises(ValueError, match="thresholds"):
        M.pixel_error_sweep(np.zeros((4, 4)), np.ones((4, 4), int), thresholds=())
    with pytest.raises(ValueError, match="pred_binary"):
        M.pixel_mismatch(np.zeros((2, 2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="truth_instances"):
        M.seg_measure(np.zeros((2, 2), int), -np.ones((2, 2), int))
    with pytest.raises(ValueError, match="levels"):
        M.warping_error(np.zeros((2, 2), bool), np.zeros((2, 2), bool), levels=0)
    with pytest.raises(ValueError, match="pred_binary"):
        M.warping_error(np.zeros((2, 2)), np.zeros((2, 2), bool))        # float: a probability map?


# ------------------------------------------------------------------------------------------------------------
# evaluate_slice on real data
# ------------------------------------------------------------------------------------------------------------

def test_evaluate_slice_isbi(isbi_dir):
    labels = tifffile.imread(isbi_dir / "train-labels.tif")[1]
    truth = labels > 0
    perfect = M.evaluate_slice(truth.astype(np.float32), labels)
    for k in ("pixel_error", "pixel_mismatch", "rand_error", "vi", "vi_split", "vi_merge", "warping_error"):
        assert perfect[k] == pytest.approx(0.0, abs=1e-12), k
    assert perfect["iou"] == 1.0 and perfect["seg"] == 1.0
    assert all(isinstance(v, float) for v in perfect.values())

    rs = np.random.RandomState(1)
    prob = np.clip(ndi.gaussian_filter(truth.astype(float), 1.5)
                   + 0.3 * ndi.gaussian_filter(rs.randn(*truth.shape), 1.0), 0, 1).astype(np.float32)
    noisy = M.evaluate_slice(prob, labels, warping_thresholds=(0.4, 0.5, 0.6))
    assert set(noisy) == set(perfect)
    for k in ("pixel_error", "rand_error", "vi", "warping_error"):
        assert noisy[k] > 0, k
    assert noisy["iou"] < 1 and noisy["seg"] < 1
    assert noisy["pixel_error"] == pytest.approx(M.pixel_error_sweep(prob, truth)["pixel_error"])
    assert noisy["rand_error"] == pytest.approx(M.rand_error_sweep(prob, labels)["rand_error"])
    assert noisy["warping_threshold"] in (0.4, 0.5, 0.6)
