"""The nearest-centroid rule: each whitened row goes to argmin_j ||x - c_j||^2 + offsets[j]. k-means assigns
with it, the equal-size step's offsets are defined by it, and pred.py's assign mode gives back the training
assignment because it assigns by the same rule. Two forms: an exact faiss L2 search (with the offset as one
extra coordinate) and chunked matmuls in torch on any device.
"""
import functools

import faiss
import numpy as np
import torch

from .common import is_tensor, rows_per_chunk, to_numpy, to_tensor


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


def nearest_rows(x, c, m, dtype=torch.float32):
    """Each row of x's m nearest rows of c by squared L2 distance, computed in `dtype` on x's device in row chunks
    (no n x len(c) block above the chunk budget): (distances (n, m), ids (n, m) int64), tensors, nearest first.
    The equal-size step's candidate centroids (float64) and PIC's k-NN graph (c = x) use it."""
    x, c = x.to(dtype), c.to(dtype)
    x2, c2 = (x * x).sum(1), (c * c).sum(1)
    dist = torch.empty(len(x), m, dtype=dtype, device=x.device)
    ids = torch.empty(len(x), m, dtype=torch.int64, device=x.device)
    step = rows_per_chunk(len(c), x.device, itemsize=dist.element_size())
    for i in range(0, len(x), step):
        d = torch.addmm(c2, x[i:i + step], c.T, alpha=-2) + x2[i:i + step, None]
        dist[i:i + step], ids[i:i + step] = d.topk(m, dim=1, largest=False)
    return dist, ids


# ---------------------------------------------------------------- either form

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
