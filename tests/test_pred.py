import csv
import json
import os
import shutil

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
    ckpt = torch.load(result["checkpoint"], weights_only=True)  # the epoch select_epoch chose
    assert [int(r["cluster"]) for r in rows] == ckpt["assignment"].tolist()
    assert result["mode"] == "assign" and result["k"] == 3 and result["checkpoint_epoch"] == ckpt["epoch"]
    assert all(float(r["distance"]) >= 0 for r in rows)


def read_png(path):
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        return img.size


@pytest.mark.slow
def test_pred_end_to_end_on_the_shipped_sample(trained, tmp_path):
    out = tmp_path / "out"
    args = pred_args(trained, out, "--test_path", SAMPLE_TEST, "--pred_mode", "recluster")
    result = pred.main("cpu", args)
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 500 and set(rows[0]) == {"path", "cluster", "label", "distance", "outlier_score"}
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
    assert os.path.islink(link) and not os.path.isabs(os.readlink(link)) and os.path.isfile(link)
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


@pytest.mark.slow
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


# (equal_size, head, ema, reassign, select_epoch, resumed): every pair of values appears in some row
ASSIGN_MATRIX = [
    ("false", "new", "0", "1", "nmi_prev", True),
    ("true", "match", "0.9", "2", "last", False),
    ("false", "centroids", "0.9", "2", "nmi_prev", True),
    ("true", "centroids", "0", "1", "last", False),
    ("true", "new", "0.9", "2", "nmi_prev", False),
    ("false", "match", "0", "1", "last", True),
    ("true", "new", "0", "2", "last", True),
    ("false", "match", "0.9", "1", "nmi_prev", False),
]


def predicted_ids(out):
    with open(out / "predictions.csv") as f:
        return [int(r["cluster"]) for r in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.parametrize("equal_size, head, ema, reassign, select, resumed", ASSIGN_MATRIX)
def test_assign_gives_back_the_training_assignment_in_every_setting(tmp_path, equal_size, head, ema, reassign,
                                                                     select, resumed):
    """pred.py's assign mode on the training images gives every checkpoint's own assignment: equal-size offsets,
    heads, the weight average, epochs without re-clustering, the chosen epoch and a resumed run included."""
    import train
    tree = make_blob_tree(tmp_path / "tree", classes=3, per_class=6)
    exp = tmp_path / "exp"
    args = train_args(tree, exp, "--num_classes", "4", "--equal_size", equal_size, "--head", head, "--ema", ema,
                      "--reassign", reassign, "--select_epoch", select)
    if resumed:
        train.main("cpu", args + ["--num_epoch", "2"])
    train.main("cpu", args + ["--num_epoch", "3"])
    checkpoints = [exp / "checkpoint.pth.tar"] + ([exp / "selected.pth.tar"] if (exp / "selected.pth.tar").exists()
                                                  else [])
    for path in checkpoints:
        out = tmp_path / f"pred_{path.name}"
        pred.main("cpu", ["--exp_dir", str(exp), "--ckpt_path", str(path), "--test_path", tree, "--pred_dir", str(out),
                          "--verbose", "false"])
        assert predicted_ids(out) == torch.load(path, weights_only=True)["assignment"].tolist(), path.name
    last = torch.load(checkpoints[0], weights_only=True)
    assert (last["clustering_state_dict"] is not None) == (reassign == "2")  # epoch 3 did not re-cluster


@pytest.mark.slow
def test_assign_with_equal_size_on_the_shipped_sample(tmp_path):
    """20 images of each of the 10 classes, one epoch, k = 10 with the default equal-size pseudo-labels: the
    equal-size step moves images away from their nearest centroid, and assign follows it."""
    import train
    tree = tmp_path / "sample20"
    train_dir = os.path.join(ROOT, "data", "fashion_mnist_small", "train")
    for cls in sorted(os.listdir(train_dir)):
        os.makedirs(tree / cls)
        for name in sorted(os.listdir(os.path.join(train_dir, cls)))[:20]:
            os.symlink(os.path.join(train_dir, cls, name), tree / cls / name)
    exp = tmp_path / "exp"
    train.main("cpu", ["--dataset_path", str(tree), "--exp_dir", str(exp), "--num_epoch", "1", "--select_epoch", "last",
                       "--workers", "0", "--verbose", "false"])
    ckpt = torch.load(exp / "checkpoint.pth.tar", weights_only=True)
    assert ckpt["cluster_offsets"].max() > 0  # the equal-size step did move images
    result = pred.main("cpu", ["--exp_dir", str(exp), "--test_path", str(tree), "--verbose", "false"])
    assert predicted_ids(exp / "pred") == ckpt["assignment"].tolist()
    assert result["images"] == "training" and result["n_training_images"] == 200


@pytest.mark.slow
def test_metrics_on_training_images_are_labelled_as_such(trained, tmp_path, capsys):
    tree, exp = trained
    result = pred.main("cpu", pred_args(trained, tmp_path / "o", "--test_path", tree))
    assert result["images"] == "training" and result["n_training_images"] == 24
    assert "training images" in capsys.readouterr().out
    other = make_blob_tree(tmp_path / "other", classes=3, per_class=2, seed=5)
    result = pred.main("cpu", pred_args(trained, tmp_path / "o2", "--test_path", other))
    assert result["images"] == "held_out" and result["n_training_images"] == 0
    mixed = tmp_path / "mixed"
    shutil.copytree(other, mixed, symlinks=True)
    os.symlink(os.path.join(tree, "class_0", "000.png"), mixed / "class_0" / "zz_training.png")
    result = pred.main("cpu", pred_args(trained, tmp_path / "o3", "--test_path", str(mixed)))
    assert result["images"] == "mixed" and result["n_training_images"] == 1


def test_recluster_of_one_image_is_one_line(trained, tmp_path):
    one = tmp_path / "one" / "c"
    one.mkdir(parents=True)
    Image.new("RGB", (36, 36), (10, 200, 30)).save(one / "0.png")
    with pytest.raises(SystemExit) as e:
        pred.main("cpu", pred_args(trained, tmp_path / "o", "--test_path", str(one.parent), "--pred_mode", "recluster"))
    assert "at least 2 images" in str(e.value.code) and "\n" not in str(e.value.code)
    result = pred.main("cpu", pred_args(trained, tmp_path / "o", "--test_path", str(one.parent)))  # assign works
    assert result["n_images"] == 1


@pytest.mark.slow
def test_the_probe_never_tests_on_the_images_it_trained_on(trained, tmp_path, capsys):
    """A run on its own labelled folder (test_path = dataset_path): the probe holds out val_split itself and says
    that the network trained on those images; with val_split 0 it stops with one line."""
    tree, exp = trained
    result = eval_linear.main("cpu", train_args(tree, exp, "--test_path", tree, "--probe_epochs", "2",
                                                "--val_split", "0.25"))
    assert result["n_train"] == 18 and result["n_test"] == 6 and result["n_test_trained_on"] == 6
    assert "held out of the training images" in result["test_images"]
    assert "the network trained on them without labels" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        eval_linear.main("cpu", train_args(tree, exp, "--test_path", tree, "--val_split", "0"))
    assert "val_split" in str(e.value.code) and "\n" not in str(e.value.code)
    partly = tmp_path / "partly"
    shutil.copytree(make_blob_tree(tmp_path / "other", classes=3, per_class=2, seed=5), partly, symlinks=True)
    for cls in range(3):
        os.symlink(os.path.join(tree, f"class_{cls}", "000.png"), partly / f"class_{cls}" / "zz.png")
    result = eval_linear.main("cpu", train_args(tree, exp, "--test_path", str(partly), "--probe_epochs", "2"))
    assert result["n_test"] == 9 and result["n_train"] == 21 and result["n_test_trained_on"] == 3


@pytest.mark.slow
def test_probe_run_by_default_on_its_own_folder_holds_out(tmp_path):
    """The case as a user meets it: trained on a labelled folder of its own, test_path left at its default."""
    import train
    tree = make_blob_tree(tmp_path / "tree", classes=2, per_class=10)
    exp = tmp_path / "exp"
    train.main("cpu", train_args(tree, exp, "--num_epoch", "0", "--num_classes", "2"))
    result = eval_linear.main("cpu", ["--exp_dir", str(exp), "--probe_epochs", "2", "--verbose", "false"])
    assert result["n_test"] == 2 and result["n_train"] == 18 and result["n_test_trained_on"] == 2


@pytest.mark.slow
def test_cluster_links_are_relative_and_survive_moving_images_and_predictions_together(trained, tmp_path):
    """clusters/ holds relative links: a copy of the images and pred_dir together (cp -r, tar, rsync) keeps them
    working, where absolute links pointed back at the old place; a dereferencing copy (cp -rL, tar -h, zip) of
    pred_dir alone carries the images themselves."""
    import tarfile
    project = tmp_path / "project"
    shutil.copytree(trained[0], project / "images")
    pred.main("cpu", pred_args(trained, project / "pred", "--test_path", str(project / "images")))
    moved = tmp_path / "elsewhere"
    shutil.move(project, moved)  # the same tree and predictions under another path
    links = [os.path.join(d, f) for d, _, files in os.walk(moved / "pred" / "clusters") for f in files]
    assert len(links) == 24 and all(os.path.islink(x) and not os.path.isabs(os.readlink(x)) for x in links)
    assert all(os.path.isfile(x) for x in links)
    with tarfile.open(tmp_path / "pred_h.tar", "w", dereference=True) as tar:  # tar -h: the images themselves
        tar.add(moved / "pred", arcname="pred")
    with tarfile.open(tmp_path / "pred_h.tar") as tar:
        members = [m for m in tar.getmembers() if "/clusters/" in m.name and not m.isdir()]
        assert len(members) == 24 and all(m.isfile() and m.size > 0 for m in members)
