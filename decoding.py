"""Decoding an image file, and the start-up check that decodes every file of a tree once.

Decoding: a JPEG of about the network's size is decoded by torchvision's decode_jpeg into a
uint8 tensor; every other file (other formats, photos many times larger than decode_side, CMYK)
is decoded by Pillow into an RGB PIL image. `decode_file` makes the choice; dataset.py's
transforms take either kind.

The start-up check (`decode_all`) decodes every listed file once, in one forked process per
core for large sets, so that files which do not decode are dropped before training and small
images can be cached.
"""
import collections
import concurrent.futures
import contextlib
import multiprocessing
import os
import signal
import sys
import tempfile
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import transforms
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2 import functional as F2

from distributed import usable_cores
from errors import printable

JPEG_MAGIC = b"\xff\xd8\xff"
HEADER_BYTES = 65536  # read to find a JPEG's frame header (an EXIF segment is at most 64 KB); beyond: Pillow's path
# Pillow's draft mode decodes a JPEG at 1/2, 1/4 or 1/8 scale (DCT scaling); from 1/4 on it is faster than
# decode_jpeg at full scale plus a resize, below it slower (measured per size: docs/performance.md)
DRAFT_MIN_SCALE = 4
PARALLEL_CHECK_MIN = 256  # fewer images are checked in the main process: starting workers would cost more


class FileWarning(UserWarning):
    """A warning about one image file (`path`), raised once per file and `kind` in a process and the processes it
    forks after (see warn_file), so that a damaged file is named once, not on every decode of every epoch."""

    def __init__(self, path, kind, text):
        super().__init__(f"'{printable(path)}' {text}")
        self.path, self.kind, self.text = path, kind, text

    def __reduce__(self):  # from a check worker to the main process
        return FileWarning, (self.path, self.kind, self.text)


_warned = set()  # (path, kind) of the file warnings raised; DataLoader workers fork with it


def warn_file(path, kind, text):
    """One FileWarning "'<path>' <text>" unless this process already raised one of that kind for that file."""
    if (path, kind) not in _warned:
        _warned.add((path, kind))
        warnings.warn(FileWarning(path, kind, text), stacklevel=2)


def to_rgb(img, path=None):
    """Any PIL mode (L, P, RGBA, CMYK, I;16, I, F, LA ...) to 8-bit RGB.

    16/32-bit and float single-channel images are rescaled from their range to 0..255. Pixels that are not
    finite (NaN or +-inf: nodata in scientific and satellite TIFFs) are missing values: the range is that of the
    finite pixels and the others take its minimum (0), with one warning naming `path` (warn_file)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        ok = np.isfinite(arr)
        if not ok.all():
            missing = arr.size - int(ok.sum())
            warn_file(path or "image", "nonfinite", f"has {missing} of {arr.size} pixels NaN or infinite: "
                      "treated as missing (set to the minimum of the others)")
            arr = np.where(ok, arr, arr[ok].min() if ok.any() else 0.0)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


class ImageTooLarge(ValueError):
    """Above Pillow's decompression-bomb limit and not a JPEG that can be decoded at a reduced scale."""


def open_image(path):
    """Image.open, with files above Pillow's decompression-bomb limit opened lazily (header only) too;
    returns (image, megapixels when above the limit else None)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path), None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            img = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit
        return img, img.width * img.height / 1e6


def _draft_request(size, side):
    """The (width, height) asked of Pillow's draft mode for an image of `size` reduced to a short side of
    `side`: one pixel more than the reduced size, so that the draft stays at least as large."""
    scale = side / min(size)
    return int(size[0] * scale) + 1, int(size[1] * scale) + 1


def draft_scale(size, side):
    """The factor (1, 2, 4 or 8) by which Pillow's draft mode decodes a JPEG of `size` (width, height) that is
    reduced to a short side of `side` pixels, as JpegImagePlugin.draft computes it; 1 when side is 0 or not
    below the short side."""
    if not side or side >= min(size):
        return 1
    wanted = _draft_request(size, side)
    scale = min(size[0] // wanted[0], size[1] // wanted[1])
    return next(s for s in (8, 4, 2, 1) if scale >= s)


def reduced_size(size, side):
    """(width, height) of an image of `size` (width, height) with its short side reduced to `side` pixels."""
    scale = side / min(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def load_image(path, side=0):
    """The image decoded by Pillow as an RGB PIL image, upright (EXIF orientation applied), its short side
    reduced to `side` pixels when it is larger (side 0: full size). A JPEG is decoded at a reduced scale
    directly (Pillow's draft mode), so a 12-megapixel photo costs a fraction of a full decode.
    Raises ImageTooLarge above Pillow's decompression-bomb limit (unless a JPEG reduced), OSError or
    PIL.UnidentifiedImageError for a file that does not decode."""
    img, megapixels = open_image(path)
    with img:
        if megapixels and not (side and img.format == "JPEG"):
            raise ImageTooLarge(f"{megapixels:.3g} megapixels, above Pillow's decompression-bomb limit "
                                f"({Image.MAX_IMAGE_PIXELS / 1e6:.0f}); only JPEGs that large are decoded (reduced)")
        if side and img.format == "JPEG" and side < min(img.size):
            img.draft(img.mode, _draft_request(img.size, side))  # stays >= the request
        img.load()
        rgb = to_rgb(ImageOps.exif_transpose(img), path)
    if megapixels:
        warn_file(path, "megapixels", f"has {megapixels:.3g} megapixels: decoded at a reduced scale")
    if side and min(rgb.size) > side:
        rgb = rgb.resize(reduced_size(rgb.size, side), Image.BILINEAR, reducing_gap=2.0)
    return rgb


def jpeg_tensor(data, side=0):
    """A JPEG's bytes decoded by torchvision's decode_jpeg (libjpeg-turbo): a uint8 tensor of shape
    3 x H x W, RGB (grayscale and CMYK converted), upright (EXIF orientation applied), its short side
    reduced to `side` pixels with an antialiased bilinear resize when it is larger (side 0: full size).
    Raises RuntimeError for data that decode_jpeg cannot decode (truncated, corrupt, not a JPEG)."""
    data = data if isinstance(data, bytearray) else bytearray(data)  # torch.frombuffer wants a writable buffer
    image = decode_jpeg(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB, apply_exif_orientation=True)
    if side and min(image.shape[1:]) > side:
        height, width = image.shape[1:]
        scale = draft_scale((width, height), side)  # the size is computed from the draft Pillow would decode, as
        drafted = (-(-width // scale), -(-height // scale))  # load_image does (libjpeg rounds a scaled side up)
        width, height = reduced_size(drafted, side)
        image = F2.resize(image, [height, width], antialias=True).contiguous()
    return image


def jpeg_header(data):
    """(width, height, colour components) from the frame header (SOF marker) of a JPEG's bytes, or None when
    the markers before it cannot be followed. Pillow's header parse costs about as much as decoding a
    64 x 64 JPEG; this reads the few bytes the choice of decoder needs."""
    info = jpeg_info(data, exif=False)
    return info and info[:3]


def jpeg_info(data, exif=True):
    """(width, height, colour components, EXIF orientation 1-8, frame marker) of a JPEG's bytes, read from the
    markers up to the frame header (SOF; the marker 0xC0 for a baseline JPEG, 0xC2 progressive ...); None when
    they cannot be followed. The orientation is 1 (upright) without an EXIF segment, or with exif False (not
    read); it is read by Pillow's EXIF parser from the first APP1 EXIF segment only, so no pixel is decoded."""
    i, orientation = 2, None
    while i + 10 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # a fill byte
            i += 1
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOF0-15; C4, C8, CC are not frames
            width, height = int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
            return (width, height, data[i + 9], orientation or 1, marker) if width and height else None
        else:
            length = int.from_bytes(data[i + 2:i + 4], "big")
            if exif and marker == 0xE1 and orientation is None and data[i + 4:i + 10] == b"Exif\0\0":
                orientation = exif_orientation(bytes(data[i + 4:i + 2 + length]))
            i += 2 + length
    return None


def exif_orientation(segment):
    """The orientation tag (0x0112, 1-8) of an APP1 EXIF segment's payload (starting b"Exif\\0\\0"); 1 when it
    has none or cannot be parsed (the image is then taken as upright, as Pillow's exif_transpose does)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's "Corrupt EXIF data" / "Metadata Warning": nothing to act on
            value = Image.Exif()
            value.load(segment)
            orientation = int(value.get(0x0112, 1))
    except Exception:  # a damaged EXIF block never stops a decode
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def orient(image, orientation):
    """A C x H x W tensor turned upright by its EXIF orientation (1-8), as PIL.ImageOps.exif_transpose turns the
    same pixels: 2 mirror, 3 half turn, 4 flip, 5 transpose, 6 a quarter turn clockwise, 7 transverse, 8 a
    quarter turn counter-clockwise. nvJPEG decodes without it (torchvision applies EXIF on the CPU only)."""
    if orientation >= 5:
        image = image.transpose(-1, -2)  # 5; 6, 7, 8 add a flip of the transposed pixels
    if orientation in (2, 3, 6, 7):
        image = image.flip(-1)
    if orientation in (3, 4, 7, 8):
        image = image.flip(-2)
    return image


def tensor_jpeg_bytes(path, side=0):
    """The whole file's bytes (a bytearray) when it is a JPEG that decode_jpeg takes in decode_file's "auto" rule: a
    grayscale or colour (3-component) JPEG that Pillow's draft mode would decode at more than 1/DRAFT_MIN_SCALE of
    its size for a short side of `side`, within Pillow's decompression-bomb limit; else None (after reading at
    most HEADER_BYTES). Raises OSError when the file cannot be read."""
    with open(path, "rb") as f:
        data = bytearray(f.read(HEADER_BYTES))
        header = jpeg_header(data) if data.startswith(JPEG_MAGIC) else None
        if header is None or header[2] not in (1, 3) or draft_scale(header[:2], side) >= DRAFT_MIN_SCALE:
            return None
        if Image.MAX_IMAGE_PIXELS and header[0] * header[1] > Image.MAX_IMAGE_PIXELS:
            return None  # Pillow's decompression-bomb rules
        return data + f.read()


def decode_file(path, side=0, decoder="auto"):
    """The image at `path`, RGB, upright (EXIF orientation applied), its short side reduced to `side`
    pixels when it is larger (side 0: full size), as one of two kinds:

    - a uint8 tensor 3 x H x W (jpeg_tensor) for a grayscale or colour (3-component) JPEG that Pillow's draft
      mode would decode at more than 1/DRAFT_MIN_SCALE of its size, when decoder is "auto";
    - an RGB PIL image (load_image) for every other file: other formats, CMYK JPEGs, photos at least
      DRAFT_MIN_SCALE times larger than `side` (Pillow's reduced decode is faster there), files above
      Pillow's decompression-bomb limit, a JPEG that decode_jpeg refuses, and every file with decoder "pil".

    Raises what load_image raises for a file that does not decode."""
    if decoder == "pil":
        return load_image(path, side)
    data = tensor_jpeg_bytes(path, side)
    if data is None:
        return load_image(path, side)
    try:
        with libjpeg_messages() as messages:
            image = jpeg_tensor(data, side)
    except RuntimeError:  # what libjpeg-turbo refuses through torchvision, Pillow decodes or rejects
        return load_image(path, side)
    if messages:
        warn_file(path, "libjpeg", f"is damaged but decodes (libjpeg: {'; '.join(messages)})")
    return image


class _StderrCapture:
    """The file that fd 2 points to while libjpeg_messages is active: one temporary file per process, reused."""
    file = None
    pid = None


@contextlib.contextmanager
def libjpeg_messages():
    """Collects what libjpeg writes to the process's stderr (fd 2) inside the block: its warnings ("Corrupt JPEG
    data: 3 extraneous bytes before marker 0xd9", "Premature end of JPEG file") carry no file name, and
    torchvision's decode_jpeg prints them on every decode. Yields a list, filled when the block ends with the
    lines written (stripped). The block holds only one decode: Python's own buffered stderr is flushed before."""
    messages = []
    if _StderrCapture.pid != os.getpid():
        _StderrCapture.file, _StderrCapture.pid = tempfile.TemporaryFile(), os.getpid()
    capture = _StderrCapture.file
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no fd 2 here: nothing to collect
        yield messages
        return
    os.dup2(capture.fileno(), 2)
    try:
        yield messages
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        size = os.lseek(capture.fileno(), 0, os.SEEK_END)
        if size:
            os.lseek(capture.fileno(), 0, os.SEEK_SET)
            text = os.read(capture.fileno(), size).decode("utf-8", "replace")
            capture.truncate(0)
            os.lseek(capture.fileno(), 0, os.SEEK_SET)
            messages.extend(line.strip() for line in text.splitlines() if line.strip())


def as_pil(img):
    """A decoded image (PIL image or uint8 3 x H x W tensor, as ClusterDataset.load returns it) as a PIL image."""
    return transforms.functional.to_pil_image(img) if isinstance(img, torch.Tensor) else img


def image_nbytes(img):
    """Bytes of pixel data a decoded image holds in the cache: a tensor's elements, or a PIL image's
    width x height x bands."""
    if isinstance(img, torch.Tensor):
        return img.numel() * img.element_size()
    return img.width * img.height * len(img.getbands())


def _try_load(path, side, decoder):
    """(image, None), or (None, why the file is skipped)."""
    try:
        return decode_file(path, side, decoder), None
    except ImageTooLarge as e:
        return None, str(e)
    except Exception:  # any decoder failure means "skip this file"
        return None, "not a readable image"


def check_worker_count(n):
    """Processes that decode the images at start-up (cfg check_workers): n, or with -1 one per core this
    process may use, shared among the processes of a torchrun node (LOCAL_WORLD_SIZE); 0 and 1 both mean
    the main process alone."""
    if n >= 0:
        return n
    return max(1, usable_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1)))


def _init_check_worker():
    torch.set_num_threads(1)  # one process per core already
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the main process, which stops the pool


def _shared_memory_free():
    """Bytes free in /dev/shm, where torch puts the shared memory that workers hand over (0 when there is none)."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _check_chunk(paths, side, decoder, room, shm_free):
    """In a check worker: ([(image, why or None, bytes)] for `paths`, pixels, [(warning, category)]).
    An image travels back only when its bytes fit `room` (what the cache had left when the chunk was sent:
    it can only have shrunk since), else it is None; a PIL image as itself (pickled), a tensor as its shape,
    its pixels in `pixels`: one uint8 tensor holding the chunk's tensors in order, in shared memory when it
    takes at most half of `shm_free` (it then reaches the main process without a copy, as DataLoader
    workers hand over their batches), else a numpy array that travels pickled."""
    out, tensors = [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", DeprecationWarning)
        for path in paths:
            img, why = _try_load(path, side, decoder)
            nbytes = 0 if img is None else image_nbytes(img)
            if img is not None and nbytes > room:
                img = None
            elif isinstance(img, torch.Tensor):
                tensors.append(img.flatten())
                img = tuple(img.shape)
            out.append((img, why, nbytes))
    pixels = None
    if tensors:
        total = sum(t.numel() for t in tensors)
        if total <= shm_free // 2:
            pixels = tensors[0].new(tensors[0]._typed_storage()._new_shared(total, device="cpu")).resize_(total)
            torch.cat(tensors, out=pixels)
        else:  # a small /dev/shm (as in a default Docker container) is left to DataLoader's batches
            pixels = torch.cat(tensors).numpy()
    return out, pixels, [(w.message, w.category) for w in caught]


def _unpack_chunk(results, pixels, keep):
    """(why, image to cache or None) of a chunk's images, in order; keep(image, bytes) decides what is cached.
    Cached tensors are views of the chunk's shared pixels when all of them are cached, else copies (so that
    a few cached images never hold a whole chunk's memory)."""
    rows, at = [], 0
    pixels = torch.from_numpy(pixels) if isinstance(pixels, np.ndarray) else pixels
    for img, why, nbytes in results:
        shared = isinstance(img, tuple)
        if shared:
            img, at = pixels[at:at + nbytes].view(img), at + nbytes
        rows.append((why, keep(img, nbytes), shared))
    whole = all(cached is not None for _, cached, shared in rows if shared)
    for why, cached, shared in rows:
        yield why, (cached.clone() if shared and cached is not None and not whole else cached)


def allow_open_files(n):
    """Raise this process's soft limit of open files (often 1,024) by n, within the hard limit: the cached
    pixels of each chunk of the start-up check stay in their shared-memory segment, which holds one file
    descriptor while the cache views it. Nothing happens where the limit cannot be read or raised."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY:
            want = soft + n + 64
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))
    except (ImportError, ValueError, OSError):  # not on this platform, or not allowed
        pass


def decode_all(paths, side, decoder, workers, budget=0):
    """(why the file is skipped or None, its decoded image to cache or None) for every path, in the order of
    `paths`, whatever the number of workers: images are cached in that order while their bytes fit `budget`.

    With workers > 1 and at least PARALLEL_CHECK_MIN paths the files are decoded in chunks by that many
    forked processes (a few chunks in flight). An image travels back only when it fits what the budget had
    left when its chunk was sent, so that a full cache costs no transfer; warnings of the workers are
    raised again here."""
    room = [budget]

    def keep(img, nbytes):
        if img is None or nbytes > room[0]:
            return None
        room[0] -= nbytes
        return img
    if workers <= 1 or len(paths) < PARALLEL_CHECK_MIN or "fork" not in multiprocessing.get_all_start_methods():
        for path in paths:
            img, why = _try_load(path, side, decoder)
            yield why, keep(img, 0 if img is None else image_nbytes(img))
        return
    size = max(16, min(256, len(paths) // (16 * workers)))
    chunks = [paths[i:i + size] for i in range(0, len(paths), size)]
    allow_open_files(len(chunks))
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                                  initializer=_init_check_worker)
    pending, sent, done = collections.deque(), 0, 0
    try:
        while done < len(chunks):
            while sent < len(chunks) and len(pending) < 2 * workers:
                pending.append(pool.submit(_check_chunk, chunks[sent], side, decoder, room[0],
                                           _shared_memory_free()))
                sent += 1
            try:
                results, pixels, caught = pending.popleft().result()
            except concurrent.futures.process.BrokenProcessPool:  # a worker was killed: go on here
                warnings.warn("a process checking images ended abruptly; checking the rest in the main process")
                yield from decode_all(paths[done * size:], side, decoder, 1, room[0])
                return
            done += 1
            for message, category in caught:  # a FileWarning is marked as raised here too (warn_file)
                if isinstance(message, FileWarning):
                    _warned.add((message.path, message.kind))
                warnings.warn(message, category)
            yield from _unpack_chunk(results, pixels, keep)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
