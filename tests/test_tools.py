"""The Fashion-MNIST tools: tree builder, raw-pixel baseline, curves, recipe config, experiment script."""
import gzip
import json
import os
import struct
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

import curves
from cfg import load_cfg
from conftest import make_blob_tree
from tools import make_fashion_mnist, pixel_kmeans, plot_curves, seed_summary

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


def test_tree_builder_writes_a_small_set_of_the_first_classes_after_skipped_images(idx_dir, tmp_path):
    out = tmp_path / "small"
    make_fashion_mnist.main(["--idx_dir", str(idx_dir), "--out", str(out), "--classes", "3", "--train_per_class", "1",
                             "--train_skip", "2", "--no_test"])
    assert sorted(os.listdir(out)) == ["train"] and sorted(os.listdir(out / "train")) == sorted(make_fashion_mnist.CLASSES[:3])
    assert file_indices(out / "train") == [20, 21, 22]  # the third image of each of classes 0-2
    with pytest.raises(SystemExit, match="--classes takes 1-10"):
        make_fashion_mnist.main(["--idx_dir", str(idx_dir), "--out", str(tmp_path / "x"), "--classes", "11"])


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
    rows = [{"epoch": e, "loss": 4.0 - e, "nmi": 0.4 + 0.01 * e, "nmi_prev": None if e == 0 else 0.5,
             "reclustered": True} for e in range(4)]
    (exp / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = curves.read_run(str(exp))
    assert curves.curve_points(run, "nmi_prev") == ([1, 2, 3], [0.5, 0.5, 0.5])
    assert curves.curve_points(run, "loss") == ([1, 2, 3, 4], [4.0, 3.0, 2.0, 1.0])  # after the epoch trained
    assert run.selected is None and run.final is None  # no checkpoint: no marks
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
    script = os.path.join(ROOT, "tools", "fashion_mnist_experiment.sh")
    for args in (["--fast"], ["--train_per_class", "0"], ["--train_per_class", "6001"]):
        r = subprocess.run(["bash", script, *args], capture_output=True, text=True)
        assert r.returncode == 2 and "usage" in r.stderr, args
    r = subprocess.run(["bash", script, "--data", "full", "--train_per_class", "100"], capture_output=True, text=True)
    assert r.returncode == 2 and "contradict" in r.stderr
    r = subprocess.run(["bash", script, "--train_per_class", "4001", "--eval", "val"], capture_output=True, text=True)
    assert r.returncode == 2 and "<= 4000" in r.stderr


def fake_seed(exp, seed, random_nmi, chosen_nmi, last_nmi, train_nmis, final_nmi):
    """The files tools/fashion_mnist_experiment.sh leaves for one seed."""
    d = os.path.join(exp, f"seed_{seed}")
    last = len(train_nmis)
    for sub, nmi, epoch in (("random/pred", random_nmi, 0), ("trained/pred", chosen_nmi, 2),
                            ("trained/pred_last", last_nmi, last)):
        os.makedirs(os.path.join(d, sub))
        with open(os.path.join(d, sub, "metrics.json"), "w") as f:
            json.dump({"acc": nmi + 0.1, "nmi": nmi, "ari": nmi - 0.1, "checkpoint_epoch": epoch}, f)
    with open(os.path.join(d, "trained", "linear_probe.json"), "w") as f:
        json.dump({"trained": {"test_acc": 0.9}, "random": {"test_acc": 0.8}}, f)
    with open(os.path.join(d, "trained", "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps({"epoch": e, "nmi": v}) + "\n" for e, v in enumerate(train_nmis))
    torch.save({"clustering_metrics": {"nmi": final_nmi}}, os.path.join(d, "trained", "checkpoint.pth.tar"))
    with open(os.path.join(d, "trained", "train_seconds.txt"), "w") as f:
        f.write("100\n")


def test_seed_summary_means_spreads_and_the_rule_against_the_labels(tmp_path, capsys):
    exp = str(tmp_path / "exp")
    # row e of metrics.jsonl is the clustering after e epochs; the checkpoint holds that of the last (4th) epoch
    fake_seed(exp, 31, 0.50, 0.60, 0.55, [0.5, 0.6, 0.7, 0.6], 0.65)
    fake_seed(exp, 32, 0.52, 0.64, 0.50, [0.5, 0.6, 0.6, 0.6], 0.66)
    summary = seed_summary.main([exp])
    assert summary["seeds"] == [31, 32]
    mean, std = summary["mean_std"]["selected"]["nmi"]
    assert mean == pytest.approx(0.62) and std == pytest.approx(np.std([0.60, 0.64], ddof=1))
    assert summary["trained_minus_random"]["nmi"][0] == pytest.approx(0.11)  # mean of 0.10 and 0.12
    assert summary["per_seed"][31]["epochs"] == {"chosen": 2, "label_best": 2, "label_best_nmi": 0.7,
                                                 "chosen_nmi": 0.7, "last": 4}
    assert summary["per_seed"][32]["epochs"]["label_best"] == 4  # the final clustering, 0.66
    out = capsys.readouterr().out
    assert "| trained, epoch chosen by select_epoch | 0.720 +- 0.028 | 0.620 +- 0.028 |" in out
    assert os.path.exists(os.path.join(exp, "summary.md"))
    other = str(tmp_path / "other")
    fake_seed(other, 31, 0.50, 0.50, 0.50, [0.5, 0.5], 0.5)
    both = seed_summary.main([exp, other])
    assert set(both) == {exp, other}
    assert "| other | 1 | 0.500 +- 0.000 | 0.500 +- 0.000 | 0.500 +- 0.000 | 0.600 +- 0.000 | 0.000 +- 0.000 |" in \
        capsys.readouterr().out


def test_seed_summary_of_an_unfinished_experiment_is_one_line(tmp_path):
    exp = str(tmp_path / "exp")
    with pytest.raises(SystemExit, match="no seed_<S> folders"):
        seed_summary.main([exp])
    fake_seed(exp, 31, 0.5, 0.6, 0.5, [0.5, 0.6], 0.6)
    os.remove(os.path.join(exp, "seed_31", "trained", "linear_probe.json"))
    with pytest.raises(SystemExit, match="an unfinished seed"):
        seed_summary.main([exp])


def test_reference_config_holds_the_papers_settings():
    """configs/reference.json: DeepCluster as published (k 10000, SGD lr 0.05 momentum 0.9, weight decay 1e-5,
    batch 256, PCA-whitening to 256 dims, a fresh head every epoch, no schedule, the last epoch)."""
    c = load_cfg(["--config", os.path.join(ROOT, "configs", "reference.json")])
    paper = {"num_classes": 10000, "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-5, "batch_size": 256,
             "pca_dim": 256, "kmeans_niter": 20, "kmeans_nredo": 1, "equal_size": False, "reassign": 1, "head": "new",
             "lr_scheduler": "none", "select_epoch": "last", "optimizer": "sgd", "sobel": True, "seed": 31}
    assert {k: c[k] for k in paper} == paper
