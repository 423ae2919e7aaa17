"""decoding.py on damaged or unusual files: nodata pixels, libjpeg's own messages, one warning per file."""
import io
import warnings

import numpy as np
import pytest
from PIL import Image

import decoding
from dataset import ClusterDataset


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(decoding, "_warned", set())  # each test sees its files' warnings


def file_warnings(caught):
    return [str(w.message) for w in caught if issubclass(w.category, decoding.FileWarning)]


def float_tiff(path, nodata):
    """A float32 TIFF: a left-to-right ramp 0..100 with `nodata` (NaN or inf) in its top-left 4 x 4 corner."""
    arr = np.tile(np.linspace(0, 100, 32, dtype=np.float32), (24, 1))
    arr[:4, :4] = nodata
    Image.fromarray(arr, mode="F").save(path)
    return str(path)


@pytest.mark.parametrize("nodata", [np.nan, np.inf, -np.inf])
def test_nodata_pixels_are_missing_values_not_a_black_image(tmp_path, nodata):
    path = float_tiff(tmp_path / "scene.tif", nodata)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img = np.asarray(decoding.load_image(path))[:, :, 0].astype(int)
    assert img[10, 0] == 0 and img[10, -1] >= 254 and np.all(np.diff(img[10]) >= 0)  # the ramp, full range
    assert np.all(img[:4, :4] == 0)  # the missing pixels take the minimum
    assert file_warnings(caught) == [f"'{path}' has 16 of 768 pixels NaN or infinite: treated as missing "
                                     "(set to the minimum of the others)"]


def test_an_image_of_nodata_only_is_black_with_a_warning(tmp_path):
    path = tmp_path / "empty.tif"
    Image.fromarray(np.full((8, 8), np.nan, dtype=np.float32), mode="F").save(path)
    with pytest.warns(decoding.FileWarning, match="empty.tif' has 64 of 64 pixels NaN"):
        img = decoding.load_image(str(path))
    assert not np.asarray(img).any()


def damaged_jpeg(path, seed=0):
    """A JPEG that decodes, with 3 extraneous bytes before its start-of-scan marker (libjpeg: "Corrupt JPEG data")."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(buf, "JPEG")
    data = buf.getvalue()
    sos = data.index(b"\xff\xda")
    path.write_bytes(data[:sos] + b"\x12\x34\x56" + data[sos:])
    return str(path)


def test_libjpegs_message_becomes_one_warning_naming_the_file(tmp_path, capfd):
    path = damaged_jpeg(tmp_path / "burst.jpg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):  # three decodes: three epochs without the cache
            img = decoding.decode_file(path)
    assert img.shape == (3, 40, 48)
    assert file_warnings(caught) == [f"'{path}' is damaged but decodes (libjpeg: Corrupt JPEG data: "
                                     "3 extraneous bytes before marker 0xda)"]
    assert "Corrupt JPEG" not in capfd.readouterr().err  # libjpeg's anonymous line is not printed


def test_a_damaged_jpeg_is_named_once_by_the_parallel_check_and_the_loads_after_it(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(decoding, "PARALLEL_CHECK_MIN", 0)
    folder = tmp_path / "t" / "c"
    folder.mkdir(parents=True)
    for i in range(6):
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(folder / f"{i}.png")
    path = damaged_jpeg(folder / "x.jpg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ClusterDataset(str(tmp_path / "t"), log=lambda m: None, check_workers=2)
        for _ in range(2):
            ds.load(ds.paths.index(path))
    assert file_warnings(caught) == [f"'{path}' is damaged but decodes (libjpeg: Corrupt JPEG data: "
                                     "3 extraneous bytes before marker 0xda)"]
    assert "Corrupt JPEG" not in capfd.readouterr().err


def test_stderr_outside_a_decode_is_left_alone(capfd):
    import os
    with decoding.libjpeg_messages() as messages:
        os.write(2, b"inside\n")
    os.write(2, b"outside\n")
    assert messages == ["inside"] and capfd.readouterr().err == "outside\n"
