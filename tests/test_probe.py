"""The linear probe's classifier (eval_linear.train_linear) against scikit-learn's LogisticRegression."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import eval_linear

PROBE = {"probe_lr": 0.01, "probe_weight_decay": 1e-4, "probe_epochs": 30}


def relu_features(n_per_class, classes=2, dims=256, seed=0, sparse_from=32):
    """Frozen ReLU-like features: the first 16 dims carry the class, the dims from `sparse_from` on fire rarely
    (so that on a few images most of them are 0 on every one), with small values."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n_per_class)
    centres = rng.normal(size=(classes, 16)) * 3
    x = np.zeros((len(labels), dims), dtype=np.float32)
    x[:, :16] = np.maximum(0, centres[labels] + rng.normal(size=(len(labels), 16)))
    x[:, 16:sparse_from] = np.abs(rng.normal(size=(len(labels), sparse_from - 16)))
    fires = rng.random((len(labels), dims - sparse_from)) < 0.03
    x[:, sparse_from:] = fires * np.abs(rng.normal(size=fires.shape)) * 0.05
    return x, labels.astype(np.int64)


@pytest.mark.parametrize("n_train_per_class, classes", [(4, 2), (5, 3), (200, 3)])
def test_the_probe_scores_what_a_logistic_regression_scores(n_train_per_class, classes):
    """On a few labelled images many dimensions are constant over the training rows: standardising by their
    std (~0) turned the test rows' small values there into |z| ~ 1e4 and the probe scored ~0 where a plain
    logistic regression scores 1.0."""
    x, y = relu_features(n_train_per_class + 50, classes, seed=n_train_per_class)
    train = np.concatenate([np.flatnonzero(y == c)[:n_train_per_class] for c in range(classes)])
    test = np.setdiff1d(np.arange(len(y)), train)
    reference = LogisticRegression(max_iter=2000).fit(x[train], y[train]).score(x[test], y[test])
    _, probe = eval_linear.train_linear(x[train], y[train], x[test], y[test], classes, PROBE, seed=0)
    assert reference >= 0.9  # the features do carry the classes
    assert probe >= reference - 0.1, (probe, reference)


def test_standardise_cannot_explode_on_constant_or_rare_dimensions():
    x_train = np.zeros((4, 3), dtype=np.float32)
    x_train[:, 0] = [1, 2, 3, 4]  # std 1.118
    x_train[3, 2] = 1e-3  # fires on one image
    x_test = np.array([[2.5, 0.01, 0.5]], dtype=np.float32)
    tr, te = eval_linear.standardise(x_train, x_test)
    floor = np.sqrt((x_train.var(0)).mean())
    assert np.allclose(tr[:, 0], (x_train[:, 0] - 2.5) / x_train[:, 0].std(), atol=1e-6)  # a real spread: its own
    assert np.allclose(tr[:, 1], 0) and np.allclose(te[0, 1:], (x_test[0, 1:] - x_train[:, 1:].mean(0)) / floor)
    assert np.abs(te).max() < 1


def test_the_knn_reports_the_k_it_uses():
    assert eval_linear.knn_k(7) == 7 and eval_linear.knn_k(500) == eval_linear.KNN_K
    f = np.eye(3, dtype=np.float32)
    assert eval_linear.knn_accuracy(f, np.arange(3), f, np.arange(3), 3) == 1.0  # k = 3 of 3 training rows
