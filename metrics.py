"""Cluster-quality metrics against ground-truth labels (used for reporting only)."""
import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


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
