"""Steps 5-7 of an epoch: what the clustering becomes for training. The sampler draws the same number of
images from every non-empty cluster (uniform over the pseudo-labels), and match_clusters carries the head's
trained rows over to the next clustering (cfg head match)."""
import numpy as np
from torch.utils.data import Sampler


def match_clusters(old, new, k_old, k_new):
    """For each new cluster j, the old cluster that shares most images with it under a one-to-one
    matching (Hungarian on the overlap counts), or -1 when j has no partner (k_new > k_old, or
    j shares no image with its partner). Used to carry the head's rows over to a new clustering.
    """
    from scipy.optimize import linear_sum_assignment
    overlap = np.zeros((k_new, k_old), dtype=np.int64)
    np.add.at(overlap, (np.asarray(new, dtype=np.int64), np.asarray(old, dtype=np.int64)), 1)
    rows, cols = linear_sum_assignment(-overlap)
    source = np.full(k_new, -1, dtype=np.int64)
    keep = overlap[rows, cols] > 0
    source[rows[keep]] = cols[keep]
    return source


def cluster_members(assignment):
    """The image indices of every non-empty cluster, in increasing cluster id, each in increasing order
    (one stable sort: n log n, not n x k)."""
    assignment = np.asarray(assignment)
    order = np.argsort(assignment, kind="stable")
    _, counts = np.unique(assignment[order], return_counts=True)
    return np.split(order, np.cumsum(counts)[:-1])


def uniform_label_indices(assignment, n, seed):
    """The epoch sample: the same number of images from every non-empty cluster.

    For each non-empty cluster draw int(n / n_nonempty) + 1 indices (with replacement only
    when the cluster has no more images than that), shuffle everything, cut to n.
    """
    rng = np.random.default_rng(seed)
    clusters = cluster_members(assignment)  # non-empty by construction
    per_cluster = int(n / len(clusters)) + 1
    picks = [rng.choice(members, per_cluster, replace=len(members) <= per_cluster) for members in clusters]
    indices = np.concatenate(picks)
    rng.shuffle(indices)
    return indices[:n].astype(np.int64)


class UnifLabelSampler(Sampler):
    """As many images as `assignment` has, drawn uniformly over its non-empty clusters (see uniform_label_indices)."""

    def __init__(self, assignment, seed=0):
        self.indexes = uniform_label_indices(assignment, len(assignment), seed)

    def __iter__(self):
        return iter(self.indexes.tolist())

    def __len__(self):
        return len(self.indexes)
