"""Multi-class masks in the folder data set (data.mask_type='classes'): reading, weight maps, the class-id check,
and a 3-class data set through train, evaluate and predict on the command line."""
import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from PIL import Image

from unet_jax.data import check_class_ids, io, masks
from unet_jax.data.common import class_weight_map

REPO = Path(__file__).resolve().parents[1]


def test_class_mask_gives_ids_and_objects_apart_across_classes():
    classes = np.zeros((10, 12), np.uint16)            # 16-bit class masks are fine: the values are the ids
    classes[2:6, 1:5] = 1
    classes[2:6, 5:9] = 2                              # touches the class-1 square: a different object
    classes[8:10, 0:2] = 1
    ids, instances = masks.mask_to_classes(classes, "m.tif", num_classes=3)
    assert ids.dtype == np.int32 and np.array_equal(ids, classes)
    assert instances.max() == 3
    assert len(np.unique(instances[2:6, 1:5])) == 1 and instances[2, 1] != instances[2, 5]
    assert instances[8, 0] not in (0, instances[2, 1])


@pytest.mark.parametrize("mask, match", [
    (np.array([[0, 1], [2, 3]], np.uint8), "class id 3 but model.num_classes is 3"),
    (np.arange(100, dtype=np.uint16).reshape(10, 10), "looks like an instance mask"),
    (np.array([[0, 0.5], [1, 2]], np.float32), "not class ids")])
def test_bad_class_masks_name_the_file_and_the_fix(mask, match):
    with pytest.raises(ValueError, match=match) as err:
        masks.mask_to_classes(mask, "masks/a.png", num_classes=3)
    assert "masks/a.png" in str(err.value)


def test_palette_png_masks_give_their_indices(tmp_path):
    ids = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    img = Image.fromarray(ids, mode="P")
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    img.save(tmp_path / "m.png")
    assert iio.imread(tmp_path / "m.png").ndim == 3                   # read as an image: RGB colours
    np.testing.assert_array_equal(io.read_mask(tmp_path / "m.png"), ids)


def test_class_weights_per_class_id():
    classes = np.array([[0, 0, 0, 0], [0, 0, 1, 2]])
    w = class_weight_map(classes, "balanced")      # 8 pixels, 3 classes present: n / (3 * count)
    np.testing.assert_allclose(w[0, 0], 8 / (3 * 6))
    np.testing.assert_allclose(w[1, 2], 8 / 3) and np.testing.assert_allclose(w[1, 3], 8 / 3)
    np.testing.assert_allclose(class_weight_map(classes, (1.0, 4.0))[1], [1, 1, 4, 4])
    assert np.all(class_weight_map(classes, None) == 1)


def test_check_class_ids_names_the_example():
    examples = [{"name": "a.png", "classes": np.array([[0, 1]])}, {"name": "b.png", "classes": np.array([[4, 0]])}]
    check_class_ids(examples[:1], 2)
    with pytest.raises(ValueError, match=r"b.png: mask has class id 4 .*num_classes=5"):
        check_class_ids(examples, 3)


def _three_class_folder(root: Path, n=8, size=64, seed=0):
    """Mid-grey textured images with bright squares (class 1) and dark discs (class 2); one mask a palette PNG."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        classes = np.zeros((size, size), np.uint8)
        for _ in range(2):
            y, x = rng.integers(4, size - 16, 2)
            classes[y:y + 12, x:x + 12] = 1
            cy, cx = rng.integers(8, size - 8, 2)
            classes[np.hypot(yy - cy, xx - cx) < 7] = 2
        image = 0.45 + 0.08 * rng.standard_normal((size, size)) + 0.35 * (classes == 1) - 0.35 * (classes == 2)
        iio.imwrite(root / "images" / f"im{i}.png", (np.clip(image, 0, 1) * 255).astype(np.uint8))
        if i == 0:
            img = Image.fromarray(classes, mode="P")
            img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
            img.save(root / "masks" / f"im{i}.png")
        else:
            iio.imwrite(root / "masks" / f"im{i}.png", classes)


def _cli(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu", TQDM_DISABLE="1")
    return subprocess.run([sys.executable, "-m", "unet_jax.cli", *args], capture_output=True, text=True, env=env,
                          timeout=900)


def test_three_classes_train_evaluate_predict(tmp_path):
    data = tmp_path / "data"
    _three_class_folder(data)
    common = [f"--config.data.root={data}", f"--config.data.data_dir={tmp_path / 'tfds'}",
              "--config.data.mask_type=classes", "--config.data.validation_fraction=0.25"]
    tiny = ["--config.model.features=8", "--config.model.depth=2", "--config.train.tile_size=64",
            "--config.train.num_steps=150", "--config.train.eval_every=75", "--config.train.checkpoint_every=75",
            "--config.optimizer.warmup_steps=10", "--config.eval.tile_size=64"]
    folder = str(REPO / "experiments" / "folder.py")
    # two classes configured for three-class masks: one line naming the mask and the fix, nothing trained
    r = _cli("train", "--config", folder, "--workdir", str(tmp_path / "bad"), *common, *tiny)
    assert r.returncode == 2 and "model.num_classes is 2" in r.stderr and "num_classes=3" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    workdir = tmp_path / "w"
    r = _cli("train", "--config", folder, "--workdir", str(workdir), *common, *tiny, "--config.model.num_classes=3")
    assert r.returncode == 0, r.stderr[-3000:]
    r = _cli("evaluate", "--workdir", str(workdir), "--no-images", "--output", str(tmp_path / "e"))
    assert r.returncode == 0, r.stderr[-3000:]
    mean = json.loads((tmp_path / "e" / "metrics.json").read_text())["mean"]
    assert mean["iou_class1"] > 0.5 and mean["iou_class2"] > 0.5, mean       # both classes learned
    assert mean["iou"] == pytest.approx((mean["iou_class1"] + mean["iou_class2"]) / 2, abs=1e-9)
    r = _cli("predict", "--workdir", str(workdir), "--input", str(data / "images" / "im1.png"), "--output",
             str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr[-3000:]
    classes = tifffile.imread(tmp_path / "p" / "im1_classes.tif")
    prob = tifffile.imread(tmp_path / "p" / "im1_prob.tif")
    truth = iio.imread(data / "masks" / "im1.png")
    assert classes.dtype == np.uint8 and classes.shape == (64, 64) and prob.shape == (64, 64, 3)
    np.testing.assert_array_equal(classes, prob.argmax(-1))
    assert np.mean(classes == truth) > 0.85
    labels = tifffile.imread(tmp_path / "p" / "im1_labels.tif")
    assert labels.dtype == np.uint16 and labels.max() >= 2                   # objects of any class
