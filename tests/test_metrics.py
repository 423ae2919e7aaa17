import numpy as np
import pytest

import metrics


def test_permuted_labelling_is_perfect():
    labels = np.array([0, 0, 1, 1, 2, 2])
    clusters = np.array([5, 5, 3, 3, 9, 9])
    assert metrics.cluster_accuracy(labels, clusters) == 1.0
    assert metrics.nmi(labels, clusters) == pytest.approx(1.0)
    assert metrics.ari(labels, clusters) == pytest.approx(1.0)


def test_hungarian_versus_purity():
    # two clusters both dominated by label 0: one-to-one matching can credit only one of them
    labels = np.array([0, 0, 0, 1, 0, 0, 0, 1])
    clusters = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert metrics.purity(labels, clusters) == 6 / 8
    assert metrics.cluster_accuracy(labels, clusters) == 4 / 8
