"""The torch form of every clustering step (what runs on a GPU), on the CPU, against the faiss / numpy form."""
import csv
import os

import numpy as np
import pytest
import torch

import clustering
import distributed
import metrics
import pred
import train
from clustering.kmeans import distinct_start, split_empty
from conftest import make_blob_tree, train_args
from errors import ConfigError

CPU = torch.device("cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def blobs(n_per=150, k=6, d=16, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 6
    labels = np.repeat(np.arange(k), n_per)
    return (centres[labels] + spread * rng.normal(size=(len(labels), d))).astype(np.float32), labels


@pytest.fixture(scope="module")
def real_features():
    """Whitened fc7 features of a random VGG16-BN + Sobel on 300 images of the shipped sample, and their labels."""
    from dataset import ClusterDataset, eval_transform
    from engine import compute_features, make_loader
    from models import build_model
    torch.manual_seed(0)
    ds = ClusterDataset(os.path.join(ROOT, "data", "fashion_mnist_small", "test"), eval_transform(32),
                        log=lambda m: None)
    ds = ds.subset(np.arange(0, 500, 5).tolist() + np.arange(1, 500, 5).tolist() + np.arange(2, 500, 5).tolist())
    feats = compute_features(make_loader(ds, {"batch_size": 100, "workers": 0}, CPU), build_model("vgg16", True, 0, 32),
                             CPU, False)
    return feats, ds.labels


@pytest.mark.parametrize("k, nredo", [(6, 1), (6, 3), (20, 1)])
def test_kmeans_on_blobs_matches_faiss(k, nredo):
    x, labels = blobs()
    a_f, c_f, loss_f = clustering.run_kmeans(x, k, niter=20, seed=3, nredo=nredo)
    a_t, c_t, loss_t = clustering.run_kmeans(x, k, niter=20, seed=3, nredo=nredo, device=CPU)
    assert a_t.dtype == np.int64 and a_t.shape == (len(x),) and c_t.shape == (k, 16) and c_t.dtype == np.float32
    assert loss_t == pytest.approx(loss_f, rel=0.01)
    print(f"blobs k={k} nredo={nredo}: loss torch / faiss {loss_t / loss_f:.5f}, NMI between the partitions "
          f"{metrics.nmi(a_f, a_t):.3f}")
    if k == 6 and nredo > 1:  # one start can land in a local minimum, with faiss as with torch
        assert metrics.nmi(labels, a_t) > 0.99


@pytest.mark.parametrize("k", [10, 30])
def test_kmeans_on_real_features_matches_faiss(real_features, k):
    """Both forms start from the same random rows (a Fisher-Yates permutation of a Mersenne twister seeded alike),
    so on the CPU they reach the same partition; the test allows 1% of loss."""
    feats, labels = real_features
    xb, _ = clustering.preprocess_features(feats, 16, seed=1)
    for seed in (0, 1):
        a_f, _, loss_f = clustering.run_kmeans(xb, k, niter=20, seed=seed, nredo=2)
        a_t, _, loss_t = clustering.run_kmeans(xb, k, niter=20, seed=seed, nredo=2, device=CPU)
        between = metrics.nmi(a_f, a_t)
        print(f"fc7 k={k} seed {seed}: loss torch / faiss {loss_t / loss_f:.5f}, NMI between the partitions "
              f"{between:.3f}, NMI with the classes {metrics.nmi(labels, a_f):.3f} / {metrics.nmi(labels, a_t):.3f}")
        assert loss_t == pytest.approx(loss_f, rel=0.01) and between > 0.9


def test_torch_kmeans_is_deterministic_for_a_seed_and_moves_with_it():
    x, _ = blobs(k=8, spread=3.0)
    first = clustering.run_kmeans(x, 8, niter=10, seed=5, device=CPU)
    again = clustering.run_kmeans(x, 8, niter=10, seed=5, device=CPU)
    other = clustering.run_kmeans(x, 8, niter=10, seed=6, device=CPU)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]
    assert not np.array_equal(first[1], other[1])


def test_k_equal_to_n_puts_every_point_alone():
    x = np.random.default_rng(1).normal(size=(12, 4)).astype(np.float32)
    ids, centroids, loss = clustering.run_kmeans(x, 12, niter=5, seed=0, device=CPU)
    assert sorted(ids.tolist()) == list(range(12)) and loss == pytest.approx(0, abs=1e-4)
    with pytest.raises(ValueError, match="k=13"):
        clustering.run_kmeans(x, 13, device=CPU)


def test_empty_clusters_are_split_from_a_large_one_as_faiss_does():
    centroids = torch.tensor([[1.0, 2.0], [5.0, 5.0], [9.0, 9.0], [0.0, 0.0]])
    counts = torch.tensor([10, 0, 1, 0])
    assert split_empty(centroids, counts, torch.Generator().manual_seed(0)) == 2
    assert (counts > 0).all() and counts.sum() == 11  # the images are shared, none invented
    # cluster 0 is the only one with more than one image: both empty clusters are copies of it, perturbed
    for ci in (1, 3):
        assert torch.allclose(centroids[ci], torch.tensor([1.0, 2.0]), rtol=3e-3)
    assert len({tuple(row.tolist()) for row in centroids}) == 4


def test_crowded_points_leave_no_cluster_empty():
    """40 of 50 rows within 0.001 of one point: random starts collide there, clusters empty out and are re-split
    until every one has images, with both forms."""
    rng = np.random.default_rng(0)
    x = np.concatenate([1 + 1e-3 * rng.normal(size=(40, 3)), rng.normal(size=(10, 3)) + 5]).astype(np.float32)
    for seed in range(5):
        for device in (None, CPU):
            ids, centroids, _ = clustering.run_kmeans(x, 6, niter=20, seed=seed, device=device)
            assert len(np.unique(ids)) == 6 and np.isfinite(centroids).all(), (seed, device)


@pytest.mark.parametrize("device", [None, CPU], ids=["faiss", "torch"])
@pytest.mark.parametrize("k", [6, 9, 12])
def test_many_copies_of_one_image_leave_each_distinct_image_its_own_cluster(real_features, device, k):
    """Burst photos: 200 copies of one image beside 5 distinct ones, whitened, and k at least the 6 distinct
    pictures: every distinct picture is alone in its cluster and the loss is ~0, in both forms and every start
    (from all rows, the start put several centroids on the copies and faiss' re-split of the largest cluster
    cannot divide identical rows: distinct images shared clusters while others stayed empty)."""
    feats, _ = real_features
    x = np.concatenate([np.repeat(feats[:1], 200, 0), feats[[10, 100, 150, 200, 290]]])
    for seed in (0, 1, 2):
        km = clustering.Kmeans(k, pca_dim=4, device=device)
        ids = km.cluster(x, seed=seed)
        distinct = ids[199:]
        assert len(set(distinct.tolist())) == 6 and len(set(ids[:200].tolist())) == 1, (seed, ids[195:])
        assert km.loss < 1e-3 * len(x)


def test_repeated_rows_give_both_forms_the_same_start():
    x = np.concatenate([np.repeat(blobs()[0][:3], 50, 0), blobs()[0][:40]])
    start = distinct_start(x, 30, seed=7)
    assert start is not None and len(set(map(tuple, x[start]))) == 30  # 30 of the 40 distinct rows
    assert np.array_equal(start, distinct_start(torch.from_numpy(x), 30, seed=7))
    assert distinct_start(blobs()[0], 30, seed=7) is None  # no repeats: each form's own start
    small = distinct_start(x[:160], 10, seed=0)  # 3 distinct rows, k = 10
    assert len(set(map(tuple, x[small[:3]]))) == 3


@pytest.mark.slow
def test_whitening_in_float32_tensors_matches_the_float64_reference(real_features):
    """The torch form of the PCA on a tensor: the whitening of numpy's float64 eigendecomposition, and the
    same whitening as the numpy path, for the covariance (n >= d) and the Gram (n < d) routes."""
    feats, _ = real_features
    for x in (feats[:, :256], feats):  # 300 x 256 (covariance) and 300 x 4096 (Gram)
        xt, pca_t = clustering.preprocess_features(torch.from_numpy(x), 8, seed=0)
        xn, pca_n = clustering.preprocess_features(x, 8, seed=0)
        assert isinstance(xt, torch.Tensor) and xt.dtype == torch.float32 and xt.shape == (300, 8)
        assert np.allclose(clustering.to_numpy(xt), xn, atol=1e-5)
        x64 = x.astype(np.float64)
        values, vectors = np.linalg.eigh(np.cov(x64, rowvar=False, bias=True))
        top = vectors[:, ::-1][:, :8] / np.sqrt(values[::-1][:8])
        reference = (x64 - x64.mean(0)) @ top
        reference /= np.linalg.norm(reference, axis=1, keepdims=True)
        signs = np.sign((reference * xn).sum(0))  # eigenvectors are defined up to sign
        assert np.abs(reference * signs - clustering.to_numpy(xt)).max() < 2e-3


def test_streamed_whitening_of_tensors_equals_numpy(real_features):
    feats, _ = real_features
    order = np.random.default_rng(0).permutation(len(feats))
    batches = [(order[i:i + 64], feats[order[i:i + 64]]) for i in range(0, len(feats), 64)]
    xn, _ = clustering.streamed_whitening(batches, len(feats), 8, 100)
    xt, _ = clustering.streamed_whitening([(i, torch.from_numpy(f)) for i, f in batches], len(feats), 8, 100)
    assert isinstance(xt, torch.Tensor) and np.allclose(clustering.to_numpy(xt), xn, atol=1e-5)


def test_equal_size_torch_form_matches_the_dense_plan(real_features):
    feats, _ = real_features
    xb, _ = clustering.preprocess_features(feats, 16, seed=1)
    _, centroids, _ = clustering.run_kmeans(xb, 10, niter=20, seed=0)
    off_n, it_n = clustering.equal_size_offsets(xb, centroids)
    off_t, it_t = clustering.equal_size_offsets(xb, centroids, device=CPU)
    ids_n, _ = clustering.nearest_centroid(xb, centroids, off_n)
    ids_t, _ = clustering.nearest_centroid(xb, centroids, off_t, device=CPU)
    assert off_t.dtype == np.float32 and off_t.min() == 0 and it_t == it_n
    assert np.allclose(off_t, off_n, rtol=1e-4, atol=1e-6) and (ids_t == ids_n).mean() >= 0.99
    assert np.bincount(ids_t, minlength=10).min() >= 28 and np.bincount(ids_t).max() <= 32  # 300 / 10


def test_equal_size_with_fewer_candidates_than_clusters_still_evens_sizes(monkeypatch):
    """Each image keeps only its 8 nearest of 40 centroids (the form for k = 10,000): sizes still come out even."""
    monkeypatch.setattr(clustering.equal_size, "EQUAL_SIZE_CANDIDATES", 8)
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(size=(600, 8)), rng.normal(size=(200, 8)) + 4]).astype(np.float32)
    _, centroids, _ = clustering.run_kmeans(x, 40, niter=20, seed=0)
    offsets, _ = clustering.equal_size.torch_equal_size_offsets(torch.from_numpy(x), centroids, candidates=8)
    ids, _ = clustering.nearest_centroid(x, centroids, offsets, device=CPU)
    sizes = np.bincount(ids, minlength=40)
    assert sizes.min() >= 15 and sizes.max() <= 25  # 800 / 40 = 20


def test_equal_size_candidates_grow_only_within_the_memory_budget(monkeypatch):
    """Uneven groups with 1 candidate per image cannot be evened, so m doubles, but only while the form's peak
    (torch_bytes) stays within torch_budget; a start that does not fit is one line, before any work."""
    eq = clustering.equal_size
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(size=(600, 8)), rng.normal(size=(200, 8)) + 4]).astype(np.float32)
    _, centroids, _ = clustering.run_kmeans(x, 40, niter=20, seed=0)
    budget = eq.torch_bytes(len(x), 4, 8) + 1  # m = 1, 2, 4 fit; 8 does not
    monkeypatch.setattr(eq, "torch_budget", lambda device: budget)
    seen, search = [], eq.nearest_candidates
    monkeypatch.setattr(eq, "nearest_candidates", lambda x, c, m: seen.append(m) or search(x, c, m))
    offsets, _ = eq.torch_equal_size_offsets(torch.from_numpy(x), centroids, candidates=1)
    assert seen == [1, 2, 4]
    largest = [np.bincount(clustering.nearest_centroid(x, centroids, o, device=CPU)[0], minlength=40).max()
               for o in (offsets, None)]
    assert largest[0] <= largest[1]  # stopped unconverged: never less even than k-means' own partition
    assert eq.torch_bytes(800, 64, 256) == 800 * (64 * 72 + 256 * 8)
    with pytest.raises(ConfigError, match=r"equal_size holds 1,000,000 images x 64 candidate clusters = 6\.2 GiB at "
                                          r"its peak \(at most 0 GiB on cpu\)"):
        eq.check_equal_size_fits(1_000_000, 100, CPU)


def test_nearest_centroid_torch_form_matches_faiss_with_offsets():
    rng = np.random.default_rng(7)
    x, c = rng.normal(size=(500, 6)).astype(np.float32), rng.normal(size=(9, 6)).astype(np.float32)
    offsets = rng.uniform(0, 2, 9).astype(np.float32)
    for off in (None, offsets):
        ids_f, dist_f = clustering.nearest_centroid(x, c, off)
        ids_t, dist_t = clustering.nearest_centroid(x, c, off, device=CPU)
        assert np.array_equal(ids_f, ids_t) and np.allclose(dist_f, dist_t, atol=1e-4)


def test_knn_graph_torch_form_matches_faiss():
    x, _ = blobs(n_per=40, k=5, d=8)
    x[1] = x[0]  # a duplicate: the point itself need not come first
    nbrs_f, dist_f = clustering.knn_graph(x, 5)
    nbrs_t, dist_t = clustering.knn_graph(x, 5, device=CPU)
    assert nbrs_t.shape == (200, 5) and not (nbrs_t == np.arange(200)[:, None]).any()
    assert np.allclose(np.sort(dist_f, 1), np.sort(dist_t, 1), atol=1e-3)
    assert (np.sort(nbrs_f, 1) == np.sort(nbrs_t, 1)).mean() > 0.98  # ties may be broken otherwise
    labels_f = clustering.run_pic(x, nnn=5)
    labels_t = clustering.run_pic(x, nnn=5, device=CPU)
    assert metrics.nmi(labels_f, labels_t) > 0.95


def test_gather_rows_of_a_tensor_stays_a_tensor():
    rows = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    out = distributed.gather_rows(np.array([2, 0, 3, 1]), rows, 4, "cpu")
    assert isinstance(out, torch.Tensor) and torch.equal(out[2], rows[0])


@pytest.mark.slow
def test_a_run_clustered_in_torch_predicts_its_assignment_with_either_form(tmp_path):
    """train.py with clustering_device torch (the GPU code, here on the CPU); pred.py's assign mode gives the
    training assignment back with the torch form and with faiss."""
    tree = make_blob_tree(tmp_path / "tree", classes=3, per_class=6)
    exp = tmp_path / "exp"
    train.main("cpu", train_args(tree, exp, "--num_epoch", "1", "--num_classes", "4", "--equal_size", "true",
                                 "--clustering_device", "torch", "--select_epoch", "last"))
    assert "clustering with torch on cpu" in (exp / "train.log").read_text()
    stored = torch.load(exp / "checkpoint.pth.tar", weights_only=True)["assignment"].tolist()
    for form in ("torch", "cpu"):
        out = tmp_path / f"pred_{form}"
        pred.main("cpu", ["--exp_dir", str(exp), "--test_path", tree, "--pred_dir", str(out), "--clustering_device",
                          form, "--verbose", "false"])
        with open(out / "predictions.csv") as f:
            assert [int(r["cluster"]) for r in csv.DictReader(f)] == stored, form


def test_torch_and_faiss_runs_start_alike(tmp_path):
    """Epoch 0 (the random network) clustered with either form: the same partition."""
    tree = make_blob_tree(tmp_path / "tree", classes=3, per_class=8)
    for form in ("cpu", "torch"):
        train.main("cpu", train_args(tree, tmp_path / form, "--num_epoch", "0", "--clustering_device", form))
    a = torch.load(tmp_path / "cpu" / "checkpoint.pth.tar", weights_only=True)
    b = torch.load(tmp_path / "torch" / "checkpoint.pth.tar", weights_only=True)
    assert metrics.nmi(a["assignment"].numpy(), b["assignment"].numpy()) == pytest.approx(1.0)
    assert torch.allclose(a["pca_A"], b["pca_A"], atol=1e-5)
