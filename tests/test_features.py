"""The clustering space (clustering_space umap) and the augmented views of each image (views)."""
import json

import numpy as np
import pytest
import torch

import cfg
import clustering
import curves
import metrics
import pred
import train
from conftest import train_args
from errors import ConfigError


def groups(n_per=20, k=3, d=8, seed=0):
    """k well-separated groups of L2-normalised rows (n_per each) and their labels."""
    rng = np.random.default_rng(seed)
    centres = np.eye(d, dtype=np.float32)[:k] * 4
    x = np.concatenate([c + 0.3 * rng.standard_normal((n_per, d)).astype(np.float32) for c in centres])
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.repeat(np.arange(k), n_per)


@pytest.mark.slow
def test_umap_space_finds_the_groups_and_keeps_centroids_of_the_whitened_rows():
    xb, y = groups()
    km = clustering.Kmeans(3, pca_dim=8, niter=10, equal_size=True, space="umap")
    ids = km.cluster_whitened(xb, pca=None, seed=5)
    assert metrics.nmi(y, ids) == pytest.approx(1.0)
    assert km.centroids.shape == (3, 8) and not km.offsets.any()
    for j in range(3):  # the stored centroids are the whitened rows' means: assign mode needs no UMAP model
        np.testing.assert_allclose(km.centroids[j], xb[ids == j].mean(0), atol=1e-5)
    again = clustering.Kmeans(3, pca_dim=8, niter=10, equal_size=True, space="umap").cluster_whitened(xb, None, 5)
    np.testing.assert_array_equal(ids, again)


def test_umap_embedding_is_seeded_and_keeps_the_rows_kind():
    xb, _ = groups()
    a, b = clustering.umap_embed(xb, 3), clustering.umap_embed(torch.from_numpy(xb), 3)
    assert a.shape == (60, clustering.UMAP_DIM) and a.dtype == np.float32 and torch.is_tensor(b)
    np.testing.assert_array_equal(a, b.numpy())
    assert clustering.umap_embed(xb[:5], 3) is not None and clustering.umap_embed(xb[:5], 3).shape == (5, 8)


def test_umap_is_refused_in_one_line_where_it_cannot_run(blob_tree, tmp_path):
    assert clustering.umap_refusal(clustering.UMAP_MAX_IMAGES) is None
    assert "use clustering_space whitened" in clustering.umap_refusal(clustering.UMAP_MAX_IMAGES + 1)
    with pytest.raises(ValueError, match="clustering_space umap"):
        clustering.umap_embed(np.zeros((clustering.UMAP_MAX_IMAGES + 1, 1), dtype=np.float32))
    with pytest.raises(ConfigError, match="'clustering_space' umap is a space for k-means"):
        cfg.load_cfg(["--clustering_space", "umap", "--clustering", "pic"], script="train", given=set())
    c = cfg.load_cfg(["--clustering_space", "umap"], script="train", given=set())
    with pytest.raises(ConfigError, match="--shard_clustering false"):
        train.check_processes(c, torch.device("cpu"), world=2)
    train.check_processes({**c, "shard_clustering": False}, torch.device("cpu"), world=2)


@pytest.mark.slow
def test_a_run_in_the_umap_space_trains_saves_and_predicts(blob_tree, tmp_path):
    exp = tmp_path / "exp"
    train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "1", "--clustering_space", "umap"))
    assert "k-means with k = 3 in the UMAP space of the whitened features" in (exp / "train.log").read_text()
    ckpt = torch.load(exp / "checkpoint.pth.tar", weights_only=False)
    assert ckpt["centroids"].shape == (3, 8) and ckpt["cfg"]["clustering_space"] == "umap"
    for mode in ("assign", "recluster"):
        out = tmp_path / mode
        pred.main("cpu", ["--exp_dir", str(exp), "--pred_mode", mode, "--pred_dir", str(out), "--report", "false",
                          "--map", "false", "--verbose", "false"])
        result = json.loads((out / "metrics.json").read_text())
        assert result["k"] == 3 and len((out / "predictions.csv").read_text().splitlines()) == 19


@pytest.mark.slow
def test_two_views_repeat_each_drawn_image_side_by_side(blob_tree, tmp_path, monkeypatch):
    orders, original = {}, train.make_loader

    def record(views):
        def loader(dataset, c, device, sampler=None):
            if sampler is not None:
                orders[views] = list(sampler)
            return original(dataset, c, device, sampler)
        return loader

    for views in (1, 2):
        monkeypatch.setattr(train, "make_loader", record(views))
        train.main("cpu", train_args(blob_tree, tmp_path / f"v{views}", "--num_epoch", "1", "--views", str(views)))
    assert len(orders[2]) == 2 * len(orders[1]) == 36
    assert orders[2] == np.repeat(orders[1], 2).tolist()  # the same draw, each image twice in a row
    assert "2 augmented views of each image per epoch" in (tmp_path / "v2" / "train.log").read_text()


def test_silhouette_is_high_for_separated_groups_low_for_a_random_cut_and_none_without_two_clusters():
    xb, y = groups()
    assert metrics.silhouette(xb, y) > 0.8
    cut = np.random.default_rng(0).integers(0, 3, len(y))
    assert abs(metrics.silhouette(xb, cut)) < 0.1
    assert metrics.silhouette(torch.from_numpy(xb), y) == pytest.approx(metrics.silhouette(xb, y))
    assert metrics.silhouette(xb, y, seed=1, rows=30) == metrics.silhouette(xb, y, seed=1, rows=30)  # seeded sample
    assert metrics.silhouette(xb, np.zeros(len(y))) is None and metrics.silhouette(xb[:2], y[:2]) is None


def gain_of(start, trained, init="", selected=None, epochs=3):
    rows = [{"epoch": e, "silhouette": s} for e, s in enumerate([start, 0.0, 0.0])]
    ckpt = {"epoch": epochs, "cfg": {"select_epoch": "last" if selected is None else "nmi_prev", "init": init},
            "selected": selected, "clustering_metrics": {"silhouette": trained, "clusters_found": 4},
            "assignment": torch.zeros(40, dtype=torch.long)}
    return curves.training_gain(rows, ckpt)


def test_the_training_gain_line_says_when_training_did_not_beat_the_random_start():
    up, flat = gain_of(0.10, 0.25), gain_of(0.10, 0.13)  # 2.5-fold: helped; 1.3-fold: as on the small collections
    assert up["clearer"] and not flat["clearer"] and up["n_images"] == 40 and up["k"] == 4
    assert "at least 1.5 times the start's" in curves.training_gain_line(up)
    line = curves.training_gain_line(flat)
    assert "\n" not in line and "silhouette 0.130, the random start's 0.100" in line
    assert "a pretrained start is likely the better one (--init" in line
    assert not gain_of(-0.2, -0.15)["clearer"] and gain_of(-0.2, -0.05)["clearer"]  # a rise by half the start's size
    assert "--init" not in curves.training_gain_line(gain_of(0.10, 0.05, init="vgg.pth"))
    chosen = gain_of(0.10, 0.9, selected={"rule": "nmi_prev", "epoch": 1, "score": 0.5})  # the chosen epoch's row
    assert chosen["epoch"] == 1 and chosen["trained"] == 0.0 and not chosen["clearer"]
    assert gain_of(None, 0.3) is None and gain_of(0.1, None) is None
    assert curves.training_gain(rows=[{"epoch": 0, "silhouette": 0.1}], ckpt=None) is None  # a rank without one


@pytest.mark.slow
def test_a_run_logs_the_training_gain_and_pred_shows_it(blob_tree, tmp_path):
    exp = tmp_path / "exp"
    train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "1"))
    rows = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    assert -1 <= rows[0]["silhouette"] <= 1
    assert "without labels, on the run's 18 training images: the clusters of the network after epoch 1" in (
        exp / "train.log").read_text()
    out = tmp_path / "out"
    result = pred.main("cpu", ["--exp_dir", str(exp), "--pred_dir", str(out), "--map", "false", "--verbose", "false"])
    assert result["training_gain"]["start"] == pytest.approx(rows[0]["silhouette"])
    assert "training, without labels" in (out / "index.html").read_text()
