"""Cluster-quality metrics against ground-truth labels (used for reporting only), and the silhouette, which needs
no labels."""
import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score

SILHOUETTE_ROWS = 2000  # rows the silhouette is scored on (a seeded sample above): 0.1 s, not O(n^2) of every image


def nmi(a, b):
    return float(normalized_mutual_info_score(np.asarray(a), np.asarray(b)))


def ari(a, b):
    return float(adjusted_rand_score(np.asarray(a), np.asarray(b)))


def contingency(labels, clusters):
    """counts[c, l]: how many images of label l landed in cluster c (over the ids present)."""
    _, li = np.unique(labels, return_inverse=True)
    _, ci = np.unique(clusters, return_inverse=True)
    counts = np.zeros((ci.max() + 1, li.max() + 1), dtype=np.int64)
    np.add.at(counts, (ci, li), 1)
    return counts


def cluster_accuracy(labels, clusters):
    """Best one-to-one matching of clusters to labels (Hungarian), as clustering papers report ACC."""
    counts = contingency(labels, clusters)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / len(labels))


def purity(labels, clusters):
    """Many-to-one accuracy: every cluster votes for its majority label."""
    return float(contingency(labels, clusters).max(axis=1).sum() / len(labels))


def silhouette(x, clusters, seed=0, rows=SILHOUETTE_ROWS):
    """Mean silhouette (Rousseeuw 1987) of the partition `clusters` (n,) of the rows x (n, d) (numpy or tensor, any
    device; Euclidean distances), on a seeded sample of at most `rows` rows: in [-1, 1], higher when images are
    nearer the other images of their cluster than those of the next cluster. None with fewer than 2 clusters or
    fewer than 3 rows, or when the sample holds only one cluster."""
    x = x.detach().float().cpu().numpy() if hasattr(x, "detach") else np.asarray(x, dtype=np.float32)
    clusters = np.asarray(clusters)
    if len(x) < 3 or len(np.unique(clusters)) < 2:
        return None
    pick = np.random.default_rng(seed).permutation(len(x))[:rows] if len(x) > rows else np.arange(len(x))
    if not 2 <= len(np.unique(clusters[pick])) <= len(pick) - 1:
        return None
    return float(silhouette_score(x[pick], clusters[pick]))
