"""The UMAP clustering space (cfg clustering_space "umap"): the PCA-whitened, L2-normalised rows are embedded by
UMAP (umap-learn; McInnes et al., 2018) into a few dimensions before k-means, as N2D (McConville et al., 2020)
clusters an autoencoder's features. UMAP keeps each row's nearest neighbours together and lets k-means cut the
graph's well-separated groups, where k-means on the whitened rows cuts by Euclidean distance alone.

The embedding is computed from the whitened rows, not from the raw principal components: on 1,000 held-out
Fashion-MNIST training images, a random network's features gave NMI 0.58-0.59 through the whitened 16 dimensions
and 0.40-0.41 through 50 unwhitened principal components (2 seeds each; raw pixels 0.63-0.64 and 0.62-0.64).
"""
import time

import numpy as np
import torch

from .common import is_tensor, to_numpy

UMAP_NEIGHBORS = 20  # the neighbourhood UMAP keeps; N2D's value (fewer on small sets, umap_neighbors)
UMAP_DIM = 10  # embedding dimensions k-means sees (N2D: the number of clusters)
UMAP_MIN_DIST = 0.0  # packs neighbours tightly: clusters, not a picture (UMAP's advice for clustering)
UMAP_MAX_IMAGES = 200_000  # above: hours an epoch on a CPU (one thread, seeded), so a one-line refusal instead


def umap_refusal(n):
    """The one line that refuses the UMAP space for n images, or None when it is affordable."""
    if n <= UMAP_MAX_IMAGES:
        return None
    return (f"clustering_space umap embeds all {n} images every epoch; above {UMAP_MAX_IMAGES} images that takes "
            f"hours on a CPU (docs/results.md): use clustering_space whitened")


def umap_neighbors(n, k):
    """UMAP's neighbourhood for n rows cut into k clusters: UMAP_NEIGHBORS, but at most half the mean cluster size
    (at least 2): a neighbourhood as large as a cluster joins the clusters (3 separated groups of 20 rows came out
    as NMI 0.65 with 20 neighbours, 1.0 with 10)."""
    return max(2, min(UMAP_NEIGHBORS, n // (2 * max(1, k)), n - 1))


def umap_embed(xb, seed=0, log=None, k=1):
    """UMAP embedding of the whitened rows xb (n, d): (n, UMAP_DIM) float32 rows of xb's kind (a numpy array, or a
    tensor on xb's device; the embedding itself runs on the CPU) for k clusters (umap_neighbors), seeded (the same seed gives the same rows).
    With n <= UMAP_DIM + 1 the rows are returned as they are (UMAP's spectral start needs more rows than
    dimensions). Raises ValueError above UMAP_MAX_IMAGES rows (umap_refusal)."""
    n = len(xb)
    refusal = umap_refusal(n)
    if refusal:
        raise ValueError(refusal)
    if n <= UMAP_DIM + 1:
        return xb
    import umap  # the import takes seconds (numba): only runs that use the space pay it
    t0 = time.time()
    reducer = umap.UMAP(n_neighbors=umap_neighbors(n, k), n_components=UMAP_DIM, min_dist=UMAP_MIN_DIST,
                        random_state=seed % 2**31, n_jobs=1)
    rows = np.ascontiguousarray(reducer.fit_transform(to_numpy(xb).astype(np.float32)), dtype=np.float32)
    if log is not None:
        log(f"UMAP embedding to {UMAP_DIM} dimensions ({umap_neighbors(n, k)} neighbours): {time.time() - t0:.1f} s")
    return torch.from_numpy(rows).to(xb.device) if is_tensor(xb) else rows
