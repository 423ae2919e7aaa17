"""Step 4 of an epoch: k-means on the whitened features (assignment by nearest.py's rule), and Kmeans, the
clustering step of an epoch (PCA-whitening, k-means, then with equal_size the equal-size offsets).

Two forms: faiss (the reference's, on the CPU, or on a GPU with a faiss GPU build) and torch (the same
algorithm in chunked matmuls, for the GPU the network runs on: faiss-cpu needs more than 40 s an iteration
for 1.28M x 256 points and k = 10,000 on 16 cores). `device=None` picks the faiss form.
"""
import time

import faiss
import numpy as np
import torch

from .common import cluster_sums, describe, is_tensor, partition_loss, to_numpy, to_tensor
from .equal_size import equal_size_offsets
from .nearest import flat_index, nearest_centroid, torch_nearest
from .whitening import WhitenThenCluster

SPLIT_EPS = 1.0 / 1024  # faiss' symmetric perturbation of a centroid copied into an empty cluster
IMAGES_PER_AUTO_CLUSTER = 10  # num_classes 0: one cluster per this many images (tools/k_rule.py) ...
AUTO_K_MAX = 10  # ... at most this many clusters
MIN_IMAGES_PER_CLUSTER = 5  # below this many images per cluster on average train.py warns (tools/k_rule.py)


def auto_k(n):
    """k for n images when the user gives none (cfg num_classes 0): n // IMAGES_PER_AUTO_CLUSTER, at least 2 and
    at most AUTO_K_MAX (and n). Measured on small Fashion-MNIST sets of 3 and 10 kinds (tools/k_rule.py, the
    README's "Cluster your own photos"): a cluster of one or two images teaches the network nothing, and larger k
    on a small set left most images in such clusters."""
    return max(1, min(n, max(2, min(AUTO_K_MAX, n // IMAGES_PER_AUTO_CLUSTER))))


def k_note(k, n, given):
    """The log line of train.py's k: how the automatic k was chosen (given False), or a warning when k leaves
    fewer than MIN_IMAGES_PER_CLUSTER images per cluster on average; None when there is nothing to say."""
    if not given:
        return (f"num_classes 0 (automatic): k = {k} for {n} images (one cluster per {IMAGES_PER_AUTO_CLUSTER} "
                f"images, 2 to {AUTO_K_MAX}); set --num_classes to choose it")
    if n < MIN_IMAGES_PER_CLUSTER * k:
        return (f"warning: k = {k} leaves {n / k:.1f} images per cluster on average ({n} images): clusters of one "
                f"or two images teach the network little; --num_classes 0 chooses k = {auto_k(n)} for this folder")
    return None


# ---------------------------------------------------------------- faiss

def distinct_start(x, k, seed):
    """The rows k-means starts from on a set with repeated rows (many copies of one image: bursts, re-downloads),
    or None when all rows differ (then each form draws its own start, faiss' as the reference does).

    A start drawn from all rows puts several centroids on the copies of one image and none near some distinct
    images, and an empty cluster is re-split from the largest cluster (faiss' rule), whose identical rows cannot
    be divided: distinct images end up together while clusters stay empty. Here the start is min(k, D) of the
    D distinct rows in a seeded random order, then (when D < k) copies, so that every distinct row has its own
    cluster whenever k allows it. Rows count as equal when their projections on one random float64 direction
    are equal (distinct float32 rows that collide there are practically impossible).
    x: (n, d) numpy array or tensor; returns (k,) int64 row indices (numpy), the same for both forms."""
    n, d = x.shape
    direction = np.random.default_rng(0x5EED).standard_normal(d)
    if is_tensor(x):
        keys = to_numpy(x.double() @ torch.from_numpy(direction).to(x.device))
    else:
        keys = np.asarray(x, dtype=np.float64) @ direction
    _, first = np.unique(keys, return_index=True)
    if len(first) == n:
        return None
    rng = np.random.default_rng(seed)
    repeats = np.setdiff1d(np.arange(n), first)
    return np.concatenate([rng.permutation(first), rng.permutation(repeats)])[:k].astype(np.int64)


def faiss_kmeans(x, k, niter=20, seed=0, nredo=1):
    """faiss k-means, as the reference: no subsampling, flat L2 index for the assignment; on a set with repeated
    rows each start is distinct_start's. Returns (assignment (n,) int64, centroids (k, d) float32, loss); see
    run_kmeans."""
    x = np.ascontiguousarray(to_numpy(x, np.float32))
    if distinct_start(x, k, seed) is None:
        return faiss_kmeans_run(x, k, niter, seed, nredo)
    best = None
    for redo in range(nredo):  # faiss would restart every redo from the same given rows: one run per start
        start = distinct_start(x, k, seed + 1 + redo * 15486557)
        run = faiss_kmeans_run(x, k, niter, seed, 1, start)
        if best is None or run[2] < best[2]:
            best = run
    return best


def faiss_kmeans_run(x, k, niter, seed, nredo, start=None):
    """faiss.Clustering on x (float32, contiguous), from the rows `start` (indices) when given, else from faiss'
    own random rows; the loss is faiss' last objective (nredo 1) or the sum of squared distances."""
    n, d = x.shape
    clus = faiss.Clustering(d, k)
    clus.seed = int(seed)
    clus.niter = int(niter)
    clus.nredo = int(nredo)
    clus.max_points_per_centroid = 10_000_000  # faiss would otherwise train on 256 points per centroid
    clus.min_points_per_centroid = 1  # only silences faiss' "please provide more points" warning
    clus.verbose = False
    if start is not None:
        faiss.copy_array_to_vector(np.ascontiguousarray(x[start]).ravel(), clus.centroids)  # faiss' initial centroids
    index = flat_index(d)
    clus.train(x, index)
    dist, nearest = index.search(x, 1)
    stats = clus.iteration_stats
    loss = float(stats.at(stats.size() - 1).obj) if stats.size() else float("nan")
    if nredo > 1:
        loss = float(dist.astype(np.float64).sum())
    centroids = faiss.vector_to_array(clus.centroids).reshape(k, d)
    return nearest[:, 0].astype(np.int64), centroids, loss


# ---------------------------------------------------------------- torch

def split_empty(centroids, counts, gen):
    """faiss' treatment of empty clusters: each takes a copy of a cluster drawn with probability proportional
    to its size - 1, both copies perturbed symmetrically by SPLIT_EPS, and the drawn cluster's count is
    shared between the two. centroids (k, d) and counts (k,) are changed in place; returns how many."""
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if not empty:
        return 0
    sign = torch.ones(centroids.shape[1], device=centroids.device)
    sign[1::2] = -1
    sizes = counts.cpu().double()
    for ci in empty:
        weights = (sizes - 1).clamp(min=0)
        cj = int(torch.multinomial(weights, 1, generator=gen)) if weights.sum() > 0 else int(sizes.argmax())
        centroids[ci] = centroids[cj] * (1 + SPLIT_EPS * sign)
        centroids[cj] = centroids[cj] * (1 - SPLIT_EPS * sign)
        sizes[ci] = sizes[cj] // 2
        sizes[cj] -= sizes[ci]
    counts.copy_(sizes.to(counts.device, counts.dtype))
    return len(empty)


def torch_kmeans_run(x, k, niter, seed):
    """One k-means run as faiss does it: k random rows as the start (distinct_start's on a set with repeated
    rows, as the faiss form), then niter rounds of (assign,
    objective, means, split the empty clusters). Returns (centroids (k, d) tensor, objective of the last
    assignment: the sum of squared distances before the last update, as faiss' iteration_stats)."""
    gen = torch.Generator().manual_seed(int(seed))
    start = torch.randperm(len(x), generator=gen)[:k].to(x.device)  # faiss' start (see the module's docs)
    distinct = distinct_start(x, k, seed)
    if distinct is not None:
        start = torch.from_numpy(distinct).to(x.device)
    centroids = x[start].clone()
    objective = float("nan")
    for _ in range(niter):
        ids, dist = torch_nearest(x, centroids)
        objective = float(dist.double().sum())
        sums, counts = cluster_sums(x, ids, k)
        full = counts > 0
        centroids[full] = (sums[full] / counts[full, None]).float()
        split_empty(centroids, counts, gen)
    return centroids, objective


def torch_kmeans(x, k, niter=20, seed=0, nredo=1):
    """k-means on the device of x, faiss' algorithm in torch (see torch_kmeans_run); the run with the lowest
    objective of nredo is kept (redo r seeded with seed + 1 + r * 15486557, as faiss). Returns the same as
    run_kmeans, with the assignment and centroids as numpy arrays."""
    x = x.float()
    best = None
    for redo in range(nredo):
        centroids, objective = torch_kmeans_run(x, k, niter, seed + 1 + redo * 15486557)
        if best is None or objective < best[1]:
            best = centroids, objective
    centroids, loss = best
    ids, dist = torch_nearest(x, centroids)
    if nredo > 1:
        loss = float(dist.double().sum())
    return to_numpy(ids).astype(np.int64), to_numpy(centroids), loss


# ---------------------------------------------------------------- either form

def run_kmeans(x, k, niter=20, seed=0, nredo=1, device=None):
    """k-means of the rows of x: faiss (device None) or torch on `device`. No subsampling; empty clusters are
    re-split from a large one; nredo > 1 runs that many random starts and keeps the lowest loss (the
    reference runs one). On a set with repeated rows both forms start from distinct rows (distinct_start),
    so that each distinct row gets its own cluster when k is at least the number of distinct rows.
    Returns (assignment (n,) int64, centroids (k, d) float32, loss): the loss is the objective at the last
    iteration (nredo 1) or the sum of squared distances to the kept centroids (nredo > 1).
    Raises ValueError when k > n."""
    n = len(x)
    if k > n:
        raise ValueError(f"k-means with k={k} needs at least k points, got {n}")
    if device is None:
        return faiss_kmeans(x, k, niter, seed, nredo)
    return torch_kmeans(to_tensor(x, device), k, niter, seed, nredo)


class Kmeans(WhitenThenCluster):
    """preprocess_features + run_kmeans (then, with equal_size, equal_size_offsets); keeps what pred.py needs
    (pca, centroids, offsets): the assignment is nearest_centroid(whitened rows, centroids, offsets).
    device None: faiss on the CPU; a torch.device: every step in torch there."""

    def __init__(self, k, pca_dim=256, niter=20, pca_method="torch", nredo=1, equal_size=False,
                 equal_size_eps=0.01, device=None):
        self.k, self.pca_dim, self.niter, self.pca_method, self.nredo = k, pca_dim, niter, pca_method, nredo
        self.equal_size, self.equal_size_eps, self.device = equal_size, equal_size_eps, device
        self.assignment = self.centroids = self.pca = self.offsets = None
        self.loss = float("nan")

    def cluster_whitened(self, xb, pca, seed=0, log=None):
        t0 = time.time()
        self.pca = pca
        self.assignment, self.centroids, self.loss = run_kmeans(xb, self.k, self.niter, seed, self.nredo, self.device)
        if log is not None:
            log(f"k-means with k = {self.k}: {time.time() - t0:.1f} s ({describe(self.device)}), k-means loss "
                f"{self.loss:.4f}")
        self.offsets = np.zeros(self.k, dtype=np.float32)
        if self.equal_size:
            t0, before = time.time(), np.bincount(self.assignment, minlength=self.k)
            self.offsets, iterations = equal_size_offsets(xb, self.centroids, self.equal_size_eps, device=self.device)
            self.assignment, _ = nearest_centroid(xb, self.centroids, self.offsets, self.device)
            self.loss = partition_loss(xb, self.assignment, self.centroids)  # the partition's k-means objective
            after = np.bincount(self.assignment, minlength=self.k)
            if log is not None:
                log(f"clusters made equal in size: {time.time() - t0:.1f} s, sizes {before.min()}-{before.max()} "
                    f"-> {after.min()}-{after.max()} images, k-means loss {self.loss:.4f} ({iterations} iterations)")
        return self.assignment
