import tracemalloc

import numpy as np
import pytest

import metrics
import train
from clustering import PIC, knn_graph, merge_singletons, pic_graph, run_pic
from conftest import train_args


def unit_blobs(sizes, d=16, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.linalg.qr(rng.normal(size=(d, d)))[0][: len(sizes)]  # orthogonal: far apart on the sphere
    labels = np.repeat(np.arange(len(sizes)), sizes)
    x = centers[labels] + rng.normal(size=(len(labels), d)) * spread
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def test_cliques_come_out_as_the_blobs():
    # blobs of nnn + 1 points: every point's neighbours are exactly its own blob
    x, labels = unit_blobs([6, 6, 6, 6])
    found = run_pic(x, nnn=5)
    assert metrics.nmi(labels, found) == 1.0 and found.max() + 1 == 4


def test_big_blobs_are_never_mixed():
    x, labels = unit_blobs([150, 150, 150])
    found = run_pic(x)
    assert metrics.purity(labels, found) == 1.0  # every found cluster lies inside one blob
    assert found.max() + 1 >= 3


def test_singletons_join_their_nearest_non_singleton_neighbour():
    labels = np.array([0, 0, 1, 2, 2, 3])
    nbrs = np.array([[1, 2], [0, 2], [5, 3], [4, 0], [3, 0], [2, 4]])
    out = merge_singletons(labels, nbrs)
    # 2 (alone) -> nearest is 5 (alone too) -> then 3 (cluster {3, 4}); 5 -> nearest 2 (alone) -> 4
    assert out[2] == out[3] == out[4] == out[5] and out[0] == out[1] != out[3]
    assert set(out.tolist()) == {0, 1}


def test_outlier_is_merged_not_left_alone():
    x, _ = unit_blobs([6, 6])
    outlier = -x[:1]  # opposite side of the sphere: its edges weigh exp(-4 / 0.04) = 0 in float32
    found = run_pic(np.concatenate([x, outlier]), nnn=5)
    assert np.bincount(found).min() > 1


def test_graph_is_sparse_and_symmetric():
    x, _ = unit_blobs([30, 30])
    nbrs, dist = knn_graph(x, 5)
    assert nbrs.shape == (60, 5) and not (nbrs == np.arange(60)[:, None]).any()
    w = pic_graph(nbrs, dist, 0.2)
    assert w.nnz <= 2 * 60 * 5 and abs(w - w.T).max() == 0
    # duplicates: self need not come first among the neighbours, it is removed anyway
    nbrs, _ = knn_graph(np.concatenate([x, x]), 5)
    assert not (nbrs == np.arange(120)[:, None]).any()


def test_deterministic():
    x, _ = unit_blobs([100, 100], seed=3)
    assert (run_pic(x) == run_pic(x)).all()
    pic = PIC(pca_dim=8)
    a = pic.cluster(x, seed=1)
    assert (a == PIC(pca_dim=8).cluster(x, seed=2)).all()
    assert pic.centroids.shape == (pic.k, 8)


@pytest.mark.slow
def test_fifty_thousand_points_without_a_dense_matrix():
    x = np.random.default_rng(0).normal(size=(50_000, 256)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    tracemalloc.start()
    found = run_pic(x)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(found) == 50_000 and found.min() == 0
    assert peak < 200 * 2**20  # a dense 50k x 50k float32 matrix alone would be 9.3 GiB


@pytest.mark.slow
def test_train_runs_two_epochs_with_pic(blob_tree, tmp_path):
    from test_train import read_metrics
    train.main("cpu", train_args(blob_tree, tmp_path / "exp", "--num_epoch", "2", "--clustering", "pic",
                                 "--pic_nnn", "3"))
    rows = read_metrics(tmp_path / "exp")
    assert [r["epoch"] for r in rows] == [0, 1]
    assert all(r["clusters_found"] >= 1 and r["clusters_nonempty"] == r["clusters_found"] for r in rows)
