import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import checkpoint
import eval_linear
import pred
from conftest import make_blob_tree, train_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_TEST = os.path.join(ROOT, "data", "fashion_mnist_small", "test")


def pred_args(trained, pred_dir, *extra):
    tree, exp = trained
    return train_args(tree, exp, "--pred_dir", str(pred_dir), *extra)


def test_assign_reproduces_the_training_assignment(trained, tmp_path):
    tree, exp = trained
    result = pred.main("cpu", pred_args(trained, tmp_path / "out", "--test_path", tree))
    with open(tmp_path / "out" / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    ckpt = torch.load(exp / "checkpoint.pth.tar", weights_only=True)
    assert [int(r["cluster"]) for r in rows] == ckpt["assignment"].tolist()
    assert result["mode"] == "assign" and result["k"] == 3 and result["checkpoint_epoch"] == 2
    assert all(float(r["distance"]) >= 0 for r in rows)


def read_png(path):
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        return img.size


def test_pred_end_to_end_on_the_shipped_sample(trained, tmp_path):
    out = tmp_path / "out"
    args = pred_args(trained, out, "--test_path", SAMPLE_TEST, "--pred_mode", "recluster")
    result = pred.main("cpu", args)
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 500 and set(rows[0]) == {"path", "cluster", "label", "distance"}
    assert {r["label"] for r in rows} == {"Ankle_boot", "Bag", "Coat", "Dress", "Pullover", "Sandal", "Shirt",
                                          "Sneaker", "T-shirt_top", "Trouser"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"n_images", "k", "mode", "nmi", "ari", "acc", "majority_class", "cluster_sizes"} <= set(metrics)
    assert metrics["n_images"] == 500 and metrics["k"] == 10 and metrics["mode"] == "recluster"  # pred_k = classes
    assert 0 <= metrics["acc"] <= 1 and metrics == json.loads(json.dumps(result))
    ids = sorted(int(c) for c in metrics["cluster_sizes"])
    for c in ids:
        assert read_png(out / "grids" / f"cluster_{c}.png")[0] > 0
        members = os.listdir(out / "clusters" / str(c))
        assert len(members) == metrics["cluster_sizes"][str(c)]
    w, h = read_png(out / "grids" / "overview.png")
    assert h > w / 12 * len(ids) * 0.9  # one row per cluster
    link = out / "clusters" / str(ids[0]) / os.listdir(out / "clusters" / str(ids[0]))[0]
    assert os.path.islink(link) and os.path.exists(os.readlink(link))
    # a second run replaces its own files
    pred.main("cpu", args + ["--copy_images", "true"])
    link = out / "clusters" / str(ids[0]) / os.listdir(out / "clusters" / str(ids[0]))[0]
    assert not os.path.islink(link) and os.path.isfile(link)
    assert len(list(csv.DictReader(open(out / "predictions.csv")))) == 500


def test_foreign_file_in_pred_dir_stops_and_survives(trained, tmp_path):
    tree, _ = trained
    out = tmp_path / "out"
    pred.main("cpu", pred_args(trained, out, "--test_path", tree))
    foreign = out / "clusters" / "my_notes.txt"
    foreign.write_text("keep me")
    before = sorted(os.listdir(out))
    with pytest.raises(SystemExit) as e:
        pred.main("cpu", pred_args(trained, out, "--test_path", tree))
    assert "my_notes.txt" in str(e.value.code) and "nothing was deleted" in str(e.value.code)
    assert foreign.read_text() == "keep me" and sorted(os.listdir(out)) == before
    assert (out / "predictions.csv").exists()


def test_non_empty_folder_not_written_by_pred_stops(trained, tmp_path):
    tree, _ = trained
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("x")
    with pytest.raises(SystemExit, match="not written by pred.py"):
        pred.main("cpu", pred_args(trained, out, "--test_path", tree))
    assert (out / "thesis.tex").read_text() == "x" and os.listdir(out) == ["thesis.tex"]


def test_missing_or_mismatched_checkpoint_is_one_line(trained, tmp_path):
    tree, _ = trained
    with pytest.raises(SystemExit) as e:
        pred.main("cpu", pred_args(trained, tmp_path / "o", "--ckpt_path", str(tmp_path / "none.pth.tar")))
    assert "no checkpoint" in str(e.value.code) and "\n" not in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        pred.main("cpu", pred_args(trained, tmp_path / "o", "--sobel", "false"))
    assert "sobel" in str(e.value.code) and "\n" not in str(e.value.code)


def test_held_out_split_when_no_test_path(trained, tmp_path):
    tree, _ = trained
    result = pred.main("cpu", pred_args(trained, tmp_path / "o", "--test_path", "", "--val_split", "0.25",
                                        "--pred_mode", "recluster", "--pred_k", "2"))
    assert result["n_images"] == 6 and result["k"] == 2  # 2 of 8 per class
    assert "purity" in result  # k differs from the 3 classes


def test_checkpoint_saved_from_a_wrapped_model_loads(trained, tmp_path):
    _, exp = trained
    ckpt = torch.load(exp / "checkpoint.pth.tar", weights_only=True)
    ckpt["state_dict"] = {f"module.{k}": v for k, v in ckpt["state_dict"].items()}
    path = tmp_path / "wrapped.pth.tar"
    torch.save(ckpt, path)
    c = pred.load_cfg(pred_args(trained, tmp_path / "o", "--ckpt_path", str(path)), script="pred")
    c, ckpt = checkpoint.run_settings(c, set(), "pred.py")
    model = checkpoint.load_model(c, torch.device("cpu"), ckpt)
    assert model.top_layer is None and not model.training


def test_linear_probe_writes_its_json(trained, tmp_path):
    tree, exp = trained
    test_tree = make_blob_tree(tmp_path / "test", classes=3, per_class=4, seed=1)
    result = eval_linear.main("cpu", train_args(tree, exp, "--test_path", test_tree, "--probe_epochs", "5",
                                                "--probe_layer", "3", "--baseline", "true"))
    saved = json.loads((exp / "linear_probe.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["layer"] == 3 and saved["epochs"] == 5 and saved["n_train"] == 24 and saved["n_test"] == 12
    for name in ("trained", "random"):
        r = saved[name]
        assert r["dims"] <= 8192 and 0 <= r["test_acc"] <= 1 and 0 <= r["train_acc"] <= 1 and 0 <= r["knn_acc"] <= 1
    # the classes differ visibly, so even a random network's frozen features separate them
    assert saved["random"]["train_acc"] == 1.0


def test_probe_blocks():
    from models import build_model
    vgg = build_model("vgg16", True, 0, 32)
    assert len(vgg.block_ends) == 5
    alex = build_model("alexnet", False, 0, 64)
    ends = alex.block_ends
    assert len(ends) == 5 and ends[-1] == len(alex.features)
    probe = eval_linear.BlockProbe(vgg, "vgg16", 2, 4096, 32)
    # block 2 gives 128 x 8 x 8 at 32 px; pooled to 5 x 5 so that 128 * s * s <= 4096
    assert probe.dims == 128 * 5 * 5 and probe(torch.zeros(2, 3, 32, 32)).shape == (2, probe.dims)
    with pytest.raises(SystemExit, match="probe_layer"):
        eval_linear.BlockProbe(vgg, "vgg16", 6, 4096, 32)


def test_metrics_of_pred():
    labels = np.array([0, 0, 1, 1, 2, 2])
    result = pred.cluster_metrics(labels, np.array([4, 4, 1, 1, 0, 0]), ["a", "b", "c"])
    assert result["acc"] == 1.0 and result["majority_class"] == {0: "c", 1: "b", 4: "a"} and "purity" not in result
