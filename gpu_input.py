"""The GPU input pipeline (cfg decode_device): JPEGs decoded on the GPU a batch at a time, then cropped, resized,
flipped and normalised there, so that the network is fed at the GPU's speed rather than at the rate the CPU cores
decode.

On CUDA with decode_device "auto" (or "cuda"), the DataLoader workers only read each image's file bytes (a
batch's bytes cross to the main process as one tensor); a thread of the main process decodes a batch's JPEGs in
one call of torchvision's batched nvJPEG decoder (torchvision.io.decode_jpeg on a list, device "cuda") while a
second one crops, resizes, flips and normalises the previous batch with tensor ops on the GPU (the Sobel front is
the network's first layer, on the GPU already), ahead of the network, in the order the sampler gives: the epoch's
cluster-balanced sample with its repeats, under torchrun each rank its own share.

What nvJPEG is not given is decoded on the CPU as before (decoding.decode_file), in the worker: other formats,
CMYK and non-baseline (progressive ...) JPEGs, photos many times larger than decode_side (Pillow's reduced decode
is faster, and the GPU memory of a batch stays bounded), images the cache holds. A JPEG that nvJPEG refuses is
decoded on the CPU once, named once (decoding.warn_file), and read by the CPU path from then on.

Hazards, and what is done about them:
- CUDA cannot be used in forked DataLoader workers: the workers touch no CUDA (file bytes and CPU decodes only).
- The hardware batched decoder of A100/H100-class GPUs can write into memory that kernels queued on the calling
  stream still read (pytorch/vision#9606, pytorch/torchcodec#1634): the decoding thread has its own stream and
  synchronises it before every decode call; each stream waits for the previous one's results on an event, and
  record_stream keeps their memory from being reused too early.
- nvJPEG's memory grows without bound with CUDA before 11.6 (the warning of torchvision's decode_jpeg): "auto"
  keeps the CPU path there, and wherever a first decode on the GPU fails.
"""
import collections
import contextlib
import io
import math
import queue
import threading

import torch
from PIL import Image
from torch.nn.functional import interpolate
from torch.utils.data import Dataset, default_collate
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as F2

from dataset import IMAGENET_MEAN, IMAGENET_STD, ClusterDataset, PseudoLabelDataset
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
Encoded.__doc__ = """One image of the GPU path: `data` the JPEG file's bytes (uint8, 1-D) for nvJPEG with its EXIF
`orientation` (1-8) and its `pixels` (width x height, from its header), or `image` decoded on the CPU (uint8
3 x H x W, upright; pixels 0); `index` in the ClusterDataset."""
NVJPEG_FRAMES = (0xC0,)  # baseline JPEGs: what nvJPEG's batched hardware path takes; progressive, lossless and
# arithmetic-coded frames would be decoded one at a time with host-side Huffman decoding, slower than the workers


def encode(images, index):
    """Image `index` of ClusterDataset `images` for the GPU path (an Encoded, data a bytearray): the bytes of a
    baseline JPEG that the CPU path too would decode with decode_jpeg (decoding.tensor_jpeg_bytes), else the image
    decoded as the CPU path decodes it (the cache first, a stand-in for a file that went bad: ClusterDataset.load)."""
    path, cached = images.paths[index], images.cached(index)
    if cached is None and images.jpeg_decoder == "auto" and path not in REFUSED:
        try:
            data = tensor_jpeg_bytes(path, images.decode_side)
        except OSError:
            data = None  # load() below names it and stands in
        info = data and jpeg_info(data)
        if info and info[4] in NVJPEG_FRAMES:
            return Encoded(index, data, info[3], info[0] * info[1], None)
    return Encoded(index, None, 1, 0, as_uint8(cached if cached is not None else images.load(index)))


def as_uint8(img):
    """A decoded image (uint8 tensor, or PIL image) as a uint8 3 x H x W tensor."""
    return img if isinstance(img, torch.Tensor) else F2.pil_to_tensor(img.convert("RGB"))


class EncodedImages(Dataset):
    """The items of a ClusterDataset (target: the image's index) or a PseudoLabelDataset (target: its pseudo-label)
    as (Encoded, target): what the DataLoader workers of the GPU path read."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.images = dataset.base if isinstance(dataset, PseudoLabelDataset) else dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        target = self.dataset.label(index) if isinstance(self.dataset, PseudoLabelDataset) else index
        return encode(self.images, index), target


Packed = collections.namedtuple("Packed", "items data pixels")
Packed.__doc__ = """A batch of Encoded as it crosses from a worker to the main process: every JPEG's bytes in one uint8
tensor `data` and every CPU-decoded image in one uint8 tensor `pixels` (one shared-memory transfer each, where one
per image costs a file descriptor and a handshake each), `items` the Encoded with (offset, length) in place of
data and (offset, shape) in place of image."""


def collate(items):
    """A batch of the GPU path, in a worker: (Packed, the targets collated as usual)."""
    encoded, data, pixels, filled = [], bytearray(), [], 0
    for e, _ in items:
        if e.data is not None:
            encoded.append(e._replace(data=(len(data), len(e.data))))
            data += e.data
        else:
            encoded.append(e._replace(image=(filled, tuple(e.image.shape))))
            pixels.append(e.image.reshape(-1))
            filled += e.image.numel()
    flat = torch.cat(pixels) if pixels else torch.empty(0, dtype=torch.uint8)
    return Packed(encoded, torch.frombuffer(data, dtype=torch.uint8) if data else None, flat), \
        default_collate([target for _, target in items])


def unpack(packed):
    """The list of Encoded of a Packed batch, data and image as views of its two tensors."""
    out = []
    for e in packed.items:
        if e.data is not None:
            out.append(e._replace(data=packed.data[e.data[0]:e.data[0] + e.data[1]]))
        else:
            offset, shape = e.image
            out.append(e._replace(image=packed.pixels[offset:offset + math.prod(shape)].view(shape)))
    return out


# ---------------------------------------------------------------- in the main process: decode and transform


def decode_batch(datas, device):
    """JPEG bytes (CPU uint8 tensors) decoded in one call: a list of uint8 3 x H x W RGB tensors on `device`, not
    turned by EXIF (torchvision's decoder on CUDA ignores it). On CUDA the current stream is synchronised first
    (pytorch/vision#9606). Raises RuntimeError when a file is refused (torch.OutOfMemoryError, a RuntimeError too,
    when the GPU's memory is full)."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()
    return decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)


LOG_RATIO = (math.log(RATIO[0]), math.log(RATIO[1]))


def resized_crop_params(height, width, scale, draws, log_ratio=LOG_RATIO):
    """(top, left, crop height, crop width) of a random resized crop of a height x width image, the algorithm of
    torchvision's RandomResizedCrop.get_params (the Inception crop of Szegedy et al. 2015): up to 10 tries of an
    area fraction uniform in `scale` and an aspect ratio log-uniform in RATIO, the first that fits placed
    uniformly, else the largest central crop of an allowed ratio. `draws` is a (10, 4) float tensor of uniforms in
    [0, 1) (columns: area, ratio, top, left), the image's own, so its crop depends on nothing else."""
    area, (low, high) = height * width, log_ratio
    for u_area, u_ratio, u_top, u_left in draws.tolist():
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u_area)
        aspect_ratio = math.exp(low + (high - low) * u_ratio)
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            return int(u_top * (height - h + 1)), int(u_left * (width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < RATIO[0]:
        w, h = width, int(round(width / RATIO[0]))
    elif in_ratio > RATIO[1]:
        h, w = height, int(round(height * RATIO[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class BatchTransform:
    """dataset.eval_transform / train_transform as tensor ops on the images' device: from decoded uint8 3 x H x W
    images of any size to one float32 B x 3 x size x size batch, ImageNet-normalised, channels_last on CUDA.

    "eval": Resize(round(size * 256 / 224)) + CenterCrop(size). "train": RandomResizedCrop(size, scale=(scale_min,
    1)) + a horizontal flip with probability 1/2, each image's crop and flip from its own row of uniforms, drawn
    for the whole batch at once from a torch.Generator seeded per batch, so that a seed gives the same crops
    whatever the workers, the timing and the other images' sizes. The resampling is antialiased bilinear
    (torch.nn.functional.interpolate, as torchvision's resize) in float32; the CPU path resizes uint8: within one
    grey level."""

    def __init__(self, spec, device="cpu"):
        self.kind, self.size = spec[0], spec[1]
        self.scale = (spec[2], 1.0) if self.kind == "train" else None
        self.resize = int(round(self.size * 256 / 224))
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        multiply, add = 1.0 / (255.0 * std), -torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) / std
        self.multiply, self.add = multiply.to(device), add.to(device)  # on the device once, not every batch

    def draws(self, n, generator):
        """(n, 11, 4) uniforms: 10 crop tries and, in [:, 10, 0], the flip, for n images ("train"); None ("eval")."""
        return torch.rand(n, 11, 4, generator=generator) if self.kind == "train" else None

    def params(self, height, width, draws):
        """The crop (top, left, height, width) and the flip of one image from its draws, None ("eval")."""
        if draws is None:
            return None
        return resized_crop_params(height, width, self.scale, draws[:10]), bool(draws[10, 0] < 0.5)

    def one(self, image, params):
        """One uint8 3 x H x W image -> float32 3 x size x size, 0-255."""
        size = self.size
        if params is None:
            height, width = image.shape[-2:]
            short, long = sorted((height, width))
            new = (self.resize, int(self.resize * long / short))  # torchvision's Resize(int) sizes
            new = new if height <= width else new[::-1]
            x = interpolate(image[None].float(), size=new, mode="bilinear", antialias=True, align_corners=False)
            top, left = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))  # CenterCrop's rounding
            return x[0, :, top:top + size, left:left + size]
        (top, left, height, width), flip = params
        crop = image[None, :, top:top + height, left:left + width].float()
        x = interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        return x.flip(-1) if flip else x

    def normalize(self, batch):
        """In place: 0-255 -> ImageNet-normalised; channels_last on CUDA."""
        batch.mul_(self.multiply).add_(self.add)
        return batch.contiguous(memory_format=torch.channels_last) if batch.is_cuda else batch


class DeviceBatches:
    """The loader of the GPU path: iterates (images, targets) like a DataLoader over `dataset` with `sampler`, the
    images a float32 B x 3 x size x size batch on `device` (ready for the network), the targets as the CPU path
    collates them. `loader` is the DataLoader of EncodedImages(dataset) that reads the files; `decode` decodes a
    list of JPEG bytes (decode_batch; a stand-in in tests). len() is the number of batches; `dataset` and `sampler`
    are the CPU loader's.

    Two threads work ahead of the network, each on a CUDA stream of its own: one decodes batch n + 1 (nvJPEG
    releases the GIL) while the other crops, resizes and normalises batch n; the network's stream waits for each
    batch on an event."""

    def __init__(self, loader, dataset, device, decode=decode_batch):
        self.loader, self.dataset, self.sampler = loader, dataset, loader.sampler
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # a new thread's current device is 0
            device = torch.device("cuda", torch.cuda.current_device())
        self.device, self.decode_jpegs = device, decode
        self.images = loader.dataset.images
        self.transform = BatchTransform(dataset.transform.spec, device)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        # like DataLoader's base seed: drawn from the run's seeded generator, once per pass
        seed = int(torch.randint(2 ** 62, (1,)).item())
        batches = iter(self.loader)  # the workers start (fork) here, in the main thread
        decoded = Stage(self.decode_packed, enumerate(batches), self.device)
        ready = Stage(lambda item: self.finish(item, seed), decoded, self.device)
        consumer = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        with decoded, ready:
            for batch, targets in ready:  # this stream has waited for the batch (Stage)
                if consumer is not None:
                    batch.record_stream(consumer)  # made on the transforming stream, read on this one
                yield batch, targets

    def decode_packed(self, item):
        """Stage 1: (batch number, (Packed, targets)) -> (batch number, [decoded image on the device], targets)."""
        number, (packed, targets) = item
        return number, self.decode(unpack(packed)), targets

    def finish(self, item, seed):
        """Stage 2: the decoded images of batch `number` -> (the transformed batch, targets)."""
        number, images, targets = item
        if self.device.type == "cuda":  # decoded on the decoding stream, read on this one: not reused before
            for image in images:
                image.record_stream(torch.cuda.current_stream(self.device))
        draws = self.transform.draws(len(images), torch.Generator().manual_seed(seed + number))
        batch = torch.empty(len(images), 3, self.transform.size, self.transform.size, device=self.device)
        for k, image in enumerate(images):
            batch[k] = self.transform.one(image, self.transform.params(*image.shape[-2:],
                                                                       None if draws is None else draws[k]))
        return self.transform.normalize(batch), targets

    def decode(self, encoded):
        """Encoded items -> upright uint8 3 x H x W images on the device, in order: the JPEGs in calls of at most
        PIXELS_PER_DECODE pixels, the others copied from the CPU; a file refused earlier in the pass on the CPU."""
        out = [None] * len(encoded)
        jpegs = []
        for k, e in enumerate(encoded):
            if e.data is None:
                out[k] = e.image.to(self.device, non_blocking=True)
            elif self.images.paths[e.index] in REFUSED:  # refused at an earlier repeat of this pass
                out[k] = as_uint8(self.images.load(e.index)).to(self.device)
            else:
                jpegs.append(k)
        start = 0
        while start < len(jpegs):
            end, pixels = start, 0
            while end < len(jpegs) and (end == start or pixels + encoded[jpegs[end]].pixels <= PIXELS_PER_DECODE):
                pixels += encoded[jpegs[end]].pixels
                end += 1
            part = [encoded[k] for k in jpegs[start:end]]
            for k, image in zip(jpegs[start:end], self.decode_jpegs_or_each(part)):
                out[k] = image
            start = end
        return out

    def decode_jpegs_or_each(self, jpegs):
        """One call for all; when it fails, each on its own, so that only the refused files leave nvJPEG."""
        try:
            images = self.decode_jpegs([e.data for e in jpegs], self.device)
        except torch.OutOfMemoryError:
            raise  # the GPU is full: not the file's fault
        except RuntimeError:
            return [self.decode_one(e) for e in jpegs]
        return [orient(image, e.orientation) for image, e in zip(images, jpegs)]

    def decode_one(self, e):
        try:
            return orient(self.decode_jpegs([e.data], self.device)[0], e.orientation)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as error:
            path = self.images.paths[e.index]
            REFUSED.add(path)  # the rest of this pass and the workers of the next passes decode it on the CPU
            reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
            warn_file(path, "nvjpeg", f"is decoded on the CPU: nvJPEG refused it ({printable(reason)})")
            return as_uint8(self.images.load(e.index)).to(self.device)


class Stage:
    """fn applied to every item of `source` in a thread of its own, PREFETCH items ahead of the reader, on a CUDA
    stream of its own when `device` is CUDA (the reader's stream waits for each result on an event). Iterate it
    once, inside `with`: leaving the block (the end, an exception, a break) stops the thread. An exception raised
    in the thread (or by `source`) is raised to the reader."""

    def __init__(self, fn, source, device):
        self.fn, self.source, self.device = fn, source, device
        self.results, self.stop = queue.Queue(PREFETCH), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        while self.thread.is_alive():  # a thread blocked on a full queue sees the stop
            try:
                self.results.get(timeout=0.1)
            except queue.Empty:
                pass
        self.thread.join()
        return False

    def __iter__(self):
        reader = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        while True:
            item = self.results.get()
            if item is None:
                return
            if isinstance(item[0], BaseException):
                raise item[0]
            result, done = item
            if reader is not None:
                reader.wait_event(done)
            yield result

    def _put(self, item):
        while not self.stop.is_set():
            try:
                self.results.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def _run(self):
        try:
            stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
            with torch.no_grad(), (torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()):
                for item in self.source:
                    if self.stop.is_set():
                        return
                    result = self.fn(item)
                    if not self._put((result, stream.record_event() if stream is not None else None)):
                        return
            self._put(None)
        except BaseException as e:  # to the reader, which raises it
            self._put((e, None))
