"""The GPU input pipeline (cfg decode_device): JPEGs decoded on the GPU a batch at a time, then cropped, resized,
flipped and normalised there, so that the network is fed at the GPU's speed rather than at the rate the CPU cores
decode.

On CUDA with decode_device "auto" (or "cuda"), the DataLoader workers only read each image's file bytes; one
thread of the main process decodes a batch's JPEGs in one call of torchvision's batched nvJPEG decoder
(torchvision.io.decode_jpeg on a list, device "cuda") and transforms every image with tensor ops on the GPU (the
Sobel front is the network's first layer, on the GPU already), one batch ahead of the network, in the order the
sampler gives: the epoch's cluster-balanced sample with its repeats, under torchrun each rank its own share.

What nvJPEG is not given is decoded on the CPU as before (decoding.decode_file), in the worker: other formats,
CMYK JPEGs, photos many times larger than decode_side (Pillow's reduced decode is faster, and the GPU memory of a
batch stays bounded), images the cache holds. A JPEG that nvJPEG refuses is decoded on the CPU once, named once
(decoding.warn_file), and read by the CPU path from then on.

Hazards, and what is done about them:
- CUDA cannot be used in forked DataLoader workers: the workers touch no CUDA (file bytes and CPU decodes only).
- The hardware batched decoder of A100/H100-class GPUs can write into memory that kernels queued on the calling
  stream still read (pytorch/vision#9606, pytorch/torchcodec#1634): the decoding thread has its own stream and
  synchronises it before every decode call; the network's stream waits for each batch on an event.
- nvJPEG's memory grows without bound with CUDA before 11.6 (the warning of torchvision's decode_jpeg): "auto"
  keeps the CPU path there, and wherever a first decode on the GPU fails.
"""
import collections
import contextlib
import io
import queue
import threading

import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as F2

from dataset import IMAGENET_MEAN, IMAGENET_STD, PseudoLabelDataset, ClusterDataset
from decoding import jpeg_info, orient, tensor_jpeg_bytes, warn_file
from errors import ConfigError, printable

PIXELS_PER_DECODE = 2 ** 27  # pixels decoded by one call (about 400 MB of uint8 RGB): bounds a batch's GPU memory
PREFETCH = 2  # batches prepared ahead of the network
RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect ratios (torchvision's default, as dataset.train_transform)
REFUSED = set()  # paths nvJPEG refused in this process; DataLoader workers forked later send them decoded
_probed = {}  # device -> None when nvJPEG decodes there, else why not


# ---------------------------------------------------------------- which path a run takes


def nvjpeg_problem(device):
    """None when torchvision's batched nvJPEG decoder works on `device` (one tiny JPEG decoded once per process),
    else a short reason."""
    device = torch.device(device)
    if device.type != "cuda":
        return "not a CUDA device"
    major, minor = (int(x) for x in (torch.version.cuda or "0.0").split(".")[:2])
    if (major, minor) < (11, 6):
        return f"CUDA {torch.version.cuda} (nvJPEG leaks memory before 11.6)"
    if device not in _probed:
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 30, 60)).save(buffer, "JPEG")
        try:
            decode_batch([torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)], device)
            _probed[device] = None
        except (RuntimeError, ValueError) as e:
            _probed[device] = f"nvJPEG failed ({str(e).splitlines()[0][:120] if str(e) else type(e).__name__})"
    return _probed[device]


def gpu_decode(c, device):
    """True when this run's loaders decode JPEGs on the GPU (cfg decode_device on `device`): "auto" on CUDA where
    nvJPEG works, "cuda" on CUDA (a one-line ConfigError where it cannot), "cpu" never. jpeg_decoder "pil" asks for
    Pillow everywhere and keeps the CPU path."""
    choice, device = c.get("decode_device", "cpu"), torch.device(device)
    if choice == "cpu" or c.get("jpeg_decoder") == "pil" and choice == "auto":
        return False
    if choice == "cuda" and c.get("jpeg_decoder") == "pil":
        raise ConfigError("decode_device cuda decodes JPEGs with nvJPEG, jpeg_decoder pil with Pillow: choose one")
    problem = nvjpeg_problem(device) if device.type == "cuda" else "not a CUDA device"
    if choice == "cuda" and problem:
        raise ConfigError(f"decode_device cuda: {problem}; use train_cuda.py / pred_cuda.py on a GPU, or "
                          "decode_device auto")
    return problem is None


def describe(c, device, workers):
    """The one line a run logs about its input path."""
    if gpu_decode(c, device):
        return (f"input: JPEGs decoded on the GPU (nvJPEG, batches of {c['batch_size']}) and transformed there; "
                f"file reading and other images in {workers or 'the main'} process{'es' * (workers > 1)}")
    why = ""
    if torch.device(device).type == "cuda" and c.get("decode_device", "cpu") == "auto":
        why = " (" + ("jpeg_decoder pil" if c.get("jpeg_decoder") == "pil" else nvjpeg_problem(device)) + ")"
    where = f"{workers} loader worker{'s' * (workers > 1)}" if workers else "the main process"
    return f"input: images decoded and transformed on the CPU in {where}{why}"


def takes(dataset):
    """True when the GPU path can feed `dataset`: a ClusterDataset, or a PseudoLabelDataset over one, whose transform
    is dataset.eval_transform or dataset.train_transform (others, e.g. pred.py's thumbnail items, stay on the CPU)."""
    images = dataset.base if isinstance(dataset, PseudoLabelDataset) else dataset
    return isinstance(images, ClusterDataset) and getattr(dataset.transform, "spec", None) is not None


# ---------------------------------------------------------------- in the DataLoader workers: bytes


Encoded = collections.namedtuple("Encoded", "index data orientation pixels image")
Encoded.__doc__ = """One image as a worker hands it over: `data` the JPEG file's bytes (uint8, 1-D) for nvJPEG with its
EXIF `orientation` (1-8) and its `pixels` (width x height, from its header), or `image` decoded on the CPU (uint8
3 x H x W, upright; pixels 0); `index` in the ClusterDataset."""


def encode(images, index):
    """Image `index` of ClusterDataset `images` for the GPU path (an Encoded): the bytes of a JPEG that the CPU path
    too would decode with decode_jpeg (decoding.tensor_jpeg_bytes), else the image decoded as the CPU path decodes
    it (the cache first, a stand-in for a file that went bad: ClusterDataset.load)."""
    path, cached = images.paths[index], images.cached(index)
    if cached is None and images.jpeg_decoder == "auto" and path not in REFUSED:
        try:
            data = tensor_jpeg_bytes(path, images.decode_side)
        except OSError:
            data = None  # load() below names it and stands in
        if data is not None:
            width, height, _, orientation = jpeg_info(data)
            return Encoded(index, torch.frombuffer(data, dtype=torch.uint8), orientation, width * height, None)
    return Encoded(index, None, 1, 0, as_uint8(cached if cached is not None else images.load(index)))


def as_uint8(img):
    """A decoded image (uint8 tensor, or PIL image) as a uint8 3 x H x W tensor."""
    return img if isinstance(img, torch.Tensor) else F2.pil_to_tensor(img.convert("RGB"))


class EncodedImages(Dataset):
    """The items of a ClusterDataset (target: the image's index) or a PseudoLabelDataset (target: its pseudo-label)
    as (Encoded, target): what the DataLoader workers of the GPU path return."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.images = dataset.base if isinstance(dataset, PseudoLabelDataset) else dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        target = self.dataset.label(index) if isinstance(self.dataset, PseudoLabelDataset) else index
        return encode(self.images, index), target


def collate(items):
    """A batch of the GPU path: the list of Encoded (images of any size) and the targets collated as usual."""
    return [encoded for encoded, _ in items], default_collate([target for _, target in items])


# ---------------------------------------------------------------- in the main process: decode and transform


def decode_batch(datas, device):
    """JPEG bytes (CPU uint8 tensors) decoded in one call: a list of uint8 3 x H x W RGB tensors on `device`, not
    turned by EXIF (torchvision's decoder on CUDA ignores it). On CUDA the current stream is synchronised first
    (pytorch/vision#9606). Raises RuntimeError when a file is refused."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
    return decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)


def resized_crop_params(height, width, scale, generator, ratio=RATIO):
    """(top, left, crop height, crop width) of a random resized crop of a height x width image: torchvision's
    RandomResizedCrop.get_params (Szegedy et al. 2015's Inception crop: an area fraction uniform in `scale`, a log-
    uniform aspect ratio in `ratio`, 10 tries, then the largest central crop of an allowed ratio), drawing from
    `generator` instead of torch's global generator, in the same order and with the same values for one seed."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w = int(round((target_area * aspect_ratio) ** 0.5))
        h = int(round((target_area / aspect_ratio) ** 0.5))
        if 0 < w <= width and 0 < h <= height:
            top = torch.randint(0, height - h + 1, size=(1,), generator=generator).item()
            left = torch.randint(0, width - w + 1, size=(1,), generator=generator).item()
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class BatchTransform:
    """dataset.eval_transform / train_transform as tensor ops on the images' device: from decoded uint8 3 x H x W
    images of any size to one float32 B x 3 x size x size batch, ImageNet-normalised, channels_last on CUDA.

    "eval": Resize(round(size * 256 / 224)) + CenterCrop(size). "train": RandomResizedCrop(size, scale=(scale_min,
    1)) + a horizontal flip with probability 1/2, the parameters drawn image after image from one torch.Generator
    seeded per batch, so that a seed gives the same crops whatever the workers and the timing. The resampling is
    torchvision's antialiased bilinear resize, in float32 (the CPU path resizes uint8: within one grey level)."""

    def __init__(self, spec):
        self.kind, self.size = spec[0], spec[1]
        self.scale = (spec[2], 1.0) if self.kind == "train" else None
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.multiply, self.add = 1.0 / (255.0 * std), -torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) / std

    def params(self, height, width, generator):
        """The crop (top, left, height, width) and the flip of one image ("train"), None ("eval")."""
        if self.kind != "train":
            return None
        crop = resized_crop_params(height, width, self.scale, generator)
        return crop, bool(torch.rand(1, generator=generator).item() < 0.5)

    def one(self, image, params):
        """One uint8 3 x H x W image -> float32 3 x size x size, 0-255."""
        size = self.size
        if params is None:
            x = F2.resize(image.float(), [int(round(size * 256 / 224))], antialias=True)
            return F2.center_crop(x, [size, size])
        (top, left, height, width), flip = params
        x = F2.resize(image[:, top:top + height, left:left + width].float(), [size, size], antialias=True)
        return x.flip(-1) if flip else x

    def normalize(self, batch):
        """In place: 0-255 -> ImageNet-normalised; channels_last on CUDA."""
        batch.mul_(self.multiply.to(batch.device)).add_(self.add.to(batch.device))
        return batch.contiguous(memory_format=torch.channels_last) if batch.is_cuda else batch


class DeviceBatches:
    """The loader of the GPU path: iterates (images, targets) like a DataLoader over `dataset` with `sampler`, the
    images a float32 B x 3 x size x size batch on `device` (ready for the network), the targets as the CPU path
    collates them. `loader` is the DataLoader of EncodedImages(dataset) that reads the files; `decode` decodes a
    list of JPEG bytes (decode_batch; a stand-in in tests). len() is the number of batches; `dataset` and `sampler`
    are the CPU loader's."""

    def __init__(self, loader, dataset, device, decode=decode_batch):
        self.loader, self.dataset, self.sampler = loader, dataset, loader.sampler
        self.device, self.decode_jpegs = torch.device(device), decode
        self.images = loader.dataset.images
        self.transform = BatchTransform(dataset.transform.spec)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        # like DataLoader's base seed: drawn from the run's seeded generator, once per pass
        seed = int(torch.randint(2 ** 62, (1,)).item())
        results, stop = queue.Queue(PREFETCH), threading.Event()
        batches = iter(self.loader)  # the workers start (fork) here, in the main thread
        thread = threading.Thread(target=self._produce, args=(batches, seed, results, stop), daemon=True)
        thread.start()
        consumer = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        try:
            while True:
                item = results.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                batch, targets, ready = item
                if consumer is not None:
                    consumer.wait_event(ready)
                    batch.record_stream(consumer)  # made on the decoding stream, read on this one
                yield batch, targets
        finally:
            stop.set()
            while thread.is_alive():  # let a producer blocked on a full queue see the stop
                try:
                    results.get(timeout=0.1)
                except queue.Empty:
                    pass
            thread.join()

    def _produce(self, batches, seed, results, stop):
        """The decoding thread: every batch of the loader's iterator `batches`, prepared in order, into `results`;
        then None (or the exception that stopped it)."""
        def put(item):
            while not stop.is_set():
                try:
                    results.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    pass
            return False
        try:
            stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
            with torch.no_grad(), (torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()):
                for number, (encoded, targets) in enumerate(batches):
                    batch = self.prepare(encoded, torch.Generator().manual_seed(seed + number))
                    ready = stream.record_event() if stream is not None else None
                    if not put((batch, targets, ready)):
                        return
            put(None)
        except BaseException as e:  # to the consumer, which raises it
            put(e)

    def prepare(self, encoded, generator):
        """A list of Encoded -> the transformed batch on the device: the JPEGs decoded in calls of at most
        PIXELS_PER_DECODE pixels (each part transformed before the next is decoded), the CPU-decoded images copied;
        crop parameters drawn in the batch's order from `generator`."""
        batch = torch.empty(len(encoded), 3, self.transform.size, self.transform.size, device=self.device)
        start = 0
        while start < len(encoded):
            end, pixels = start, 0
            while end < len(encoded) and (end == start or pixels + encoded[end].pixels <= PIXELS_PER_DECODE):
                pixels += encoded[end].pixels
                end += 1
            for k, image in enumerate(self.decode(encoded[start:end]), start):
                batch[k] = self.transform.one(image, self.transform.params(*image.shape[-2:], generator))
            start = end
        return self.transform.normalize(batch)

    def decode(self, encoded):
        """Encoded items -> upright uint8 3 x H x W images on the device, in order: the JPEGs in one call, the others
        copied from the CPU."""
        jpegs = [e for e in encoded if e.data is not None]
        decoded = iter(self.decode_jpegs_or_each(jpegs) if jpegs else [])
        return [next(decoded) if e.data is not None else e.image.to(self.device, non_blocking=True) for e in encoded]

    def decode_jpegs_or_each(self, jpegs):
        """One call for all; when it fails, each on its own, so that only the refused files leave nvJPEG."""
        try:
            images = self.decode_jpegs([e.data for e in jpegs], self.device)
        except RuntimeError:
            return [self.decode_one(e) for e in jpegs]
        return [orient(image, e.orientation) for image, e in zip(images, jpegs)]

    def decode_one(self, e):
        try:
            return orient(self.decode_jpegs([e.data], self.device)[0], e.orientation)
        except RuntimeError as error:
            path = self.images.paths[e.index]
            REFUSED.add(path)  # the workers of the next passes decode it on the CPU
            reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
            warn_file(path, "nvjpeg", f"is decoded on the CPU: nvJPEG refused it ({printable(reason)})")
            return as_uint8(self.images.load(e.index)).to(self.device)
