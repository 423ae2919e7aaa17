import os

import numpy as np
import pytest
import torch
from PIL import Image

from dataset import ClusterDataset, PseudoLabelDataset, eval_transform, scan_tree, train_transform


def save(img, path, **kw):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path, **kw)


@pytest.fixture
def messy_tree(tmp_path):
    """Every image mode and extension case we promise, plus the files we promise to skip."""
    root = tmp_path / "messy"
    a, b = root / "a", root / "b"
    rgb = Image.new("RGB", (20, 16), (200, 30, 30))
    save(rgb, str(a / "01_upper.PNG"))
    save(rgb, str(a / "02.jpeg"))
    save(rgb, str(a / "03.JPG"))
    save(rgb.convert("L"), str(a / "04_gray.png"))
    save(rgb.convert("P"), str(a / "05_palette.gif"))
    save(rgb.convert("RGBA"), str(a / "06_rgba.webp"))
    save(rgb.convert("CMYK"), str(a / "07_cmyk.jpg"))
    save(Image.fromarray(np.arange(320, dtype=np.uint16).reshape(16, 20) * 200), str(a / "08_16bit.png"))
    save(rgb, str(a / "09.tiff"))
    save(rgb, str(b / "10.bmp"))
    save(rgb, str(b / ".hidden.png"))
    save(rgb, str(b / ".cache" / "11.png"))
    (b / "notes.txt").write_text("not an image")
    (b / "12_text.png").write_text("not an image despite its name")
    (b / "13_empty.jpg").write_bytes(b"")
    good = b / "14_good.png"
    save(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)), str(good))
    (b / "15_truncated.png").write_bytes(good.read_bytes()[:200])
    return str(root)


def test_modes_extensions_and_bad_files(messy_tree):
    messages = []
    ds = ClusterDataset(messy_tree, transform=eval_transform(32), log=messages.append)
    names = [os.path.basename(p) for p in ds.paths]
    assert names == ["01_upper.PNG", "02.jpeg", "03.JPG", "04_gray.png", "05_palette.gif", "06_rgba.webp",
                     "07_cmyk.jpg", "08_16bit.png", "09.tiff", "10.bmp", "14_good.png"]
    assert ds.classes == ["a", "b"]
    assert ds.labels.tolist() == [0] * 9 + [1, 1]
    skipped = sorted(os.path.basename(p) for p in ds.skipped)
    assert skipped == ["12_text.png", "13_empty.jpg", "15_truncated.png"]
    assert len(messages) == 3 and all("skipping" in m for m in messages)
    assert any("15_truncated.png" in m for m in messages)
    for i in range(len(ds)):
        img, index = ds[i]
        assert index == i and img.shape == (3, 32, 32) and img.dtype == torch.float32
        assert torch.isfinite(img).all()
        assert ds.load(i).mode == "RGB"


def test_sixteen_bit_gray_keeps_its_range(messy_tree):
    ds = ClusterDataset(messy_tree)
    img = np.asarray(ds.load([os.path.basename(p) for p in ds.paths].index("08_16bit.png")))
    assert img.min() == 0 and img.max() == 255  # rescaled, not clipped to white


def test_order_is_deterministic(messy_tree):
    assert ClusterDataset(messy_tree).paths == ClusterDataset(messy_tree).paths


def test_flat_folder_has_no_labels(tmp_path):
    for i in range(4):
        save(Image.new("RGB", (8, 8), (i, i, i)), str(tmp_path / "flat" / f"{i}.png"))
    ds = ClusterDataset(str(tmp_path / "flat"))
    assert len(ds) == 4 and not ds.has_labels and (ds.labels == -1).all()


def test_file_that_breaks_after_the_scan_gives_a_black_image(tmp_path):
    save(Image.new("RGB", (8, 8), (255, 255, 255)), str(tmp_path / "t" / "x.png"))
    ds = ClusterDataset(str(tmp_path / "t"))
    (tmp_path / "t" / "x.png").write_bytes(b"")
    with pytest.warns(UserWarning, match="x.png"):
        img = ds.load(0)
    assert img.mode == "RGB" and np.asarray(img).max() == 0


@pytest.mark.parametrize("setup, expected", [
    (lambda p: None, "does not exist"),
    (lambda p: p.mkdir(), "no images found"),
    (lambda p: (p.mkdir(), (p / "x.txt").write_text("hi")), "no images found"),
    (lambda p: (p.mkdir(), (p / "x.png").write_bytes(b"")), "could be decoded"),
])
def test_unusable_trees_stop_with_one_line(tmp_path, setup, expected):
    path = tmp_path / "data"
    setup(path)
    with pytest.raises(SystemExit) as e:
        ClusterDataset(str(path), log=lambda m: None)
    msg = str(e.value.code)
    assert expected in msg and "\n" not in msg


def test_a_file_is_not_a_tree(tmp_path):
    (tmp_path / "f.png").write_bytes(b"")
    with pytest.raises(SystemExit, match="not a folder"):
        scan_tree(str(tmp_path / "f.png"))


def test_transforms_give_the_configured_size():
    img = Image.new("RGB", (28, 40), (10, 20, 30))
    assert eval_transform(64)(img).shape == (3, 64, 64)
    assert train_transform(32, 0.5)(img).shape == (3, 32, 32)


def test_pseudo_label_dataset_needs_the_base_dataset(color_tree):
    ds = ClusterDataset(color_tree)
    assignment = np.arange(len(ds)) % 3
    derived = PseudoLabelDataset(ds, assignment, eval_transform(32))
    with pytest.raises(TypeError):
        PseudoLabelDataset(derived, assignment, eval_transform(32))
    with pytest.raises(ValueError):
        PseudoLabelDataset(ds, assignment[:-1], eval_transform(32))
