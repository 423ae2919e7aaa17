import os
import warnings

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
        decoded = ds.load(i)
        if names[i] in ("02.jpeg", "03.JPG"):  # RGB JPEGs: decode_jpeg's uint8 tensor
            assert decoded.dtype == torch.uint8 and decoded.shape == (3, 16, 20)
        else:  # other formats and the CMYK JPEG: Pillow
            assert decoded.mode == "RGB"


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


def test_one_image_file_is_a_set_of_one_image_and_another_file_is_named_with_its_setting(tmp_path):
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "f.png")
    assert scan_tree(str(tmp_path / "f.png")) == ([(str(tmp_path / "f.png"), -1)], [])
    ds = ClusterDataset(str(tmp_path / "f.png"), log=lambda m: None)
    assert ds.paths == [str(tmp_path / "f.png")] and not ds.has_labels
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(SystemExit, match="^data error: test_path .--images. '.*notes.txt' is neither a folder nor an image"):
        ClusterDataset(str(tmp_path / "notes.txt"), what="test_path (--images)")


def test_a_relative_default_path_missing_from_here_says_the_defaults_are_relative_to_the_repository(tmp_path,
                                                                                                   monkeypatch):
    import cfg
    from dataset import open_split
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        open_split(dict(cfg.DEFAULTS, pred_dir=""), "train")
    assert "relative to the repository root" in str(e.value.code) and "--dataset_path" in str(e.value.code)
    with pytest.raises(SystemExit, match="^data error: dataset_path 'elsewhere' does not exist$"):  # not the default: no hint
        open_split(dict(cfg.DEFAULTS, pred_dir="", dataset_path="elsewhere"), "train")


def test_transforms_give_the_configured_size():
    img = Image.new("RGB", (28, 40), (10, 20, 30))
    assert eval_transform(64)(img).shape == (3, 64, 64)
    assert train_transform(32, 0.5)(img).shape == (3, 32, 32)


def test_pil_images_keep_the_torchvision_transforms_bit_for_bit():
    """PIL images (PNG trees, large photos) go through the torchvision.transforms chains the tensors of earlier
    runs came from: the same tensors bit for bit, the same random draws (v2 on PIL images differs in the last bit)."""
    from torchvision import transforms as T

    from dataset import IMAGENET_MEAN, IMAGENET_STD
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 40, 3), dtype=np.uint8))
    tail = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.equal(eval_transform(32)(img), T.Compose([T.Resize(37), T.CenterCrop(32), *tail])(img))
    reference = T.Compose([T.RandomResizedCrop(32, scale=(0.3, 1.0)), T.RandomHorizontalFlip(), *tail])
    torch.manual_seed(0)
    ours = [train_transform(32, 0.3)(img) for _ in range(5)]
    torch.manual_seed(0)
    assert all(torch.equal(a, reference(img)) for a in ours)


def test_pseudo_label_dataset_needs_the_base_dataset(color_tree):
    ds = ClusterDataset(color_tree)
    assignment = np.arange(len(ds)) % 3
    derived = PseudoLabelDataset(ds, assignment, eval_transform(32))
    with pytest.raises(TypeError):
        PseudoLabelDataset(derived, assignment, eval_transform(32))
    with pytest.raises(ValueError):
        PseudoLabelDataset(ds, assignment[:-1], eval_transform(32))


def photo(path, size=(1600, 1200), orientation=None, seed=0):
    """A JPEG with smooth structure and fine texture, like a photograph, optionally with an EXIF orientation."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize(size, Image.BICUBIC)
    noise = rng.normal(0, 6, (size[1], size[0], 3))
    img = Image.fromarray(np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    img.save(path, quality=92, exif=exif)
    return path


def test_photos_are_decoded_upright_and_reduced(tmp_path):
    from decoding import load_image
    path = photo(tmp_path / "p.jpg", orientation=6)  # stored landscape, shown portrait
    full = load_image(str(path))
    assert full.size == (1200, 1600)  # EXIF orientation applied
    small = load_image(str(path), side=128)
    assert min(small.size) == 128 and small.size == (128, 171) and small.mode == "RGB"


def test_reduced_decoding_keeps_what_the_transforms_see(tmp_path):
    """At decode_side = 4 x input_size a centre crop and a small random crop (8% of the area, the
    RandomResizedCrop minimum) come out as from the full-size photo, within JPEG and resampling noise."""
    from decoding import load_image
    path = photo(tmp_path / "p.jpg", size=(2400, 1800), seed=1)
    full, small = load_image(str(path)), load_image(str(path), side=4 * 64)
    for box in ((0.0, 0.0, 1.0, 1.0), (0.3, 0.4, 0.58, 0.68)):  # relative crops: whole image, 8% of the area
        crops = [img.crop(tuple(round(b * s) for b, s in zip(box, img.size * 2))).resize((64, 64), Image.BILINEAR)
                 for img in (full, small)]
        diff = np.abs(np.asarray(crops[0], dtype=np.float64) - np.asarray(crops[1], dtype=np.float64)).mean()
        assert diff < 2.0, (box, diff)  # mean absolute difference in 0-255 grey levels


def test_decompression_bombs_are_skipped_or_reduced(tmp_path, monkeypatch):
    from PIL import Image as PILImage
    tree = tmp_path / "t" / "c"
    tree.mkdir(parents=True)
    photo(tree / "big.jpg", size=(200, 150))
    Image.fromarray(np.zeros((150, 200, 3), dtype=np.uint8)).save(tree / "big.png")
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(tree / "small.png")
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 5000)  # 200 x 150 is then a "bomb"
    messages = []
    with pytest.warns(UserWarning, match="decoded at a reduced scale"):
        ds = ClusterDataset(str(tmp_path / "t"), log=messages.append, decode_side=32)
    assert [os.path.basename(p) for p in ds.paths] == ["big.jpg", "small.png"]
    with warnings.catch_warnings():  # no cache: decoded again, but a file's warning is said once per run
        warnings.simplefilter("error")
        assert min(ds.load(0).size) == 32
    assert any("big.png" in m and "decompression-bomb" in m for m in messages)


def test_the_cache_holds_reduced_images(tmp_path):
    folder = tmp_path / "t" / "c"
    folder.mkdir(parents=True)
    for i in range(3):
        photo(folder / f"{i}.jpg", seed=i)
    ds = ClusterDataset(str(tmp_path / "t"), cache_mb=1, decode_side=128)  # 1 MB: three 1600 x 1200 would not fit
    assert len(ds._cache) == 3 and all(min(img.size) == 128 for img in ds._cache.values())


@pytest.mark.parametrize("check_images", [True, False])
def test_class_folders_without_images_are_not_classes(tmp_path, check_images):
    """An empty class folder, one with only non-images and (when images are checked) one whose images are
    all unreadable are not classes: labels are renumbered over the folders that hold images."""
    root = tmp_path / "tree"
    for name in ("a_empty", "c"):
        (root / name).mkdir(parents=True)
    (root / "b_notes").mkdir()
    (root / "b_notes" / "readme.txt").write_text("x")
    (root / "d_broken").mkdir()
    (root / "d_broken" / "0.png").write_bytes(b"not a png")
    save(Image.new("RGB", (8, 8)), str(root / "c" / "0.png"))
    save(Image.new("RGB", (8, 8)), str(root / "e" / "0.png"))
    ds = ClusterDataset(str(root), check_images=check_images, log=lambda m: None)
    expected = ["c", "e"] if check_images else ["c", "d_broken", "e"]
    assert ds.classes == expected
    assert ds.labels.tolist() == list(range(len(expected)))


# ---------------------------------------------------------------- decode_jpeg and the parallel check

def jpeg(path, size=(160, 120), seed=0, **save):
    """A small photo-like JPEG (see photo()) saved with Pillow's `save` options (mode, progressive, exif ...)."""
    mode = save.pop("mode", "RGB")
    img = Image.open(photo(path, size=size, seed=seed)).convert(mode)
    img.save(path, quality=92, **save)
    return str(path)


@pytest.mark.parametrize("side", [0, 100])  # full size, and reduced from 120 (below the draft rule's 4x)
def test_decode_jpeg_gives_pillows_pixels(tmp_path, side):
    """The tensor path and Pillow see the same JPEG alike: the same pixels at full size (one libjpeg-turbo),
    within resampling noise when reduced, and the same tensors, within that noise, after either transform."""
    from decoding import decode_file, load_image
    path = jpeg(tmp_path / "p.jpg")
    tensor, pil = decode_file(path, side), load_image(path, side)
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.uint8
    as_array = tensor.permute(1, 2, 0).numpy().astype(np.float64)
    assert as_array.shape == np.asarray(pil).shape
    diff = np.abs(as_array - np.asarray(pil, dtype=np.float64)).mean()
    assert diff == 0 if side == 0 else diff < 1.5, diff  # grey levels of 0-255
    transform = eval_transform(32)
    out_tensor, out_pil = transform(tensor), transform(pil)
    assert out_tensor.shape == out_pil.shape == (3, 32, 32) and out_tensor.dtype == torch.float32
    assert (out_tensor - out_pil).abs().mean() < 0.03  # normalised units: about 2 grey levels


@pytest.mark.parametrize("size, side, orientation", [((500, 375), 128, 1), ((333, 251), 100, 1),
                                                     ((500, 375), 128, 6), ((640, 480), 200, 1)])
def test_both_decoders_reduce_to_the_same_size(tmp_path, size, side, orientation):
    """Where Pillow decodes at 1/2 scale (draft), its reduced size is computed from the draft's rounded-up size
    (500 x 375 at 128: 250 x 188 -> 170 x 128, not 171 x 128); decode_jpeg's path gives that size too."""
    from decoding import decode_file, draft_scale, load_image
    assert draft_scale(size, side) == 2
    path = jpeg(tmp_path / "p.jpg", size=size, exif=_exif(orientation))
    tensor, pil = decode_file(path, side), load_image(path, side)
    assert isinstance(tensor, torch.Tensor) and tensor.shape[1:] == (pil.height, pil.width)
    diff = np.abs(tensor.permute(1, 2, 0).numpy().astype(np.float64) - np.asarray(pil, dtype=np.float64)).mean()
    seen = (eval_transform(32)(tensor) - eval_transform(32)(pil)).abs().mean()
    # a draft + bilinear against a full decode + antialiased resize: the photo's grain (std 6 grey levels) is
    # averaged differently; measured 1.3-3.0 grey levels, 0.020-0.046 normalised after the transform
    assert diff < 4.0 and seen < 0.06, (diff, seen)


def test_train_transform_on_tensors_gives_normalised_crops(tmp_path):
    from dataset import IMAGENET_MEAN, IMAGENET_STD
    from decoding import decode_file
    flat = torch.full((3, 50, 70), 128, dtype=torch.uint8)
    out = train_transform(32, 0.3)(flat)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out.mean(dim=(1, 2)), expected, atol=1e-5)
    assert train_transform(32)(decode_file(jpeg(tmp_path / "p.jpg"))).shape == (3, 32, 32)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_jpeg_is_upright_on_the_tensor_path(tmp_path, orientation):
    from decoding import decode_file, load_image
    path = jpeg(tmp_path / "r.jpg", exif=_exif(orientation))
    tensor, pil = decode_file(path), load_image(path)  # Pillow's exif_transpose is the reference
    assert isinstance(tensor, torch.Tensor)
    assert tensor.shape == (3, 120, 160) if orientation == 3 else tensor.shape == (3, 160, 120)
    assert np.array_equal(tensor.permute(1, 2, 0).numpy(), np.asarray(pil))


def _exif(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def test_grayscale_progressive_and_cmyk_jpegs(tmp_path):
    from decoding import decode_file, load_image
    gray, progressive = jpeg(tmp_path / "g.jpg", mode="L"), jpeg(tmp_path / "p.jpg", progressive=True)
    for path in (gray, progressive):
        tensor = decode_file(path)
        assert isinstance(tensor, torch.Tensor) and tensor.shape == (3, 120, 160)
        assert np.array_equal(tensor.permute(1, 2, 0).numpy(), np.asarray(load_image(path)))
    cmyk = decode_file(jpeg(tmp_path / "c.jpg", mode="CMYK"))
    assert isinstance(cmyk, Image.Image) and cmyk.mode == "RGB" and cmyk.size == (160, 120)  # Pillow's path


def test_a_jpeg_that_decode_jpeg_refuses_falls_back_to_pillow(tmp_path, monkeypatch):
    import decoding

    def refuse(*args, **kwargs):
        raise RuntimeError("Unsupported color conversion request")
    monkeypatch.setattr(decoding, "decode_jpeg", refuse)
    img = decoding.decode_file(jpeg(tmp_path / "p.jpg"), 100)
    assert isinstance(img, Image.Image) and img.size == (133, 100)


def test_the_large_photo_rule(tmp_path):
    """Pillow's reduced decode for a JPEG whose draft would be 1/4 of it or less, decode_jpeg below;
    jpeg_decoder "pil" takes Pillow for every file."""
    from decoding import DRAFT_MIN_SCALE, decode_file, draft_scale
    path = jpeg(tmp_path / "p.jpg", size=(520, 400))
    assert DRAFT_MIN_SCALE == 4
    assert draft_scale((520, 400), 99) == 4 and draft_scale((520, 400), 100) == 2
    assert draft_scale((520, 400), 0) == draft_scale((520, 400), 400) == 1
    reduced = decode_file(path, 99)
    assert isinstance(reduced, Image.Image) and reduced.size == (129, 99)
    kept = decode_file(path, 100)
    assert isinstance(kept, torch.Tensor) and kept.shape == (3, 100, 130)
    assert isinstance(decode_file(path, 100, decoder="pil"), Image.Image)


def test_jpeg_header_reads_what_pillow_reads(tmp_path):
    from decoding import jpeg_header
    paths = [jpeg(tmp_path / "a.jpg", comment=b"a comment before the frame"), jpeg(tmp_path / "g.jpg", mode="L"),
             jpeg(tmp_path / "c.jpg", mode="CMYK"), jpeg(tmp_path / "p.jpg", progressive=True),
             jpeg(tmp_path / "e.jpg", size=(50, 70), exif=_exif(6))]
    for path in paths:
        with Image.open(path) as img, open(path, "rb") as f:
            assert jpeg_header(f.read()) == (*img.size, len(img.getbands())), path
    assert jpeg_header(b"\xff\xd8\xff\xe0\x00\x10JFIF") is None  # cut before the frame header


def test_a_jpeg_above_the_decompression_bomb_limit_takes_pillows_path(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    from decoding import decode_file
    path = jpeg(tmp_path / "big.jpg", size=(200, 150))
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 5000)
    with pytest.warns(UserWarning, match="decoded at a reduced scale"):
        img = decode_file(path, 100)  # a draft of 1/1: decode_jpeg's size, but Pillow's bomb rules first
    assert isinstance(img, Image.Image) and img.size == (133, 100)


def test_a_truncated_jpeg_is_skipped_at_start_up_with_one_warning(tmp_path):
    folder = tmp_path / "t" / "c"
    folder.mkdir(parents=True)
    good = jpeg(folder / "a.jpg")
    (folder / "b.jpg").write_bytes(open(good, "rb").read()[:700])
    messages = []
    ds = ClusterDataset(str(tmp_path / "t"), log=messages.append)
    assert [os.path.basename(p) for p in ds.paths] == ["a.jpg"] and len(messages) == 1 and "b.jpg" in messages[0]


def mixed_tree(root):
    """JPEGs (small, larger, grayscale), PNGs, a non-UTF-8 name and unreadable files in three classes."""
    for i in range(30):
        folder = root / f"class_{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        if i % 5 == 4:
            (folder / f"{i:02d}.jpg").write_bytes(b"\xff\xd8\xff broken")
        elif i % 5 == 3:
            save(Image.new("RGB", (30 + i, 20), (i, 2 * i, 3 * i)), str(folder / f"{i:02d}.png"))
        else:
            jpeg(folder / f"{i:02d}.jpg", size=(40 + 10 * i, 30 + 5 * i), seed=i, mode="L" if i % 7 == 0 else "RGB")
    os.rename(root / "class_0" / "00.jpg", os.fsencode(root / "class_0") + b"/caf\xe9.jpg")
    return str(root)


@pytest.mark.parametrize("shared_memory", [True, False])  # False: a /dev/shm too small, pixels travel pickled
def test_the_parallel_check_keeps_what_the_serial_one_keeps(tmp_path, monkeypatch, shared_memory):
    import decoding
    monkeypatch.setattr(decoding, "PARALLEL_CHECK_MIN", 0)
    if not shared_memory:
        monkeypatch.setattr(decoding, "_shared_memory_free", lambda: 0)
    tree = mixed_tree(tmp_path / "tree")
    runs = {}
    for workers in (0, 2, 3):
        messages = []
        ds = ClusterDataset(tree, log=messages.append, cache_mb=0.05, decode_side=64, check_workers=workers)
        runs[workers] = ds, messages
    (serial, serial_messages), cached = runs[0], runs[0][0]._cache
    assert 0 < len(cached) < len(serial) and sum(decoding.image_nbytes(v) for v in cached.values()) <= 0.05 * 2**20
    for workers in (2, 3):
        ds, messages = runs[workers]
        assert ds.paths == serial.paths and ds.labels.tolist() == serial.labels.tolist()
        assert ds.skipped == serial.skipped and messages == serial_messages and len(messages) == 6
        assert list(ds._cache) == list(cached)  # the same images cached, in the same order
        for path, img in ds._cache.items():
            assert type(img) is type(cached[path])
            assert np.array_equal(np.asarray(decoding.as_pil(img)), np.asarray(decoding.as_pil(cached[path])))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc (Linux)")
def test_a_cache_of_many_chunks_fits_a_low_open_file_limit(tmp_path):
    """The cached pixels of each chunk keep one file descriptor (their shared memory): with a soft limit just
    above what is open, the parallel check raises it instead of running out of files and falling back."""
    import resource
    for i in range(600):  # 34 chunks of 18 images with 2 workers
        folder = tmp_path / "t" / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i % 256, 0, 0)).save(folder / f"{i:03d}.jpg")
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, limits[1]))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = ClusterDataset(str(tmp_path / "t"), log=lambda m: None, cache_mb=64, check_workers=2)
        raised = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
    assert not [str(w.message) for w in caught if "main process" in str(w.message)]
    assert len(ds) == len(ds._cache) == 600 and raised > len(os.listdir("/proc/self/fd"))


def dying_check(*args):
    os._exit(1)  # a check worker ends as one killed for memory would


def test_a_check_worker_that_dies_leaves_the_rest_to_the_main_process(tmp_path, monkeypatch):
    import decoding
    monkeypatch.setattr(decoding, "PARALLEL_CHECK_MIN", 0)
    tree = mixed_tree(tmp_path / "tree")
    serial = ClusterDataset(tree, log=lambda m: None, cache_mb=1, check_workers=0)
    monkeypatch.setattr(decoding, "_check_chunk", dying_check)
    with pytest.warns(UserWarning, match="ended abruptly; checking the rest in the main process"):
        ds = ClusterDataset(tree, log=lambda m: None, cache_mb=1, check_workers=2)
    assert ds.paths == serial.paths and ds.skipped == serial.skipped and list(ds._cache) == list(serial._cache)


def test_warnings_of_the_check_workers_reach_the_caller(tmp_path, monkeypatch):
    import decoding
    from PIL import Image as PILImage
    monkeypatch.setattr(decoding, "PARALLEL_CHECK_MIN", 0)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 5000)  # the forked workers see it too
    tree = tmp_path / "t" / "c"
    tree.mkdir(parents=True)
    photo(tree / "big.jpg", size=(200, 150))
    with pytest.warns(UserWarning, match="big.jpg' has 0.03 megapixels: decoded at a reduced scale"):
        ds = ClusterDataset(str(tmp_path / "t"), decode_side=32, check_workers=2, cache_mb=1)
    assert isinstance(ds._cache[ds.paths[0]], Image.Image) and min(ds._cache[ds.paths[0]].size) == 32


def test_cached_tensors_count_their_bytes_and_thumbnails_take_them(tmp_path):
    import pred
    from decoding import as_pil, image_nbytes
    folder = tmp_path / "t" / "c"
    folder.mkdir(parents=True)
    for i in range(3):
        jpeg(folder / f"{i}.jpg", seed=i)  # 160 x 120: 57,600 bytes as RGB
    ds = ClusterDataset(str(tmp_path / "t"), eval_transform(32), cache_mb=0.12)  # room for two of them
    assert len(ds._cache) == 2 and all(isinstance(img, torch.Tensor) for img in ds._cache.values())
    before = ds.load(0).clone()
    assert ds[0][0].shape == (3, 32, 32) and torch.equal(ds.load(0), before)  # the transform left the cache alone
    assert image_nbytes(ds.load(0)) == 57_600 == image_nbytes(as_pil(ds.load(0)))
    assert isinstance(ds.load(2), torch.Tensor) and ds.paths[2] not in ds._cache
    thumbs = pred.thumbnails(ds, [0, 2])
    assert thumbs.shape == (2, 3, pred.THUMB, pred.THUMB) and thumbs.dtype == torch.float32
