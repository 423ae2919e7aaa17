"""The math of one DeepCluster clustering step, as plain functions.

features (N x 4096) -> PCA-whitening to pca_dim -> L2-normalised rows -> faiss k-means
-> assignment (N,) -> uniform-over-clusters sampler for the training pass.
"""
import functools
import time

import faiss
import numpy as np
import torch
from torch.utils.data import Sampler

from errors import ConfigError


def epoch_seed(seed, epoch):
    """A fresh 31-bit seed per epoch, derived from the run's seed (same run -> same seeds)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] & 0x7FFFFFFF)


def faiss_pca(x, dim):
    """Exact PCA with faiss PCAMatrix, as the reference: (components (dim, d), eigenvalues (dim,), mean (d,))."""
    n, d = x.shape
    pca = faiss.PCAMatrix(d, dim, -0.5)  # faiss >= 1.8: positional arguments only
    pca.train(np.ascontiguousarray(x, dtype=np.float32))
    components = faiss.vector_to_array(pca.PCAMat).reshape(-1, d)[:dim]
    eigenvalues = faiss.vector_to_array(pca.eigenvalues)[:dim] / n
    return components, eigenvalues, faiss.vector_to_array(pca.mean)


def top_eigh(m, dim, niter=16, seed=0):
    """Top-dim eigenpairs (descending) of a symmetric PSD matrix.

    Up to 2048 x 2048: exact LAPACK eigh in float64 (float32 loses the small eigenvectors).
    Larger (the 4096 x 4096 covariance of fc7): randomised subspace iteration (Halko et al. 2011)
    with q = 2 dim float32 directions and a float64 Rayleigh-Ritz step, which is several times
    faster than the float64 eigh and agrees with faiss' whitening as closely as an exact eigh
    does (docs/performance.md).
    """
    size = m.shape[0]
    if size <= 2048:
        values, vectors = torch.linalg.eigh(m.double())
    else:
        gen = torch.Generator().manual_seed(int(seed))
        basis = torch.linalg.qr(m @ torch.randn(size, min(size, 2 * dim), generator=gen)).Q
        for _ in range(niter):
            basis = torch.linalg.qr(m @ basis).Q
        basis = basis.double()
        values, small = torch.linalg.eigh(basis.T @ m.double() @ basis)
        vectors = basis @ small
    order = torch.argsort(values, descending=True)[:dim]
    return values[order].clamp(min=0), vectors[:, order]


def torch_pca(x, dim, seed=0, chunk=8192):
    """PCA for any n: the d x d covariance (n >= d) or the n x n Gram matrix (n < d), built with
    float32 matmuls in row chunks (no centred copy of a large X), then top_eigh."""
    n, d = x.shape
    X = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    mu = torch.stack([X[i:i + chunk].double().sum(0) for i in range(0, n, chunk)]).sum(0).div(n).float()
    if n >= d:
        cov = torch.zeros(d, d)
        for i in range(0, n, chunk):
            block = X[i:i + chunk] - mu
            cov.addmm_(block.T, block)
        values, vectors = top_eigh(cov, dim, seed=seed)
        components = vectors.T.float()
    else:
        centred = X - mu
        values, vectors = top_eigh(centred @ centred.T, dim, seed=seed)
        components = (vectors.T.float() @ centred)  # rows have norm sqrt(eigenvalue)
        components = components / components.norm(dim=1, keepdim=True).clamp(min=1e-30)
    return components.numpy(), (values / n).numpy(), mu.numpy()


def fit_pca_whitening(x, pca_dim, method="torch", seed=0, log=None):
    """PCA-whitening: centre, keep the top pca_dim principal directions, scale each by 1/sqrt(eigenvalue).

    method "faiss" is the reference's PCAMatrix(d, pca_dim, -0.5); "torch" gives the same
    whitening (see torch_pca and top_eigh) many times faster at d = 4096.
    Returns {"A": (pca_dim, d), "b": (pca_dim,)} so that y = x @ A.T + b. Directions whose
    eigenvalue is numerically zero (below 1e-6 of the largest: rank-deficient features, e.g.
    dead units or a collapsed network) would be whitened to NaN or to amplified noise; their
    rows are set to zero instead, so they carry nothing into k-means.
    """
    if method == "faiss":
        components, eigenvalues, mean = faiss_pca(x, pca_dim)
    else:
        components, eigenvalues, mean = torch_pca(x, pca_dim, seed=seed)
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    dead = ~(eigenvalues > eigenvalues.max(initial=0.0) * 1e-6)  # also catches NaN
    scale = np.where(dead, 0.0, 1.0 / np.sqrt(np.where(dead, 1.0, eigenvalues)))
    A = (components.astype(np.float64) * scale[:, None]).astype(np.float32)
    b = (-A.astype(np.float64) @ mean.astype(np.float64)).astype(np.float32)
    if dead.any() and log is not None:
        log(f"pca: {int(dead.sum())} of {pca_dim} directions have (near) zero variance and are dropped")
    return {"A": A, "b": b}


def l2_normalize(y):
    """Row-wise L2 normalisation; all-zero rows stay zero instead of becoming NaN."""
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    return (y / np.maximum(norms, 1e-12)).astype(np.float32)


def apply_pca(x, pca):
    """Project with a fitted whitening, then L2-normalise each row."""
    y = np.asarray(x, dtype=np.float32) @ pca["A"].T + pca["b"]
    return l2_normalize(y)


IMAGES_PER_WHITENED_DIM = 8  # measured: k-means on fewer images per dimension loses the classes (docs/algorithm.md)


def max_whitened_dim(n):
    """The most PCA-whitened dimensions that n points keep informative: n // 8, at least 2, at most n - 2.

    Whitening n centred points to n - 1 dimensions makes them the vertices of a regular simplex (every pair
    equally far apart), and well before that the whitened distances are mostly noise: on class-balanced
    subsets of 10-500 Fashion-MNIST images (random-network features and raw pixels), k-means' NMI peaked
    between n / 10 and n / 5 dimensions and fell to chance towards n - 1 (docs/algorithm.md)."""
    return max(1, min(n - 2, max(2, n // IMAGES_PER_WHITENED_DIM)))


def clamp_pca_dim(pca_dim, n, d):
    """The whitening dimension for n samples of dimension d: pca_dim, at most max_whitened_dim(n) and d."""
    return max(1, min(pca_dim, max_whitened_dim(n), d))


def clamp_note(pca_dim, n, d):
    """The log line of a clamped whitening dimension (train.py and pred.py say it once), or None."""
    dim = clamp_pca_dim(pca_dim, n, d)
    if dim == pca_dim:
        return None
    return (f"pca_dim {pca_dim} clamped to {dim}: {n} images of dimension {d} keep at most {max_whitened_dim(n)} "
            f"whitened dimensions informative (about one per {IMAGES_PER_WHITENED_DIM} images)")


def preprocess_features(x, pca_dim=256, log=None, method="torch", seed=0):
    """PCA-whitening to pca_dim, then L2 normalisation. Returns (features, pca)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-d array, got shape {x.shape}")
    return streamed_whitening([(np.arange(len(x)), x)], len(x), pca_dim, len(x), log, method, seed)


def finite(x):
    """x as float32 with NaN and inf replaced by 0; no copy when there is nothing to replace."""
    x = np.asarray(x, dtype=np.float32)
    return x if np.isfinite(x).all() else np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def streamed_whitening(batches, n, pca_dim, fit_samples, log=None, method="torch", seed=0):
    """PCA-whitening + L2 normalisation of features that arrive in batches of (indices, rows).

    The first `fit_samples` rows are collected and the PCA is fitted on them; from then on every
    row is projected to pca_dim as it arrives, so memory holds fit_samples x d plus n x pca_dim,
    never n x d. With fit_samples >= n this is exactly preprocess_features.
    Returns (n x pca_dim float32 array in index order, pca).
    """
    cap = min(fit_samples, n)
    pca = out = buf = buf_idx = None
    filled = 0

    def fit(x, idx):
        if len(x) < 2:
            raise ValueError(f"PCA needs at least 2 feature rows, got {len(x)}")
        dim = clamp_pca_dim(pca_dim, len(x), x.shape[1])
        fitted = fit_pca_whitening(x, dim, method=method, seed=seed, log=log)
        result = np.empty((n, dim), dtype=np.float32)
        result[idx] = apply_pca(x, fitted)
        return fitted, result

    for idx, feats in batches:
        idx, feats = np.asarray(idx), finite(feats)
        if pca is None:
            if filled == 0 and len(idx) >= cap:  # one batch holds the whole fit sample: no copy
                used = cap
                pca, out = fit(feats[:cap], idx[:cap])
            else:
                if buf is None:
                    buf, buf_idx = np.empty((cap, feats.shape[1]), dtype=np.float32), np.empty(cap, dtype=np.int64)
                used = min(cap - filled, len(idx))
                buf[filled:filled + used], buf_idx[filled:filled + used] = feats[:used], idx[:used]
                filled += used
                if filled == cap:
                    pca, out = fit(buf, buf_idx)
                    buf = None
            idx, feats = idx[used:], feats[used:]
        if len(idx):
            out[idx] = apply_pca(feats, pca)
    if pca is None:
        if filled == 0:
            raise ValueError("no features to whiten")
        pca, out = fit(buf[:filled], buf_idx[:filled])
    return out, pca


def faiss_device():
    """"GPU" when the installed faiss was built with GPU support and sees a GPU, else "CPU"."""
    return "GPU" if getattr(faiss, "get_num_gpus", lambda: 0)() > 0 else "CPU"


@functools.lru_cache(maxsize=1)
def gpu_resources():
    """One faiss GPU resource object per process (each one reserves GPU scratch memory)."""
    return faiss.StandardGpuResources()


def flat_index(d):
    """An exact L2 index: on the GPU when faiss can (the reference's setting), else IndexFlatL2."""
    if faiss_device() == "GPU":
        return faiss.GpuIndexFlatL2(gpu_resources(), d)
    return faiss.IndexFlatL2(d)


def run_kmeans(x, k, niter=20, seed=0, nredo=1):
    """faiss k-means, as the reference: no subsampling, flat L2 index for the assignment.

    nredo > 1 runs k-means that many times from different random starts and keeps the run
    with the lowest loss (faiss' nredo); the reference runs it once.
    Returns (assignment (n,) int64, centroids (k, d) float32, loss): the loss is faiss' objective
    at the last iteration (nredo 1) or the sum of squared distances to the kept centroids (nredo > 1).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if k > n:
        raise ValueError(f"k-means with k={k} needs at least k points, got {n}")
    clus = faiss.Clustering(d, k)
    clus.seed = int(seed)
    clus.niter = int(niter)
    clus.nredo = int(nredo)
    clus.max_points_per_centroid = 10_000_000  # faiss would otherwise train on 256 points per centroid
    clus.min_points_per_centroid = 1  # only silences faiss' "please provide more points" warning
    clus.verbose = False
    index = flat_index(d)
    clus.train(x, index)
    dist, nearest = index.search(x, 1)
    stats = clus.iteration_stats
    loss = float(stats.at(stats.size() - 1).obj) if stats.size() else float("nan")
    if nredo > 1:
        loss = float(dist.astype(np.float64).sum())
    centroids = faiss.vector_to_array(clus.centroids).reshape(k, d)
    return nearest[:, 0].astype(np.int64), centroids, loss


class WhitenThenCluster:
    """cluster(features) = preprocess_features, then the subclass's cluster_whitened."""

    def cluster(self, features, seed=0, log=None):
        t0 = time.time()
        xb, pca = preprocess_features(features, self.pca_dim, log=log, method=self.pca_method, seed=seed)
        if log is not None:
            log(f"pca {time.time() - t0:.1f} s")
        return self.cluster_whitened(xb, pca, seed, log)


EQUAL_SIZE_MAX_CELLS = 50_000_000  # n x k cells of equal_size_partition: three float64 arrays of that size (1.2 GB)


def check_equal_size_fits(n, k):
    """The one-line error for an equal_size plan too large for memory (train.py asks before any work)."""
    if n * k > EQUAL_SIZE_MAX_CELLS:
        raise ConfigError(f"equal_size holds {n:,} images x {k:,} clusters = {n * k:,} distances in memory "
                          f"(at most {EQUAL_SIZE_MAX_CELLS:,}); lower num_classes or set equal_size false")


def equal_size_offsets(xb, centroids, eps=0.01, max_iter=5000, tol=1e-3):
    """One offset per cluster that splits the rows of xb among the centroids in (almost) equal sizes, as
    SeLa's pseudo-labels (Asano et al., ICLR 2020): row i goes to argmin_j ||x_i - c_j||^2 + offsets[j].

    Entropy-regularised optimal transport (Sinkhorn-Knopp): the plan P = diag(u) K diag(v),
    K = exp(-D / (eps * mean(D))), scaled so that every row carries 1/n and every column 1/k, D the
    squared L2 distances to the centroids (eps is relative to their mean, so it does not depend on
    the scale of the features). Each row's largest entry of P is its cluster after the offset
    -eps * mean(D) * log v_j, shifted so that the smallest offset is 0. Small eps: sizes closer to n / k but
    more iterations; large eps: sizes drift back towards k-means' own. K is float64 with each row's
    smallest distance subtracted first (a row scale that P absorbs in u), so every row keeps an entry 1 and
    nothing overflows; the iterations are two matrix-vector products each.
    Returns (offsets (k,) float32, in squared-distance units, >= 0; iterations run). nearest_centroid with
    these offsets gives the partition, in training and in pred.py alike.
    """
    x = np.asarray(xb, dtype=np.float64)
    c = np.asarray(centroids, dtype=np.float64)
    n, k = x.shape[0], c.shape[0]
    check_equal_size_fits(n, k)
    d = (x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None, :]
    temperature = eps * max(float(d.mean()), 1e-12)
    kernel = np.exp(-(d - d.min(1, keepdims=True)) / temperature)
    col = kernel.T @ np.ones(n)  # kernel.T @ u for the starting u = 1
    for it in range(1, max_iter + 1):
        v = (1.0 / k) / col
        u = (1.0 / n) / (kernel @ v)
        col = kernel.T @ u  # serves the check here and the next v
        if np.abs(v * col * k - 1).max() < tol:  # column sums of P times k: 1 once converged
            break
    offsets = -temperature * np.log(v)
    return (offsets - offsets.min()).astype(np.float32), it


def cluster_means(xb, assignment, fallback):
    """Mean of each cluster's rows; a cluster without rows keeps its row of fallback."""
    k = fallback.shape[0]
    sums = np.zeros_like(fallback, dtype=np.float64)
    np.add.at(sums, assignment, xb)
    counts = np.bincount(assignment, minlength=k)
    means = np.array(fallback, dtype=np.float64)
    means[counts > 0] = sums[counts > 0] / counts[counts > 0, None]
    return means.astype(np.float32)


class Kmeans(WhitenThenCluster):
    """preprocess_features + run_kmeans (then, with equal_size, equal_size_offsets); keeps what pred.py needs
    (pca, centroids, offsets): the assignment is nearest_centroid(whitened rows, centroids, offsets)."""

    def __init__(self, k, pca_dim=256, niter=20, pca_method="torch", nredo=1, equal_size=False,
                 equal_size_eps=0.01):
        self.k, self.pca_dim, self.niter, self.pca_method, self.nredo = k, pca_dim, niter, pca_method, nredo
        self.equal_size, self.equal_size_eps = equal_size, equal_size_eps
        self.assignment = self.centroids = self.pca = self.offsets = None
        self.loss = float("nan")

    def cluster_whitened(self, xb, pca, seed=0, log=None):
        t0 = time.time()
        self.pca = pca
        self.assignment, self.centroids, self.loss = run_kmeans(xb, self.k, self.niter, seed, self.nredo)
        if log is not None:
            log(f"k-means {time.time() - t0:.1f} s (k={self.k}, loss {self.loss:.4f})")
        self.offsets = np.zeros(self.k, dtype=np.float32)
        if self.equal_size:
            t0, before = time.time(), np.bincount(self.assignment, minlength=self.k)
            self.offsets, iterations = equal_size_offsets(xb, self.centroids, self.equal_size_eps)
            self.assignment, _ = nearest_centroid(xb, self.centroids, self.offsets)
            means = cluster_means(xb, self.assignment, self.centroids)  # the loss of the partition: k-means' objective
            self.loss = float(((xb - means[self.assignment]).astype(np.float64) ** 2).sum())
            after = np.bincount(self.assignment, minlength=self.k)
            if log is not None:
                log(f"equal-size partition {time.time() - t0:.1f} s ({iterations} Sinkhorn iterations): cluster sizes "
                    f"{before.min()}-{before.max()} -> {after.min()}-{after.max()}, loss {self.loss:.4f}")
        return self.assignment


def knn_graph(xb, nnn):
    """The nnn nearest neighbours of every point (itself removed) with squared L2 distances, via faiss."""
    n, d = xb.shape
    nnn = min(nnn, n - 1)
    index = flat_index(d)
    index.add(xb)
    dist, nbrs = index.search(xb, nnn + 1)
    # drop the point itself; with duplicates it need not come first, so remove it by identity
    keep = nbrs != np.arange(n)[:, None]
    drop_last = keep.all(1)  # self not found among the nnn + 1: drop the farthest instead
    keep[drop_last, -1] = False
    return nbrs[keep].reshape(n, nnn), np.maximum(dist[keep].reshape(n, nnn), 0)


def pic_graph(nbrs, dist, sigma):
    """Sparse symmetric W = A + A^T with A_ij = exp(-d_ij / sigma^2) on the k-NN edges."""
    from scipy.sparse import csr_matrix
    n, nnn = nbrs.shape
    a = csr_matrix((np.exp(-dist / sigma**2).ravel(), nbrs.ravel(), np.arange(n + 1) * nnn), shape=(n, n))
    return (a + a.T).tocsr()


def pic_diffusion(w, alpha, iterations):
    """Power iterations v <- alpha W^T v + (1 - alpha) / n, L1-normalised each step, from v0 = 1/n."""
    n = w.shape[0]
    wt = w.T.tocsr()
    v = np.full(n, 1.0 / n, dtype=np.float64)
    for _ in range(iterations):
        v = alpha * (wt @ v) + (1 - alpha) / n
        v /= v.sum()
    return v


def pic_heads(w, v):
    """Each node points to the neighbour j with the largest positive W_ij (v_j - v_i), or to itself
    (a cluster head); following the pointers gives every node its head."""
    n = w.shape[0]
    rows = np.repeat(np.arange(n), np.diff(w.indptr))
    score = w.data * (v[w.indices] - v[rows])
    pointer = np.arange(n)
    order = np.lexsort((-score, rows))  # per row, best score first
    first = np.ones(len(order), dtype=bool)
    first[1:] = rows[order][1:] != rows[order][:-1]
    best = order[first]
    up = score[best] > 0
    pointer[rows[best][up]] = w.indices[best][up]
    while True:  # pointer jumping: heads point to themselves, v strictly grows along a pointer
        nxt = pointer[pointer]
        if (nxt == pointer).all():
            return pointer
        pointer = nxt


def merge_singletons(labels, nbrs):
    """A cluster of one image joins the cluster of its nearest neighbour that is not a singleton."""
    labels = labels.copy()
    sizes = np.bincount(labels)
    for i in np.flatnonzero(sizes[labels] == 1):
        for j in nbrs[i]:
            if sizes[labels[j]] > 1:
                labels[i] = labels[j]
                break
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def run_pic(xb, nnn=5, sigma=0.2, alpha=0.001, iterations=200):
    """Power iteration clustering as the reference's PIC; k is an outcome. Returns labels 0..k-1."""
    nbrs, dist = knn_graph(np.ascontiguousarray(xb, dtype=np.float32), nnn)
    w = pic_graph(nbrs, dist, sigma)
    heads = pic_heads(w, pic_diffusion(w, alpha, iterations))
    labels = np.unique(heads, return_inverse=True)[1]
    return merge_singletons(labels, nbrs)


class PIC(WhitenThenCluster):
    """preprocess_features + run_pic, with the same interface as Kmeans.

    PIC has no centroids; the mean of each cluster's whitened features is stored instead, so
    that pred.py's assign mode can use nearest-mean assignment.
    """

    def __init__(self, pca_dim=256, nnn=5, sigma=0.2, alpha=0.001, iterations=200, pca_method="torch"):
        self.pca_dim, self.nnn, self.sigma, self.alpha, self.iterations = pca_dim, nnn, sigma, alpha, iterations
        self.pca_method = pca_method
        self.assignment = self.centroids = self.pca = self.offsets = None  # no offsets: PIC is not a centroid rule
        self.k = 0
        self.loss = None

    def cluster_whitened(self, xb, pca, seed=0, log=None):
        t0 = time.time()
        self.pca = pca
        self.assignment = run_pic(xb, self.nnn, self.sigma, self.alpha, self.iterations)
        self.k = int(self.assignment.max()) + 1
        self.centroids = cluster_means(xb, self.assignment, np.zeros((self.k, xb.shape[1]), dtype=np.float32))
        if log is not None:
            log(f"pic {time.time() - t0:.1f} s: {self.k} clusters")
        return self.assignment


def match_clusters(old, new, k_old, k_new):
    """For each new cluster j, the old cluster that shares most images with it under a one-to-one
    matching (Hungarian on the overlap counts), or -1 when j has no partner (k_new > k_old, or
    j shares no image with its partner). Used to carry the head's rows over to a new clustering.
    """
    from scipy.optimize import linear_sum_assignment
    overlap = np.zeros((k_new, k_old), dtype=np.int64)
    np.add.at(overlap, (np.asarray(new, dtype=np.int64), np.asarray(old, dtype=np.int64)), 1)
    rows, cols = linear_sum_assignment(-overlap)
    source = np.full(k_new, -1, dtype=np.int64)
    keep = overlap[rows, cols] > 0
    source[rows[keep]] = cols[keep]
    return source


def assign_to_centroids(features, pca, centroids, offsets=None):
    """Nearest centroid (L2, after offsets) of features whitened with a stored pca; returns (ids, squared distances)."""
    return nearest_centroid(apply_pca(features, pca), centroids, offsets)


def nearest_centroid(xb, centroids, offsets=None):
    """The cluster of each already whitened, normalised row: argmin_j ||x - c_j||^2 + offsets[j] (offsets: the
    equal-size step's, >= 0; None or zeros: the plain nearest centroid). The offset rides as one extra
    coordinate, sqrt(offsets[j]) on the centroid and 0 on the row, so one exact faiss L2 search does it.
    Returns (ids (n,) int64, squared L2 distances to the chosen centroid without its offset (n,) float32)."""
    xb = np.ascontiguousarray(xb, dtype=np.float32)
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    shift = None if offsets is None or not np.any(offsets) else np.asarray(offsets, dtype=np.float32)
    if shift is not None:
        if (shift < 0).any() or not np.isfinite(shift).all():
            raise ValueError("cluster offsets must be finite and >= 0")
        xb = np.hstack([xb, np.zeros((len(xb), 1), dtype=np.float32)])
        centroids = np.hstack([centroids, np.sqrt(shift)[:, None]])
    index = flat_index(xb.shape[1])
    index.add(centroids)
    dist, nearest = index.search(xb, 1)
    ids = nearest[:, 0].astype(np.int64)
    dist = dist[:, 0] if shift is None else np.maximum(dist[:, 0] - shift[ids], 0)
    return ids, dist


def uniform_label_indices(assignment, n, seed):
    """The epoch sample: the same number of images from every non-empty cluster.

    For each non-empty cluster draw int(n / n_nonempty) + 1 indices (with replacement only
    when the cluster has no more images than that), shuffle everything, cut to n.
    """
    rng = np.random.default_rng(seed)
    assignment = np.asarray(assignment)
    clusters = [np.flatnonzero(assignment == cid) for cid in np.unique(assignment)]  # non-empty by construction
    per_cluster = int(n / len(clusters)) + 1
    picks = [rng.choice(members, per_cluster, replace=len(members) <= per_cluster) for members in clusters]
    indices = np.concatenate(picks)
    rng.shuffle(indices)
    return indices[:n].astype(np.int64)


class UnifLabelSampler(Sampler):
    """As many images as `assignment` has, drawn uniformly over its non-empty clusters (see uniform_label_indices)."""

    def __init__(self, assignment, seed=0):
        self.indexes = uniform_label_indices(assignment, len(assignment), seed)

    def __iter__(self):
        return iter(self.indexes.tolist())

    def __len__(self):
        return len(self.indexes)
