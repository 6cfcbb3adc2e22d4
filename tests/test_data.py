"""Tests for the data set builders and load_split (unet_jax.data): tiny files written here, plus the real ISBI
2012 stacks (prepared once per session)."""
import logging
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from unet_jax.data import load_split, make_builder
from unet_jax.data.io import PERCENTILES, percentile_normalize
from unet_jax.data.synthetic import synthetic_cells, synthetic_example
from unet_jax.weights import contour_classes, separation_border, unet_weight_map

WEIGHTS = {"w0": 10.0, "sigma": 5.0, "class_weights": "balanced"}


def _target(instances):
    """The two-class training target's objects: the annotation less the separation border where objects touch."""
    instances = np.asarray(instances, np.int32)
    return np.where(separation_border(instances), 0, instances)
FOUR = ndi.generate_binary_structure(2, 1)


def _cells(h, w, seed):
    """A small binary cell mask (255 cells, 0 membranes) and an 8-bit image of it."""
    image, inst = synthetic_cells((h, w), np.random.default_rng(seed), cell_diameter=12)
    return (image * 255).astype(np.uint8), np.where(inst > 0, 255, 0).astype(np.uint8)


def _write_isbi(root: Path, n=6, h=40, w=48):
    root.mkdir(parents=True, exist_ok=True)
    pairs = [_cells(h, w, s) for s in range(n)]
    vol = np.stack([p[0] for p in pairs])
    lab = np.stack([p[1] for p in pairs])
    test = np.stack([_cells(h, w, 100 + s)[0] for s in range(n)])
    tifffile.imwrite(root / "train-volume.tif", vol)
    tifffile.imwrite(root / "train-labels.tif", lab)
    tifffile.imwrite(root / "test-volume.tif", test)
    return vol, lab, test


def _no_partial_data(data_dir: Path):
    """No half-written data set: no 'incomplete' folder and no version folder without dataset_info.json."""
    for p in data_dir.rglob("*"):
        assert "incomplete" not in p.name, p
    for info_dir in data_dir.glob("*/*/*"):
        if info_dir.is_dir() and info_dir.parent.parent.name != "downloads":
            assert (info_dir / "dataset_info.json").exists(), info_dir


def _isbi_cfg(root, data_dir, **kw):
    return dict(name="isbi2012", root=str(root), data_dir=str(data_dir), **kw)


# ----------------------------------------------------------------------------------------------------------------
# isbi2012
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def isbi_real(isbi_dir, tmp_path_factory):
    """The real ISBI 2012 stacks prepared once per session (30 weight maps of 512 x 512)."""
    cfg = _isbi_cfg(isbi_dir, tmp_path_factory.mktemp("isbi_tfds"))
    return {s: load_split(cfg, WEIGHTS, s) for s in ("train", "validation", "test")}


def test_isbi2012_real_stacks(isbi_real, isbi_dir):
    train, val, test = isbi_real["train"], isbi_real["validation"], isbi_real["test"]
    assert [e["name"] for e in train] == [f"train-volume_z{z:02d}" for z in range(25)]
    assert [e["name"] for e in val] == [f"train-volume_z{z:02d}" for z in range(25, 30)]
    assert [e["name"] for e in test] == [f"test-volume_z{z:02d}" for z in range(30)]
    volume = tifffile.imread(isbi_dir / "train-volume.tif")
    labels = tifffile.imread(isbi_dir / "train-labels.tif")
    for z, ex in [(0, train[0]), (24, train[24]), (27, val[2])]:
        assert ex["image"].shape == (512, 512, 1) and ex["image"].dtype == np.float32
        np.testing.assert_allclose(ex["image"][..., 0], percentile_normalize(volume[z]), atol=1e-7)   # as predict
        inst = ex["instances"]
        assert inst.dtype == np.int32 and ex["labelled"]
        np.testing.assert_array_equal(inst > 0, labels[z] == 255)         # 255 = cell, 0 = membrane
        assert inst.max() == ndi.label(labels[z] == 255, structure=FOUR)[1] > 50  # one id per cell
        assert ex["weights"].dtype == np.float32 and ex["weights"].shape == (512, 512)
        np.testing.assert_allclose(ex["weights"], unet_weight_map(inst, **WEIGHTS), rtol=1e-6)
        assert ex["weights"][inst == 0].max() > 5  # the border term between touching cells is there
    for ex in test:
        assert not ex["labelled"] and not ex["instances"].any() and not ex["weights"].any()
    test_volume = tifffile.imread(isbi_dir / "test-volume.tif")
    np.testing.assert_allclose(test[29]["image"][..., 0], percentile_normalize(test_volume[29]), atol=1e-7)


def test_isbi2012_tiny_splits_and_stale_maps(tmp_path):
    vol, lab, _ = _write_isbi(tmp_path / "isbi")
    cfg = _isbi_cfg(tmp_path / "isbi", tmp_path / "tfds", validation_slices=2)
    train = load_split(cfg, WEIGHTS, "train")
    val = load_split(cfg, WEIGHTS, "validation")
    test = load_split(cfg, WEIGHTS, "test")
    assert [e["name"] for e in train] == [f"train-volume_z{z:02d}" for z in range(4)]
    assert [e["name"] for e in val] == ["train-volume_z04", "train-volume_z05"]
    assert len(test) == 6 and not any(e["labelled"] for e in test)
    np.testing.assert_array_equal(val[1]["instances"] > 0, lab[5] == 255)
    np.testing.assert_allclose(val[1]["image"][..., 0], percentile_normalize(vol[5]), atol=1e-7)
    # Other weight settings: a new prepared data set (a second config folder), not the stale maps.
    other = load_split(cfg, dict(WEIGHTS, w0=3.0), "train")
    np.testing.assert_allclose(other[0]["weights"], unet_weight_map(train[0]["instances"], w0=3.0, sigma=5.0),
                               rtol=1e-6)
    assert not np.allclose(other[0]["weights"], train[0]["weights"])
    other_cw = load_split(cfg, dict(WEIGHTS, class_weights=None), "train")
    np.testing.assert_allclose(other_cw[0]["weights"], unet_weight_map(train[0]["instances"], class_weights=None),
                               rtol=1e-6)
    assert len(list((tmp_path / "tfds" / "isbi2012").glob("default-*"))) == 3
    # Same settings again: reused (no new folder); other validation_slices: another one.
    load_split(cfg, WEIGHTS, "train")
    assert len(list((tmp_path / "tfds" / "isbi2012").glob("default-*"))) == 3
    assert len(load_split(dict(cfg, validation_slices=0), WEIGHTS, "train")) == 6
    with pytest.raises(ValueError, match="no 'validation' split"):
        load_split(dict(cfg, validation_slices=0), WEIGHTS, "validation")


def test_isbi2012_missing_files_lists_what_is_expected(tmp_path):
    root = tmp_path / "isbi"
    root.mkdir()
    tifffile.imwrite(root / "train-volume.tif", np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(FileNotFoundError) as err:
        load_split(_isbi_cfg(root, tmp_path / "tfds"), WEIGHTS, "train")
    msg = str(err.value)
    for text in ("train-labels.tif", "test-volume.tif", str(root), "imagej.net/events/isbi-2012"):
        assert text in msg
    with pytest.raises(FileNotFoundError, match="train-volume.tif, train-labels.tif, test-volume.tif"):
        load_split(_isbi_cfg(tmp_path / "nowhere", tmp_path / "tfds"), WEIGHTS, "train")
    with pytest.raises(ValueError, match="data.root"):
        load_split(_isbi_cfg("", tmp_path / "tfds"), WEIGHTS, "train")
    _no_partial_data(tmp_path / "tfds")


def test_isbi2012_count_mismatch_names_both_files(tmp_path):
    root = tmp_path / "isbi"
    _write_isbi(root)
    tifffile.imwrite(root / "train-labels.tif", np.full((5, 40, 48), 255, np.uint8))
    with pytest.raises(ValueError, match=r"train-volume.tif has shape \(6, 40, 48\).*train-labels.tif"):
        load_split(_isbi_cfg(root, tmp_path / "tfds"), WEIGHTS, "train")
    _no_partial_data(tmp_path / "tfds")


def test_isbi2012_unexpected_label_values_name_the_file(tmp_path):
    root = tmp_path / "isbi"
    _, lab, _ = _write_isbi(root)
    lab[2, 5, 5] = 128
    tifffile.imwrite(root / "train-labels.tif", lab)
    with pytest.raises(ValueError, match=r"train-labels.tif has values \[0, 128, 255\]"):
        load_split(_isbi_cfg(root, tmp_path / "tfds"), WEIGHTS, "train")


def test_isbi2012_truncated_tiff_fails_cleanly_then_rebuilds(tmp_path):
    root = tmp_path / "isbi"
    _write_isbi(root)
    good = (root / "train-labels.tif").read_bytes()
    (root / "train-labels.tif").write_bytes(good[:len(good) // 2])
    cfg = _isbi_cfg(root, tmp_path / "tfds", validation_slices=1)
    with pytest.raises(ValueError, match=r"cannot read TIFF file .*train-labels.tif"):
        load_split(cfg, WEIGHTS, "train")
    _no_partial_data(tmp_path / "tfds")
    (root / "train-labels.tif").write_bytes(good)
    assert len(load_split(cfg, WEIGHTS, "train")) == 5
    _no_partial_data(tmp_path / "tfds")


def test_failure_inside_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    """An error while examples are being written (here: in the weight map of the 3rd slice) leaves no data set."""
    import unet_jax.data.common as common

    root = tmp_path / "isbi"
    _write_isbi(root)
    calls = []

    def failing(instances, **kw):
        if np.size(instances) > 3:  # not the settings check on a 1x3 input
            calls.append(1)
        if len(calls) == 3:
            raise ValueError("weight map failed")
        return unet_weight_map(instances, **kw)

    monkeypatch.setattr(common, "unet_weight_map", failing)
    cfg = _isbi_cfg(root, tmp_path / "tfds", validation_slices=1)
    with pytest.raises(ValueError, match="weight map failed"):
        load_split(cfg, WEIGHTS, "train")
    assert len(calls) == 3
    _no_partial_data(tmp_path / "tfds")
    monkeypatch.setattr(common, "unet_weight_map", unet_weight_map)
    assert len(load_split(cfg, WEIGHTS, "train")) == 5


def test_interrupted_preparation_is_cleaned_and_failed_one_leaves_no_empty_folder(tmp_path):
    """A build killed before TFDS could clean up leaves an incomplete.* folder: the next build removes it. A
    build that fails on bad input leaves no empty config folder behind (issue 15, defect 10)."""
    root = tmp_path / "isbi"
    _write_isbi(root)
    cfg = _isbi_cfg(root, tmp_path / "tfds", validation_slices=1)
    builder, _ = make_builder(cfg, WEIGHTS)
    config_dir = Path(builder.data_dir).parent
    stale = config_dir / f"incomplete.ABC123_{Path(builder.data_dir).name}"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "isbi2012-train.array_record-00000-of-00001").write_bytes(b"x" * 1000)
    assert len(load_split(cfg, WEIGHTS, "train")) == 5
    assert not stale.exists()
    _no_partial_data(tmp_path / "tfds")

    (root / "train-labels.tif").write_bytes(b"not a tiff")          # new fingerprint: a new config folder
    cfg2 = _isbi_cfg(root, tmp_path / "tfds", validation_slices=1)
    builder2, _ = make_builder(cfg2, WEIGHTS)
    with pytest.raises(ValueError, match="train-labels.tif"):
        load_split(cfg2, WEIGHTS, "train")
    assert not Path(builder2.data_dir).parent.exists()


def test_huge_or_non_finite_float_images_are_refused_naming_the_file(tmp_path):
    from unet_jax.data.io import to_float_image
    huge = np.full((8, 8), 1e308)
    huge[0, 0] = -1e308
    with pytest.raises(ValueError, match=r"img\.tif has values up to 1e\+308.*rescale"):
        to_float_image(huge, tmp_path / "img.tif")
    nan = np.zeros((8, 8), np.float32)
    nan[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"img\.tif contains NaN"):
        to_float_image(nan, tmp_path / "img.tif")
    big = np.linspace(-1e6, 1e6, 64).reshape(8, 8)                    # large but fine: normalised
    out = to_float_image(big, tmp_path / "img.tif")
    assert np.isfinite(out).all() and out.min() == 0.0 and out.max() == 1.0


# ----------------------------------------------------------------------------------------------------------------
# ctc
# ----------------------------------------------------------------------------------------------------------------

def _write_ctc(ds_dir: Path, frames=(0, 2, 3, 5), n_frames=6, h=24, w=30, seed=0):
    """Two sequences; SEG annotations for ``frames``; 16-bit images; instance ids 7, 12, 300."""
    rng = np.random.default_rng(seed)
    truth = {}
    for seq in ("01", "02"):
        (ds_dir / seq).mkdir(parents=True)
        (ds_dir / f"{seq}_GT" / "SEG").mkdir(parents=True)
        for t in range(n_frames):
            img = rng.integers(200, 3000, size=(h, w)).astype(np.uint16)
            tifffile.imwrite(ds_dir / seq / f"t{t:03d}.tif", img)
            if t in frames:
                mask = np.zeros((h, w), np.uint16)
                mask[2:9, 3:12] = 7
                mask[9:15, 3:12] = 12    # touching cell 7
                mask[16:22, 15:28] = 300
                tifffile.imwrite(ds_dir / f"{seq}_GT" / "SEG" / f"man_seg{t:03d}.tif", mask)
                truth[f"{seq}/t{t:03d}"] = (img, mask)
    return truth


def _ctc_cfg(root, data_dir, config="phc_c2dh_u373", **kw):
    return dict(name="ctc", builder_config=config, root=str(root), data_dir=str(data_dir), **kw)


def test_ctc_annotated_frames_instances_kept_and_normalised(tmp_path):
    truth = _write_ctc(tmp_path / "ctc" / "PhC-C2DH-U373")     # parent folder as root
    cfg = _ctc_cfg(tmp_path / "ctc", tmp_path / "tfds", validation_fraction=0.25)
    train = load_split(cfg, WEIGHTS, "train")
    val = load_split(cfg, WEIGHTS, "validation")
    # Only annotated frames; the last annotated frame of each sequence is validation.
    assert [e["name"] for e in train] == ["01/t000", "01/t002", "01/t003", "02/t000", "02/t002", "02/t003"]
    assert [e["name"] for e in val] == ["01/t005", "02/t005"]
    for ex in train + val:
        img, mask = truth[ex["name"]]
        np.testing.assert_array_equal(ex["instances"], mask.astype(np.int32))      # ids 7, 12, 300 kept
        lo, hi = np.percentile(img.astype(np.float64), PERCENTILES)
        np.testing.assert_allclose(ex["image"][..., 0], np.clip((img - lo) / (hi - lo), 0, 1), atol=1e-6)
        np.testing.assert_allclose(ex["weights"], unet_weight_map(_target(mask), **WEIGHTS), rtol=1e-6)
        # cells 7 and 12 touch along row 8/9: the target is background on both rows there, cell 300 is whole
        np.testing.assert_array_equal(ex["classes"], _target(mask) > 0)
        assert not ex["classes"][8:10, 3:12].any() and ex["classes"][16:22, 15:28].all()
    with pytest.raises(ValueError, match="no 'test' split"):
        load_split(cfg, WEIGHTS, "test")


def test_ctc_second_config_uses_its_own_folder(tmp_path):
    _write_ctc(tmp_path / "ctc" / "PhC-C2DH-U373", frames=(0,))
    _write_ctc(tmp_path / "ctc" / "DIC-C2DH-HeLa", frames=(1, 4), h=20, w=20, seed=1)
    train = load_split(_ctc_cfg(tmp_path / "ctc", tmp_path / "tfds", "dic_c2dh_hela", validation_fraction=0.0),
                       WEIGHTS, "train")
    assert [e["name"] for e in train] == ["01/t001", "01/t004", "02/t001", "02/t004"]
    assert train[0]["image"].shape == (20, 20, 1)
    # The data set folder itself as root works too.
    direct = load_split(_ctc_cfg(tmp_path / "ctc" / "DIC-C2DH-HeLa", tmp_path / "tfds2", "dic_c2dh_hela",
                                 validation_fraction=0.0), WEIGHTS, "train")
    np.testing.assert_array_equal(direct[3]["image"], train[3]["image"])
    with pytest.raises(ValueError, match="builder_config"):
        load_split(_ctc_cfg(tmp_path / "ctc", tmp_path / "tfds", ""), WEIGHTS, "train")
    # The other data set's folder as root is refused (it would train U373 under the HeLa name).
    with pytest.raises(ValueError, match="PhC-C2DH-U373 folder"):
        load_split(_ctc_cfg(tmp_path / "ctc" / "PhC-C2DH-U373", tmp_path / "tfds3", "dic_c2dh_hela"), WEIGHTS, "train")


def test_ctc_bad_inputs(tmp_path):
    root = tmp_path / "empty"
    (root / "01").mkdir(parents=True)
    tifffile.imwrite(root / "01" / "t000.tif", np.zeros((8, 8), np.uint16))
    with pytest.raises(FileNotFoundError) as err:
        load_split(_ctc_cfg(root, tmp_path / "tfds"), WEIGHTS, "train")
    for text in ("01_GT/SEG/man_seg000.tif", "01/t000.tif", str(root), "celltrackingchallenge.net/2d-datasets"):
        assert text in str(err.value)
    # An annotation without its frame.
    ds = tmp_path / "a"
    _write_ctc(ds, frames=(0, 2))
    (ds / "02" / "t002.tif").unlink()
    with pytest.raises(ValueError, match=r"man_seg002.tif has no image: expected .*02/t002.tif"):
        load_split(_ctc_cfg(ds, tmp_path / "tfds"), WEIGHTS, "train")
    # Mask and image of different sizes.
    ds = tmp_path / "b"
    _write_ctc(ds, frames=(0, 2))
    tifffile.imwrite(ds / "01_GT" / "SEG" / "man_seg002.tif", np.zeros((10, 10), np.uint16))
    with pytest.raises(ValueError, match=r"t002.tif is 24x30 but its mask .*man_seg002.tif is 10x10"):
        load_split(_ctc_cfg(ds, tmp_path / "tfds"), WEIGHTS, "train")
    # Truncated frame.
    ds = tmp_path / "c"
    _write_ctc(ds, frames=(0, 2), h=64, w=64)
    data = (ds / "02" / "t000.tif").read_bytes()
    (ds / "02" / "t000.tif").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot read TIFF file .*02/t000.tif"):
        load_split(_ctc_cfg(ds, tmp_path / "tfds"), WEIGHTS, "train")
    # Negative ids in a (signed) annotation.
    ds = tmp_path / "d"
    _write_ctc(ds, frames=(0, 2))
    tifffile.imwrite(ds / "01_GT" / "SEG" / "man_seg000.tif", np.full((24, 30), -1, np.int16))
    with pytest.raises(ValueError, match=r"man_seg000.tif has negative values"):
        load_split(_ctc_cfg(ds, tmp_path / "tfds"), WEIGHTS, "train")
    _no_partial_data(tmp_path / "tfds")


# ----------------------------------------------------------------------------------------------------------------
# folder
# ----------------------------------------------------------------------------------------------------------------

def _folder(tmp_path):
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    return root


def test_folder_messy_user_data(tmp_path, caplog):
    root = _folder(tmp_path)
    rng = np.random.default_rng(0)
    # a: 8-bit greyscale PNG, 30x20 (not square), binary 0/255 mask of two cells.
    img_a = rng.integers(0, 256, (30, 20)).astype(np.uint8)
    mask_a = np.zeros((30, 20), np.uint8)
    mask_a[2:12, 2:18] = 255
    mask_a[14:28, 2:18] = 255
    iio.imwrite(root / "images" / "a.png", img_a)
    iio.imwrite(root / "masks" / "a.png", mask_a)
    # b: 16-bit TIFF, 24x36, instance mask (ids 3 and 9, touching) saved as 16-bit PNG.
    img_b = rng.integers(100, 4000, (24, 36)).astype(np.uint16)
    mask_b = np.zeros((24, 36), np.uint16)
    mask_b[3:20, 2:15] = 3
    mask_b[3:20, 15:30] = 9
    tifffile.imwrite(root / "images" / "b.tif", img_b)
    iio.imwrite(root / "masks" / "b.png", mask_b)
    # c: greyscale saved as RGB, anti-aliased binary mask (grey values along the edges of a disc).
    grey = rng.integers(0, 256, (32, 32)).astype(np.uint8)
    iio.imwrite(root / "images" / "c.png", np.stack([grey] * 3, -1))
    yy, xx = np.mgrid[:32, :32]
    r = np.hypot(yy - 15.5, xx - 15.5)
    mask_c = (np.clip(10.5 - r, 0, 1) * 255).astype(np.uint8)   # 255 inside, ramps at the edge
    assert 3 < len(np.unique(mask_c))
    iio.imwrite(root / "masks" / "c.png", mask_c)
    cfg = dict(name="folder", root=str(root), data_dir=str(tmp_path / "tfds"), validation_fraction=0.0)
    with caplog.at_level(logging.INFO, logger="unet_jax.data"):
        train = load_split(cfg, WEIGHTS, "train")
    assert [e["name"] for e in train] == ["a.png", "b.tif", "c.png"]
    a, b, c = train
    np.testing.assert_allclose(a["image"][..., 0], percentile_normalize(img_a), atol=1e-7)    # 8-bit as 16-bit
    assert a["instances"].max() == 2 and (a["instances"] > 0).sum() == (mask_a > 0).sum()
    np.testing.assert_allclose(b["image"][..., 0], percentile_normalize(img_b), atol=1e-7)
    np.testing.assert_array_equal(b["instances"], mask_b.astype(np.int32))          # ids 3 and 9 kept
    assert c["image"].shape == (32, 32, 1)
    np.testing.assert_allclose(c["image"][..., 0], percentile_normalize(grey), atol=1e-7)
    np.testing.assert_array_equal(c["instances"], (mask_c > 127.5).astype(np.int32))  # threshold at half
    for ex in train:
        np.testing.assert_allclose(ex["weights"], unet_weight_map(_target(ex["instances"]), **WEIGHTS), rtol=1e-6)
    assert not b["classes"][3:20, 14:16].any()          # ids 3 and 9 touch: a 2-pixel background gap
    assert b["classes"].sum() == (mask_b > 0).sum() - 2 * 17
    # the gap is expensive to get wrong (the paper's border term, between two objects 2 pixels apart)
    assert b["weights"][10, 14] > 1.5 * b["weights"][10, 5]
    # contours: background / interior / 2-pixel outline of every object, weights per class plus the border term
    cont = load_split(dict(cfg, data_dir=str(tmp_path / "tfds3"), target="contours"), WEIGHTS, "train")
    for ex, two in zip(cont, train):
        np.testing.assert_array_equal(ex["instances"], two["instances"])
        np.testing.assert_array_equal(ex["classes"], contour_classes(ex["instances"]))
    assert set(np.unique(cont[1]["classes"])) == {0, 1, 2} and (cont[1]["classes"][3:20, 13:17] == 2).all()
    # without the separation border the target is the annotation's foreground
    other = load_split(dict(cfg, data_dir=str(tmp_path / "tfds2")), dict(WEIGHTS, separation_border=False), "train")
    np.testing.assert_array_equal(other[1]["classes"], mask_b > 0)
    np.testing.assert_allclose(other[1]["weights"], unet_weight_map(mask_b.astype(np.int32), **WEIGHTS), rtol=1e-6)
    text = caplog.text
    assert "c.png: greyscale saved as RGB" in text and "converted to one channel" in text
    assert "anti-aliased" in text and "a binary mask); thresholded at 127.5" in text


def test_folder_validation_split_and_colour_images(tmp_path):
    root = _folder(tmp_path)
    rng = np.random.default_rng(1)
    for i in range(5):
        img = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8) if i == 0 else \
            rng.integers(0, 256, (16, 16)).astype(np.uint8)
        iio.imwrite(root / "images" / f"im{i}.png", img)
        m = np.zeros((16, 16), np.uint8)
        m[2:8, 2:8] = 1
        iio.imwrite(root / "masks" / f"im{i}.png", m)
    cfg = dict(name="folder", root=str(root), data_dir=str(tmp_path / "tfds"), validation_fraction=0.4)
    train, val = load_split(cfg, WEIGHTS, "train"), load_split(cfg, WEIGHTS, "validation")
    assert len(train) == 3 and len(val) == 2
    assert sorted(e["name"] for e in train + val) == [f"im{i}.png" for i in range(5)]
    for ex in train + val:
        assert ex["image"].shape == (16, 16, 3)   # one colour image: greyscale ones repeated to 3 channels
        assert ex["instances"].max() == 1


@pytest.mark.parametrize("case", ["no_mask", "no_image", "size", "colour_mask", "negative", "truncated",
                                  "truncated_png", "fractional", "stack", "missing_dirs"])
def test_folder_rejects_bad_input_naming_the_file(tmp_path, case):
    root = _folder(tmp_path)
    img = np.full((12, 14), 100, np.uint8)
    mask = np.zeros((12, 14), np.uint8)
    mask[2:8, 2:8] = 255
    iio.imwrite(root / "images" / "ok.png", img)
    iio.imwrite(root / "masks" / "ok.png", mask)
    expect = {"no_mask": (ValueError, r"image\(s\) without a mask .*x.png"),
              "no_image": (ValueError, r"mask\(s\) without an image .*x.png"),
              "size": (ValueError, r"x.png is 12x14 but its mask .*x.png is 10x10"),
              "colour_mask": (ValueError, r"mask .*x.jpg is a colour image"),
              "negative": (ValueError, r"mask .*x.tif has negative values"),
              "truncated": (ValueError, r"cannot read TIFF file .*x.tif"),
              "truncated_png": (ValueError, r"cannot read image file .*x.png"),
              "fractional": (ValueError, r"mask .*x.tif has non-integer values"),
              "stack": (ValueError, r"image .*x.tif has shape \(3, 12, 14\)"),
              "missing_dirs": (FileNotFoundError, r"masks not found; expected .*images/ and .*masks/")}[case]
    if case == "no_mask":
        iio.imwrite(root / "images" / "x.png", img)
    elif case == "no_image":
        iio.imwrite(root / "masks" / "x.png", mask)
    elif case == "size":
        iio.imwrite(root / "images" / "x.png", img)
        iio.imwrite(root / "masks" / "x.png", np.zeros((10, 10), np.uint8))
    elif case == "colour_mask":
        iio.imwrite(root / "images" / "x.png", img)
        colour = np.zeros((12, 14, 3), np.uint8)
        colour[2:5, 2:5] = (255, 0, 0)
        colour[6:9, 6:9] = (0, 255, 0)
        # lossless colour masks are instance masks (one id per colour); a JPEG's colours are compression noise
        iio.imwrite(root / "masks" / "x.jpg", colour)
    elif case == "negative":
        iio.imwrite(root / "images" / "x.png", img)
        tifffile.imwrite(root / "masks" / "x.tif", np.full((12, 14), -2, np.int16))
    elif case == "truncated":
        iio.imwrite(root / "masks" / "x.png", mask)
        tifffile.imwrite(root / "images" / "x.tif", np.zeros((120, 140), np.uint16))
        data = (root / "images" / "x.tif").read_bytes()
        (root / "images" / "x.tif").write_bytes(data[:len(data) // 3])
    elif case == "truncated_png":
        iio.imwrite(root / "images" / "x.png", np.random.default_rng(0).integers(0, 256, (64, 64), np.uint8))
        iio.imwrite(root / "masks" / "x.png", np.zeros((64, 64), np.uint8))
        data = (root / "images" / "x.png").read_bytes()
        (root / "images" / "x.png").write_bytes(data[:len(data) // 2])
    elif case == "fractional":
        iio.imwrite(root / "images" / "x.png", img)
        frac = np.zeros((12, 14), np.float32)
        frac[2:8, 2:8] = 0.5
        frac[3:7, 3:7] = 0.25                 # a whole region of a third value: not anti-aliasing
        frac[8:11, 8:13] = 1.0
        tifffile.imwrite(root / "masks" / "x.tif", frac)
    elif case == "stack":
        iio.imwrite(root / "masks" / "x.png", mask)
        tifffile.imwrite(root / "images" / "x.tif", np.zeros((3, 12, 14), np.uint8), photometric="minisblack")
    elif case == "missing_dirs":
        for p in (root / "masks").iterdir():
            p.unlink()
        (root / "masks").rmdir()
    cfg = dict(name="folder", root=str(root), data_dir=str(tmp_path / "tfds"))
    with pytest.raises(expect[0], match=expect[1]):
        load_split(cfg, WEIGHTS, "train")
    _no_partial_data(tmp_path / "tfds")


# ----------------------------------------------------------------------------------------------------------------
# synthetic_cells
# ----------------------------------------------------------------------------------------------------------------

def test_synthetic_cells_deterministic_per_seed(tmp_path):
    cfg = dict(name="synthetic_cells", num_train=3, num_validation=1, image_size=48, seed=7,
               data_dir=str(tmp_path / "a"))
    a = load_split(cfg, WEIGHTS, "train")
    b = load_split(dict(cfg, data_dir=str(tmp_path / "b")), WEIGHTS, "train")   # prepared afresh elsewhere
    assert [e["name"] for e in a] == ["train_00000", "train_00001", "train_00002"]
    for x, y in zip(a, b):
        for k in ("image", "instances", "weights"):
            np.testing.assert_array_equal(x[k], y[k])
    c = load_split(dict(cfg, seed=8), WEIGHTS, "train")
    assert not np.array_equal(a[0]["image"], c[0]["image"])
    val = load_split(cfg, WEIGHTS, "validation")
    assert len(val) == 1 and not np.array_equal(val[0]["image"], a[0]["image"])
    # Example i depends on (seed, split, i, size) only, not on how many examples there are.
    image, inst, name = synthetic_example(7, "train", 2, 48)
    np.testing.assert_array_equal(a[2]["image"], image)
    np.testing.assert_array_equal(a[2]["instances"], inst)
    assert a[0]["image"].shape == (48, 48, 1) and a[0]["image"].dtype == np.float32
    assert 0.0 <= a[0]["image"].min() and a[0]["image"].max() <= 1.0


def test_synthetic_cells_look_like_em_cells():
    image, inst = synthetic_cells(128, np.random.default_rng(0))
    membrane = inst == 0
    assert 0.05 < membrane.mean() < 0.35              # thin borders
    assert image[membrane].mean() < image[~membrane].mean() - 0.2   # dark borders, bright cells
    k = inst.max()
    assert k > 10 and set(np.unique(inst)) == set(range(k + 1))
    for i in range(1, k + 1):                           # every id is one 4-connected cell
        assert ndi.label(inst == i, structure=FOUR)[1] == 1
    # Touching cells: most cells have a neighbour at most 3 px away across a membrane.
    w = unet_weight_map(inst)
    assert w[membrane].mean() > 2 * w[~membrane].mean()


# ----------------------------------------------------------------------------------------------------------------
# load_split / make_builder arguments
# ----------------------------------------------------------------------------------------------------------------

def test_load_split_bad_arguments(tmp_path):
    base = dict(name="synthetic_cells", num_train=1, num_validation=0, image_size=32, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="split must be one of"):
        load_split(base, WEIGHTS, "training")
    with pytest.raises(ValueError, match="data.name"):
        load_split(dict(base, name="mnist"), WEIGHTS, "train")
    with pytest.raises(ValueError, match="sigma"):
        load_split(base, dict(WEIGHTS, sigma=0.0), "train")
    with pytest.raises(ValueError, match="class_weights"):
        load_split(base, dict(WEIGHTS, class_weights="inverse"), "train")
    with pytest.raises(ValueError, match="data.target must be one of"):
        load_split(dict(base, target="edges"), WEIGHTS, "train")
    with pytest.raises(ValueError, match="separation_border must be True or False"):
        load_split(base, dict(WEIGHTS, separation_border="yes"), "train")
    with pytest.raises(ValueError, match="num_train"):
        load_split(dict(base, num_train=0), WEIGHTS, "train")
    with pytest.raises(ValueError, match="no 'validation' split"):
        load_split(base, WEIGHTS, "validation")
    builder, root = make_builder(base, WEIGHTS)
    assert root is None and builder.name == "synthetic_cells"
    assert builder.builder_config.w0 == 10.0 and builder.builder_config.class_weights == "balanced"
    assert builder.builder_config.separation_border is True          # the paper's target by default


def test_class_weights_from_config_forms():
    import ml_collections
    from unet_jax.data.common import class_weights_arg, normalize_class_weights
    assert normalize_class_weights("balanced") == "balanced"
    assert normalize_class_weights(None) is None and normalize_class_weights("None") is None
    assert normalize_class_weights([1, 3]) == (1.0, 3.0)
    assert normalize_class_weights({"0": 1, "1": 2.5}) == (1.0, 2.5)               # JSON keys
    assert normalize_class_weights(ml_collections.ConfigDict({"0": 1.0, "1": 4})) == (1.0, 4.0)
    assert class_weights_arg((1.0, 2.0)) == {0: 1.0, 1: 2.0}
    for bad in ("inverse", (1.0,), {"0": 1.0}, {"0": 1.0, "1": -2.0}, (1.0, float("nan"))):
        with pytest.raises(ValueError, match="class_weights"):
            normalize_class_weights(bad)


@pytest.mark.parametrize("compression", ["lzw", "zlib", "zstd", "jpeg"])
def test_compressed_tiffs_read(tmp_path, compression):
    """LZW, deflate, zstd and JPEG TIFFs (slide scanners, Fiji) read through imagecodecs, a dependency."""
    from unet_jax.data.io import read_image
    image = np.tile(np.arange(64, dtype=np.uint8)[None] * 4, (48, 1))
    path = tmp_path / f"x_{compression}.tif"
    tifffile.imwrite(path, image, compression=compression)
    with tifffile.TiffFile(path) as f:
        assert f.pages[0].compression != 1                      # really compressed
    out = read_image(path)
    assert out.shape == image.shape and out.dtype == np.uint8
    if compression == "jpeg":
        assert np.abs(out.astype(int) - image).mean() < 3        # lossy
    else:
        np.testing.assert_array_equal(out, image)


def _soft(small, how):
    """A binary mask drawn softly at 8x the size of ``small``: upscaled bilinearly, or drawn sharply and blurred
    (edge bands of 4-8 pixels). Returns (soft mask, the sharp 8x mask)."""
    from skimage.transform import resize
    sharp = np.kron(small, np.ones((8, 8), bool))
    if how == "upscaled":
        return (resize(small.astype(float), sharp.shape, order=1) * 255).astype(np.uint8), sharp
    return (ndi.gaussian_filter(sharp.astype(float), 2.0) * 255).astype(np.uint8), sharp


@pytest.mark.parametrize("how", ["upscaled", "blurred"])
def test_soft_binary_masks_are_binary_not_instances(how):
    """Masks with wide anti-aliased bands are thresholded at half the maximum (foreground within a band's width
    of the drawn one), not taken as one 'cell' per grey level."""
    from unet_jax.data.masks import mask_to_instances
    yy, xx = np.mgrid[:16, :16]
    small = ((yy // 4 + xx // 4) % 2 == 0) & (yy % 4 > 0) & (xx % 4 > 0)   # 8 blocks, well apart
    soft, drawn = _soft(small, how)
    assert len(np.unique(soft)) > 20
    report = {}
    inst = mask_to_instances(soft, "m.png", report=report)
    assert report["kind"] == "soft binary"
    assert abs((inst > 0).mean() - drawn.mean()) < 0.05
    assert inst.max() <= 16                                     # objects, not grey levels


def test_instance_masks_with_small_touching_objects_stay_instances():
    """Instance labels (plateaus of ids, objects touching each other) are kept, however many ids there are."""
    from unet_jax.data.masks import mask_to_instances
    inst = np.zeros((64, 64), np.uint16)
    k = 0
    for y in range(4, 60, 7):
        for x in range(4, 60, 6):
            k += 1
            inst[y:y + 6, x:x + 6] = k                           # 6x6 objects, horizontally touching
    report = {}
    np.testing.assert_array_equal(mask_to_instances(inst, "i.tif", report=report), inst.astype(np.int32))
    assert report["kind"] == "instance"


def test_folder_logs_mask_kinds_and_warns_on_empty_masks(tmp_path, caplog):
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for name, mask in (("a", np.pad(np.full((8, 8), 255, np.uint8), 12)), ("b", np.zeros((32, 32), np.uint8))):
        iio.imwrite(root / "images" / f"{name}.png", rng.integers(0, 256, (32, 32), np.uint8))
        iio.imwrite(root / "masks" / f"{name}.png", mask)
    cfg = dict(name="folder", root=str(root), data_dir=str(tmp_path / "tfds"), validation_fraction=0.0)
    with caplog.at_level(logging.INFO):
        load_split(cfg, WEIGHTS, "train")
    assert "2 masks read as 2 binary" in caplog.text
    assert "1 of 2 masks have no foreground (all background): b.png" in caplog.text
