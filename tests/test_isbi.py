"""The ISBI 2012 challenge measures (unet_jax.isbi): the reference definitions on hand-worked cases, literal
simulations of the reference's procedures, and a real ISBI 2012 slice."""
import itertools
import math
from collections import deque

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from unet_jax import isbi as I
from unet_jax import metrics as M

from test_metrics import two_cells

FOUR = ndi.generate_binary_structure(2, 1)


def as_prob(cells):
    """A binary proposal as P(cell) in {0, 1}: every threshold of the challenge gives the same cells."""
    return np.asarray(cells, np.float32)


# ------------------------------------------------------------------------------------------------------------
# The definitions, written out for the expected values
# ------------------------------------------------------------------------------------------------------------

def fscore(tp, fp, fn):
    """ClassificationStatistics: precision (recall) 1 without false positives (negatives)."""
    p = 1.0 if fp == 0 else tp / (tp + fp)
    r = 1.0 if fn == 0 else tp / (tp + fn)
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def rand_f(blocks, singletons=0):
    """Foreground-restricted Rand F-score, N^2 normalisation, from the overlaps: ``blocks`` lists, per proposed
    segment, its overlaps with the truth segments as {truth segment: pixels}; ``singletons`` maps truth segments to
    their pixels on proposed membrane (each its own segment). Ordered pairs, a pixel with itself included."""
    singletons = singletons or {}
    truth_sizes = {}
    for b in blocks:
        for t, c in b.items():
            truth_sizes[t] = truth_sizes.get(t, 0) + c
    for t, c in singletons.items():
        truth_sizes[t] = truth_sizes.get(t, 0) + c
    same_both = sum(c * c for b in blocks for c in b.values()) + sum(singletons.values())
    same_prop = sum(sum(b.values()) ** 2 for b in blocks) + sum(singletons.values())
    same_truth = sum(s * s for s in truth_sizes.values())
    return fscore(same_both, same_prop - same_both, same_truth - same_both)


def entropy(sizes, n):
    return -sum(s / n * math.log(s / n) for s in sizes if s)


def info_f(truth_sizes, prop_sizes, joint_sizes):
    """V_Info: I / H(truth) and I / H(proposal) (precision 1, recall 0 when H(proposal) = 0), harmonic mean."""
    n = sum(truth_sizes)
    ha, hb = entropy(truth_sizes, n), entropy(prop_sizes, n)
    i = ha + hb - entropy(joint_sizes, n)
    p, r = (1.0, 0.0) if hb == 0 else (i / ha, i / hb)
    return 2 * p * r / (p + r) if p + r else math.nan


# ------------------------------------------------------------------------------------------------------------
# ISBI 2012 measures on hand-worked cases
# ------------------------------------------------------------------------------------------------------------

def test_challenge_thresholds_are_accumulated_like_java():
    ths = I.ISBI_THRESHOLDS
    assert len(ths) == 11 and ths[0] == 0.0 and ths[3] == 0.1 + 0.1 + 0.1 and ths[-1] == 0.9999999999999999
    assert ths[-1] < 1.0    # so P(cell) = 1 is a cell at every threshold (compared in double precision)


def test_identical_maps_are_perfect():
    truth = two_cells()
    r = I.isbi2012(as_prob(truth), truth.astype(np.uint8) * 255)
    assert r["pixel_error"] == r["rand_error"] == r["warping_error"] == 0.0
    assert r["vrand_thinned"] == 1.0 and r["vinfo_thinned"] == pytest.approx(1.0, abs=1e-12)
    assert r["pixel_error_threshold"] == 0.0                  # the first of equally good thresholds
    assert all(isinstance(v, float) for v in r.values())


def test_wall_removed_between_two_cells():
    h, w, col = 16, 15, 7                   # a 14-pixel wall (rows 1..14)
    truth = two_cells(h, w, col)
    pred = truth.copy()
    pred[1:-1, col] = True                  # the wall is gone: one cell
    r = I.isbi2012(as_prob(pred), truth)
    a = b = 14 * 6                          # the two cells: 14 rows x 6 columns
    assert r["pixel_error"] == pytest.approx(1 - fscore(a + b, 14, 0))
    # One proposed segment over both: pairs across the cells (2ab) are false positives.
    assert r["rand_error"] == pytest.approx(1 - rand_f([{"A": a, "B": b}]))
    assert r["rand_error"] == pytest.approx(1 / 3)
    # No wall pixel of the truth can become cell without merging: all 14 stay, each a merger.
    assert (r["warping_mergers"], r["warping_splits"]) == (14, 0)
    assert r["warping_error"] == pytest.approx(14 / (h * w))
    assert r["vrand_thinned"] == pytest.approx(rand_f([{"A": a, "B": b}]))
    assert r["vinfo_thinned"] == 0.0        # one proposed segment: H(proposal) = 0
    # scikit-image's convention agrees here (no membrane pixel inside a cell).
    are = M.adapted_rand_error(M.label_cells(pred), M.truth_instances(truth))["adapted_rand_error"]
    assert are == pytest.approx(1 - 2 * (a * (a - 1) + b * (b - 1)) / ((a + b) * (a + b - 1) + a * (a - 1)
                                                                       + b * (b - 1)))


def test_one_pixel_split_line():
    h, w, col = 14, 17, 8
    truth = two_cells(h, w, col)
    pred = truth.copy()
    pred[6, 1:col] = False                  # a one-pixel membrane across the left cell (7 pixels)
    r = I.isbi2012(as_prob(pred), truth)
    left, right = 12 * 7, 12 * 7            # rows 1..12, columns 1..7 and 9..15
    top, bottom = 5 * 7, 6 * 7
    assert r["pixel_error"] == pytest.approx(1 - fscore(left + right - 7, 0, 7))
    # The line pixels are singletons; the two halves lose their pairs across the line.
    expect = rand_f([{"L": top}, {"L": bottom}, {"R": right}], singletons={"L": 7})
    assert r["rand_error"] == pytest.approx(1 - expect)
    # The truth is warped onto the line from the frame inwards; the last pixel, next to the wall, would split the
    # cell: one split.
    assert (r["warping_splits"], r["warping_mergers"]) == (1, 0)
    assert r["warping_error"] == pytest.approx(1 / (h * w))
    # Thinning keeps the one-pixel line (dams between the halves): the same pairs.
    assert r["vrand_thinned"] == pytest.approx(expect)
    # Every proposed segment (the line pixels one each) lies in one true cell: I = H(truth), precision 1.
    segments = [top, bottom, right] + [1] * 7
    assert r["vinfo_thinned"] == pytest.approx(info_f([left, right], segments, segments))
    assert r["vinfo_thinned"] < 1


def test_shifted_wall_is_no_topological_error():
    h, w = 12, 15
    truth, pred = two_cells(h, w, col=7), two_cells(h, w, col=8)
    r = I.isbi2012(as_prob(pred), truth)
    assert r["warping_error"] == 0.0 and r["warping_splits"] == r["warping_mergers"] == 0
    # Truth columns 1..6 and 8..13; the proposal's wall (column 8) covers 10 truth pixels of the right cell.
    a, b = 10 * 6, 10 * 6
    expect = rand_f([{"A": a}, {"B": b - 10}], singletons={"B": 10})
    assert r["rand_error"] == pytest.approx(1 - expect)
    assert r["vrand_thinned"] == pytest.approx(expect)      # the proposal's wall is already one pixel wide
    segments = [a, b - 10] + [1] * 10
    assert r["vinfo_thinned"] == pytest.approx(info_f([a, b], segments, segments))
    assert r["pixel_error"] == pytest.approx(1 - fscore(a + b - 10, 10, 10))


def test_missing_cell():
    h, w, col = 14, 17, 8
    truth = two_cells(h, w, col)
    pred = truth.copy()
    pred[:, col + 1:] = False               # the right cell is not found: membrane
    r = I.isbi2012(as_prob(pred), truth)
    a = b = 12 * 7
    # Its pixels are singletons: every pair inside it but the self-pairs is lost.
    assert r["rand_error"] == pytest.approx(1 - rand_f([{"A": a}], singletons={"B": b}))
    # scikit-image's convention makes the membrane one more segment, here exactly the missed cell: error 0.
    are = M.adapted_rand_error(M.label_cells(pred), M.truth_instances(truth))["adapted_rand_error"]
    assert are == pytest.approx(0.0) and r["rand_error"] > 0.3
    # The warp shrinks the missed cell to one pixel, an object deletion: neither split nor merger.
    warped, ys, xs = I._warp_labels(truth, as_prob(pred), 0.5)
    assert ys.size == 1 and I._splits_and_mergers(warped, ys, xs) == (0, 0)
    assert r["warping_error"] == 0.0
    # Thinning floods the missed cell from the only basin: a merge of the two cells.
    assert r["vrand_thinned"] == pytest.approx(rand_f([{"A": a, "B": b}]))
    assert r["vinfo_thinned"] == 0.0


def test_membranes_dilated_by_one_pixel():
    h, w, col = 14, 17, 8
    truth = two_cells(h, w, col)
    pred = ndi.binary_erosion(truth, FOUR)  # every membrane one pixel thicker on each side
    r = I.isbi2012(as_prob(pred), truth)
    a, a_in = 12 * 7, 10 * 5                # each cell and its part left inside the thicker membranes
    # Only the pairs of the extra membrane pixels count against it (they are singletons: no false positive),
    # where scikit-image's convention makes all of them one segment across both cells.
    expect = rand_f([{"A": a_in}, {"B": a_in}], singletons={"A": a - a_in, "B": a - a_in})
    assert r["rand_error"] == pytest.approx(1 - expect)
    assert r["warping_error"] == 0.0        # same topology
    # Thinning brings the dam back to the middle of the thick membrane, onto the true wall: perfect.
    assert r["vrand_thinned"] == 1.0 and r["vinfo_thinned"] == pytest.approx(1.0)


def test_stack_pools_statistics_before_the_best_threshold():
    h, w, col = 12, 15, 7
    truth = two_cells(h, w, col)
    a = b = 10 * 6
    # Slice 1 is right from threshold 0.5 on (its wall has P = 0.5), slice 2 below 0.5 (its cells have P = 0.45).
    p1 = np.where(truth, 1.0, 0.0).astype(np.float32)
    p1[1:-1, col] = 0.5
    p2 = np.where(truth, 0.45, 0.0).astype(np.float32)
    stack = I.isbi2012(np.stack([p1, p2]), np.stack([truth, truth]))
    each = [I.isbi2012(p, truth) for p in (p1, p2)]
    assert [e["rand_error"] for e in each] == [0.0, 0.0]       # each slice alone has a perfect threshold
    assert [e["rand_error_threshold"] for e in each] == [0.5, 0.0]
    # Pooled: below 0.5, slice 1 merges its cells; from 0.5 on, slice 2 has only membrane (singletons).
    perfect = (a * a + b * b, 0, 0)
    merged = (a * a + b * b, 2 * a * b, 0)
    lost = (a + b, 0, a * a + b * b - (a + b))
    below = fscore(*(x + y for x, y in zip(merged, perfect)))
    above = fscore(*(x + y for x, y in zip(perfect, lost)))
    assert below > above
    assert stack["rand_error"] == pytest.approx(1 - below) and stack["rand_error_threshold"] == 0.0
    assert stack["rand_error"] > 0.1
    # Pixel error: slice 1 wall pixels false positives below 0.5, slice 2 cells all missed from 0.5 on.
    assert stack["pixel_error"] == pytest.approx(1 - max(fscore(2 * (a + b), 10, 0), fscore(a + b, 0, a + b)))
    # Warping: mergers of slice 1 below 0.5; from 0.5 on slice 2's cells shrink to points (deletions): 0.
    assert stack["warping_error"] == 0.0 and stack["warping_error_threshold"] == 0.5
    # V_Rand after thinning averages the slices' scores (the challenge script's perSliceAverage = true): slice 2
    # without cells is one flooded segment, a merge like slice 1's below 0.5.
    f_merge = rand_f([{"A": a, "B": b}])
    assert stack["vrand_thinned"] == pytest.approx((1 + f_merge) / 2)
    assert stack["vrand_thinned_micro"] == pytest.approx(fscore(*(x + y for x, y in zip(merged, perfect))))
    # The stack is the summary of its slices' statistics.
    assert I.isbi2012_summary([I.isbi2012_stats(p1, truth), I.isbi2012_stats(p2, truth)]) == stack


def test_thinning_puts_the_dam_where_the_reference_floods():
    cells = np.zeros((5, 9), bool)
    cells[:, :3] = True
    cells[:, 5:] = True                     # a 2-pixel membrane, columns 3 and 4
    thin = I._thin_membranes(cells)
    left, right = thin[0, 0], thin[0, 8]
    # Column 3 is popped first (column-major) and takes the left basin; column 4 then meets both: the dam.
    assert (thin[:, 3] == left).all() and (thin[:, 4] == 0).all() and (thin[:, 5] == right).all()
    cells[:, 5] = False                     # 3 pixels: the middle one is the dam
    thin = I._thin_membranes(cells)
    assert (thin[:, 3] == left).all() and (thin[:, 4] == 0).all() and (thin[:, 5] == thin[0, 8]).all()
    assert (I._thin_membranes(np.zeros((4, 4), bool)) == 1).all()       # no cell: one segment


# ------------------------------------------------------------------------------------------------------------
# Literal simulations of the reference's procedures against the vectorised emulation
# ------------------------------------------------------------------------------------------------------------

def fifo_watershed(cells):
    """WatershedTransform2D.apply on the binary image (membrane 255, cell 0), 4-connectivity, step by step:
    pixels sorted by value (ties in column-major creation order), a FIFO queue, the global flag."""
    h, w = cells.shape
    value = np.where(cells, 0, 255)
    INIT, MASK, WSHED, INQUEUE = -1, -2, 0, -3
    lab = np.full((h, w), INIT)
    pixels = sorted(((value[y, x], x, y) for x in range(w) for y in range(h)), key=lambda r: r[0])

    def neighbours(x, y):
        return [(u, v) for u, v in ((x - 1, y), (x, y - 1), (x + 1, y), (x, y + 1)) if 0 <= u < w and 0 <= v < h]
    current, flag = 0, False
    for level in sorted(set(value.ravel())):
        at_level = [(x, y) for v, x, y in pixels if v == level]
        fifo = deque()
        for x, y in at_level:
            lab[y, x] = MASK
            if any(lab[v, u] >= WSHED for u, v in neighbours(x, y)):
                fifo.append((x, y))
                lab[y, x] = INQUEUE
        while fifo:
            x, y = fifo.popleft()
            for u, v in neighbours(x, y):
                if lab[v, u] > 0:
                    if lab[y, x] == INQUEUE or (lab[y, x] == WSHED and flag):
                        lab[y, x] = lab[v, u]
                    elif lab[y, x] > 0 and lab[y, x] != lab[v, u]:
                        lab[y, x], flag = WSHED, False
                elif lab[v, u] == WSHED and lab[y, x] == INQUEUE:
                    lab[y, x], flag = WSHED, True
                elif lab[v, u] == MASK:
                    lab[v, u] = INQUEUE
                    fifo.append((u, v))
        for x, y in at_level:
            if lab[y, x] == MASK:
                current += 1
                lab[y, x] = current
                fifo.append((x, y))
                while fifo:
                    for u, v in neighbours(*fifo.popleft()):
                        if lab[v, u] == MASK:
                            lab[v, u] = current
                            fifo.append((u, v))
    return np.where(lab == INIT, 0, lab)


def same_partition(a, b):
    pairs = set(zip(a[a > 0].tolist(), b[b > 0].tolist()))
    return (np.array_equal(a == 0, b == 0)
            and len(pairs) == len(set(a[a > 0].tolist())) == len(set(b[b > 0].tolist())))


def simple_in_3d(patch):
    """Is the centre of a 3x3 patch (cells 1) simple as the middle slice of a 3x3x3 cube between two empty ones,
    cells 6-connected, the rest 26-connected: Bertrand's T6(x, X) = 1 and T26(x, complement) = 1."""
    cube = np.zeros((3, 3, 3), bool)
    cube[1] = patch
    points = [c for c in itertools.product(range(3), repeat=3) if c != (1, 1, 1)]

    def components(pts, adjacent):
        pts, out = list(pts), []
        while pts:
            comp, stack = set(), [pts.pop()]
            while stack:
                p = stack.pop()
                comp.add(p)
                near = [q for q in pts if adjacent(p, q)]
                pts = [q for q in pts if q not in near]
                stack += near
            out.append(comp)
        return out
    l1 = lambda p, q: sum(abs(i - j) for i, j in zip(p, q))               # noqa: E731
    linf = lambda p, q: max(abs(i - j) for i, j in zip(p, q))             # noqa: E731
    faces = {p for p in points if l1(p, (1, 1, 1)) == 1}
    n18 = [p for p in points if cube[p] and l1(p, (1, 1, 1)) <= 2]
    t6 = sum(1 for c in components(n18, lambda p, q: l1(p, q) == 1) if c & faces)
    t26 = len(components([p for p in points if not cube[p]], lambda p, q: linf(p, q) == 1))
    return t6 == 1 and t26 == 1


def iterated_warp(truth, prob32, th, simple):
    """WarpingError.simplePointWarp2d step by step: each iteration lists the mismatches, sorts them by decreasing
    float32 |P - th| (ties in column-major scan order) and flips each simple one in turn; stop when the number of
    mismatches stops changing. Returns the warped truth and the mismatches left."""
    h, w = truth.shape
    src = np.pad(truth, 1).astype(np.uint8)
    target = np.pad(prob32.astype(np.float64) > th, 1)
    before, mism = None, []
    while True:
        diff = int((src != target).sum())
        if diff == 0:
            return src[1:-1, 1:-1].astype(bool), []
        if diff == before:
            return src[1:-1, 1:-1].astype(bool), [(y - 1, x - 1) for x, y, _ in mism]
        before = diff
        mism = [(x, y, np.float32(abs(float(prob32[y - 1, x - 1]) - th)))
                for x in range(1, w + 1) for y in range(1, h + 1) if src[y, x] != target[y, x]]
        mism.sort(key=lambda m: -m[2])
        for x, y, _ in mism:
            if simple(src[y - 1:y + 2, x - 1:x + 2]):
                src[y, x] ^= 1


def classify_by_relabelling(warped, mismatches):
    """WarpingError.classifyMismatches2d, splits and mergers only, relabelling the whole image for each test."""
    seg = ndi.label(warped, FOUR)[0]
    h, w = warped.shape

    def ids(s, y, x):
        return {int(s[y + dy, x + dx]) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                if (dy or dx) and 0 <= y + dy < h and 0 <= x + dx < w}
    splits = mergers = 0
    for y, x in mismatches:
        u = ids(seg, y, x)
        if len(u) == 2 and seg[y, x]:
            cut = warped.copy()
            cut[y, x] = False
            splits += len(ids(ndi.label(cut, FOUR)[0], y, x)) > 2
        elif len(u) >= 3 or not u:
            mergers += seg[y, x] == 0
            splits += seg[y, x] != 0
    return splits, mergers


def test_simple_point_table_is_the_references_3d_test():
    order = [(0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0), (0, 0)]
    lut = I.simple_point_lut()
    for c in range(256):
        patch = np.zeros((3, 3), bool)
        for k, p in enumerate(order):
            patch[p] = c >> k & 1
        for centre in (False, True):
            patch[1, 1] = centre
            assert simple_in_3d(patch) == lut[c], (c, centre)


@pytest.mark.parametrize("seed", range(3))
def test_thinning_equals_the_fifo_flooding(seed):
    rs = np.random.RandomState(seed)
    for trial in range(40):
        h, w = rs.randint(3, 20), rs.randint(3, 20)
        if trial % 3 == 0:
            cells = rs.rand(h, w) > rs.uniform(0.2, 0.8)
        elif trial % 3 == 1:
            cells = ndi.gaussian_filter(rs.rand(h, w), 1.5) > 0.5
        else:
            cells = rs.rand(h, w) > 0.95
        assert same_partition(I._thin_membranes(cells), fifo_watershed(cells)), cells.astype(int)


@pytest.mark.parametrize("seed", range(3))
def test_warping_equals_the_iterated_warp(seed):
    rs = np.random.RandomState(seed)
    lut = I.simple_point_lut()
    order = [(0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0), (0, 0)]
    simple = lambda p: bool(lut[sum(int(p[q]) << k for k, q in enumerate(order))])     # noqa: E731
    for trial in range(12):
        h, w = rs.randint(6, 26), rs.randint(6, 26)
        truth = ndi.gaussian_filter(rs.rand(h, w), 1.2) > 0.45
        kind = trial % 3
        if kind == 0:
            prob = rs.rand(h, w)
        elif kind == 1:
            prob = ndi.gaussian_filter(rs.rand(h, w), 1.0) > 0.5          # binary: ties in scan order
        else:
            prob = np.clip(ndi.gaussian_filter(truth.astype(float), 1) + 0.3 * rs.randn(h, w), 0, 1)
        prob = prob.astype(np.float32)
        for th in (0.0, 0.30000000000000004, 0.5, 0.9999999999999999):
            warped, ys, xs = I._warp_labels(truth, prob, th)
            ref_warped, ref_left = iterated_warp(truth, prob, th, simple)
            np.testing.assert_array_equal(warped, ref_warped)
            assert sorted(zip(ys.tolist(), xs.tolist())) == sorted(ref_left)
            assert I._splits_and_mergers(warped, ys, xs) == classify_by_relabelling(warped, ref_left)


# ------------------------------------------------------------------------------------------------------------
# Simple points, pixel error, adapted Rand error, IoU, SEG
# ------------------------------------------------------------------------------------------------------------

def code(neigh):
    """8-bit code of a 3x3 neighbourhood given as rows (centre ignored), bit k clockwise from north."""
    n = np.asarray(neigh, bool)
    order = [(0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0), (0, 0)]
    return sum(int(n[p]) << k for k, p in enumerate(order))


def test_simple_point_lut_hand_cases():
    lut = I.simple_point_lut()
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


def test_pixel_error_and_sweep():
    truth = two_cells()
    pred = truth.copy()
    pred[3, 3] = False
    pred[5, 7] = True
    assert M.pixel_mismatch(pred, truth) == pytest.approx(2 / truth.size)
    tp = truth.sum() - 1
    assert M.pixel_fscore(pred, truth) == pytest.approx(2 * tp / (2 * tp + 2))
    # Right only for thresholds in [0.3, 0.9): the sweep finds it and F = 1.
    s = I.pixel_error_sweep(np.where(truth, 0.9, 0.3), truth, thresholds=(0.2, 0.5, 0.95))
    assert s["pixel_error"] == 0.0 and s["threshold"] == 0.5
    np.testing.assert_allclose(s["mismatch"], [(~truth).mean(), 0.0, truth.mean()])
    # The challenge's pixel error is the same F-score at its best threshold.
    r = I.isbi2012(np.where(truth, 0.9, 0.3), truth, thresholds=(0.2, 0.5, 0.95))
    assert r["pixel_error"] == 0.0 and r["pixel_error_threshold"] == 0.5


def test_isbi_measures_reject_bad_arguments():
    with pytest.raises(ValueError, match="cell_prob"):
        I.isbi2012(np.full((4, 4), 1.5), np.ones((4, 4), int))
    with pytest.raises(ValueError, match="cell_prob"):
        I.isbi2012(np.zeros((4, 4), int), np.ones((4, 4), int))             # not a probability map
    with pytest.raises(ValueError, match="truth"):
        I.isbi2012(np.zeros((4, 4)), np.ones((4, 5), int))
    with pytest.raises(ValueError, match="thresholds"):
        I.isbi2012(np.zeros((4, 4)), np.ones((4, 4), int), thresholds=(0.5, 1.5))
    with pytest.raises(ValueError, match="thresholds"):
        I.isbi2012_summary([I.isbi2012_stats(np.zeros((4, 4)), np.ones((4, 4))),
                            I.isbi2012_stats(np.zeros((4, 4)), np.ones((4, 4)), thresholds=(0.5,))])
    with pytest.raises(ValueError, match="thresholds"):
        I.pixel_error_sweep(np.zeros((4, 4)), np.ones((4, 4), int), thresholds=())


# ------------------------------------------------------------------------------------------------------------
# A real ISBI 2012 slice
# ------------------------------------------------------------------------------------------------------------

def test_isbi2012_on_real_slices(isbi_dir):
    labels = tifffile.imread(isbi_dir / "train-labels.tif")[:2]
    perfect = I.isbi2012(labels[1].astype(np.float32) / 255, labels[1])
    assert perfect["pixel_error"] == perfect["rand_error"] == perfect["warping_error"] == 0.0
    assert perfect["vrand_thinned"] == pytest.approx(1.0) and perfect["vinfo_thinned"] == pytest.approx(1.0)
    rs = np.random.RandomState(1)
    truth = labels > 0
    prob = np.stack([np.clip(ndi.gaussian_filter(t.astype(float), 1.5)
                             + 0.3 * ndi.gaussian_filter(rs.randn(*t.shape), 1.0), 0, 1) for t in truth])
    stack = I.isbi2012(prob, labels)
    for key in ("pixel_error", "rand_error", "warping_error"):
        assert 0 < stack[key] < 0.1, key
    for key in ("vrand_thinned", "vinfo_thinned"):
        assert 0.9 < stack[key] < 1, key
    assert stack["warping_error"] * 2 * truth[0].size == stack["warping_splits"] + stack["warping_mergers"]
    assert stack["warping_error_threshold"] in I.ISBI_THRESHOLDS

