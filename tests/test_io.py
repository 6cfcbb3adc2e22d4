"""Reading users' files (unet_jax.data.io, unet_jax.data.masks and the folder builder's checks): masks that went
through JPEG, TIFF files holding pages of different sizes or planar RGB, images too large for the PNG reader, broken
files, blank images."""
import logging

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from unet_jax.data import folder, io, load_split, masks

WEIGHTS = {"w0": 10.0, "sigma": 5.0, "class_weights": "balanced"}


def _jpeg(array, path, quality=75):
    iio.imwrite(path, array, quality=quality)
    return iio.imread(path)


def _isbi_crops(isbi_dir, n=6, size=96):
    """n image crops of the real ISBI 2012 stack and their 0/1 masks (cells 1, membranes 0: 70-80% foreground)."""
    volume = tifffile.imread(isbi_dir / "train-volume.tif")
    labels = tifffile.imread(isbi_dir / "train-labels.tif")
    return [(volume[i, :size, :size], (labels[i, :size, :size] > 0).astype(np.uint8)) for i in range(n)]


# ----------------------------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------------------------

def test_jpeg_01_masks_are_read_between_their_levels(isbi_dir, tmp_path, caplog):
    """0/1 masks saved as JPEG (stray 2s and 3s from the compression): the foreground is the cells (70-80%), not
    the noise above half the maximum (2-3%); the data set says the JPEG noise is as large as the mask."""
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    truth = []
    for k, (image, mask) in enumerate(_isbi_crops(isbi_dir)):
        iio.imwrite(root / "images" / f"c{k}.png", image)
        stored = _jpeg(mask, root / "masks" / f"c{k}.jpg")
        assert stored.max() >= 2 and (stored > stored.max() / 2).mean() < 0.2    # the trap: noise at the top
        truth.append(mask.mean())
        report = {}
        inst = masks.mask_to_instances(stored, root / "masks" / f"c{k}.jpg", report=report)
        assert report["levels"] == (0, 1) and report["threshold"] == 0.5
        assert abs((inst > 0).mean() - mask.mean()) < 0.05
    cfg = dict(name="folder", root=str(root), data_dir=str(tmp_path / "tfds"), validation_fraction=0.0)
    with caplog.at_level(logging.INFO):
        train = load_split(cfg, WEIGHTS, "train")
    assert abs(np.mean([(ex["instances"] > 0).mean() for ex in train]) - np.mean(truth)) < 0.05
    assert "6 masks read as 6 soft binary" in caplog.text
    assert "JPEG-compressed with levels only 1 apart" in caplog.text and "save masks as PNG" in caplog.text


def test_jpeg_0_255_masks_and_rgb_saved_jpeg_masks(tmp_path):
    """A 0/255 mask through JPEG, also saved as RGB (channels differ by compression noise), reads as drawn."""
    yy, xx = np.mgrid[:64, :64]
    mask = ((yy - 30) ** 2 + (xx - 34) ** 2 < 15 ** 2).astype(np.uint8) * 255
    for name, stored in (("grey.jpg", mask), ("rgb.jpg", np.repeat(mask[..., None], 3, -1))):
        arr = _jpeg(stored, tmp_path / name)
        report = {}
        inst = masks.mask_to_instances(arr, tmp_path / name, report=report)
        assert report["kind"] == "soft binary" and abs(report["threshold"] - 127.5) < 3
        assert np.mean((inst > 0) == (mask > 0)) > 0.99


def test_plausibility_check_warns_when_thresholding_kept_little(caplog):
    """The data set check: a threshold that keeps under 20% of the pixels above the lowest value is flagged."""
    ok = [{"name": "a.png", "kept": 700, "above_lowest": 760, "levels": (0, 255), "lossy": False}]
    bad = [{"name": "b.png", "kept": 20, "above_lowest": 760, "levels": (0, 3), "lossy": False}]
    with caplog.at_level(logging.WARNING):
        folder.check_binary_reads("root", ok)
        assert not caplog.records
        folder.check_binary_reads("root", bad)
    assert "kept 2.6% of their pixels above the background value" in caplog.text and "b.png" in caplog.text


def test_blank_image_with_cells_is_warned(tmp_path, caplog):
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    mask = np.zeros((32, 32), np.uint8)
    mask[4:28, 4:28] = 255
    tifffile.imwrite(root / "images" / "blank.tif", np.full((32, 32), 1234, np.uint16))
    iio.imwrite(root / "images" / "ok.png", np.random.default_rng(0).integers(0, 255, (32, 32), np.uint8))
    for name in ("blank", "ok"):
        iio.imwrite(root / "masks" / f"{name}.png", mask)
    cfg = dict(name="folder", root=str(root), data_dir=str(tmp_path / "tfds"), validation_fraction=0.0)
    with caplog.at_level(logging.WARNING):
        load_split(cfg, WEIGHTS, "train")
    assert "1 of 2 images are blank (every pixel the same value): blank.tif" in caplog.text


# ----------------------------------------------------------------------------------------------------------------
# TIFF files
# ----------------------------------------------------------------------------------------------------------------

def _pages(path, shapes):
    with tifffile.TiffWriter(path) as w:
        for k, shape in enumerate(shapes):
            w.write(np.full(shape, 10 * (k + 1), np.uint8), photometric="minisblack")


def test_pages_of_different_sizes_are_refused_not_cut(tmp_path):
    """Pages 64x64, 96x80, 64x64: never read as the first page alone; the error names the file and the sizes."""
    path = tmp_path / "p.tif"
    _pages(path, [(64, 64), (96, 80), (64, 64)])
    for read in (io.read_image, io.read_tiff, io.tiff_shape):
        with pytest.raises(ValueError, match=r"p.tif holds 3 pages of different sizes \(64x64, 80x96, 64x64"):
            read(path)
    # the same file in a training folder: refused, naming it, nothing prepared
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    _pages(root / "images" / "p.tif", [(64, 64), (96, 80), (64, 64)])
    iio.imwrite(root / "masks" / "p.png", np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="p.tif holds 3 pages of different sizes"):
        load_split(dict(name="folder", root=str(root), data_dir=str(tmp_path / "tfds")), WEIGHTS, "train")


def test_pages_of_one_size_stored_apart_are_one_stack(tmp_path):
    """tifffile writes each page of a loop as its own image: read back as the whole stack, not its first page."""
    path = tmp_path / "s.tif"
    _pages(path, [(30, 40)] * 3)
    stack = io.read_image(path)
    assert stack.shape == (3, 30, 40) == io.tiff_shape(path)
    assert list(stack[:, 0, 0]) == [10, 20, 30]


def test_a_thumbnail_page_is_not_a_page_of_another_size(tmp_path):
    """A reduced-resolution preview page (microscopes, slide scanners write one) is left out, not refused."""
    with tifffile.TiffWriter(tmp_path / "t.tif") as w:
        w.write(np.full((64, 64), 7, np.uint8), photometric="minisblack")
        w.write(np.zeros((16, 16), np.uint8), photometric="minisblack", subfiletype=1)
    assert io.read_image(tmp_path / "t.tif").shape == (64, 64) == io.tiff_shape(tmp_path / "t.tif")


def test_planar_rgb_tiff_reads_as_rgb(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(io.read_image(tmp_path / "planar.tif"), rgb)
    assert io.tiff_shape(tmp_path / "planar.tif") == (40, 50, 3)
    assert io.to_float_image(io.read_image(tmp_path / "planar.tif")).shape == (40, 50, 3)


# ----------------------------------------------------------------------------------------------------------------
# PNG / JPEG files
# ----------------------------------------------------------------------------------------------------------------

def test_large_png_is_named_large_not_corrupt(tmp_path, monkeypatch):
    """Beyond Pillow's decompression-bomb limit (89 Mpx x 2): the message gives the size and what to do."""
    import PIL.Image
    iio.imwrite(tmp_path / "big.png", np.zeros((120, 100), np.uint8))
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 2000)       # 12000 px > 2 x 2000, as 20000^2 > 2 x 89M
    with pytest.raises(ValueError) as err:
        io.read_image(tmp_path / "big.png")
    text = str(err.value)
    assert "big.png is 100x120 pixels" in text and "save it as TIFF" in text and "tiles" in text
    assert "corrupt" not in text and "\n" not in text
    assert PIL.Image.MAX_IMAGE_PIXELS == 2000                       # the limit is restored


@pytest.mark.parametrize("content", [b"", b"hello, not an image", b"\x89PNG\r\n\x1a\n" + bytes(range(256))])
def test_broken_png_is_one_line_without_install_hints(tmp_path, content):
    (tmp_path / "m.png").write_bytes(content)
    for read in (io.read_image, io.read_mask):
        with pytest.raises(ValueError, match="m.png") as err:
            read(tmp_path / "m.png")
        assert "\n" not in str(err.value) and "pip" not in str(err.value)


def test_unreadable_file_says_permission_not_corrupt(tmp_path, monkeypatch):
    """A file the user may not read is not 'truncated or corrupt' (root reads anything: the error is injected)."""
    iio.imwrite(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((4, 4), np.uint8))

    def denied(path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(io.iio, "imread", denied)
    monkeypatch.setattr(io.tifffile, "TiffFile", denied)
    for name in ("a.png", "a.tif"):
        with pytest.raises(ValueError, match=rf"cannot read .*{name}: Permission denied; make it readable") as err:
            io.read_image(tmp_path / name)
        assert "corrupt" not in str(err.value)
