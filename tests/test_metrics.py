"""Per-image and object measures (unet_jax.metrics): pixel mismatch, IoU, SEG, the adapted Rand error (against
scikit-image), threshold_metrics, object matching (F1, DSB mean AP, merges and splits)."""
import numpy as np
import pytest
from skimage.metrics import adapted_rand_error as skimage_adapted_rand_error

from unet_jax import metrics as M


def two_cells(h=12, w=15, col=7):
    """Two cells separated by a one-pixel vertical membrane at ``col`` (and a membrane frame): bool (h, w)."""
    m = np.ones((h, w), bool)
    m[:, col] = False
    m[0, :] = m[-1, :] = False
    m[:, 0] = m[:, -1] = False
    return m


@pytest.mark.parametrize("seed", range(3))
def test_adapted_rand_error_is_scikit_images_with_precision_and_recall_named_right(seed):
    rs = np.random.RandomState(seed)
    truth = rs.randint(0, 6, (30, 40))
    pred = rs.randint(0, 9, (30, 40))
    err, sk_prec, sk_rec = skimage_adapted_rand_error(truth, pred, ignore_labels=(0,))
    r = M.adapted_rand_error(pred, truth)
    assert r["adapted_rand_error"] == pytest.approx(err)
    assert (r["adapted_rand_precision"], r["adapted_rand_recall"]) == pytest.approx((sk_rec, sk_prec))
    # Precision: of the pairs joined by the prediction (inside the truth foreground), the share joined in truth.
    fg = truth > 0
    pairs = lambda labels: sum(c * (c - 1) for c in np.unique(labels, return_counts=True)[1])    # noqa: E731
    joint = pairs(truth[fg] * 100 + pred[fg])
    assert r["adapted_rand_precision"] == pytest.approx(joint / pairs(pred[fg]))
    assert r["adapted_rand_recall"] == pytest.approx(joint / pairs(truth[fg]))


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


def test_threshold_metrics():
    truth = two_cells()
    pred = truth.copy()
    pred[5, 7] = True                                      # a gap in the wall at 0.5
    m = M.threshold_metrics(np.where(pred, 0.8, 0.1), truth.astype(np.uint8), threshold=0.5)
    assert m["pixel_mismatch"] == pytest.approx(1 / truth.size)
    assert m["iou"] == pytest.approx(truth.sum() / pred.sum())
    assert m["seg"] == pytest.approx(0.5 * truth.sum() / pred.sum())       # one cell matched, the other not
    assert m["adapted_rand_error"] > 0
    assert set(m) == {"pixel_mismatch", "iou", "seg", "adapted_rand_error", "adapted_rand_precision",
                      "adapted_rand_recall"}


def test_metrics_reject_bad_arguments():
    with pytest.raises(ValueError, match="cell_prob"):
        M.threshold_metrics(np.full((4, 4), 1.5), np.ones((4, 4), int))
    with pytest.raises(ValueError, match="pred_binary"):
        M.pixel_mismatch(np.zeros((2, 2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="truth_instances"):
        M.seg_measure(np.zeros((2, 2), int), -np.ones((2, 2), int))


# ---------------------------------------------------------------------------------------------------------------
# object matching (F1 at IoU 0.5, DSB 2018 mean AP)
# ---------------------------------------------------------------------------------------------------------------

def _boxes(*boxes, shape=(40, 40)):
    out = np.zeros(shape, np.int32)
    for k, (y0, y1, x0, x1) in enumerate(boxes, 1):
        out[y0:y1, x0:x1] = k
    return out


def test_object_scores_of_a_perfect_prediction():
    truth = _boxes((0, 10, 0, 10), (20, 30, 20, 30))
    s = M.object_scores([M.object_matches(truth, truth)])
    assert s["object_f1"] == s["object_precision"] == s["object_recall"] == s["mean_ap"] == 1.0


def test_merged_pair_is_one_false_positive_and_two_misses():
    truth = _boxes((0, 10, 0, 10), (0, 10, 10, 20))
    merged = (truth > 0).astype(np.int32)
    m = M.object_matches(merged, truth)
    assert list(m["tp"]) == [0] * 10 and m["n_pred"] == 1 and m["n_true"] == 2
    s = M.object_scores([m])
    assert s["object_f1"] == 0.0 and s["mean_ap"] == 0.0


def test_mean_ap_counts_a_shrunk_object_only_at_low_thresholds():
    truth = _boxes((0, 10, 0, 10), (20, 30, 20, 30))
    pred = _boxes((0, 10, 0, 7), (20, 30, 20, 30))     # IoU 0.7 and 1.0
    m = M.object_matches(pred, truth)
    # IoU > t for t in 0.5, 0.55, 0.6, 0.65 -> 2 matches; from 0.7 on (strictly greater) only the exact box
    assert list(m["tp"]) == [2, 2, 2, 2, 1, 1, 1, 1, 1, 1]
    ap = np.mean([1.0] * 4 + [1 / 3] * 6)
    assert M.object_scores([m])["mean_ap"] == pytest.approx(ap)
    assert M.object_scores([m])["object_f1"] == 1.0


def test_object_scores_pool_counts_and_average_ap_over_images():
    truth = _boxes((0, 10, 0, 10), (20, 30, 20, 30))
    good = M.object_matches(truth, truth)
    missed = M.object_matches(np.zeros_like(truth), truth)
    s = M.object_scores([good, missed])
    assert s["object_precision"] == 1.0 and s["object_recall"] == 0.5
    assert s["object_f1"] == pytest.approx(2 * 2 / (2 + 4)) and s["mean_ap"] == 0.5
    with pytest.raises(ValueError, match="thresholds"):
        M.object_matches(truth, truth, thresholds=(0.3,))
