"""Power iteration clustering (cfg clustering pic), the reference's alternative to k-means; k is an outcome.

The k-NN graph has two forms, faiss (device None) and torch on the clustering device (chunked: no n x n
matrix is held); the graph, the power iterations and the pointer jumping are sparse scipy/numpy on the CPU,
where n x nnn entries are small.
"""
import time

import numpy as np

from .common import cluster_means, describe, to_numpy, to_tensor
from .nearest import flat_index, nearest_rows
from .whitening import WhitenThenCluster


def drop_self(nbrs, dist, nnn):
    """The nnn neighbours of nnn + 1 found, without the point itself; with duplicates it need not come first,
    so it is removed by identity (or the farthest is dropped when it is not among them)."""
    n = len(nbrs)
    keep = nbrs != np.arange(n)[:, None]
    drop_last = keep.all(1)
    keep[drop_last, -1] = False
    return nbrs[keep].reshape(n, nnn), np.maximum(dist[keep].reshape(n, nnn), 0)


def torch_neighbours(x, nnn):
    """(ids (n, nnn + 1), squared L2 distances) of every row's nearest rows, on x's device, in row chunks."""
    dist, ids = nearest_rows(x, x, nnn + 1)
    return to_numpy(ids).astype(np.int64), to_numpy(dist)


def knn_graph(xb, nnn, device=None):
    """The nnn nearest neighbours of every point (itself removed) with squared L2 distances: faiss (device None)
    or torch on `device`. Returns (ids (n, nnn) int64, distances (n, nnn) float32) as numpy arrays."""
    n = len(xb)
    nnn = min(nnn, n - 1)
    if device is None:
        xb = np.ascontiguousarray(to_numpy(xb, np.float32))
        index = flat_index(xb.shape[1])
        index.add(xb)
        dist, nbrs = index.search(xb, nnn + 1)
    else:
        nbrs, dist = torch_neighbours(to_tensor(xb, device), nnn)
    return drop_self(nbrs, dist, nnn)


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


def run_pic(xb, nnn=5, sigma=0.2, alpha=0.001, iterations=200, device=None):
    """Power iteration clustering as the reference's PIC; k is an outcome. Returns labels 0..k-1 (numpy int64)."""
    nbrs, dist = knn_graph(xb, nnn, device)
    w = pic_graph(nbrs, dist, sigma)
    heads = pic_heads(w, pic_diffusion(w, alpha, iterations))
    labels = np.unique(heads, return_inverse=True)[1]
    return merge_singletons(labels, nbrs)


class PIC(WhitenThenCluster):
    """preprocess_features + run_pic, with the same interface as Kmeans.

    PIC has no centroids; the mean of each cluster's whitened features is stored instead, so
    that pred.py's assign mode can use nearest-mean assignment.
    """

    def __init__(self, pca_dim=256, nnn=5, sigma=0.2, alpha=0.001, iterations=200, pca_method="torch", device=None):
        self.pca_dim, self.nnn, self.sigma, self.alpha, self.iterations = pca_dim, nnn, sigma, alpha, iterations
        self.pca_method, self.device = pca_method, device
        self.assignment = self.centroids = self.pca = self.offsets = None  # no offsets: PIC is not a centroid rule
        self.k = 0
        self.loss = None

    def cluster_whitened(self, xb, pca, seed=0, log=None):
        t0 = time.time()
        self.pca = pca
        self.assignment = run_pic(xb, self.nnn, self.sigma, self.alpha, self.iterations, self.device)
        self.k = int(self.assignment.max()) + 1
        self.centroids = to_numpy(cluster_means(xb, self.assignment, np.zeros((self.k, xb.shape[1]), dtype=np.float32)))
        if log is not None:
            log(f"pic {time.time() - t0:.1f} s: {self.k} clusters ({describe(self.device)})")
        return self.assignment
