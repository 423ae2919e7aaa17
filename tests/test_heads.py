"""The two follow-up heads: rows carried over by cluster matching, and the centroid head."""
import numpy as np
import torch

import clustering
from models import build_model


def test_match_clusters_recovers_a_relabelling():
    rng = np.random.default_rng(0)
    old = rng.integers(0, 5, 200)
    perm = np.array([3, 0, 4, 1, 2])
    new = perm[old]  # the same partition under other ids
    source = clustering.match_clusters(old, new, 5, 5)
    assert (source[perm] == np.arange(5)).all()  # new id perm[i] came from old id i


def test_match_clusters_marks_new_clusters_without_partner():
    old = np.array([0, 0, 1, 1, 1, 1])
    new = np.array([2, 2, 0, 0, 1, 1])  # old cluster 1 split in two, k grew from 2 to 3
    source = clustering.match_clusters(old, new, 2, 3)
    assert source[2] == 0 and sorted(source[:2].tolist()) == [-1, 1]


def test_carry_head_moves_trained_rows_and_refreshes_the_rest():
    torch.manual_seed(0)
    model = build_model("vgg16", sobel=True, out=3, input_size=32)
    old_w = model.top_layer.weight.detach().clone() + 1.0  # "trained": far from the N(0, 0.01) init
    model.top_layer.weight.data.copy_(old_w)
    model.top_layer.bias.data.copy_(torch.tensor([1.0, 2.0, 3.0]))
    head = model.carry_head(np.array([2, -1, 0, 1]))
    assert head.out_features == 4
    assert torch.equal(head.weight[0], old_w[2]) and torch.equal(head.weight[2], old_w[0])
    assert torch.equal(head.weight[3], old_w[1]) and head.bias.tolist() == [3.0, 0.0, 1.0, 2.0]
    assert head.weight[1].abs().max() < 0.1  # a fresh row


def test_centroid_head_reproduces_the_clustering():
    """argmax of the head's logits on the features = the cosine-nearest centroid of the clustering."""
    torch.manual_seed(0)
    model = build_model("vgg16", sobel=False, out=0, input_size=32).eval()
    images = torch.randn(40, 3, 32, 32)
    with torch.no_grad():
        feats = model(images).numpy()
    km = clustering.Kmeans(4, pca_dim=8, niter=10)
    km.cluster(feats, seed=0)
    xb = clustering.apply_pca(feats, km.pca)
    cn = km.centroids / np.linalg.norm(km.centroids, axis=1, keepdims=True)
    expected = (xb @ cn.T).argmax(1)
    model.set_centroid_head(km.pca, km.centroids, temperature=0.1)
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (40, 4)
    assert (logits.argmax(1).numpy() == expected).all()
    assert logits.abs().max() <= 1 / 0.1 + 1e-4  # cosines / temperature
    assert not list(model.top_layer.parameters()) and not any(k.startswith("top_layer") for k in model.state_dict())
