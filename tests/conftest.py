"""Tiny image trees and a fast training config shared by the tests."""
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import torch
from PIL import Image

from dataset import IMAGENET_MEAN, IMAGENET_STD

# a fast configuration: tiny images, tiny k, few batches
FAST = ["--input_size", "32", "--num_classes", "3", "--batch_size", "8", "--pca_dim", "8",
        "--kmeans_niter", "5", "--workers", "0", "--verbose", "false"]


def color_of(index):
    """A constant colour that encodes the image's index and survives crops, flips and resizes."""
    return (8 * index, 255 - 8 * index, (40 * index) % 256)


def index_of(tensor):
    """Recover the index from a normalised image tensor made of color_of(index)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    red = (tensor * std + mean)[0].mean().item() * 255
    return int(round(red / 8))


def make_tree(root, classes=3, per_class=6, size=36):
    """ROOT/<class>/<i>.png with constant-colour images; image i of the sorted order has colour color_of(i)."""
    i = 0
    for c in range(classes):
        os.makedirs(os.path.join(root, f"class_{c}"), exist_ok=True)
        for _ in range(per_class):
            Image.new("RGB", (size, size), color_of(i)).save(os.path.join(root, f"class_{c}", f"img_{i:03d}.png"))
            i += 1
    return str(root)


def make_blob_tree(root, classes=3, per_class=6, size=36, seed=0):
    """Images whose classes differ visibly (distinct textures), for runs where clustering should find structure."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        os.makedirs(os.path.join(root, f"class_{c}"), exist_ok=True)
        for j in range(per_class):
            arr = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            arr[:, c * size // classes:(c + 1) * size // classes] += 180
            Image.fromarray(arr).save(os.path.join(root, f"class_{c}", f"{j:03d}.png"))
    return str(root)


@pytest.fixture
def color_tree(tmp_path):
    return make_tree(tmp_path / "colors")


@pytest.fixture
def blob_tree(tmp_path):
    return make_blob_tree(tmp_path / "blobs")


def train_args(tree, exp_dir, *extra):
    return ["--dataset_path", str(tree), "--exp_dir", str(exp_dir), *FAST, *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch run on a tiny tree (3 classes of 8 images) whose select_epoch (nmi_prev) chooses an epoch; its
    checkpoint serves a module's tests."""
    base = tmp_path_factory.mktemp("trained")
    tree = make_blob_tree(base / "tree", classes=3, per_class=8)
    exp = base / "exp"
    import train
    train.main("cpu", train_args(tree, exp, "--num_epoch", "2", "--select_epoch", "nmi_prev"))
    return tree, exp


def kill_after_first_metrics(cmd, exp, cwd):
    """Start train.py (cmd) and kill -9 it right after its first metrics line (the next clustering under way,
    the checkpoint that matches the line not yet written). Returns the epochs its checkpoint holds."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (exp / "metrics.jsonl").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return torch.load(exp / "checkpoint.pth.tar", weights_only=True)["epoch"]
