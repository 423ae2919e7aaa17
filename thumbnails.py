"""What the feature pass keeps of each image it decodes besides the network's input: a thumbnail for pred.py's
page (JPEG bytes) and a fingerprint for the duplicate search (collection.fingerprint). Both are made in the loader
(ThumbnailItems, in the workers when there are any) from the image decoded anyway, never by reading a file again,
and gathered beside the batches (CollectThumbnails) while engine.compute_features sees plain (images, indices).
"""
import io

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as F

THUMB_SIDE = 128  # pixels of a thumbnail's longer side (never enlarged)
THUMB_QUALITY = 80  # JPEG quality of the thumbnails


def thumbnail_jpeg(image, side=THUMB_SIDE, quality=THUMB_QUALITY):
    """JPEG bytes of `image` (a PIL image, or a uint8 C x H x W tensor with C = 1 or 3) reduced so that its longer
    side is at most `side` pixels (Pillow's bicubic resize; a smaller image keeps its size). The image is not
    changed (it may be the dataset's cached copy)."""
    img = F.to_pil_image(image) if isinstance(image, torch.Tensor) else image
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    scale = side / max(img.size)
    if scale < 1:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.BICUBIC, reducing_gap=2.0)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


class ThumbnailItems(Dataset):
    """A ClusterDataset whose item i is (its transformed image, i, thumbnail JPEG bytes of the decoded image (b""
    with thumbnails False), signature(decoded image) (an empty array without a signature function)): both come
    from the same decode as the network's input (in the loader's workers when there are any). pred.py's signature
    is collection.fingerprint."""

    def __init__(self, base, thumbnails=True, signature=None):
        self.base, self.thumbnails, self.signature = base, thumbnails, signature

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        img = self.base.load(index)
        x = self.base.transform(img) if self.base.transform is not None else img
        return (x, index, thumbnail_jpeg(img) if self.thumbnails else b"",
                self.signature(img) if self.signature else np.zeros(0, np.float32))


class CollectThumbnails:
    """Wraps a DataLoader over ThumbnailItems so that engine.compute_features sees (images, indices) batches while
    the rest is kept: after the pass, `thumbs[i]` holds image i's JPEG bytes (None for an image not seen or without
    thumbnails) and `signatures` row i its signature ((n, m) float32, m = 0 without a signature function; a
    signature function that returns a dict of arrays, as collection.fingerprint, gives a dict of (n, ...) arrays)."""

    def __init__(self, loader):
        self.loader, self.dataset = loader, loader.dataset
        self.thumbs = [None] * len(loader.dataset)
        self.signatures = None

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for images, index, thumbs, signatures in self.loader:
            if isinstance(signatures, dict):  # collection.fingerprint: one array per key, each of its own dtype
                if self.signatures is None:
                    self.signatures = {key: np.zeros((len(self.thumbs), *v.shape[1:]), v.numpy().dtype)
                                       for key, v in signatures.items()}
                for key, v in signatures.items():
                    self.signatures[key][index.numpy()] = v.numpy()
                for i, jpeg in zip(index.tolist(), thumbs):
                    self.thumbs[i] = jpeg or None
                yield images, index
                continue
            if self.signatures is None:
                self.signatures = np.zeros((len(self.thumbs), signatures.shape[1]), np.float32)
            self.signatures[index.numpy()] = signatures.numpy()
            for i, jpeg in zip(index.tolist(), thumbs):
                self.thumbs[i] = jpeg or None
            yield images, index
