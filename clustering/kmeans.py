"""Step 4 of an epoch: k-means on the whitened features, and the nearest-centroid rule that assigns images
to a stored clustering (the training assignment and pred.py's assign mode alike).

Two forms of each: faiss (the reference's, on the CPU, or on a GPU with a faiss GPU build) and torch
(the same algorithm in chunked matmuls, for the GPU the network runs on: faiss-cpu needs more than 40 s
an iteration for 1.28M x 256 points and k = 10,000 on 16 cores). `device=None` picks the faiss form.
"""
import functools
import time

import faiss
import numpy as np
import torch

from .common import (cluster_sums, describe, is_tensor, partition_loss, rows_per_chunk, to_numpy, to_tensor)
from .equal_size import equal_size_offsets
from .whitening import WhitenThenCluster

SPLIT_EPS = 1.0 / 1024  # faiss' symmetric perturbation of a centroid copied into an empty cluster


# ---------------------------------------------------------------- faiss

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


def faiss_kmeans(x, k, niter=20, seed=0, nredo=1):
    """faiss k-means, as the reference: no subsampling, flat L2 index for the assignment.
    Returns (assignment (n,) int64, centroids (k, d) float32, loss); see run_kmeans."""
    x = np.ascontiguousarray(to_numpy(x, np.float32))
    n, d = x.shape
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


def faiss_nearest(xb, centroids, offsets=None):
    """nearest_centroid with one exact faiss L2 search: the offset rides as one extra coordinate,
    sqrt(offsets[j]) on the centroid and 0 on the row."""
    xb = np.ascontiguousarray(to_numpy(xb, np.float32))
    centroids = np.ascontiguousarray(to_numpy(centroids, np.float32))
    shift = None if offsets is None or not np.any(offsets) else to_numpy(offsets, np.float32)
    if shift is not None:
        xb = np.hstack([xb, np.zeros((len(xb), 1), dtype=np.float32)])
        centroids = np.hstack([centroids, np.sqrt(shift)[:, None]])
    index = flat_index(xb.shape[1])
    index.add(centroids)
    dist, nearest = index.search(xb, 1)
    ids = nearest[:, 0].astype(np.int64)
    dist = dist[:, 0] if shift is None else np.maximum(dist[:, 0] - shift[ids], 0)
    return ids, dist


# ---------------------------------------------------------------- torch

def torch_nearest(x, centroids, offsets=None):
    """argmin_j ||x_i - c_j||^2 + offsets_j on x's device, in row chunks so that no n x k matrix is held.
    Returns (ids (n,) int64 tensor, squared distances without the offset (n,) float32 tensor)."""
    c = to_tensor(centroids, x.device)
    shift = torch.zeros(len(c), device=x.device) if offsets is None else to_tensor(offsets, x.device)
    score_c = (c * c).sum(1) + shift  # ||c||^2 + offset: ||x||^2 is the same for every centroid of a row
    ids = torch.empty(len(x), dtype=torch.int64, device=x.device)
    dist = torch.empty(len(x), dtype=torch.float32, device=x.device)
    step = rows_per_chunk(len(c), x.device)
    for i in range(0, len(x), step):
        rows = x[i:i + step]
        best, chosen = torch.addmm(score_c, rows, c.T, alpha=-2).min(1)
        ids[i:i + step] = chosen
        dist[i:i + step] = (best - shift[chosen] + (rows * rows).sum(1)).clamp(min=0)
    return ids, dist


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
    """One k-means run as faiss does it: k distinct random rows as the start, then niter rounds of (assign,
    objective, means, split the empty clusters). Returns (centroids (k, d) tensor, objective of the last
    assignment: the sum of squared distances before the last update, as faiss' iteration_stats)."""
    gen = torch.Generator().manual_seed(int(seed))
    start = torch.randperm(len(x), generator=gen)[:k].to(x.device)
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
    reference runs one).
    Returns (assignment (n,) int64, centroids (k, d) float32, loss): the loss is the objective at the last
    iteration (nredo 1) or the sum of squared distances to the kept centroids (nredo > 1).
    Raises ValueError when k > n."""
    n = len(x)
    if k > n:
        raise ValueError(f"k-means with k={k} needs at least k points, got {n}")
    if device is None:
        return faiss_kmeans(x, k, niter, seed, nredo)
    return torch_kmeans(to_tensor(x, device), k, niter, seed, nredo)


def nearest_centroid(xb, centroids, offsets=None, device=None):
    """The cluster of each already whitened, normalised row: argmin_j ||x - c_j||^2 + offsets[j] (offsets: the
    equal-size step's, >= 0; None or zeros: the plain nearest centroid), with faiss (device None) or torch.
    Returns (ids (n,) int64, squared L2 distances to the chosen centroid without its offset (n,) float32),
    numpy arrays. Raises ValueError for negative or non-finite offsets."""
    if offsets is not None:
        offsets = to_numpy(offsets, np.float32)
        if (offsets < 0).any() or not np.isfinite(offsets).all():
            raise ValueError("cluster offsets must be finite and >= 0")
        offsets = offsets if offsets.any() else None
    if device is None and not is_tensor(xb):
        return faiss_nearest(xb, centroids, offsets)
    ids, dist = torch_nearest(to_tensor(xb, device or xb.device), centroids, offsets)
    return to_numpy(ids).astype(np.int64), to_numpy(dist)


def assign_to_centroids(features, pca, centroids, offsets=None, device=None):
    """Nearest centroid (after offsets) of features whitened with a stored pca; returns (ids, squared distances)."""
    from .whitening import apply_pca
    return nearest_centroid(apply_pca(features, pca), centroids, offsets, device)


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
            log(f"k-means {time.time() - t0:.1f} s (k={self.k}, loss {self.loss:.4f}, {describe(self.device)})")
        self.offsets = np.zeros(self.k, dtype=np.float32)
        if self.equal_size:
            t0, before = time.time(), np.bincount(self.assignment, minlength=self.k)
            self.offsets, iterations = equal_size_offsets(xb, self.centroids, self.equal_size_eps, device=self.device)
            self.assignment, _ = nearest_centroid(xb, self.centroids, self.offsets, self.device)
            self.loss = partition_loss(xb, self.assignment, self.centroids)  # the partition's k-means objective
            after = np.bincount(self.assignment, minlength=self.k)
            if log is not None:
                log(f"equal-size partition {time.time() - t0:.1f} s ({iterations} Sinkhorn iterations): cluster sizes "
                    f"{before.min()}-{before.max()} -> {after.min()}-{after.max()}, loss {self.loss:.4f}")
        return self.assignment
