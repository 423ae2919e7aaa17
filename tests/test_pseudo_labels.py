"""Each original image must train with ITS OWN cluster id, in every epoch.

A public re-implementation rebuilt the pseudo-label list from the previous epoch's
(cluster-sorted) training set, so from epoch 2 on labels pointed at the wrong images.
These tests recover every image's identity from its pixels and check its label.
"""
import numpy as np
import pytest

import clustering
import train
from conftest import index_of, train_args
from dataset import ClusterDataset, PseudoLabelDataset, train_transform


def test_labels_follow_their_images_over_epochs(color_tree):
    base = ClusterDataset(color_tree)
    rng = np.random.default_rng(0)
    aug = train_transform(32)
    assert [index_of(aug(base.load(i))) for i in range(len(base))] == list(range(len(base)))
    for epoch in range(3):
        assignment = rng.integers(0, 4, len(base))
        pseudo = PseudoLabelDataset(base, assignment, aug)
        for i in clustering.UnifLabelSampler(assignment, seed=epoch):
            img, label = pseudo[i]
            assert label == assignment[index_of(img)]


@pytest.mark.slow
def test_training_loop_pairs_each_image_with_its_own_cluster(color_tree, tmp_path, monkeypatch):
    """Run the real loop for 3 epochs and check what it trained on against what k-means returned."""
    clustered, built = [], []
    real_cluster = clustering.Kmeans.cluster_whitened  # every path of train.py clusters the whitened rows with it

    def record_cluster(self, xb, pca, seed=0, log=None, shards=None):
        assignment = real_cluster(self, xb, pca, seed=seed, log=log, shards=shards)
        clustered.append(np.array(assignment))
        return assignment

    class RecordingDataset(PseudoLabelDataset):
        def __init__(self, *args):
            super().__init__(*args)
            built.append(self)

    monkeypatch.setattr(clustering.Kmeans, "cluster_whitened", record_cluster)
    monkeypatch.setattr(train, "PseudoLabelDataset", RecordingDataset)
    train.main("cpu", train_args(color_tree, tmp_path / "exp", "--num_epoch", "3", "--num_classes", "4"))
    # one clustering before each of the 3 epochs, plus the clustering of the final network
    assert len(clustered) == 4 and len(built) == 3
    assert any((clustered[0] != c).any() for c in clustered[1:]), "assignments never changed; the test is void"
    for assignment, pseudo in zip(clustered, built):
        for i in range(len(pseudo)):
            img, label = pseudo[i]
            assert label == assignment[index_of(img)], "an image trained with another image's cluster"
