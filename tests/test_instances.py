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


def test_min_fraction_drops_specks_relative_to_the_image_s_objects():
    truth = _discs([(20, 20), (20, 60), (20, 100), (60, 20), (60, 60)], 10, shape=(80, 120))
    prob = (truth > 0).astype(np.float32)
    prob[70:73, 100:103] = prob[5:7, 115:118] = 1.0        # 9- and 6-pixel specks
    for method in ("components", "watershed"):
        assert label_instances(prob, method=method).max() == 7
        kept = label_instances(prob, method=method, min_fraction=0.2)
        assert kept.max() == 5 and not kept[70:73, 100:103].any() and kept[20, 20] > 0
    # relative to the objects' scale: the same specks beside 3-pixel objects stay
    small = np.zeros((80, 120), np.float32)
    small[10:13, 10:13] = small[10:13, 30:33] = small[30:33, 10:13] = small[70:73, 100:103] = 1.0
    assert label_instances(small, method="components", min_fraction=0.2).max() == 4


@pytest.mark.parametrize("kwargs, match", [({"method": "stardist"}, "method"), ({"h": 0}, "h must"),
                                           ({"min_size": -1}, "min_size"),
                                           ({"smooth": -1.0}, "smooth"), ({"min_fraction": 1.0}, "min_fraction")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        label_instances(np.zeros((8, 8), np.float32), **kwargs)
    with pytest.raises(ValueError, match="fg_prob"):
        label_instances(np.zeros((8, 8), np.int32))


def test_contours_grow_predicted_interiors_into_touching_objects():
    from unet_jax.weights import contour_classes
    truth = _discs([(50, 40), (50, 90), (50, 140)], 28)       # components would give one blob
    classes = contour_classes(truth)
    fg = (classes > 0).astype(np.float32)
    interior = (classes == 1).astype(np.float32) * 0.9
    labels = label_instances(fg, method="contours", interior=interior)
    assert labels.max() == 3
    for k in (1, 2, 3):   # each object is one disc, grown back over its contour
        ids, counts = np.unique(labels[truth == k], return_counts=True)
        assert ids[np.argmax(counts)] > 0 and counts.max() > 0.95 * (truth == k).sum()
    # foreground with no interior (thinner than the contour) is still an object of its own
    fg[5:7, 5:60] = 1.0
    assert label_instances(fg, method="contours", interior=interior).max() == 4
    with pytest.raises(ValueError, match="needs interior"):
        label_instances(fg, method="contours")
    with pytest.raises(ValueError, match="needs interior"):
        label_instances(fg, method="contours", interior=interior[:10])


def _touching_blobs_folder(root, n=6, size=64, seed=0):
    """Images of bright round blobs, dimmer towards their edges, in touching pairs; 16-bit instance masks."""
    import tifffile
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        inst = np.zeros((size, size), np.uint16)
        image = 0.1 + 0.03 * rng.standard_normal((size, size))
        k = 0
        for cy in (16, 46):
            cx, r = int(rng.integers(12, 20)), int(rng.integers(7, 9))
            for x in (cx, cx + 2 * r - 1):               # two discs that touch
                k += 1
                d = np.hypot(yy - cy, xx - x)
                inst[(d < r) & (inst == 0)] = k
                image += 0.8 * np.clip(1 - (d / r) ** 2, 0, 1)
        tifffile.imwrite(root / "images" / f"im{i}.tif", (np.clip(image, 0, 1) * 60000).astype(np.uint16))
        tifffile.imwrite(root / "masks" / f"im{i}.tif", inst)


def test_contours_target_train_evaluate_predict(tmp_path):
    """data.target='contours' end to end on the command line: three classes trained from instance masks,
    measured on P(object), and predict writes P(object) and the objects grown from the predicted interiors."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import tifffile
    data = tmp_path / "data"
    _touching_blobs_folder(data)
    env = dict(os.environ, JAX_PLATFORMS="cpu", TQDM_DISABLE="1")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "unet_jax.cli", *args], capture_output=True, text=True,
                              env=env, timeout=900)
    folder = str(Path(__file__).resolve().parents[1] / "experiments" / "folder.py")
    workdir = tmp_path / "w"
    r = cli("train", "--config", folder, "--workdir", str(workdir), f"--config.data.root={data}",
            f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.data.validation_fraction=0.34",
            "--config.data.target=contours", "--config.model.num_classes=3", "--config.eval.instances=contours",
            "--config.model.features=8", "--config.model.depth=2", "--config.train.tile_size=64",
            "--config.train.num_steps=300", "--config.train.eval_every=150", "--config.train.checkpoint_every=150",
            "--config.optimizer.warmup_steps=10", "--config.eval.tile_size=64", "--config.augment.enabled=False")
    assert r.returncode == 0, r.stderr[-3000:]
    r = cli("evaluate", "--workdir", str(workdir), "--no-images", "--output", str(tmp_path / "e"))
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert result["instances"] == "contours" and result["mean"]["iou"] > 0.6, result["mean"]    # P(object)
    assert "iou_class1" not in result["mean"] and result["objects"]["objects_true"] == 2 * 4
    r = cli("predict", "--workdir", str(workdir), "--input", str(data / "images" / "im0.tif"), "--output",
            str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr[-3000:]
    prob = tifffile.imread(tmp_path / "p" / "im0_prob.tif")
    labels = tifffile.imread(tmp_path / "p" / "im0_labels.tif")
    assert prob.shape == (64, 64) and labels.dtype == np.uint16 and not (tmp_path / "p" / "im0_classes.tif").exists()
    truth = tifffile.imread(data / "masks" / "im0.tif")
    assert np.mean((prob > 0.5) == (truth > 0)) > 0.9
    assert labels.max() >= 3            # the touching pairs come out as more objects than their 2 blobs
