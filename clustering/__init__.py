"""The math of one DeepCluster clustering step, as plain functions, one module per step:

    whitening.py     features (N x 4096) -> PCA-whitening to pca_dim -> L2-normalised rows
    kmeans.py        k-means -> assignment (N,) and centroids
    nearest.py       the nearest-centroid rule (after the equal-size offsets): training and pred.py's assign
    equal_size.py    the equal-size pseudo-labels (one offset per cluster, Sinkhorn-Knopp)
    umap_space.py    the UMAP embedding of the whitened rows that k-means cuts (clustering_space umap)
    pic.py           power iteration clustering, the reference's alternative to k-means
    pseudo_labels.py the uniform-over-clusters sampler and the head's matching across clusterings
    common.py        the per-epoch seed, the clustering device, the numpy / tensor helpers

Each step that has a faiss (or numpy) form and a torch form keeps both side by side in its module: the faiss
form is the reference's path on the CPU; the torch form runs where the network runs (a GPU), and on the CPU
where the tests compare it with faiss. `device=None` selects the faiss form (see common.resolve_device).
"""
from .common import cluster_means, describe, epoch_seed, finite, partition_loss, resolve_device, to_numpy
from .equal_size import EQUAL_SIZE_CANDIDATES, check_equal_size_fits, equal_size_offsets
from .kmeans import MIN_IMAGES_PER_CLUSTER, Kmeans, auto_k, k_note, run_kmeans
from .nearest import assign_to_centroids, faiss_device, flat_index, nearest_centroid
from .pic import PIC, knn_graph, merge_singletons, pic_diffusion, pic_graph, pic_heads, run_pic
from .umap_space import UMAP_DIM, UMAP_MAX_IMAGES, umap_embed, umap_neighbors, umap_refusal
from .pseudo_labels import UnifLabelSampler, match_clusters, uniform_label_indices
from .whitening import (AUTO_PCA_DIM, IMAGES_PER_WHITENED_DIM, WhitenThenCluster, apply_pca, auto_pca_dim,
                        clamp_note, clamp_pca_dim, copies_pca_dim, distinct_rows, fit_pca_whitening, fit_sample_note, l2_normalize,
                        preprocess_features,
                        streamed_whitening, top_eigh, torch_pca)

__all__ = ["AUTO_PCA_DIM", "EQUAL_SIZE_CANDIDATES", "IMAGES_PER_WHITENED_DIM", "Kmeans", "MIN_IMAGES_PER_CLUSTER", "auto_k", "k_note", "PIC", "UnifLabelSampler",
           "WhitenThenCluster", "apply_pca", "assign_to_centroids", "auto_pca_dim", "check_equal_size_fits", "clamp_note", "copies_pca_dim", "distinct_rows",
           "clamp_pca_dim", "cluster_means", "describe", "epoch_seed", "equal_size_offsets", "faiss_device",
           "finite", "fit_pca_whitening", "fit_sample_note", "flat_index", "knn_graph", "l2_normalize", "match_clusters",
           "merge_singletons", "nearest_centroid", "partition_loss", "pic_diffusion",
           "pic_graph", "pic_heads", "preprocess_features", "resolve_device", "run_kmeans", "run_pic",
           "streamed_whitening", "to_numpy", "top_eigh", "torch_pca", "uniform_label_indices", "UMAP_DIM", "UMAP_MAX_IMAGES", "umap_embed", "umap_neighbors", "umap_refusal"]
