"""ClusterDataset: an ImageFolder-style tree read in a fixed order, with bad files skipped.

Layout: ROOT/<class>/<image>; the folder names are labels for reporting only and are
never used for training. A flat folder of images (no class folders) works too; then
there are no labels. Every image is converted to RGB.

Images are decoded by decoding.py: a uint8 tensor for a JPEG that decode_jpeg decoded,
transformed as a tensor (torchvision.transforms.v2), else an RGB PIL image transformed as
before; `eval_transform` and `train_transform` take either kind.
"""
import hashlib
import os
import warnings

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.transforms import v2

import cfg
from decoding import check_worker_count, decode_all, decode_file
from errors import DataError, printable
from progress import Bar

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
PRED_MANIFEST = ".pred_manifest.json"  # the mark of a folder written by pred.py: never scanned for images
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def is_image_file(name):
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


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


def scan_tree(root, exclude=(), log=None, what="dataset path"):
    """Sorted (path, class_index) pairs and class names of ROOT/<class>/<image>, a flat folder, or one image file
    (then [(root, -1)] and no classes).

    Hidden files and folders and files without an image extension are skipped; every real file
    is listed once however many links lead to it (see _Scan); `log` gets one line per skip. `what` names the
    setting root came from in the DataError of a path that does not exist or is neither a folder nor an image.
    """
    if not os.path.exists(root):
        raise DataError(f"{what} '{printable(root)}' does not exist")
    if not os.path.isdir(root):
        if not is_image_file(os.path.basename(root)):
            raise DataError(f"{what} '{printable(root)}' is neither a folder nor an image file (extensions: "
                            f"{', '.join(IMG_EXTENSIONS)})")
        return [(root, -1)], []
    scan = _Scan(exclude)
    top = {scan.enter(root, set())} - {None}
    if not top:
        raise DataError(f"{what} '{printable(root)}' is {scan.notes[-1].split(' skipped: ')[-1]}")
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
                 decode_side=0, jpeg_decoder="auto", check_workers=-1, what="dataset path"):
        self.transform = transform
        self.decode_side = decode_side
        self.jpeg_decoder = jpeg_decoder
        samples, self.classes = scan_tree(root, exclude, log, what)
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
        bar = Bar(zip(samples, results), "checking images", verbose, total=len(samples))
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

    def cached(self, index):
        """Image index as the start-up check decoded it and the cache holds it, or None."""
        return self._cache.get(self.paths[index])

    def load(self, index):
        """The decoded RGB image (decode_file): a uint8 tensor 3 x H x W for a JPEG that decode_jpeg decoded,
        else a PIL image (as_pil turns either into a PIL image); a file that went bad after the scan gives a
        black 8 x 8 PIL image (its info["stand_in"] True) and one warning."""
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
            stand_in = Image.new("RGB", (8, 8))
            stand_in.info["stand_in"] = True  # collection.fingerprint: never a duplicate of anything
            return stand_in

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


def _setting(c, key, name):
    """How a missing path is named in its error: the setting, and for a relative default path that does not exist
    from here, that the defaults are relative to the repository root."""
    path = c[key]
    if path == cfg.DEFAULTS[key] and not os.path.isabs(path) and not os.path.exists(path):
        raise DataError(f"{name} '{printable(path)}' (the default) does not exist in '{printable(os.getcwd())}': the "
                        f"default paths are relative to the repository root; run from there or set --{key}")
    return name


def open_split(c, part, transform=None, log=print):
    """The images of one part of the configured data: "train" or "test".

    With a test_path, "train" is the whole dataset_path tree and "test" the test_path tree.
    With test_path "", val_split of every class of dataset_path is held out: "test" is that
    held-out part and "train" the rest, the same split in train.py, pred.py and eval_linear.py (stratified by the
    folders whatever cfg labels says; use_labels applies it to the part returned).
    """
    return use_labels(c, _open(c, part, transform, log))


def use_labels(c, ds):
    """cfg labels on an opened ClusterDataset: "none" drops the folder labels (the folders are albums, not classes:
    no label metrics, no class table, no k from the number of folders); "folders" requires class folders (one
    line otherwise); "auto" keeps what the tree gives. Returns ds."""
    if c.get("labels", "auto") == "none" and ds.has_labels:
        ds.classes, ds.labels = [], np.zeros(len(ds.labels), np.int64)
    elif c.get("labels") == "folders" and not ds.has_labels:
        raise DataError("labels folders: the images are not in class folders (ROOT/<class>/<image>); use --labels "
                        "auto or none")
    return ds


def _open(c, part, transform, log):
    options = {"log": log, "cache_mb": c["cache_mb"], "verbose": c["verbose"], "check_images": c["check_images"],
               "exclude": (c["exp_dir"], c["pred_dir"]),  # a run's outputs inside the tree are not images to use
               "decode_side": decode_side(c), "jpeg_decoder": c["jpeg_decoder"],
               "check_workers": c["check_workers"]}
    if c["test_path"] and part == "test":
        return ClusterDataset(c["test_path"], transform, what=_setting(c, "test_path", "test_path (--images)"),
                              **options)
    full = ClusterDataset(c["dataset_path"], transform, what=_setting(c, "dataset_path", "dataset_path"), **options)
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
    assignment: (n,) int, one clustering (the label is an int), or (n, H) for H clusterings of the same
    epoch (the label is the (H,) int64 tensor of image i's pseudo-labels, one per head).
    Raises ValueError when the rows are not the dataset's n images.
    """

    def __init__(self, base, assignment, transform):
        if not isinstance(base, ClusterDataset):
            raise TypeError("PseudoLabelDataset needs the original ClusterDataset, not a derived dataset")
        assignment = np.asarray(assignment, dtype=np.int64)
        if assignment.ndim not in (1, 2) or len(assignment) != len(base):
            raise ValueError(f"assignment has shape {assignment.shape}, the dataset has {len(base)} images")
        self.base = base
        self.assignment = assignment
        self.transform = transform

    def __len__(self):
        return len(self.base)

    def label(self, index):
        """Image index's pseudo-label: an int, or with several clusterings an (H,) int64 tensor."""
        label = self.assignment[index]
        return int(label) if label.ndim == 0 else torch.from_numpy(label.copy())

    def __getitem__(self, index):
        return self.transform(self.base.load(index)), self.label(index)


class Transform:
    """One transform for both kinds of decoded image (decode_file): `pil` for a PIL image (torchvision.transforms,
    exactly as before decode_jpeg was used, so PNG trees give the same tensors bit for bit) and `tensor` for a
    uint8 3 x H x W tensor (torchvision.transforms.v2 on the tensor). Either gives a float32 3 x size x size
    tensor, ImageNet-normalised. `spec` names the transform for the GPU input pipeline (gpu_input.py), which
    does the same on the GPU: ("eval", size) or ("train", size, scale_min)."""

    def __init__(self, pil, tensor, spec=None):
        self.pil, self.tensor, self.spec = pil, tensor, spec

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
        v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(size), NormalizeUint8()]), ("eval", size))


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
                    NormalizeUint8()]), ("train", size, scale_min))


def seed_worker(worker_id):
    """Give numpy and python in DataLoader workers seeds derived from torch's per-worker seed."""
    import random
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
