"""The Fashion-MNIST tools: tree builder, raw-pixel baseline, curves, recipe config, experiment script."""
import gzip
import json
import os
import struct
import subprocess

import numpy as np
import pytest
from PIL import Image

from cfg import load_cfg
from conftest import make_blob_tree
from tools import make_fashion_mnist, pixel_kmeans, plot_curves

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_idx(path, array):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape))
        f.write(array.astype(np.uint8).tobytes())


@pytest.fixture
def idx_dir(tmp_path):
    """Fake IDX files: 60 training images (6 per class), 20 test images; pixel [0, 0] holds the file index."""
    d = tmp_path / "idx"
    d.mkdir()
    for split, n in (("train", 60), ("t10k", 20)):
        images = np.zeros((n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = np.arange(n)
        write_idx(d / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(d / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return d


def file_indices(root):
    return sorted(int(np.asarray(Image.open(os.path.join(dp, f)))[0, 0])
                  for dp, _, files in os.walk(root) for f in files)


def test_tree_builder_writes_train_test_and_a_disjoint_val(idx_dir, tmp_path):
    out = tmp_path / "fm"
    make_fashion_mnist.main(["--idx_dir", str(idx_dir), "--out", str(out), "--train_per_class", "2",
                             "--test_per_class", "0", "--val_per_class", "3"])
    train, val, test = (file_indices(out / s) for s in ("train", "val", "test"))
    assert train == list(range(20))  # the first 2 of every class
    assert val == list(range(20, 50))  # the next 3 of every class, from the training file
    assert test == list(range(20))  # all test images
    assert sorted(os.listdir(out / "val")) == sorted(make_fashion_mnist.CLASSES)


def test_tree_builder_refuses_val_without_a_train_limit(idx_dir, tmp_path):
    with pytest.raises(SystemExit, match="val_per_class needs --train_per_class"):
        make_fashion_mnist.main(["--idx_dir", str(idx_dir), "--out", str(tmp_path / "x"), "--train_per_class", "0",
                                 "--val_per_class", "3"])


def test_pixel_kmeans_finds_visibly_different_classes(tmp_path):
    tree = make_blob_tree(tmp_path / "t", classes=3, per_class=8)
    r = pixel_kmeans.pixel_kmeans(tree, k=3, n_init=3)
    assert r["n_images"] == 24 and r["acc"] == 1.0 and r["nmi"] == pytest.approx(1.0)


def test_pixel_kmeans_needs_one_image_size(tmp_path):
    tree = make_blob_tree(tmp_path / "t", classes=2, per_class=3)
    Image.new("RGB", (20, 20)).save(os.path.join(tree, "class_0", "zz.png"))
    with pytest.raises(SystemExit, match="one size"):
        pixel_kmeans.pixel_kmeans(tree, k=2)


def test_curves_png_from_metrics(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    rows = [{"epoch": e, "loss": 4.0 - e, "nmi": 0.4 + 0.01 * e, "nmi_prev": None if e == 0 else 0.5}
            for e in range(4)]
    (exp / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert plot_curves.series(rows, "nmi_prev") == ([1, 2, 3], [0.5, 0.5, 0.5])
    out = tmp_path / "c.png"
    plot_curves.main([str(exp), str(exp), "--labels", "a", "b", "--out", str(out)])
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > img.height > 100


def test_curves_errors_are_one_line(tmp_path):
    with pytest.raises(SystemExit, match="not found"):
        plot_curves.main([str(tmp_path / "nope")])
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(SystemExit, match="no epochs yet"):
        plot_curves.main([str(tmp_path)])
    with pytest.raises(SystemExit, match="2 runs but 1 labels"):
        plot_curves.main([str(tmp_path), str(tmp_path), "--labels", "x"])


def test_recipe_config_is_valid_and_its_tree_is_what_the_script_builds():
    c = load_cfg(["--config", os.path.join(ROOT, "configs", "fashion_mnist.json")])
    tree = c["dataset_path"].removesuffix("/train")
    per_class = tree.rsplit("_", 1)[-1]
    assert tree.startswith("data/fashion_mnist_") and (per_class.isdigit() or per_class == "full")
    assert c["test_path"] == f"{tree}/test"


def test_experiment_script_usage_error():
    r = subprocess.run(["bash", os.path.join(ROOT, "tools", "fashion_mnist_experiment.sh"), "--fast"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
