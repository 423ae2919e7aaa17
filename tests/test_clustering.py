import numpy as np
import pytest

import metrics
import clustering
from clustering import (Kmeans, UnifLabelSampler, apply_pca, assign_to_centroids, epoch_seed, equal_size_offsets,
                        fit_pca_whitening, l2_normalize, nearest_centroid, preprocess_features, run_kmeans, top_eigh,
                        streamed_whitening, uniform_label_indices)


def correlated_data(n=600, d=40, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.linspace(10, 0.5, d)
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return (rng.normal(size=(n, d)) * scales) @ basis.T + 5.0, basis


@pytest.mark.parametrize("method", ["torch", "faiss"])
@pytest.mark.parametrize("n", [600, 30])  # covariance route and Gram route (fewer samples than dims)
def test_pca_whitening_matches_the_exact_solution(method, n):
    x, _ = correlated_data(n=n)
    pca = fit_pca_whitening(x.astype(np.float32), 10, method=method)
    y = x @ pca["A"].T + pca["b"]
    # whitened: zero mean, identity covariance up to one global scale
    cov = np.cov(y.T)
    assert np.abs(y.mean(0)).max() < 1e-3
    assert np.allclose(cov / cov[0, 0], np.eye(10), atol=1e-3 if n > 100 else 1e-2)
    # the kept directions are the top-10 principal directions of numpy's eigendecomposition
    evals, evecs = np.linalg.eigh(np.cov(x.T))
    top = evecs[:, ::-1][:, :10]
    directions = pca["A"] / np.linalg.norm(pca["A"], axis=1, keepdims=True)
    assert np.allclose(np.abs(directions @ top), np.eye(10), atol=1e-3)
    # scaled by 1/sqrt(eigenvalue): the row norms of A grow as the eigenvalues shrink
    ratios = np.linalg.norm(pca["A"], axis=1) * np.sqrt(evals[::-1][:10])
    assert np.allclose(ratios / ratios[0], 1, atol=1e-3)


def test_randomized_eigensolver_finds_the_top_subspace():
    """Above 2048 dims top_eigh iterates instead of a full eigh; it must find the same subspace."""
    import torch
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(2100, 60)))[0]
    m = (basis * np.geomspace(100, 0.1, 60)) @ basis.T + np.eye(2100) * 1e-4
    values, vectors = top_eigh(torch.from_numpy(m.astype(np.float32)), 20)
    assert values.shape == (20,) and (values[:-1] >= values[1:]).all()
    assert np.allclose(values.numpy(), np.geomspace(100, 0.1, 60)[:20] + 1e-4, rtol=1e-3)
    cosines = np.linalg.svd(vectors.numpy().T @ basis[:, :20], compute_uv=False)
    assert cosines.min() > 0.999


def test_torch_and_faiss_whitening_give_the_same_clusters_on_real_features():
    import torch
    from dataset import ClusterDataset, eval_transform
    from models import build_model
    ds = ClusterDataset("data/fashion_mnist_small/train", eval_transform(32))
    torch.manual_seed(0)
    model = build_model("vgg16", True, 0, 32).eval()
    with torch.inference_mode():
        feats = torch.cat([model(torch.stack([ds[i][0] for i in range(j, j + 100)])) for j in range(0, 2000, 400)])
    feats = feats.numpy()  # 500 images, 100 from each of 5 classes
    assignments = {}
    for method in ("torch", "faiss"):
        xb, _ = preprocess_features(feats, 256, method=method)
        assignments[method] = run_kmeans(xb, 10, niter=20, seed=5)[0]
    assert metrics.nmi(assignments["torch"], assignments["faiss"]) >= 0.95


def test_preprocess_gives_unit_rows():
    x, _ = correlated_data()
    xb, pca = preprocess_features(x, 16)
    assert xb.shape == (600, 16) and xb.dtype == np.float32
    assert np.allclose(np.linalg.norm(xb, axis=1), 1, atol=1e-5)
    assert np.allclose(apply_pca(x, pca), xb, atol=1e-5)


def test_zero_rows_do_not_become_nan():
    y = np.zeros((3, 4), dtype=np.float32)
    y[1] = [3, 4, 0, 0]
    out = l2_normalize(y)
    assert np.isfinite(out).all() and (out[0] == 0).all() and np.allclose(out[1], [0.6, 0.8, 0, 0])
    x = np.zeros((50, 30), dtype=np.float32)
    x[:25, 0] = 1.0  # many identical rows, one direction, NaN-prone whitening
    xb, _ = preprocess_features(x, 8)
    assert np.isfinite(xb).all()


def test_fewer_samples_than_dimensions_are_clamped():
    x = np.random.default_rng(0).normal(size=(40, 100)).astype(np.float32)
    xb, pca = preprocess_features(x, 256)  # an explicit dimension is kept below n - 1
    assert xb.shape == (40, 38) and np.isfinite(xb).all() and pca["A"].shape == (38, 100)
    assert "clamped to 38" in clustering.clamp_note(256, 40, 100)
    xb, _ = preprocess_features(x, 0)  # automatic: one dimension per 8 points
    assert xb.shape == (40, 5) and "pca_dim 0 (automatic): 5 whitened dimensions for 40 images" in \
        clustering.clamp_note(0, 40, 100)
    assert clustering.clamp_note(16, 4000, 100) is None and clustering.clamp_note(0, 4000, 100) is None


@pytest.mark.parametrize("n, auto", [(2, 1), (3, 1), (4, 2), (16, 2), (24, 3), (100, 12), (500, 16)])
def test_the_automatic_whitening_keeps_far_fewer_dimensions_than_points(n, auto):
    """Never n - 1 (a regular simplex: all distances equal): about one dimension per 8 points, at most 16."""
    assert clustering.auto_pca_dim(n) == auto
    assert clustering.clamp_pca_dim(0, n, 4096) == auto and clustering.clamp_pca_dim(0, n, 1) == 1


@pytest.mark.parametrize("pca_dim, n, dim, note", [(4, 16, 4, "pca_dim 4 kept as set; on 16 images"),
                                                   (8, 16, 8, "pca_dim 8 kept as set"),
                                                   (15, 16, 14, "pca_dim 15 clamped to 14"),
                                                   (2, 16, 2, None), (256, 100000, 256, None)])
def test_an_explicit_whitening_dimension_stands_below_n_minus_one(pca_dim, n, dim, note):
    """--pca_dim 4 on 16 images is kept (it was clamped to the automatic 2), with a log line saying what the
    automatic choice would be; only n - 1 and more (the regular simplex) are clamped."""
    assert clustering.clamp_pca_dim(pca_dim, n, 4096) == dim
    got = clustering.clamp_note(pca_dim, n, 4096)
    assert (got is None) if note is None else got.startswith(note)


def test_whitening_small_sets_keeps_two_separated_groups_apart():
    """16 points of two well separated kinds, 100 dims: whitened to n - 1 = 15 dims every pair of points is equally
    far apart and k-means is at chance; at the automatic dimension it finds the two kinds."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 100)).astype(np.float32)
    x[:8, :10] += 6.0
    labels = np.repeat([0, 1], 8)
    simplex = clustering.fit_pca_whitening(x, 15)
    xs = clustering.apply_pca(x, simplex)
    d = ((xs[:, None] - xs[None]) ** 2).sum(2)[~np.eye(16, dtype=bool)]
    assert d.std() < 1e-3 * d.mean()  # the regular simplex
    xb, _ = preprocess_features(x, 0)
    ids, _, _ = run_kmeans(xb, 2, niter=20, seed=0, nredo=5)
    assert xb.shape == (16, 2) and metrics.nmi(labels, ids) == pytest.approx(1.0)


def blobs(n_per=200, k=4, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * 20
    labels = np.repeat(np.arange(k), n_per)
    return (centers[labels] + rng.normal(size=(len(labels), d))).astype(np.float32), labels


def test_kmeans_recovers_separated_blobs():
    x, labels = blobs()
    assignment, centroids, loss = run_kmeans(x, 4, niter=20, seed=3)
    assert assignment.shape == labels.shape and assignment.dtype == np.int64
    assert metrics.nmi(labels, assignment) == 1.0
    assert centroids.shape == (4, 8) and np.isfinite(loss) and loss > 0
    # the reported loss is the sum of squared distances to the centroids
    assert loss == pytest.approx(((x - centroids[assignment]) ** 2).sum(), rel=1e-3)


def test_kmeans_uses_every_point():
    """faiss would train on 256 points per centroid; our centroids are the means over ALL points."""
    x, labels = blobs(n_per=2000, k=2)
    assignment, centroids, _ = run_kmeans(x, 2, niter=10, seed=1)
    for c in range(2):
        assert np.allclose(centroids[c], x[assignment == c].mean(0), atol=1e-3)


def test_kmeans_wrapper_and_nearest_centroid_agree():
    x, labels = blobs(d=50)
    km = Kmeans(4, pca_dim=10, niter=10)
    assignment = km.cluster(x, seed=epoch_seed(31, 0))
    assert km.pca["A"].shape == (10, 50) and km.centroids.shape == (4, 10)
    ids, dist = assign_to_centroids(x, km.pca, km.centroids)
    assert (ids == assignment).all() and (dist >= 0).all()
    assert km.assignment.shape == (len(x),) and set(km.assignment.tolist()) <= set(range(4))


def test_kmeans_restarts_keep_the_lowest_loss():
    """nredo > 1 keeps the best of several random starts: never worse than its first start (the nredo 1 run)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 6)).astype(np.float32)  # no clear clusters: starts land in different minima
    sse = lambda a, c: float(((x - c[a]) ** 2).sum())
    singles = [sse(*run_kmeans(x, 12, niter=10, seed=s)[:2]) for s in range(5)]
    a, c, loss = run_kmeans(x, 12, niter=10, seed=0, nredo=5)
    assert loss == pytest.approx(sse(a, c), rel=1e-4)
    assert sse(a, c) <= singles[0] * (1 + 1e-4)
    assert len(set(round(v, 1) for v in singles)) > 1  # the starts really differed


def uneven_blobs():
    """90 points around (0, 0), 10 around (10, 0): k-means with k = 2 splits them 90 / 10."""
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(size=(90, 2)), rng.normal(size=(10, 2)) + [10.0, 0.0]]).astype(np.float32)
    return x, np.repeat([0, 1], [90, 10])


def equal_size_partition(x, centroids):
    offsets, iterations = equal_size_offsets(x, centroids)
    return nearest_centroid(x, centroids, offsets)[0], iterations


def test_equal_size_partition_evens_out_uneven_clusters():
    x, labels = uneven_blobs()
    a, centroids, _ = run_kmeans(x, 2, niter=20, seed=1)
    assert sorted(np.bincount(a).tolist()) == [10, 90]
    eq, iterations = equal_size_partition(x, centroids)
    assert sorted(np.bincount(eq, minlength=2).tolist()) == [50, 50] and iterations < 2000
    far = a[labels == 1][0]  # the small blob's cluster keeps all its points and takes the 40 nearest others
    assert (eq[labels == 1] == far).all()
    moved = np.flatnonzero((labels == 0) & (eq == far))
    stayed = np.flatnonzero((labels == 0) & (eq != far))
    assert x[moved, 0].min() >= x[stayed, 0].max()  # the moved ones are the big blob's points closest to the small one


def test_equal_size_offsets_are_sinkhorns_transport_plan():
    """The offsets give each row the cluster of its largest entry in the Sinkhorn plan, computed here in full."""
    x, _ = uneven_blobs()
    _, centroids, _ = run_kmeans(x, 2, niter=20, seed=1)
    offsets, _ = equal_size_offsets(x, centroids, eps=0.05, tol=1e-9)
    d = ((x[:, None, :].astype(np.float64) - centroids[None].astype(np.float64)) ** 2).sum(2)
    kernel = np.exp(-d / (0.05 * d.mean()))
    u, v = np.ones(len(x)), np.ones(2)
    for _ in range(20000):
        v = (1 / 2) / (kernel.T @ u)
        u = (1 / len(x)) / (kernel @ v)
    plan = u[:, None] * kernel * v[None, :]
    assert np.allclose(plan.sum(0), 0.5, atol=1e-6)
    assert offsets.min() == 0 and (nearest_centroid(x, centroids, offsets)[0] == plan.argmax(1)).all()


def test_equal_size_partition_keeps_even_separated_clusters():
    x, labels = blobs()
    a, centroids, _ = run_kmeans(x, 4, niter=20, seed=3)
    eq, _ = equal_size_partition(x, centroids)
    assert (eq == a).all()


def test_kmeans_equal_size_assignment_is_the_nearest_centroid_after_the_offsets():
    """The stored clustering (centroids + offsets) is the partition itself: pred.py's assign mode gives it back."""
    x, _ = uneven_blobs()
    km = Kmeans(2, niter=20, equal_size=True)
    lines = []
    assignment = km.cluster_whitened(x, pca=None, seed=1, log=lines.append)  # the rows as they come out of whitening
    assert np.bincount(assignment).tolist() == [50, 50] and (km.assignment == assignment).all()
    assert (nearest_centroid(x, km.centroids, km.offsets)[0] == assignment).all()
    assert not (nearest_centroid(x, km.centroids)[0] == assignment).all()  # without the offsets it would not be
    means = np.stack([x[assignment == c].mean(0) for c in range(2)])
    assert km.loss == pytest.approx(((x - means[assignment]) ** 2).sum(), rel=1e-4)  # the partition's k-means loss
    assert any("clusters made equal in size" in line and "10-90 -> 50-50 images" in line for line in lines)


def test_nearest_centroid_with_offsets_against_brute_force():
    rng = np.random.default_rng(5)
    x, c = rng.normal(size=(300, 6)).astype(np.float32), rng.normal(size=(7, 6)).astype(np.float32)
    offsets = rng.uniform(0, 3, 7).astype(np.float32)
    ids, dist = nearest_centroid(x, c, offsets)
    d = ((x[:, None, :] - c[None]) ** 2).sum(2)
    assert (ids == (d + offsets).argmin(1)).all()
    assert np.allclose(dist, d[np.arange(300), ids], atol=1e-4)
    assert (nearest_centroid(x, c, np.zeros(7))[0] == d.argmin(1)).all()
    with pytest.raises(ValueError, match="offsets"):
        nearest_centroid(x, c, -offsets)


def test_equal_size_refuses_a_plan_too_large_for_memory(monkeypatch):
    monkeypatch.setattr(clustering.equal_size, "EQUAL_SIZE_MAX_CELLS", 150)
    x, _ = uneven_blobs()
    with pytest.raises(SystemExit, match="100 images x 2 clusters = 200 distances.*lower num_classes"):
        equal_size_offsets(x, np.zeros((2, 2), dtype=np.float32))


def test_too_few_points_for_k():
    with pytest.raises(ValueError, match="k=5"):
        run_kmeans(np.zeros((3, 2), dtype=np.float32), 5)


def test_epoch_seeds_are_fresh_and_reproducible():
    seeds = [epoch_seed(31, e) for e in range(50)]
    assert len(set(seeds)) == 50 and seeds == [epoch_seed(31, e) for e in range(50)]
    assert epoch_seed(32, 0) != epoch_seed(31, 0)


def test_sampler_is_uniform_over_nonempty_clusters():
    rng = np.random.default_rng(0)
    # clusters 0..5 of very different sizes; cluster 3 is empty, cluster 5 has two images
    sizes = {0: 500, 1: 300, 2: 150, 4: 48, 5: 2}
    assignment = np.concatenate([np.full(s, c) for c, s in sizes.items()])
    rng.shuffle(assignment)
    n = len(assignment)
    sampler = UnifLabelSampler(assignment, seed=7)
    idx = np.array(list(sampler))
    assert len(sampler) == n and len(idx) == n
    assert idx.min() >= 0 and idx.max() < n
    counts = np.bincount(assignment[idx], minlength=6)
    assert counts[3] == 0
    per_cluster = int(n / 5) + 1
    assert counts[[0, 1, 2, 4, 5]].max() <= per_cluster
    assert counts[[0, 1, 2, 4, 5]].min() >= per_cluster - (5 * per_cluster - n)
    # big clusters are drawn without replacement, small ones with
    big = idx[assignment[idx] == 0]
    assert len(np.unique(big)) == len(big)
    assert len(np.unique(idx[assignment[idx] == 5])) == 2


def test_sampler_is_deterministic_per_seed():
    assignment = np.arange(100) % 7
    a = uniform_label_indices(assignment, 100, seed=1)
    assert (a == uniform_label_indices(assignment, 100, seed=1)).all()
    assert not (a == uniform_label_indices(assignment, 100, seed=2)).all()


def test_streamed_whitening_equals_the_batch_path_when_the_fit_sees_everything():
    x, _ = correlated_data(n=300, d=40)
    expected, pca = preprocess_features(x, 10)
    order = np.random.default_rng(0).permutation(300)
    batches = [(order[i:i + 64], x[order[i:i + 64]]) for i in range(0, 300, 64)]
    got, pca2 = streamed_whitening(iter(batches), 300, 10, fit_samples=300)
    # same rows in another order: the same PCA up to float rounding, every row at its own index
    assert np.allclose(got, expected, atol=1e-4) or np.allclose(np.abs(got), np.abs(expected), atol=1e-4)
    in_order = [(np.arange(i, min(i + 64, 300)), x[i:i + 64]) for i in range(0, 300, 64)]
    got, _ = streamed_whitening(iter(in_order), 300, 10, fit_samples=10_000)
    assert np.array_equal(got, expected)


def test_streamed_whitening_fits_on_a_sample_and_projects_the_rest():
    rng = np.random.default_rng(1)
    scales = np.r_[np.linspace(10, 5, 10), np.full(30, 0.5)]  # a clear gap after 10 directions
    x = (rng.normal(size=(2000, 40)) * scales @ np.linalg.qr(rng.normal(size=(40, 40)))[0]).astype(np.float32)
    seen = []

    def batches():
        for i in range(0, 2000, 100):
            seen.append(i)
            yield np.arange(i, i + 100), x[i:i + 100]

    got, pca = streamed_whitening(batches(), 2000, 10, fit_samples=450)  # the 5th batch straddles the sample
    assert got.shape == (2000, 10) and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert np.allclose(got, apply_pca(x, pca), atol=1e-6)  # every row projected with the sample's PCA
    full = fit_pca_whitening(x, 10)
    # a 450-row sample already finds the same subspace as all 2000 rows
    d1 = pca["A"] / np.linalg.norm(pca["A"], axis=1, keepdims=True)
    d2 = full["A"] / np.linalg.norm(full["A"], axis=1, keepdims=True)
    assert np.linalg.svd(d1 @ d2.T, compute_uv=False).min() > 0.95
