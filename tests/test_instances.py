import os
import subprocess
import sys
from pathlib import Path

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


def test_min_fraction_drops_objects_small_beside_the_learned_object_area():
    truth = _discs([(20, 20), (20, 60), (20, 100), (60, 20), (60, 60)], 10, shape=(80, 120))
    prob = (truth > 0).astype(np.float32)
    prob[70:73, 100:103] = prob[5:7, 115:118] = 1.0        # 9- and 6-pixel specks
    for method in ("components", "watershed"):
        assert label_instances(prob, method=method).max() == 7
        kept = label_instances(prob, method=method, min_fraction=0.2, object_area=314.0)
        assert kept.max() == 5 and not kept[70:73, 100:103].any() and kept[20, 20] > 0
        # without a known object area the fraction is not applied (never the prediction's own median)
        assert label_instances(prob, method=method, min_fraction=0.2).max() == 7
    # fragments that outnumber the real objects are still dropped: the area comes from the training masks
    many = np.zeros((80, 120), np.float32)
    many[10:30, 10:30] = 1.0
    for y in range(40, 80, 4):
        for x in range(0, 120, 4):
            many[y:y + 2, x:x + 2] = 1.0
    assert label_instances(many, method="components", min_fraction=0.2, object_area=400.0).max() == 1


@pytest.mark.parametrize("kwargs, match", [({"method": "stardist"}, "method"), ({"h": 0}, "h must"),
                                           ({"min_size": -1}, "min_size"),
                                           ({"smooth": -1.0}, "smooth"), ({"min_fraction": 1.0}, "min_fraction"),
                                           ({"object_area": -1.0}, "object_area")])
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


def test_distance_classes_and_centres_split_touching_objects_of_any_size():
    from unet_jax.inference import centre_map
    from unet_jax.weights import DISTANCE_BINS, distance_classes, object_distance
    truth = _discs([(50, 40), (50, 90)], 28) + np.where(_discs([(50, 140)], 8) > 0, 3, 0)   # a small one too
    truth[45:55, 116:134] = np.where(truth[45:55, 116:134] == 0, 2, truth[45:55, 116:134])  # a neck to the small one
    d = object_distance(truth)
    assert d.max() == 1.0 and d[truth == 0].max() == 0.0
    for k in (1, 2, 3):                 # every object, large or small, reaches 1 at its centre
        assert d[truth == k].max() == 1.0 and d[truth == k].min() > 0
    classes = distance_classes(truth)
    assert classes.dtype == np.int32 and set(np.unique(classes)) == set(range(DISTANCE_BINS + 1))
    assert ((classes > 0) == (truth > 0)).all()
    # a network that predicts these classes exactly: one object per disc, whatever touches what
    probs = np.eye(DISTANCE_BINS + 1, dtype=np.float32)[classes]
    centre = centre_map(probs)
    assert np.allclose(centre[truth == 0], 0) and centre.max() == (DISTANCE_BINS - 0.5) / DISTANCE_BINS
    labels = label_instances(1.0 - probs[..., 0], method="centres", interior=centre)
    assert labels.max() == 3
    assert label_instances(1.0 - probs[..., 0], method="components").max() == 1       # one blob
    for k in (1, 2, 3):
        ids, counts = np.unique(labels[truth == k], return_counts=True)
        assert ids[np.argmax(counts)] > 0 and counts.max() > 0.9 * (truth == k).sum()
    with pytest.raises(ValueError, match="needs interior"):
        label_instances(1.0 - probs[..., 0], method="centres")


def test_merges_and_splits_are_counted():
    from unet_jax import metrics
    truth = np.zeros((10, 20), np.int32)
    truth[1:5, 1:5], truth[1:5, 5:9], truth[6:9, 10:19] = 1, 2, 3
    pred = np.zeros_like(truth)
    pred[1:5, 1:9], pred[6:9, 10:14], pred[6:9, 14:19] = 1, 2, 3     # 1 and 2 merged, 3 split in two
    m = metrics.object_matches(pred, truth)
    assert (m["merges"], m["splits"]) == (1, 1)
    assert metrics.object_matches(truth, truth)["merges"] == metrics.object_matches(truth, truth)["splits"] == 0
    scores = metrics.object_scores([m, m])
    assert (scores["merges"], scores["splits"]) == (2, 2)


_FOLDER = str(Path(__file__).resolve().parents[1] / "experiments" / "folder.py")
# the folder recipe shrunk to a few CPU seconds: 300 steps of a features-8, depth-2 network on 64-pixel tiles
_SMALL_RUN = ("--config.model.features=8", "--config.model.depth=2", "--config.train.tile_size=64",
              "--config.train.num_steps=300", "--config.train.eval_every=150", "--config.train.checkpoint_every=150",
              "--config.optimizer.warmup_steps=10", "--config.eval.tile_size=64", "--config.augment.enabled=False")


def _cli(*args):
    """``unet-jax ARGS`` in a subprocess on the CPU."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", TQDM_DISABLE="1")
    return subprocess.run([sys.executable, "-m", "unet_jax.cli", *args], capture_output=True, text=True, env=env,
                          timeout=900)


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

    import tifffile
    data = tmp_path / "data"
    _touching_blobs_folder(data)
    workdir = tmp_path / "w"
    r = _cli("train", "--config", _FOLDER, "--workdir", str(workdir), f"--config.data.root={data}",
            f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.data.validation_fraction=0.34",
            "--config.data.target=contours", "--config.model.num_classes=3", "--config.eval.instances=contours",
            *_SMALL_RUN)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _cli("evaluate", "--workdir", str(workdir), "--no-images", "--output", str(tmp_path / "e"))
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert result["instances"] == "contours" and result["mean"]["iou"] > 0.6, result["mean"]    # P(object)
    assert "iou_class1" not in result["mean"] and result["objects"]["objects_true"] == 2 * 4
    r = _cli("predict", "--workdir", str(workdir), "--input", str(data / "images" / "im0.tif"), "--output",
            str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr[-3000:]
    prob = tifffile.imread(tmp_path / "p" / "im0_prob.tif")
    labels = tifffile.imread(tmp_path / "p" / "im0_labels.tif")
    assert prob.shape == (64, 64) and labels.dtype == np.uint16 and not (tmp_path / "p" / "im0_classes.tif").exists()
    truth = tifffile.imread(data / "masks" / "im0.tif")
    assert np.mean((prob > 0.5) == (truth > 0)) > 0.9
    assert labels.max() >= 3            # the touching pairs come out as more objects than their 2 blobs


def test_auto_target_picks_distance_for_touching_instances_and_predict_splits_them(tmp_path):
    """data.target='auto' (the folder recipe with it) on instance masks with touching objects trains the distance target
    (saying so), learns the object area from the masks, and predict splits the touching pairs; on binary masks it
    keeps the paper's foreground target."""
    import json

    import tifffile
    from unet_jax.data.folder import touching_objects
    data = tmp_path / "data"
    _touching_blobs_folder(data, n=6)
    assert touching_objects(data) == (6, 6)
    binary = tmp_path / "binary"
    _touching_blobs_folder(binary, n=2)
    for p in (binary / "masks").iterdir():     # the same objects as a binary mask: nothing tells them apart
        tifffile.imwrite(p, (tifffile.imread(p) > 0).astype(np.uint8) * 255)
    assert touching_objects(binary) == (0, 2)
    workdir = tmp_path / "w"
    r = _cli("train", "--config", _FOLDER, "--workdir", str(workdir), f"--config.data.root={data}",
            "--config.data.target=auto",
            f"--config.data.data_dir={tmp_path / 'tfds'}", "--config.data.validation_fraction=0.34",
            *_SMALL_RUN)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "target: distance" in r.stderr and "6 of 6 masks hold objects that touch" in r.stderr, r.stderr[-3000:]
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["data"]["target"] == "distance" and saved["model"]["num_classes"] == 5
    assert saved["eval"]["instances"] == "centres"
    areas = [np.bincount(tifffile.imread(p).ravel())[1:] for p in sorted((data / "masks").iterdir())]
    assert 0 < saved["eval"]["object_area"] and abs(saved["eval"]["object_area"] - np.median(
        np.concatenate(areas))) < 0.6 * np.median(np.concatenate(areas))      # the training split's median
    r = _cli("predict", "--workdir", str(workdir), "--input", str(data / "images" / "im0.tif"), "--output",
            str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr[-3000:]
    prob = tifffile.imread(tmp_path / "p" / "im0_prob.tif")
    labels = tifffile.imread(tmp_path / "p" / "im0_labels.tif")
    truth = tifffile.imread(data / "masks" / "im0.tif")
    assert prob.shape == (64, 64) and prob.dtype == np.float32 and np.mean((prob > 0.5) == (truth > 0)) > 0.9
    assert labels.max() == 4            # two touching pairs: four objects
    r = _cli("train", "--config", _FOLDER, "--workdir", str(tmp_path / "wb"), f"--config.data.root={binary}",
            "--config.data.target=auto", f"--config.data.data_dir={tmp_path / 'tfds'}",
            "--config.data.validation_fraction=0",
            "--config.model.features=4", "--config.model.depth=2", "--config.train.tile_size=64",
            "--config.train.num_steps=3", "--config.optimizer.warmup_steps=1", "--config.eval.tile_size=64")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "target: the paper's foreground (no mask holds touching objects)" in r.stderr, r.stderr[-3000:]
    assert json.loads((tmp_path / "wb" / "config.json").read_text())["model"]["num_classes"] == 2


def test_instance_masks_with_reused_colours_or_ids_give_one_object_per_region(tmp_path):
    """Masks as users download them (BBBC039's originals): touching objects told apart by a few colours reused
    across the image, as RGB(A) PNG or as a greyscale mask with reused values; each connected region of one
    colour is one object, and touching regions of different colours are touching objects."""
    import imageio.v3 as iio
    from unet_jax.data import io, masks
    from unet_jax.data.folder import touching_objects
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[2:8, 2:8, :3] = (255, 0, 0)
    rgba[2:8, 8:14, :3] = (0, 255, 0)        # touches the red one
    rgba[12:18, 20:26, :3] = (255, 0, 0)     # red again, elsewhere: another object
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    iio.imwrite(tmp_path / "masks" / "a.png", rgba)
    iio.imwrite(tmp_path / "images" / "a.png", np.full((20, 30), 90, np.uint8))
    labels = masks.mask_to_instances(io.read_image(tmp_path / "masks" / "a.png"), "a.png")
    assert labels.max() == 3 and labels[0, 0] == 0
    assert len({labels[4, 4], labels[4, 10], labels[14, 22]}) == 3
    assert touching_objects(tmp_path) == (1, 1)
    grey = np.zeros((20, 30), np.uint16)
    grey[2:8, 2:8], grey[2:8, 8:14], grey[12:18, 20:26] = 1, 2, 1
    split = masks.mask_to_instances(grey, "g.tif")
    assert split.max() == 3 and split[4, 4] != split[14, 22]
    unique = np.where(grey == 1, 7, grey).astype(np.uint16)
    unique[12:18, 20:26] = 9
    assert np.array_equal(masks.mask_to_instances(unique, "u.tif"), unique)      # ids used once are kept
    with pytest.raises(ValueError, match="colour"):                          # class masks never map colours
        masks.mask_to_classes(rgba, "a.png")
