"""The equal-size step (cfg equal_size, not in the paper): SeLa's pseudo-labels (Asano et al., ICLR 2020) on
top of k-means. One offset per cluster makes the nearest-centroid partition (almost) equal in size: image i
goes to argmin_j ||x_i - c_j||^2 + offsets[j] (nearest.nearest_centroid, the rule pred.py assigns with too).

The offsets come from entropy-regularised optimal transport (Sinkhorn-Knopp): the plan
P = diag(u) K diag(v), K = exp(-D / T), T = eps * mean(D), D the squared L2 distances to the centroids, scaled
so that every row carries 1/n and every column 1/k; each row's largest entry of P is its cluster after the
offset -T log v_j. Two forms: numpy (dense float64 n x k, the CPU path, refused above
EQUAL_SIZE_MAX_CELLS) and torch (each image's EQUAL_SIZE_CANDIDATES nearest centroids only, on the
clustering device: k = 10,000 on 1.28M images holds 1.28M x 64 entries instead of 12.8G).
"""
import warnings

import numpy as np
import torch

from errors import ConfigError

from .common import one_process, to_numpy, to_tensor
from .nearest import nearest_rows, torch_nearest

EQUAL_SIZE_MAX_CELLS = 50_000_000  # n x k cells of the numpy form: three float64 arrays of that size (1.2 GB)
EQUAL_SIZE_CANDIDATES = 64  # centroids per image in the torch form; with k <= 64 it is the dense plan
EQUAL_SIZE_ENTRY_BYTES = 72  # the torch form's peak per row and candidate: nine (n x m) float64 / int64 arrays at
# once (distances, ids, kernel, its sparse transpose in COO and CSR form, an iteration's products)
EQUAL_SIZE_ROW_BYTES = 8  # ... and per row and whitened dimension: the float64 copy of the rows


def torch_bytes(n, m, dim=256):
    """Bytes the torch form holds at its peak for n rows of dim whitened dimensions and m candidates each (the
    model bench/sharded.py prints beside its measured peaks: for n = 1,281,167 and m = 64 this gives 7.9 GiB, 9.2
    with the float32 whitened rows themselves, where an H200 measured a peak of 11.0 GiB)."""
    return n * (m * EQUAL_SIZE_ENTRY_BYTES + dim * EQUAL_SIZE_ROW_BYTES)


def torch_budget(device):
    """Bytes the torch form may hold (torch_bytes): 16 GiB on a GPU, 8 GiB on the CPU."""
    return (16 if torch.device(device).type == "cuda" else 8) * 2**30


def check_equal_size_fits(n, k, device=None, candidates=None, dim=256):
    """The one-line error for a plan too large for memory (train.py asks before any work): the numpy form
    holds n x k float64 cells, at most EQUAL_SIZE_MAX_CELLS; the torch form n x min(k, candidates) candidates
    (EQUAL_SIZE_CANDIDATES unless given) of rows of dim whitened dimensions within torch_budget (torch_bytes:
    k = 10,000 on ImageNet's 1.28M images needs 8.5 GB of the GPU's 16 GiB)."""
    if device is None and n * k > EQUAL_SIZE_MAX_CELLS:
        raise ConfigError(f"equal_size holds {n:,} images x {k:,} clusters = {n * k:,} distances in memory "
                          f"(at most {EQUAL_SIZE_MAX_CELLS:,} on the CPU); lower num_classes, set equal_size false, "
                          "or cluster on a GPU (train_cuda.py with clustering_device auto)")
    m = min(k, candidates or EQUAL_SIZE_CANDIDATES)
    if device is not None and torch_bytes(n, m, dim) > torch_budget(device):
        peak = torch_bytes(n, m, dim) / 2**30
        raise ConfigError(f"equal_size holds {n:,} images x {m} candidate clusters = {peak:.1f} GiB at its peak"
                          f" (at most {torch_budget(device) / 2**30:.0f} GiB on "
                          f"{torch.device(device).type}); lower num_classes or set equal_size false")


def numpy_equal_size_offsets(xb, centroids, eps=0.01, max_iter=5000, tol=1e-3):
    """The dense form: D and K as n x k float64 arrays, each row's smallest distance subtracted first (a row
    scale that P absorbs in u), so every row keeps an entry 1 and nothing overflows; the iterations are two
    matrix-vector products each."""
    x = to_numpy(xb, np.float64)
    c = to_numpy(centroids, np.float64)
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
    return offsets - offsets.min(), it


def nearest_candidates(x, c, m):
    """The m nearest centroids of every row, in row chunks: (squared distances (n, m) float64, ids (n, m))."""
    dist, ids = nearest_rows(x, c, m, torch.float64)
    return dist.clamp(min=0), ids


def candidate_sinkhorn(dist, ids, k, temperature, max_iter, tol, shards=None):
    """Sinkhorn-Knopp on the plan restricted to each row's candidates (dist, ids: (n, m)), on their device.
    Returns (offsets (k,) float64 tensor, >= 0, iterations, converged). A column that no row reaches gets the
    largest offset. The iterations stop early, as not converged, when the offsets spread wider than any
    distance: then the candidates cannot carry equal columns. With shards (common.OneProcess) the rows are
    this process' part of all n: the column sums (k numbers) are all-reduced every iteration, the rows stay."""
    shards = one_process(shards, len(dist))
    n, m = shards.n, dist.shape[1]
    kernel = torch.exp(-(dist - dist.min(1, keepdim=True).values) / temperature)
    spread = shards.max(float(dist.max()) if dist.numel() else 0.0)
    kernel_t = transposed_kernel(kernel, ids, k)

    def column_sums(u):
        return shards.sum((kernel_t @ u[:, None])[:, 0])

    col = column_sums(torch.ones(len(dist), dtype=torch.float64, device=dist.device))
    reached = col > 0
    converged = False
    for it in range(1, max_iter + 1):
        v = torch.where(reached, (1.0 / k) / torch.where(reached, col, 1.0), 0.0)
        u = (1.0 / n) / (kernel * v[ids]).sum(1)
        col = column_sums(u)
        log_v = torch.log(v[reached])
        if float(((v * col * k - 1).abs() * reached).max()) < tol:
            converged = True
            break
        if temperature * float(log_v.max() - log_v.min()) > spread:
            break
    offsets = -temperature * torch.log(v.clamp(min=torch.finfo(torch.float64).tiny))
    offsets[~reached] = offsets[reached].max()
    return offsets - offsets[reached].min(), it, converged


def transposed_kernel(kernel, ids, k):
    """K^T as a sparse CSR (k, n) matrix from each row's candidate entries: every column sum of the plan is then
    one sparse matrix-vector product."""
    n, m = kernel.shape
    rows = torch.arange(n, device=kernel.device).repeat_interleave(m)
    # the indices are in range by construction; opting out of the checks explicitly (not only for this tensor)
    # also silences the warning torch 2.11 on CUDA prints when they are off "implicitly"
    with torch.sparse.check_sparse_tensor_invariants(enable=False), warnings.catch_warnings():
        kernel_t = torch.sparse_coo_tensor(torch.stack([ids.flatten(), rows]), kernel.flatten(), (k, n),
                                           check_invariants=False).coalesce()
        # torch calls its CSR tensors beta: the warning says nothing about this use
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return kernel_t.to_sparse_csr()


def no_worse_than_kmeans(x, c, offsets, shards):
    """The offsets of a plan that stopped unconverged (the candidates could not grow within torch_budget, or
    Sinkhorn ran out of iterations) when their largest cluster is no larger than k-means' own, else zeros (k-means'
    own partition): such offsets can make sizes less even, not more (on 32,000 synthetic fc7-like rows, k = 250,
    64 then 128 candidates: one cluster of 7,394 images)."""
    def largest(shift):
        ids, _ = torch_nearest(x, c, shift)
        return int(shards.sum(torch.bincount(ids, minlength=len(c))).max())

    return offsets if largest(offsets.float()) <= largest(None) else torch.zeros_like(offsets)


def torch_equal_size_offsets(xb, centroids, eps=0.01, max_iter=5000, tol=1e-3, candidates=EQUAL_SIZE_CANDIDATES,
                             shards=None):
    """The sparse form on xb's device: the plan restricted to each row's m nearest centroids, m = `candidates`
    (all of them when k <= m). The offsets hold for the full nearest-centroid rule once the iterations converged
    and every row's chosen cluster is one of its candidates; until then m doubles (up to k, or while torch_bytes
    stays within torch_budget), so the result is the dense plan's wherever the candidates would change it.
    mean(D) is exact, from the rows' and centroids' moments. With shards, xb is this process' rows (see
    candidate_sinkhorn) and every decision is taken on all-reduced numbers, the same on every process."""
    x = xb.float()
    c = to_tensor(centroids, x.device)
    shards = one_process(shards, len(x))
    n, k = shards.n, len(c)
    check_equal_size_fits(len(x), k, x.device, candidates, x.shape[1])
    xd, cd = x.double(), c.double()
    squares, sums = shards.sum((xd ** 2).sum(1).sum(), xd.sum(0))
    del xd  # 8 bytes a row and dimension, not to be held through the candidate rounds (the search makes its own)
    mean_d = float(squares / n + (cd ** 2).sum(1).mean() - 2 * (sums / n) @ cd.mean(0))
    temperature = eps * max(mean_d, 1e-12)
    m, largest = min(k, candidates), shards.max(len(x))
    while True:
        dist, ids = nearest_candidates(x, c, m)
        offsets, it, done = candidate_sinkhorn(dist, ids, k, temperature, max_iter, tol, shards)
        if done and m < k:
            chosen, _ = torch_nearest(x, c, offsets.float())
            done = shards.max(float(not (ids == chosen[:, None]).any(1).all())) == 0
        if done or m == k or torch_bytes(largest, min(k, 2 * m), x.shape[1]) > torch_budget(x.device):
            return to_numpy(offsets if done else no_worse_than_kmeans(x, c, offsets, shards)), it
        m = min(k, 2 * m)


def equal_size_offsets(xb, centroids, eps=0.01, max_iter=5000, tol=1e-3, device=None, shards=None):
    """One offset per cluster that splits the rows of xb among the centroids in (almost) equal sizes (see the
    module's docstring): numpy form for device None, torch form on `device`. Small eps: sizes closer to n / k
    but more iterations; large eps: sizes drift back towards k-means' own.
    shards (torch form only, on the CPU when device is None): xb is this process' rows of all n, and the
    offsets are those of all n rows (torch_equal_size_offsets).
    Returns (offsets (k,) float32, in squared-distance units, >= 0; iterations run). Raises ConfigError when
    the plan does not fit in memory (check_equal_size_fits)."""
    if device is None and shards is None:
        offsets, it = numpy_equal_size_offsets(xb, centroids, eps, max_iter, tol)
    else:
        offsets, it = torch_equal_size_offsets(to_tensor(xb, device or "cpu"), centroids, eps, max_iter, tol,
                                               shards=shards)
    return offsets.astype(np.float32), it
