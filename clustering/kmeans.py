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

from .common import (cluster_means, cluster_sums, describe, is_tensor, one_process, partition_loss, rows_per_chunk, to_numpy,
                     to_tensor)
from .equal_size import equal_size_offsets
from .nearest import flat_index, nearest_centroid, torch_nearest
from .umap_space import umap_embed
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

def row_keys(x, shards=None):
    """One exact 64-bit key per row: a random linear hash of its float32 bit patterns, modulo 2^64. Copies of a
    row get the same key wherever they are (the position in a block, the process, the number of threads: a
    float projection rounds differently with each), distinct rows practically never. x: (n, d) numpy array or
    tensor (with shards: this process' rows; the n keys, 8 bytes a row, are gathered). Returns (n,) int64."""
    d = x.shape[1]
    weights = np.random.default_rng(0x5EED).integers(1, 2**62, d, dtype=np.int64) | 1
    step = rows_per_chunk(d, x.device if is_tensor(x) else "cpu", itemsize=8)
    if not is_tensor(x):
        bits = np.ascontiguousarray(x, dtype=np.float32).view(np.int32)
        keys = [(bits[i:i + step] * weights).sum(1) for i in range(0, len(x), step)]
        return np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
    bits = x.float().contiguous().view(torch.int32)
    weights = torch.from_numpy(weights).to(x.device)
    keys = [(bits[i:i + step].long() * weights).sum(1) for i in range(0, len(x), step)]
    keys = torch.cat(keys) if keys else torch.zeros(0, dtype=torch.int64, device=x.device)
    return to_numpy(one_process(shards, len(x)).cat(keys))


def distinct_start(x, k, seed, shards=None):
    """The rows k-means starts from on a set with repeated rows (many copies of one image: bursts, re-downloads),
    or None when all rows differ (then each form draws its own start, faiss' as the reference does).

    A start drawn from all rows puts several centroids on the copies of one image and none near some distinct
    images, and an empty cluster is re-split from the largest cluster (faiss' rule), whose identical rows cannot
    be divided: distinct images end up together while clusters stay empty. Here the start is min(k, D) of the
    D distinct rows in a seeded random order, then (when D < k) copies, so that every distinct row has its own
    cluster whenever k allows it. Rows count as equal when their row_keys are.
    x: (n, d) numpy array or tensor (with shards: this process' rows of all n); returns (k,) int64 row indices
    of all n (numpy), the same for both forms and any number of processes."""
    keys = row_keys(x, shards)
    n = len(keys)
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


def torch_kmeans_run(x, k, niter, seed, shards=None):
    """One k-means run as faiss does it: k random rows as the start (distinct_start's on a set with repeated
    rows, as the faiss form), then niter rounds of (assign, objective, means, split the empty clusters).
    With shards (distributed.Shards; None: one process) x is this process' rows: the start is the same rows of
    the whole matrix on every process, and each round all-reduces the cluster sums, counts and the objective
    once, so that every process computes the same centroids and splits the same empty clusters.
    Returns (centroids (k, d) tensor, objective of the last assignment: the sum of squared distances before
    the last update, as faiss' iteration_stats)."""
    shards = one_process(shards, len(x))
    gen = torch.Generator().manual_seed(int(seed))
    start = torch.randperm(shards.n, generator=gen)[:k]  # faiss' start (see the module's docs)
    distinct = distinct_start(x, k, seed, shards)
    if distinct is not None:
        start = torch.from_numpy(distinct)
    centroids = shards.rows(x, start).clone()
    objective = float("nan")
    for _ in range(niter):
        ids, dist = torch_nearest(x, centroids)
        sums, counts = cluster_sums(x, ids, k)
        sums, counts, total = shards.sum(sums, counts, dist.double().sum())
        objective = float(total)
        full = counts > 0
        centroids[full] = (sums[full] / counts[full, None]).float()
        split_empty(centroids, counts, gen)
    return centroids, objective


def torch_kmeans(x, k, niter=20, seed=0, nredo=1, shards=None):
    """k-means on the device of x, faiss' algorithm in torch (see torch_kmeans_run); the run with the lowest
    objective of nredo is kept (redo r seeded with seed + 1 + r * 15486557, as faiss). With shards, x is this
    process' rows and every process keeps rank 0's centroids. Returns the same as run_kmeans, with the
    assignment (of every row: with shards, n int64 gathered) and centroids as numpy arrays."""
    x = x.float()
    shards = one_process(shards, len(x))
    best = None
    for redo in range(nredo):
        centroids, objective = torch_kmeans_run(x, k, niter, seed + 1 + redo * 15486557, shards)
        if best is None or objective < best[1]:
            best = centroids, objective
    centroids, loss = best
    centroids = shards.same(centroids)
    ids, dist = torch_nearest(x, centroids)
    if nredo > 1:
        loss = float(shards.sum(dist.double().sum()))
    return to_numpy(shards.cat(ids)).astype(np.int64), to_numpy(centroids), loss


# ---------------------------------------------------------------- either form

def run_kmeans(x, k, niter=20, seed=0, nredo=1, device=None, shards=None):
    """k-means of the rows of x: faiss (device None) or torch on `device`. No subsampling; empty clusters are
    re-split from a large one; nredo > 1 runs that many random starts and keeps the lowest loss (the
    reference runs one). On a set with repeated rows both forms start from distinct rows (distinct_start),
    so that each distinct row gets its own cluster when k is at least the number of distinct rows.
    Returns (assignment (n,) int64, centroids (k, d) float32, loss): the loss is the objective at the last
    iteration (nredo 1) or the sum of squared distances to the kept centroids (nredo > 1).
    shards (torch form only): x is this process' rows of the whole matrix (see torch_kmeans_run); the
    assignment is then that of all n rows, on every process.
    Raises ValueError when k > n."""
    n = one_process(shards, len(x)).n
    if k > n:
        raise ValueError(f"k-means with k={k} needs at least k points, got {n}")
    if device is None and shards is None:
        return faiss_kmeans(x, k, niter, seed, nredo)
    return torch_kmeans(to_tensor(x, device or "cpu"), k, niter, seed, nredo, shards)


def other_seed(seed, j):
    """The seed of the j-th further clustering of an epoch (j >= 1; cfg num_classes a list): its own k-means starts."""
    return int((seed + 104_729 * j) & 0x7FFFFFFF)


class Kmeans(WhitenThenCluster):
    """preprocess_features + run_kmeans (then, with equal_size, equal_size_offsets); keeps what pred.py needs
    (pca, centroids, offsets): the assignment is nearest_centroid(whitened rows, centroids, offsets).
    device None: faiss on the CPU; a torch.device: every step in torch there.

    other_ks (cfg num_classes a list): after this clustering, one more k-means (and equal-size step) per k on the
    same whitened rows, each a Kmeans in `others` with its own seed (other_seed); `k`, `assignment`, `centroids`
    and `offsets` stay the first clustering's.

    space "umap" (cfg clustering_space): k-means and the equal-size step run on the UMAP embedding of the whitened
    rows (umap_space.umap_embed, once per epoch, shared by `others`); the kept `centroids` are then each cluster's
    mean of the whitened rows and `offsets` zero, so that pred.py's assign mode (nearest centroid of the whitened
    rows) needs no UMAP model. `loss` is the k-means loss in the embedding."""

    def __init__(self, k, pca_dim=256, niter=20, pca_method="torch", nredo=1, equal_size=False,
                 equal_size_eps=0.01, device=None, other_ks=(), space="whitened"):
        self.k, self.pca_dim, self.niter, self.pca_method, self.nredo = k, pca_dim, niter, pca_method, nredo
        self.equal_size, self.equal_size_eps, self.device, self.space = equal_size, equal_size_eps, device, space
        self.assignment = self.centroids = self.pca = self.offsets = None
        self.loss = float("nan")
        self.others = [Kmeans(other, pca_dim, niter, pca_method, nredo, equal_size, equal_size_eps, device,
                              space=space) for other in other_ks]

    def cluster_whitened(self, xb, pca, seed=0, log=None, shards=None):
        """k-means (then the equal-size step) of the whitened rows xb, then the same for every k of `others`; with
        shards (distributed.Shards) xb is this process' rows and every step is the torch form with all-reduced sums
        (on the CPU when device is None): every process ends with the same centroids, offsets and assignment of all
        n rows. Returns the first clustering's assignment."""
        embedded = None
        if self.space == "umap":
            if getattr(shards, "world", 1) > 1:
                raise ValueError("clustering_space umap embeds all rows in one process: not with sharded clustering")
            embedded = umap_embed(xb, seed, log, k=max(cl.k for cl in self.clusterings()))
        self.cluster_one(xb, pca, seed, log, shards, embedded)
        for j, other in enumerate(self.others, 1):
            other.cluster_one(xb, pca, other_seed(seed, j), log, shards, embedded)
        return self.assignment

    def cluster_one(self, xb, pca, seed=0, log=None, shards=None, embedded=None):
        """This clustering alone (see cluster_whitened); embedded: the UMAP rows of xb, clustered instead."""
        t0 = time.time()
        device = self.device if shards is None or self.device is not None else torch.device("cpu")
        self.pca = pca
        rows = xb if embedded is None else embedded
        self.assignment, self.centroids, self.loss = run_kmeans(rows, self.k, self.niter, seed, self.nredo, device,
                                                                shards)
        if log is not None:
            log(f"k-means with k = {self.k}{' in the UMAP space' * (embedded is not None)}: {time.time() - t0:.1f} s "
                f"({describe(device)}), k-means loss {self.loss:.4f}")
        self.offsets = np.zeros(self.k, dtype=np.float32)
        if self.equal_size:
            self.equal_size_step(rows, device, log, shards)
        if embedded is not None:  # keep centroids of the whitened rows: assign mode then needs no UMAP model
            fallback = np.zeros((self.k, xb.shape[1]), dtype=np.float32)
            self.centroids = to_numpy(cluster_means(xb, self.assignment, fallback))
            self.offsets = np.zeros(self.k, dtype=np.float32)
        return self.assignment

    def equal_size_step(self, xb, device, log=None, shards=None):
        """The equal-size offsets on top of k-means' centroids, and the partition they give (equal_size.py)."""
        t0, before = time.time(), np.bincount(self.assignment, minlength=self.k)
        self.offsets, iterations = equal_size_offsets(xb, self.centroids, self.equal_size_eps, device=device,
                                                      shards=shards)
        own, _ = nearest_centroid(xb, self.centroids, self.offsets, device)
        self.assignment = to_numpy(one_process(shards, len(xb)).cat(torch.from_numpy(own)))
        self.loss = partition_loss(xb, own, self.centroids, shards)  # the partition's k-means objective
        after = np.bincount(self.assignment, minlength=self.k)
        if log is not None:
            log(f"clusters made equal in size: {time.time() - t0:.1f} s, sizes {before.min()}-{before.max()} "
                f"-> {after.min()}-{after.max()} images, k-means loss {self.loss:.4f} ({iterations} iterations)")
