"""Several clusterings per epoch (cfg num_classes a list): one k-means and one head per k on the same whitened
features, the loss the mean of the heads' cross-entropies, the first k the run's clustering."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import cfg
import clustering
import train
from conftest import index_of, kill_after_first_metrics, make_blob_tree, train_args
from dataset import ClusterDataset, PseudoLabelDataset, eval_transform
from engine import pseudo_label_loss
from errors import CheckpointError, ConfigError
from models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_metrics(exp):
    with open(os.path.join(exp, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def run(tree, exp, *extra):
    return train.main("cpu", train_args(tree, exp, *extra))


# ---------------------------------------------------------------- the setting

def test_num_classes_takes_one_k_or_a_list():
    assert cfg.load_cfg(["--num_classes", "10,50,100"])["num_classes"] == [10, 50, 100]
    assert cfg.load_cfg(["--num_classes", "10"])["num_classes"] == 10
    c = cfg.load_cfg(["--num_classes", "10,50"])
    assert cfg.cluster_ks(c) == [10, 50] and cfg.first_k(c) == 10
    assert cfg.cluster_ks(cfg.load_cfg([])) == [0]


def test_a_json_list_of_one_k_is_that_k(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"num_classes": [10, 30, 100]}))
    assert cfg.load_cfg(["--config", str(path)])["num_classes"] == [10, 30, 100]
    path.write_text(json.dumps({"num_classes": [7]}))
    assert cfg.load_cfg(["--config", str(path)])["num_classes"] == 7  # one k behaves as the number itself


@pytest.mark.parametrize("value, words", [("10,10", "lists a k twice"), ("0,5", "0, automatic, only alone"),
                                          ("5,1", "k >= 2"), ("10,x", "takes integers"), ("-2", ">= 0"),
                                          ("1", "0 (automatic) or >= 2")])
def test_a_bad_list_is_one_line(value, words):
    with pytest.raises(ConfigError) as e:
        cfg.load_cfg(["--num_classes", value])
    assert words in str(e.value) and "\n" not in str(e.value)


def test_pic_takes_no_list():
    with pytest.raises(ConfigError, match="needs clustering kmeans"):
        cfg.load_cfg(["--num_classes", "5,10", "--clustering", "pic"])


# ---------------------------------------------------------------- the pieces

def test_the_loss_is_the_mean_of_the_heads_cross_entropies():
    gen = torch.Generator().manual_seed(0)
    logits = [torch.randn(6, 3, generator=gen), torch.randn(6, 7, generator=gen)]
    target = torch.stack([torch.randint(0, 3, (6,), generator=gen), torch.randint(0, 7, (6,), generator=gen)], 1)
    ce = nn.CrossEntropyLoss()
    expected = (ce(logits[0], target[:, 0]) + ce(logits[1], target[:, 1])) / 2
    assert float(pseudo_label_loss(ce, logits, target)) == pytest.approx(float(expected), rel=1e-6)
    assert float(pseudo_label_loss(ce, logits[0], target[:, 0])) == pytest.approx(float(ce(logits[0], target[:, 0])))


def test_every_image_gets_its_own_pseudo_label_of_every_clustering(color_tree):
    base = ClusterDataset(color_tree)
    n = len(base)
    labels = np.stack([np.arange(n) % 3, (np.arange(n) * 7) % 11], axis=1)
    data = PseudoLabelDataset(base, labels, eval_transform(32))
    for i in (0, 5, n - 1):
        image, target = data[i]
        assert index_of(image) == i and target.tolist() == labels[i].tolist()
    assert isinstance(PseudoLabelDataset(base, labels[:, 0], eval_transform(32))[3][1], int)  # one clustering: an int
    with pytest.raises(ValueError, match="shape"):
        PseudoLabelDataset(base, labels[:-1], eval_transform(32))


def test_each_head_keeps_its_trained_rows_across_clusterings():
    model = build_model("vgg16", True, out=0, input_size=32)
    first, second = model.add_heads([3, 5])
    model.carry_heads([np.array([2, -1, 0]), np.array([4, 3, 2, 1, 0, -1])])
    new_first, new_second = model.heads()
    assert new_first.out_features == 3 and new_second.out_features == 6
    assert torch.equal(new_first.weight[0], first.weight[2]) and torch.equal(new_first.weight[2], first.weight[0])
    assert torch.equal(new_second.weight[:5], second.weight.flip(0))
    assert not torch.equal(new_second.weight[5], second.weight[0])  # a new cluster without a partner: a fresh row
    out = model(torch.zeros(2, 3, 32, 32))
    assert [o.shape for o in out] == [(2, 3), (2, 6)]
    model.remove_head()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 4096) and not model.heads()
    assert not [name for name, _ in model.named_parameters() if "head" in name or "top_layer" in name]


def test_further_clusterings_are_kmeans_of_the_same_whitened_rows():
    x = np.random.default_rng(0).standard_normal((60, 32)).astype(np.float32)
    km = clustering.Kmeans(3, pca_dim=8, niter=5, other_ks=(5, 9), equal_size=True)
    km.cluster(x, seed=4)
    assert [cl.k for cl in km.clusterings()] == [3, 5, 9]
    alone = clustering.Kmeans(5, pca_dim=8, niter=5, equal_size=True)
    alone.cluster_whitened(*alone.whiten(x, 4), seed=clustering.kmeans.other_seed(4, 1))
    assert np.array_equal(alone.assignment, km.others[0].assignment)  # k-means of the same rows, its own seed
    assert np.array_equal(np.bincount(km.others[1].assignment, minlength=9).clip(6, 7),
                          np.bincount(km.others[1].assignment, minlength=9))  # the equal-size step for every k
    single = clustering.Kmeans(3, pca_dim=8, niter=5, equal_size=True)
    single.cluster(x, seed=4)
    assert np.array_equal(single.assignment, km.assignment)  # the first clustering is untouched by the others


# ---------------------------------------------------------------- one k: exactly as before

@pytest.mark.slow
def test_one_k_trains_exactly_as_before_lists_existed(tmp_path):
    """Pinned from the code before num_classes took a list (2 epochs, head match, the conftest's tiny tree):
    one k draws the same random numbers in the same order, so metrics and weights are the same."""
    tree = make_blob_tree(tmp_path / "tree", classes=3, per_class=8)
    ckpt = run(tree, tmp_path / "exp", "--num_epoch", "2")
    rows = read_metrics(tmp_path / "exp")
    assert [r["loss"] for r in rows] == pytest.approx([1.1062355836232503, 1.1582313378651936], rel=1e-4)
    assert [r["nmi"] for r in rows] == pytest.approx([0.37975325302916685, 0.3893362341310967], rel=1e-4)
    assert [r["kmeans_loss"] for r in rows] == pytest.approx([18.032403300419784, 17.839658128227533], rel=1e-4)
    assert not any("_k" in key for row in rows for key in row)
    state = ckpt["state_dict"]
    total = float(sum(v.double().abs().sum() for v in state.values() if v.is_floating_point()))
    assert total == pytest.approx(418387.1849962045, rel=1e-5)
    assert float(state["top_layer.weight"].double().abs().sum()) == pytest.approx(97.96827169212838, rel=1e-4)
    assert ckpt["assignment"].tolist() == [0] * 8 + [2] * 8 + [1] * 8
    assert ckpt["other_clusterings"] == [] and ckpt["num_classes"] == 3
    assert not [key for key in state if key.startswith("extra_heads.")]


# ---------------------------------------------------------------- several k: a whole run

@pytest.fixture(scope="module")
def several(tmp_path_factory):
    """A 2-epoch run with k = 3 (the run's clustering) and further clusterings of k = 5 and 7."""
    base = tmp_path_factory.mktemp("several")
    tree = make_blob_tree(base / "tree", classes=3, per_class=8)
    run(tree, base / "exp", "--num_epoch", "2", "--num_classes", "3,5,7", "--verbose", "true")
    return tree, base / "exp"


def test_every_clustering_is_stored_logged_and_drawn(several):
    tree, exp = several
    rows = read_metrics(exp)
    for row in rows:
        assert row["clusters_found"] == 3 and np.isfinite(row["loss"])
        for k in (5, 7):
            assert row[f"clusters_nonempty_k{k}"] == k and 0 <= row[f"nmi_k{k}"] <= 1
            assert np.isfinite(row[f"kmeans_loss_k{k}"]) and f"ari_k{k}" in row
    assert rows[0]["nmi_prev_k5"] is None and 0 <= rows[1]["nmi_prev_k5"] <= 1
    ckpt = torch.load(exp / "checkpoint.pth.tar", weights_only=True)
    assert ckpt["num_classes"] == [3, 5, 7] and ckpt["centroids"].shape[0] == 3
    assert [o["k"] for o in ckpt["other_clusterings"]] == [5, 7]
    for o in ckpt["other_clusterings"]:
        assert o["assignment"].shape == (24,) and o["centroids"].shape == (o["k"], ckpt["pca_A"].shape[0])
        assert len(np.unique(o["assignment"].numpy())) == o["k"] and np.isfinite(o["kmeans_loss"])
    state = ckpt["state_dict"]
    assert state["top_layer.weight"].shape == (3, 4096)
    assert state["extra_heads.0.weight"].shape == (5, 4096) and state["extra_heads.1.weight"].shape == (7, 4096)
    log = (exp / "train.log").read_text()
    assert "k = 3 (and 5, 7: one head each)" in log and "nmi_k5" in log and "k-means with k = 7" in log
    assert (exp / "curves.png").stat().st_size > 10_000


@pytest.mark.slow
def test_pred_and_the_probe_use_the_first_clustering(several, tmp_path):
    tree, exp = several
    import eval_linear
    import pred
    pred.main("cpu", ["--exp_dir", str(exp), "--test_path", str(tree), "--pred_dir", str(tmp_path / "pred"),
                      "--verbose", "false", "--map", "false"])
    m = json.loads((tmp_path / "pred" / "metrics.json").read_text())
    assert m["k"] == 3 and m["n_images"] == 24
    eval_linear.main("cpu", ["--exp_dir", str(exp), "--test_path", str(tree), "--probe_epochs", "2",
                             "--verbose", "false"])
    assert json.loads((exp / "linear_probe.json").read_text())


def test_resuming_with_other_clusterings_is_one_line(several, tmp_path):
    tree, exp = several
    shutil.copytree(exp, tmp_path / "exp")
    with pytest.raises(CheckpointError) as e:
        train.train(cfg.load_cfg(train_args(tree, tmp_path / "exp", "--num_epoch", "3", "--num_classes", "3,5")))
    assert "num_classes=[3, 5, 7]" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["match", "centroids"])
def test_a_resumed_run_with_several_clusterings_matches_an_uninterrupted_one(blob_tree, tmp_path, head):
    args = ("--num_classes", "3,5", "--head", head)
    run(blob_tree, tmp_path / "full", "--num_epoch", "2", *args)
    run(blob_tree, tmp_path / "split", "--num_epoch", "1", *args)
    run(blob_tree, tmp_path / "split", "--num_epoch", "2", *args)
    full, split = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "split")
    assert len(split) == 2
    for a, b in zip(full, split):
        for key in ("loss", "nmi", "nmi_k5", "nmi_prev_k5", "kmeans_loss_k5"):
            assert (a[key] is None and b[key] is None) or a[key] == pytest.approx(b[key], rel=1e-6), (a["epoch"], key)
    wa, wb = (torch.load(tmp_path / r / "checkpoint.pth.tar", weights_only=True) for r in ("full", "split"))
    assert wa["state_dict"].keys() == wb["state_dict"].keys()
    assert all(torch.allclose(wa["state_dict"][k].float(), wb["state_dict"][k].float(), atol=1e-6)
               for k in wa["state_dict"])
    assert torch.equal(wa["other_clusterings"][0]["assignment"], wb["other_clusterings"][0]["assignment"])
    assert ("extra_heads.0.weight" in wa["state_dict"]) == (head == "match")


@pytest.mark.slow
def test_kill_minus_nine_then_rerun_continues_every_clustering(blob_tree, tmp_path):
    """kill -9 right after the first metrics line (the next clusterings under way, their checkpoint not yet
    written); the same command again loses nothing and repeats nothing, with both clusterings."""
    exp = tmp_path / "exp"
    cmd = [sys.executable, "train.py", *train_args(blob_tree, exp, "--num_epoch", "2", "--num_classes", "3,6")]
    done = kill_after_first_metrics(cmd, exp, ROOT)
    assert 0 <= done < 2
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = read_metrics(exp)
    assert [row["epoch"] for row in rows] == [0, 1] and all("nmi_k6" in row for row in rows)
    ckpt = torch.load(exp / "checkpoint.pth.tar", weights_only=True)
    assert ckpt["epoch"] == 2 and [o["k"] for o in ckpt["other_clusterings"]] == [6]
