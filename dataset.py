"""ClusterDataset: an ImageFolder-style tree read in a fixed order, with bad files skipped.

Layout: ROOT/<class>/<image>; the folder names are labels for reporting only and are
never used for training. A flat folder of images (no class folders) works too; then
there are no labels. Every image is converted to RGB.

Decoding: a JPEG of about the network's size is decoded by torchvision's decode_jpeg into a
uint8 tensor and transformed as a tensor (torchvision.transforms.v2); every other file (other
formats, photos many times larger than decode_side, CMYK) is decoded by Pillow and transformed
as a PIL image, as before. `decode_file` makes the choice, `eval_transform` and
`train_transform` take either kind.
"""
import collections
import concurrent.futures
import hashlib
import multiprocessing
import os
import signal
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F2
from tqdm import tqdm

from errors import DataError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
PRED_MANIFEST = ".pred_manifest.json"  # the mark of a folder written by pred.py: never scanned for images
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
JPEG_MAGIC = b"\xff\xd8\xff"
HEADER_BYTES = 65536  # read to find a JPEG's frame header (an EXIF segment is at most 64 KB); beyond: Pillow's path
# Pillow's draft mode decodes a JPEG at 1/2, 1/4 or 1/8 scale (DCT scaling); from 1/4 on it is faster than
# decode_jpeg at full scale plus a resize, below it slower (measured per size: docs/performance.md)
DRAFT_MIN_SCALE = 4
PARALLEL_CHECK_MIN = 256  # fewer images are checked in the main process: starting workers would cost more


def is_image_file(name):
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def to_rgb(img):
    """Any PIL mode (L, P, RGBA, CMYK, I;16, I, F, LA ...) to 8-bit RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit single channel: rescale the full range to 0..255
        arr = np.asarray(img, dtype=np.float64)
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
        rgb = to_rgb(ImageOps.exif_transpose(img))
    if megapixels:
        warnings.warn(f"'{printable(path)}' has {megapixels:.3g} megapixels: decoded at a reduced scale")
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
    i = 2
    while i + 10 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # a fill byte
            i += 1
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOF0-15; C4, C8, CC are not frames
            width, height = int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big")
            return (width, height, data[i + 9]) if width and height else None
        else:
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


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
    with open(path, "rb") as f:
        data = bytearray(f.read(HEADER_BYTES))
        header = jpeg_header(data) if data.startswith(JPEG_MAGIC) else None
        if header is None or header[2] not in (1, 3) or draft_scale(header[:2], side) >= DRAFT_MIN_SCALE:
            header = None
        elif Image.MAX_IMAGE_PIXELS and header[0] * header[1] > Image.MAX_IMAGE_PIXELS:
            header = None  # Pillow's decompression-bomb rules
        else:
            data += f.read()
    if header is None:
        return load_image(path, side)
    try:
        return jpeg_tensor(data, side)
    except RuntimeError:  # what libjpeg-turbo refuses through torchvision, Pillow decodes or rejects
        return load_image(path, side)


def as_pil(img):
    """A decoded image (PIL image or uint8 3 x H x W tensor, as ClusterDataset.load returns it) as a PIL image."""
    return transforms.functional.to_pil_image(img) if isinstance(img, torch.Tensor) else img


def image_nbytes(img):
    """Bytes of pixel data a decoded image holds in the cache: a tensor's elements, or a PIL image's
    width x height x bands."""
    if isinstance(img, torch.Tensor):
        return img.numel() * img.element_size()
    return img.width * img.height * len(img.getbands())


def _identity(path):
    """(device, inode) of what path points to: the same for every link to one real file or folder."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


class _Scan:
    """One walk over a tree that lists every real image file once.

    Links are followed, but a folder that is an ancestor of where it is linked (a loop), a folder
    or file reached before under another name, and the `exclude` folders (a run's own outputs
    inside the tree) are skipped; `notes` says what was skipped and why.
    """

    def __init__(self, exclude=()):
        self.seen_dirs, self.seen_files, self.notes = set(), set(), []
        self.exclude = {_identity(p) for p in exclude if p and os.path.isdir(p)}

    def enter(self, path, ancestors):
        """The identity of folder `path` when it should be walked, else None (and a note)."""
        try:
            ident = _identity(path)
        except OSError as e:
            self.notes.append(f"'{printable(path)}': {e.strerror or e}")
            return None
        ours = ident in self.exclude or os.path.exists(os.path.join(path, PRED_MANIFEST))
        reason = ("a link back to a folder that contains it" if ident in ancestors
                  else "an output folder of this project" if ours
                  else "a second path to a folder already scanned" if ident in self.seen_dirs else None)
        if reason:
            self.notes.append(f"'{printable(path)}' skipped: {reason}")
            return None
        self.seen_dirs.add(ident)
        return ident

    def files(self, top, label, ancestors, samples):
        """Image files below folder `top` (its own files first, then its sub-folders, sorted), depth-first."""
        stack = [(top, ancestors)]
        while stack:
            path, chain = stack.pop()
            try:
                names = sorted(os.listdir(path))
            except OSError as e:
                self.notes.append(f"'{printable(path)}' skipped: {e.strerror or e}")
                continue
            subdirs = []
            for name in names:
                full = os.path.join(path, name)
                if name.startswith("."):
                    continue
                if os.path.isdir(full):
                    subdirs.append(full)
                elif is_image_file(name) and self.first_visit(full):
                    samples.append((full, label))
            for sub in reversed(subdirs):
                ident = self.enter(sub, chain)
                if ident is not None:
                    stack.append((sub, chain | {ident}))

    def first_visit(self, path):
        try:
            ident = _identity(path)
        except OSError:  # a broken link: listed, and dropped by the decode check like any unreadable file
            return True
        if ident in self.seen_files:
            self.notes.append(f"'{printable(path)}' skipped: a second path to an image already listed")
            return False
        self.seen_files.add(ident)
        return True


def scan_tree(root, exclude=(), log=None):
    """Sorted (path, class_index) pairs and class names of ROOT/<class>/<image> or a flat folder.

    Hidden files and folders and files without an image extension are skipped; every real file
    is listed once however many links lead to it (see _Scan); `log` gets one line per skip.
    """
    if not os.path.exists(root):
        raise DataError(f"dataset path '{printable(root)}' does not exist")
    if not os.path.isdir(root):
        raise DataError(f"dataset path '{printable(root)}' is not a folder")
    scan = _Scan(exclude)
    top = {scan.enter(root, set())} - {None}
    if not top:
        raise DataError(f"dataset path '{printable(root)}' is {scan.notes[-1].split(' skipped: ')[-1]}")
    entries = sorted(e for e in os.listdir(root) if not e.startswith("."))
    class_dirs = [e for e in entries if os.path.isdir(os.path.join(root, e))]
    flat_files = [e for e in entries if is_image_file(e) and os.path.isfile(os.path.join(root, e))]
    if class_dirs and flat_files:
        warnings.warn(f"{printable(root)}: {len(flat_files)} images lie beside class folders and are ignored")
    samples, classes = [], []
    if class_dirs:
        walkable = [(name, scan.enter(os.path.join(root, name), top)) for name in class_dirs]
        for name, ident in walkable:
            if ident is not None:
                scan.files(os.path.join(root, name), len(classes), top | {ident}, samples)
                classes.append(name)
    else:
        samples = [(os.path.join(root, e), -1) for e in flat_files if scan.first_visit(os.path.join(root, e))]
    for note in scan.notes:
        (log or warnings.warn)(f"scan: {note}")
    return classes_with_images(samples, classes)


def classes_with_images(samples, classes):
    """(samples, classes) without the class folders that hold no image (an empty folder, or one whose files
    were all dropped): labels are renumbered in the same order, so every count of classes is of real classes."""
    used = sorted({label for _, label in samples if label >= 0})
    if len(used) == len(classes):
        return samples, classes
    new = {old: i for i, old in enumerate(used)}
    return [(path, new.get(label, label)) for path, label in samples], [classes[old] for old in used]


def printable(text):
    """A path or message as valid UTF-8 text: bytes of a file name that are not UTF-8 (which Python
    holds as surrogate escapes) become \\xNN, so that logs, CSV files and terminals never fail on them."""
    text = str(text)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no file name produced
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _try_load(path, side, decoder):
    """(image, None), or (None, why the file is skipped)."""
    try:
        return decode_file(path, side, decoder), None
    except ImageTooLarge as e:
        return None, str(e)
    except Exception:  # any decoder failure means "skip this file"
        return None, "not a readable image"


def usable_cores():
    """The CPU cores this process may run on (its affinity where the platform tells it, else all of them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


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
    """In a check worker: ([(image, why or None, bytes)] for `paths`, pixels, [(warning text, category)]).
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
    return out, pixels, [(str(w.message), w.category) for w in caught]


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
            for message, category in caught:
                warnings.warn(message, category)
            yield from _unpack_chunk(results, pixels, keep)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class ClusterDataset(Dataset):
    """Images of a folder tree in sorted order; item i is (image, i).

    Items return their own index rather than a label so that callers can never pair an
    image with someone else's pseudo-label; ground-truth labels are in `self.labels`.
    Files that do not decode are dropped at construction with one warning each; that check
    decodes in `check_workers` processes (-1: one per core), and the kept list does not depend on
    how many. With cache_mb > 0 the images decoded by that check are kept in memory (the bytes of
    their pixels, see image_nbytes) until cache_mb is used up, so small images are decoded once
    per run, not once per pass; DataLoader workers inherit the cache when they fork.
    `jpeg_decoder` "auto" decodes JPEGs of about the network's size with decode_jpeg, "pil" every
    file with Pillow (decode_file).
    """

    def __init__(self, root, transform=None, check_images=True, log=print, cache_mb=0, verbose=False, exclude=(),
                 decode_side=0, jpeg_decoder="auto", check_workers=-1):
        self.transform = transform
        self.decode_side = decode_side
        self.jpeg_decoder = jpeg_decoder
        samples, self.classes = scan_tree(root, exclude, log)
        if not samples:
            raise DataError(f"no images found under '{printable(root)}' (extensions: {', '.join(IMG_EXTENSIONS)})")
        self.skipped = []
        self._cache = {}
        if check_images:
            kept = self._check(samples, cache_mb * 2**20, check_worker_count(check_workers), log, verbose)
            samples, self.classes = classes_with_images(kept, self.classes)
        if not samples:
            raise DataError(f"none of the {len(self.skipped)} image files under '{printable(root)}' could be decoded")
        self.paths = [p for p, _ in samples]
        self.labels = np.array([label for _, label in samples], dtype=np.int64)
        self._warned = set()

    def _check(self, samples, budget, workers, log, verbose):
        """The samples whose file decodes; the others go to self.skipped with one warning each. The decoded
        images fill the cache in the order of the samples while they fit `budget` bytes."""
        kept = []
        results = decode_all([p for p, _ in samples], self.decode_side, self.jpeg_decoder, workers, budget)
        bar = tqdm(zip(samples, results), total=len(samples), desc="checking images", leave=False,
                   disable=not verbose or None)
        for (path, label), (why, img) in bar:
            if why is not None:
                self.skipped.append(path)
                log(f"warning: skipping '{printable(path)}': {why}")
                continue
            kept.append((path, label))
            if img is not None:
                self._cache[path] = img
        return kept

    def subset(self, indices):
        """A ClusterDataset of the given images only, in the given order (same transform, same classes)."""
        indices = np.asarray(indices, dtype=np.int64)
        sub = object.__new__(ClusterDataset)
        sub.__dict__.update(self.__dict__)
        sub.paths = [self.paths[i] for i in indices]
        sub.labels = self.labels[indices]
        sub.skipped, sub._warned = [], set()
        return sub

    @property
    def has_labels(self):
        return bool(self.classes)

    def __len__(self):
        return len(self.paths)

    def load(self, index):
        """The decoded RGB image (decode_file): a uint8 tensor 3 x H x W for a JPEG that decode_jpeg decoded,
        else a PIL image (as_pil turns either into a PIL image); a file that went bad after the scan gives a
        black 8 x 8 PIL image and one warning."""
        path = self.paths[index]
        cached = self._cache.get(path)
        if cached is not None:
            return cached
        try:
            return decode_file(path, self.decode_side, self.jpeg_decoder)
        except Exception as e:  # never kill a long run for one file
            if path not in self._warned:
                self._warned.add(path)
                warnings.warn(f"'{printable(path)}' could not be decoded ({e}); using a black image")
            return Image.new("RGB", (8, 8))

    def __getitem__(self, index):
        img = self.load(index)
        if self.transform is not None:
            img = self.transform(img)
        return img, index


def file_identities(paths):
    """(device, inode) of every path's real file (the path itself when it cannot be read): the same for every
    name of one file, so that two lists of images can be compared however they were reached."""
    out = []
    for path in paths:
        try:
            out.append(_identity(path))
        except OSError:
            out.append(os.path.abspath(path))
    return out


def training_images_among(paths, c):
    """How many of `paths` (images to predict on) are images the run trained on: those of dataset_path's tree when
    test_path is set (with test_path "" the test images are the held-out val_split, none of them trained on).
    None when the training tree cannot be read any more."""
    if not c["test_path"]:
        return 0
    try:
        samples, _ = scan_tree(c["dataset_path"], (c["exp_dir"], c["pred_dir"]), log=lambda message: None)
    except DataError:
        return None
    trained = set(file_identities(p for p, _ in samples))
    return sum(ident in trained for ident in file_identities(paths))


def file_fingerprint(paths, root):
    """A SHA-256 hex digest of the image files' paths relative to root, in their (sorted) order: the same
    images give the same digest wherever the tree was moved, any added, removed or renamed file another."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(os.fsencode(os.path.relpath(path, root)) + b"\0")
    return digest.hexdigest()


def split_indices(labels, fraction, seed):
    """(train, held_out) indices: `fraction` of every class held out (at least one image of a class
    with two or more), chosen with a seeded permutation; both lists sorted."""
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n_out = int(round(fraction * len(members)))
        if fraction > 0 and len(members) > 1:
            n_out = min(max(n_out, 1), len(members) - 1)
        held.extend(rng.permutation(members)[:n_out].tolist())
    held = np.array(sorted(held), dtype=np.int64)
    return np.setdiff1d(np.arange(len(labels)), held), held


def decode_side(c):
    """The short side images are reduced to when decoded: decode_side, or 4 x input_size (0 = auto), which
    leaves even the smallest default RandomResizedCrop (8% of the area, 0.28 of a side) at full resolution."""
    return c["decode_side"] or 4 * c["input_size"]


def open_split(c, part, transform=None, log=print):
    """The images of one part of the configured data: "train" or "test".

    With a test_path, "train" is the whole dataset_path tree and "test" the test_path tree.
    With test_path "", val_split of every class of dataset_path is held out: "test" is that
    held-out part and "train" the rest, the same split in train.py, pred.py and eval_linear.py.
    """
    options = {"log": log, "cache_mb": c["cache_mb"], "verbose": c["verbose"], "check_images": c["check_images"],
               "exclude": (c["exp_dir"], c["pred_dir"]),  # a run's outputs inside the tree are not images to use
               "decode_side": decode_side(c), "jpeg_decoder": c["jpeg_decoder"],
               "check_workers": c["check_workers"]}
    if c["test_path"] and part == "test":
        return ClusterDataset(c["test_path"], transform, **options)
    full = ClusterDataset(c["dataset_path"], transform, **options)
    if c["test_path"] or c["val_split"] == 0:
        if part == "test":
            raise DataError("no test images: set test_path, or leave it empty and set val_split > 0")
        return full
    train_idx, held_idx = split_indices(full.labels, c["val_split"], c["seed"])
    return full.subset(train_idx if part == "train" else held_idx)


class PseudoLabelDataset(Dataset):
    """Image i of the ORIGINAL dataset paired with ITS OWN cluster assignment[i].

    Built from the base ClusterDataset every epoch, never from an earlier epoch's
    pseudo-label set, so a label can only ever point at the image it was computed for.
    """

    def __init__(self, base, assignment, transform):
        if not isinstance(base, ClusterDataset):
            raise TypeError("PseudoLabelDataset needs the original ClusterDataset, not a derived dataset")
        assignment = np.asarray(assignment, dtype=np.int64)
        if assignment.shape != (len(base),):
            raise ValueError(f"assignment has shape {assignment.shape}, the dataset has {len(base)} images")
        self.base = base
        self.assignment = assignment
        self.transform = transform

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        img = self.base.load(index)
        return self.transform(img), int(self.assignment[index])


class Transform:
    """One transform for both kinds of decoded image (decode_file): `pil` for a PIL image (torchvision.transforms,
    exactly as before decode_jpeg was used, so PNG trees give the same tensors bit for bit) and `tensor` for a
    uint8 3 x H x W tensor (torchvision.transforms.v2 on the tensor). Either gives a float32 3 x size x size
    tensor, ImageNet-normalised."""

    def __init__(self, pil, tensor):
        self.pil, self.tensor = pil, tensor

    def __call__(self, img):
        return self.tensor(img) if isinstance(img, torch.Tensor) else self.pil(img)


class NormalizeUint8:
    """uint8 C x H x W (any memory layout) -> float32 C x H x W, contiguous, (x / 255 - mean) / std per channel
    (ImageNet's mean and std): v2.ToDtype(scale=True) + Normalize in one conversion and two in-place passes,
    about 3x faster on one core than the three passes and the copy they need (v2's antialiased uint8 resize
    returns a channels-last view). The input, which may be the cached image, is never written."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = -torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1) / std

    def __call__(self, image):
        return image.to(torch.float32, memory_format=torch.contiguous_format).mul_(self.scale).add_(self.shift)


def eval_transform(size):
    """The reference's Resize(256) + CenterCrop(224), scaled to `size` (a Transform: PIL image or uint8 tensor in,
    float32 3 x size x size out)."""
    resize = int(round(size * 256 / 224))
    return Transform(
        transforms.Compose([
            transforms.Resize(resize),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]),
        v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(size), NormalizeUint8()]))


def train_transform(size, scale_min=0.08):
    """The reference's RandomResizedCrop + horizontal flip + ImageNet normalisation (a Transform: PIL image or
    uint8 tensor in, float32 3 x size x size out)."""
    return Transform(
        transforms.Compose([
            transforms.RandomResizedCrop(size, scale=(scale_min, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]),
        v2.Compose([v2.RandomResizedCrop(size, scale=(scale_min, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                    NormalizeUint8()]))


def seed_worker(worker_id):
    """Give numpy and python in DataLoader workers seeds derived from torch's per-worker seed."""
    import random
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
