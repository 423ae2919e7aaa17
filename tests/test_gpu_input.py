"""The GPU input path (gpu_input.py) on the CPU: the same decode, order, crops and transforms as the CPU path, the
fallback of a file nvJPEG refuses, and decode_device's errors. Only nvJPEG itself needs a GPU: here the batched
decode runs torchvision's CPU decoder through the same code."""
import io
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.transforms.v2 import functional as F2

import decoding
import gpu_input
from conftest import color_of, index_of, train_args
from dataset import ClusterDataset, PseudoLabelDataset, eval_transform, train_transform
from distributed import share_of
from engine import make_loader
from errors import ConfigError

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    monkeypatch.setattr(decoding, "_warned", set())
    monkeypatch.setattr(gpu_input, "REFUSED", set())


def jpeg_bytes(array, orientation=1, quality=95, mode=None):
    img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    exif = img.getexif()
    if orientation != 1:
        exif[0x0112] = orientation
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=quality, exif=exif.tobytes())
    return buffer.getvalue()


def photo(rng, height, width):
    """Smooth colour with some texture: resampling differences stay at the level of real photos."""
    coarse = rng.uniform(30, 220, (4, 5, 3)).astype(np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float64)
    return np.clip(field + rng.normal(0, 6, field.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def jpeg_tree(tmp_path):
    """Two class folders of 6 colour-coded JPEGs (image i of the sorted order is color_of(i)), sizes 40-70 px, one
    with an EXIF orientation of 6, one grayscale, and one PNG."""
    i = 0
    for c in range(2):
        os.makedirs(tmp_path / f"class_{c}")
        for j in range(6):
            array = np.full((40 + 5 * j, 70 - 4 * j, 3), color_of(i), np.uint8)
            name = tmp_path / f"class_{c}" / f"img_{i:03d}"
            if i == 11:
                Image.fromarray(array).save(f"{name}.png")
            else:
                (name.parent / f"img_{i:03d}.jpg").write_bytes(jpeg_bytes(array, orientation=6 if i == 3 else 1))
            i += 1
    return str(tmp_path)


def gpu_loader(dataset, order, batch_size=4, workers=0, decode=gpu_input.decode_batch):
    loader = DataLoader(gpu_input.EncodedImages(dataset), batch_size=batch_size, sampler=order,
                        num_workers=workers, collate_fn=gpu_input.collate)
    return gpu_input.DeviceBatches(loader, dataset, CPU, decode)


def test_batched_decode_equals_the_per_image_decode(tmp_path):
    """The GPU path's decode (one call on a list, then the EXIF orientation as tensor ops) gives the pixels of the
    CPU path's per-image decode_jpeg (EXIF applied by torchvision), for colour, grayscale and every orientation."""
    rng = np.random.default_rng(0)
    datas = [jpeg_bytes(photo(rng, 30 + o, 44), orientation=o) for o in range(1, 9)]
    datas.append(jpeg_bytes(photo(rng, 33, 21), mode="L"))
    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    batched = gpu_input.decode_batch(tensors, CPU)
    for data, image in zip(datas, batched):
        upright = decoding.orient(image, decoding.jpeg_info(data)[3])
        alone = decoding.jpeg_tensor(bytearray(data))
        assert upright.shape == alone.shape and torch.equal(upright, alone)
    assert [decoding.jpeg_info(d)[3] for d in datas] == [1, 2, 3, 4, 5, 6, 7, 8, 1]


def test_the_loader_yields_the_samplers_order_with_repeats_and_shares(jpeg_tree):
    """Every batch holds the images of the sampler's indices in its order: repeats (views, the cluster-balanced
    sample), each rank's share, with loader workers or without, the JPEG and the PNG alike."""
    dataset = ClusterDataset(jpeg_tree, eval_transform(32), log=print, cache_mb=0)
    order = [5, 5, 0, 11, 3, 3, 3, 7, 1, 10, 2, 8, 9, 4, 6]
    for workers, share in ((0, order), (2, share_of(np.array(order), 1, 3).tolist())):
        seen, colours = [], []
        for images, index in gpu_loader(dataset, share, workers=workers):
            assert images.shape[1:] == (3, 32, 32) and images.dtype == torch.float32
            seen += index.tolist()
            colours += [index_of(image) for image in images]
        assert seen == share and colours == share
    labels = np.arange(12) % 3
    train = PseudoLabelDataset(dataset, labels, train_transform(32))
    targets = [t for _, target in gpu_loader(train, order) for t in target.tolist()]
    assert targets == labels[order].tolist()


def test_crop_parameters_follow_torchvisions_algorithm_from_each_images_own_draws():
    """resized_crop_params: crops inside the image with an area fraction in scale and a ratio in 3/4-4/3 (else the
    central fallback), distributed as torchvision's RandomResizedCrop.get_params draws them; one image's draws
    fix its crop, whatever the other images of the batch."""
    transform = gpu_input.BatchTransform(("train", 32, 0.08))
    draws = transform.draws(4000, torch.Generator().manual_seed(0))
    ours = [transform.params(120, 90, d)[0] for d in draws]
    torch.manual_seed(0)
    theirs = [transforms.RandomResizedCrop.get_params(torch.empty(3, 120, 90), [0.08, 1.0], [3 / 4, 4 / 3])
              for _ in range(4000)]
    for top, left, h, w in ours:
        assert 0 <= top <= 120 - h and 0 <= left <= 90 - w and 0.08 * 0.9 <= h * w / (120 * 90) <= 1.0
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    for column in range(4):  # the same distribution: means of top, left, height, width within 2 %
        assert np.mean([p[column] for p in ours]) == pytest.approx(np.mean([p[column] for p in theirs]), rel=0.02)
    assert np.mean([transform.params(120, 90, d)[1] for d in draws]) == pytest.approx(0.5, abs=0.03)  # flips
    assert gpu_input.resized_crop_params(10, 200, (0.9, 1.0), torch.zeros(10, 4)) == (0, 93, 10, 13)  # fallback
    again = transform.draws(4000, torch.Generator().manual_seed(0))
    assert transform.params(300, 40, again[7]) == transform.params(300, 40, draws[7])


def test_training_crops_are_reproducible_whatever_the_workers(jpeg_tree):
    """A run's seed gives the same augmented batches with 0 or 2 workers; another seed gives others."""
    dataset = PseudoLabelDataset(ClusterDataset(jpeg_tree, eval_transform(32), log=print, cache_mb=0),
                                 np.zeros(12, np.int64), train_transform(32))
    order = list(range(12)) * 2

    def batches(seed, workers):
        torch.manual_seed(seed)
        return torch.cat([images for images, _ in gpu_loader(dataset, order, workers=workers)])
    first = batches(31, 0)
    assert torch.equal(first, batches(31, 2))
    assert not torch.equal(first, batches(32, 0))
    assert not torch.equal(first[:12], first[12:])  # the second pass over the images draws other crops
    images = ClusterDataset(jpeg_tree, eval_transform(32), log=print, cache_mb=0, decode_side=20)
    gpu_input.REFUSED.add(images.paths[1])  # image 1 now comes decoded at half its size: the others' crops stay
    dataset = PseudoLabelDataset(images, np.zeros(12, np.int64), train_transform(32))
    changed = batches(31, 0)
    same = [k for k in range(24) if order[k] not in (1, 11)]  # the PNG (image 11) is reduced to 20 px as well
    assert torch.equal(changed[same], first[same]) and not torch.equal(changed[1], first[1])


def cpu_reference(image, spec, params=None):
    """The CPU path's tensor transform with given crop parameters: v2 on uint8, as dataset.Transform does."""
    normalize = eval_transform(spec[1]).tensor.transforms[-1]
    if params is None:
        return eval_transform(spec[1]).tensor(image)
    (top, left, height, width), flip = params
    out = F2.resized_crop(image, top, left, height, width, [spec[1], spec[1]], antialias=True)
    return normalize(out.flip(-1) if flip else out)


@pytest.mark.parametrize("spec", [("eval", 32), ("eval", 64), ("train", 32, 0.08), ("train", 48, 0.5)])
def test_gpu_transforms_match_the_cpu_transforms_on_the_same_crops(spec):
    """The GPU path's transforms (float32 resampling on the device) against the CPU path's (uint8) on the same
    image and crop: within one grey level (1/255/std ~ 0.018 after normalisation) nearly everywhere."""
    rng = np.random.default_rng(1)
    transform = gpu_input.BatchTransform(spec)
    generator = torch.Generator().manual_seed(5)
    for height, width in ((90, 120), (200, 150), (33, 80)):
        image = torch.from_numpy(photo(rng, height, width)).permute(2, 0, 1).contiguous()
        params = transform.params(height, width, transform.draws(1, generator)[0] if spec[0] == "train" else None)
        ours = transform.normalize(transform.one(image, params)[None])[0]
        theirs = cpu_reference(image, spec, params)
        difference = (ours - theirs).abs()
        assert ours.shape == theirs.shape == (3, spec[1], spec[1])
        assert difference.mean() < 0.008 and difference.max() < 0.025, (spec, height, width)  # a 1-px shift: 0.05


def test_a_file_nvjpeg_refuses_is_decoded_once_on_the_cpu_and_named_once(jpeg_tree):
    """A JPEG the batched decoder refuses: the batch is decoded image by image, the refused file on the CPU (once a
    pass, never sent to the decoder again), one warning for the run; the other images keep the GPU path."""
    dataset = ClusterDataset(jpeg_tree, eval_transform(32), log=print, cache_mb=0)
    refused = dataset.paths[4]
    with open(refused, "rb") as f:
        refused_bytes = f.read()
    sent = []

    def decode(datas, device):
        sent.append([bytes(d.numpy()) == refused_bytes for d in datas])
        if any(sent[-1]):
            raise RuntimeError("nvjpegDecodeBatched failed: unsupported\nmore detail")
        return gpu_input.decode_batch(datas, device)
    loads = []
    order = list(range(12)) + [4]  # a repeat of the refused file in the same pass goes straight to the CPU
    real_load = dataset.load
    dataset.load = lambda index: loads.append(index) or real_load(index)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            for images, index in gpu_loader(dataset, order, decode=decode):
                assert [index_of(image) for image in images] == index.tolist()
    named = [str(w.message) for w in caught if issubclass(w.category, decoding.FileWarning)]
    assert named == [f"'{refused}' is decoded on the CPU: nvJPEG refused it (nvjpegDecodeBatched failed: "
                     "unsupported)"]
    assert sum(map(sum, sent)) == 2  # in the first pass: in its batch, then alone; never again
    assert loads == [4, 11, 4] * 2  # the refused file (twice a pass) and the PNG, on the CPU, once per use
    assert gpu_input.REFUSED == {refused}


def test_cached_cmyk_and_progressive_images_travel_decoded(tmp_path):
    """What the CPU path does not give decode_jpeg (a CMYK JPEG), what nvJPEG's batched path does not take (a
    progressive JPEG) and what the cache holds reach the GPU path decoded on the CPU; the baseline JPEGs as their
    bytes, a batch's bytes and pixels in one tensor each."""
    rng = np.random.default_rng(2)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1_cmyk.jpg").write_bytes(jpeg_bytes(photo(rng, 40, 40), mode="CMYK"))
    Image.fromarray(photo(rng, 40, 40)).save(tmp_path / "a" / "2_progressive.jpg", progressive=True)
    (tmp_path / "a" / "3_rgb.jpg").write_bytes(jpeg_bytes(photo(rng, 40, 40)))
    fresh = ClusterDataset(str(tmp_path), eval_transform(32), log=print, cache_mb=0)
    assert [gpu_input.encode(fresh, i).data is None for i in range(3)] == [True, True, False]
    packed, targets = gpu_input.collate([(gpu_input.encode(fresh, i), i) for i in range(3)])
    assert packed.data.numel() == os.path.getsize(fresh.paths[2]) and packed.pixels.numel() == 2 * 3 * 40 * 40
    unpacked = gpu_input.unpack(packed)
    assert torch.equal(unpacked[0].image, gpu_input.encode(fresh, 0).image) and targets.tolist() == [0, 1, 2]
    assert bytes(unpacked[2].data.numpy()) == open(fresh.paths[2], "rb").read()
    cached = ClusterDataset(str(tmp_path), eval_transform(32), log=print, cache_mb=10)
    assert all(gpu_input.encode(cached, i).data is None for i in range(3))


def test_make_loader_keeps_the_cpu_path_on_the_cpu(jpeg_tree):
    """decode_device auto on a CPU device: the DataLoader of before; "cpu" too; the GPU path needs CUDA."""
    dataset = ClusterDataset(jpeg_tree, eval_transform(32), log=print, cache_mb=0)
    for choice in ("auto", "cpu"):
        loader = make_loader(dataset, {"batch_size": 4, "workers": 0, "decode_device": choice}, CPU)
        assert isinstance(loader, DataLoader)
    assert "on the CPU in the main process" in gpu_input.describe({"decode_device": "auto", "batch_size": 4}, CPU, 0)
    with pytest.raises(ConfigError, match="decode_device cuda: not a CUDA device"):
        gpu_input.gpu_decode({"decode_device": "cuda"}, CPU)
    with pytest.raises(ConfigError, match="choose one"):
        gpu_input.gpu_decode({"decode_device": "cuda", "jpeg_decoder": "pil"}, CPU)


def test_train_refuses_decode_device_cuda_without_a_gpu_before_any_work(tmp_path, color_tree):
    import train
    with pytest.raises(ConfigError) as error:
        train.main("cpu", train_args(color_tree, tmp_path / "exp", "--decode_device", "cuda"))
    assert error.value.code == ("config error: decode_device cuda: not a CUDA device; use train_cuda.py / "
                                "pred_cuda.py on a GPU, or decode_device auto")
    assert not os.path.exists(tmp_path / "exp")


def test_a_cpu_run_says_its_input_path_in_one_line(tmp_path, color_tree):
    import train
    train.main("cpu", train_args(color_tree, tmp_path / "exp", "--num_epoch", "0"))
    log = (tmp_path / "exp" / "train.log").read_text()
    assert log.count("input: ") == 1 and "input: images decoded and transformed on the CPU in the main process" in log


@pytest.mark.slow
def test_a_run_through_the_gpu_path_trains_and_predicts(tmp_path, jpeg_tree, monkeypatch):
    """train.py and pred.py with the GPU path switched on (its decode here on the CPU): every loader of the run is
    the GPU path's, the run trains, clusters and predicts, and its log names the path."""
    import pred
    import train
    monkeypatch.setattr(gpu_input, "gpu_decode", lambda c, device: True)
    made = []
    real = gpu_input.DeviceBatches.__init__
    monkeypatch.setattr(gpu_input.DeviceBatches, "__init__",
                        lambda self, *args: made.append(1) or real(self, *args))
    exp = tmp_path / "exp"
    train.main("cpu", train_args(jpeg_tree, exp, "--num_epoch", "2", "--cache_mb", "0"))
    assert len(made) == 3  # the features' loader (every clustering's) and each epoch's training loader
    log = (exp / "train.log").read_text()
    assert "input: JPEGs decoded on the GPU (nvJPEG, batches of 8) and transformed there" in log
    assert log.count("epoch 2/2") == 1
    pred.main("cpu", ["--exp_dir", str(exp), "--pred_dir", str(tmp_path / "pred"), "--test_path", jpeg_tree,
                      "--report", "false", "--duplicate_threshold", "0", "--verbose", "false", "--workers", "0"])
    assert len(made) == 4 and (tmp_path / "pred" / "predictions.csv").exists()  # (thumbnails would need the CPU)
