"""Build an ImageFolder tree from the Fashion-MNIST IDX files.

    apt-get install dataset-fashion-mnist            # gives /usr/share/datasets/fashion-mnist/*.gz
    python tools/make_fashion_mnist.py --out data/fashion_mnist_small --train_per_class 200 --test_per_class 50
    python tools/make_fashion_mnist.py --out data/fashion_mnist_full  --train_per_class 0 --test_per_class 0   # all 60k/10k
    python tools/make_fashion_mnist.py --out data/fashion_mnist_tune --train_per_class 1000 --val_per_class 500
    python tools/make_fashion_mnist.py --out data/fm_small_3 --classes 3 --train_per_class 40 --train_skip 300 \
        --test_per_class 0 --no_test          # a small collection: 40 images of each of the first 3 classes

Writes OUT/train/<class>/<split>_<index>.png and OUT/test/<class>/... as 28x28 grayscale PNGs.
The first N images of each class in file order are taken, so the tree is the same on every machine.
"""
import argparse
import gzip
import os
import struct
import sys

import numpy as np
from PIL import Image

CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def read_idx(path):
    """An IDX file (the MNIST format) as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        zero, dtype_code, ndim = struct.unpack(">HBB", f.read(4))
        if zero != 0 or dtype_code != 0x08:
            raise ValueError(f"{path} is not an unsigned-byte IDX file")
        shape = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(shape)


def write_split(images, labels, out_dir, split, per_class, skip=0, prefix=None, classes=len(CLASSES)):
    """Write images skip .. skip + per_class - 1 of each of the first `classes` classes (in file order; per_class
    0 = all)."""
    seen = {c: 0 for c in range(len(CLASSES))}
    written = 0
    for c in CLASSES[:classes]:
        os.makedirs(os.path.join(out_dir, split, c), exist_ok=True)
    for i, (img, label) in enumerate(zip(images, labels)):
        label = int(label)
        if label >= classes:
            continue
        seen[label] += 1
        if seen[label] <= skip or (per_class and seen[label] > skip + per_class):
            continue
        written += 1
        name = f"{prefix or split}_{i:05d}.png"
        Image.fromarray(img, mode="L").save(os.path.join(out_dir, split, CLASSES[label], name), optimize=True)
    return written


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--idx_dir", default="/usr/share/datasets/fashion-mnist", help="folder with the four IDX .gz files")
    p.add_argument("--out", default="data/fashion_mnist_small", help="output root (train/ and test/ go inside)")
    p.add_argument("--train_per_class", type=int, default=200, help="training images per class, 0 = all")
    p.add_argument("--test_per_class", type=int, default=50, help="test images per class, 0 = all")
    p.add_argument("--val_per_class", type=int, default=0,
                   help="also write OUT/val: this many TRAINING images per class that follow the ones in OUT/train "
                        "(a held-out set for choosing settings without the test images)")
    p.add_argument("--classes", type=int, default=len(CLASSES), help="only the first N classes (1-10)")
    p.add_argument("--train_skip", type=int, default=0,
                   help="start train/ after this many training images per class (300: none of data/fashion_mnist_"
                        "small's 200 nor the 100 a --val_per_class 100 set holds out after them)")
    p.add_argument("--no_test", action="store_true", help="write no test/")
    a = p.parse_args(argv)
    if not 1 <= a.classes <= len(CLASSES):
        sys.exit(f"error: --classes takes 1-{len(CLASSES)}, got {a.classes}")
    if a.val_per_class and not a.train_per_class:
        sys.exit("error: --val_per_class needs --train_per_class > 0 (with 0 every training image is in train/)")
    parts = [("train", a.train_per_class, a.train_skip)] + [("test", a.test_per_class, 0)] * (not a.no_test)
    if a.val_per_class:
        parts.append(("val", a.val_per_class, a.train_skip + a.train_per_class))
    for split, per_class, skip in parts:
        source = "train" if split == "val" else split
        img_file, lbl_file = (os.path.join(a.idx_dir, f) for f in FILES[source])
        for f in (img_file, lbl_file):
            if not os.path.exists(f):
                sys.exit(f"error: {f} not found; install it with 'apt-get install dataset-fashion-mnist' "
                         "or pass --idx_dir")
        written = write_split(read_idx(img_file), read_idx(lbl_file), a.out, split, per_class, skip, prefix=source,
                              classes=a.classes)
        print(f"{split}: {written} images -> {os.path.join(a.out, split)}")


if __name__ == "__main__":
    main()
