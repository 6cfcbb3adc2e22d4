import numpy as np
import pytest

from unet_jax.instances import as_label_dtype, label_instances


def _discs(centres, radius, shape=(100, 170)):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    out = np.zeros(shape, np.int32)
    for k, (cy, cx) in enumerate(centres, 1):
        out[((yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2) & (out == 0)] = k
    return out


def test_watershed_separates_touching_discs_that_components_merge():
    truth = _discs([(50, 40), (50, 90), (50, 140)], 28)       # three overlapping discs: one blob
    prob = (truth > 0).astype(np.float32)
    comps = label_instances(prob, method="components")
    ws = label_instances(prob, method="watershed")
    assert comps.max() == 1
    assert ws.max() == 3
    for k in (1, 2, 3):   # each watershed object sits on one disc
        ids, counts = np.unique(ws[truth == k], return_counts=True)
        assert ids[np.argmax(counts)] > 0 and counts.max() > 0.9 * (truth == k).sum()


def test_watershed_keeps_one_elongated_object_and_thin_objects():
    prob = np.zeros((60, 200), np.float32)
    prob[20:40, 10:190] = 0.9          # a 20-pixel-wide bar: one object, not a row of seeds
    prob[50:52, 10:190] = 0.9          # a 2-pixel-thin line, thinner than h: still its own object
    labels = label_instances(prob, method="watershed", h=2.0)
    assert labels.max() == 2
    assert len(np.unique(labels[20:40, 10:190])) == 1 and len(np.unique(labels[50:52, 10:190])) == 1


def test_labels_are_uint16_and_min_size_removes_specks():
    prob = np.zeros((40, 40), np.float32)
    prob[5:15, 5:15] = 1.0
    prob[30, 30] = 1.0
    labels = label_instances(prob, method="components", min_size=4)
    assert labels.dtype == np.uint16 and labels.max() == 1 and labels[30, 30] == 0
    assert as_label_dtype(np.array([0, 70000])).dtype == np.uint32


@pytest.mark.parametrize("kwargs, match", [({"method": "stardist"}, "method"), ({"h": 0}, "h must"),
                                           ({"min_size": -1}, "min_size"),
                                           ({"smooth": -1.0}, "smooth")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        label_instances(np.zeros((8, 8), np.float32), **kwargs)
    with pytest.raises(ValueError, match="fg_prob"):
        label_instances(np.zeros((8, 8), np.int32))
