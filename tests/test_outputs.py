"""Output files (unet_jax.io): the pixel size is read from the ways microscopes and Fiji store it, written back
into predict's TIFFs (ImageJ metadata where the layout allows, resolution tags otherwise), and predict keeps the
input's calibration; unwritable output folders are named before any work."""
import os

import numpy as np
import pytest
import tifffile
from PIL import Image

from unet_jax import io
from unet_jax.io import PixelSize, read_pixel_size, write_tiff


def test_read_pixel_size_from_imagej_ome_tiff_tags_and_png(tmp_path):
    img = np.zeros((8, 10), np.uint16)
    tifffile.imwrite(tmp_path / "ij.tif", img, imagej=True, resolution=(1 / 0.325, 1 / 0.5), metadata={"unit": "um"})
    size = read_pixel_size(tmp_path / "ij.tif")
    assert size.unit == "um" and size.x == pytest.approx(0.325) and size.y == pytest.approx(0.5)
    tifffile.imwrite(tmp_path / "a.ome.tif", img, ome=True, metadata={"PhysicalSizeX": 0.2, "PhysicalSizeY": 0.25})
    assert read_pixel_size(tmp_path / "a.ome.tif")[:3] == (0.25, 0.2, "micron")
    tifffile.imwrite(tmp_path / "cm.tif", img, resolution=(20000, 20000), resolutionunit=3)
    assert read_pixel_size(tmp_path / "cm.tif")[:3] == (pytest.approx(5e-5), pytest.approx(5e-5), "centimeter")
    Image.fromarray(img.astype(np.uint8)).save(tmp_path / "a.png", dpi=(300, 300))
    assert read_pixel_size(tmp_path / "a.png").unit == "inch"
    tifffile.imwrite(tmp_path / "plain.tif", img)                       # no calibration
    Image.fromarray(img.astype(np.uint8)).save(tmp_path / "screen.png", dpi=(72, 72))   # an editor's default
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    assert [read_pixel_size(tmp_path / n) for n in ("plain.tif", "screen.png", "broken.tif")] == [None] * 3


def test_write_tiff_keeps_pixel_size_for_fiji_and_napari(tmp_path):
    size = PixelSize(0.5, 0.25, "micron", 2.0)
    write_tiff(tmp_path / "p.tif", np.full((6, 7), 0.5, np.float32), size)
    with tifffile.TiffFile(tmp_path / "p.tif") as f:                   # an ImageJ TIFF: Fiji reads the unit
        assert f.imagej_metadata["unit"] == "micron"
    assert read_pixel_size(tmp_path / "p.tif")[:3] == (pytest.approx(0.5), pytest.approx(0.25), "micron")
    write_tiff(tmp_path / "s.tif", np.zeros((3, 6, 7), np.uint16), size, axes="ZYX")
    assert read_pixel_size(tmp_path / "s.tif").z == 2.0 and tifffile.imread(tmp_path / "s.tif").shape == (3, 6, 7)
    write_tiff(tmp_path / "big.tif", np.zeros((6, 7), np.uint32), size)   # not an ImageJ type: resolution in cm
    big = read_pixel_size(tmp_path / "big.tif")
    assert big.unit == "centimeter" and big.x == pytest.approx(0.25e-4)
    write_tiff(tmp_path / "k.tif", np.zeros((6, 7, 3), np.float32), size, axes="YXC")
    assert tifffile.imread(tmp_path / "k.tif").shape == (6, 7, 3)      # class probabilities stored as given
    write_tiff(tmp_path / "none.tif", np.zeros((6, 7), np.uint16))
    assert read_pixel_size(tmp_path / "none.tif") is None
    with pytest.raises(ValueError, match="axes 'YX' do not match"):
        write_tiff(tmp_path / "x.tif", np.zeros((2, 6, 7), np.uint16), axes="YX")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif", "k.tif", "none.tif", "p.tif", "s.tif"]


def test_predict_keeps_the_inputs_pixel_size(tmp_path):
    from test_bioimageio import NETWORKS, _workdir
    from unet_jax.predict import predict_paths

    workdir = _workdir(tmp_path / "run", **NETWORKS["valid"])
    (tmp_path / "in").mkdir()
    img = np.random.default_rng(0).integers(0, 4000, (40, 50)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "in" / "a.ome.tif", img, ome=True, metadata={"PhysicalSizeX": 0.65,
                                                                              "PhysicalSizeY": 0.65})
    Image.fromarray((img // 16).astype(np.uint8)).save(tmp_path / "in" / "b.png")      # no calibration
    predict_paths(workdir, tmp_path / "in", tmp_path / "out")
    for name in ("a.ome_prob.tif", "a.ome_labels.tif"):
        size = read_pixel_size(tmp_path / "out" / name)
        assert size.unit == "micron" and size.x == pytest.approx(0.65) and size.y == pytest.approx(0.65)
    assert read_pixel_size(tmp_path / "out" / "b_labels.tif") is None


def test_unwritable_output_folder_is_named_before_any_work(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:      # root writes anywhere: simulate what everyone else meets
        def denied(directory):
            raise PermissionError(13, "Permission denied", str(directory))
        monkeypatch.setattr(io, "_probe_write", denied)
    try:
        with pytest.raises(ValueError, match=r"--output '.*ro/sub': cannot write in '.*ro' \(where it would be "
                                             r"created\) \(Permission denied\)"):
            io.check_writable_directory(folder / "sub", "--output")
        assert not (folder / "sub").exists() and not list(folder.iterdir())
    finally:
        folder.chmod(0o755)
    monkeypatch.undo()
    assert io.check_writable_directory(folder / "sub", "--output") == folder / "sub"
    assert not list(folder.iterdir())                               # the probe leaves nothing behind
