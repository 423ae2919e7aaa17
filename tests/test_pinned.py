"""A short run's numbers, pinned: moving code between modules must not change what a run computes.

The values were recorded on this repository's code as of the training-gain line (CPU, float32). A change of
algorithm that moves them on purpose updates them here, in the same commit, saying why."""
import csv
import json

import pytest

import pred
import train
from conftest import make_blob_tree, train_args

TRAINING = [  # metrics.jsonl: epoch, loss, nmi, kmeans_loss, nmi_prev, silhouette
    (0, 1.1062356233596802, 0.37975325302916685, 18.03235342528305, None, 0.10835590958595276),
    (1, 1.158231496810913, 0.3893362341310967, 17.83985607546089, 0.3003009534233034, 0.11954841017723083),
]
PREDICTION = {  # pred_dir: (nmi, ari, acc, clusters of the 24 images in path order, sum of distance, of outlier_score)
    "assign": (1.0, 1.0, 1.0, [0] * 8 + [2] * 8 + [1] * 8, 15.680907, 1.030724),
    "recluster": (0.659299346701282, 0.650352243233222, 0.875,
                  [2, 2, 2, 1, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0], 15.918453, 1.030724),
}


def test_a_short_run_and_its_predictions_give_the_pinned_numbers(tmp_path):
    tree = make_blob_tree(tmp_path / "tree", classes=3, per_class=8)
    exp = tmp_path / "exp"
    train.main("cpu", train_args(tree, exp, "--num_epoch", "2", "--select_epoch", "nmi_prev"))
    rows = [json.loads(line) for line in open(exp / "metrics.jsonl")]
    assert len(rows) == len(TRAINING)
    for row, (epoch, loss, nmi, kmeans_loss, nmi_prev, silhouette) in zip(rows, TRAINING):
        assert row["epoch"] == epoch
        assert row["loss"] == pytest.approx(loss, rel=1e-4)
        assert row["nmi"] == pytest.approx(nmi, abs=1e-6)
        assert row["kmeans_loss"] == pytest.approx(kmeans_loss, rel=1e-4)
        assert row["nmi_prev"] == (None if nmi_prev is None else pytest.approx(nmi_prev, abs=1e-6))
        assert row["silhouette"] == pytest.approx(silhouette, rel=1e-3)
    for mode, (nmi, ari, acc, clusters, distance, outlier) in PREDICTION.items():
        out = tmp_path / mode
        pred.main("cpu", ["--exp_dir", str(exp), "--images", str(tree), "--pred_mode", mode, "--pred_dir", str(out),
                          "--map", "false", "--report", "false"])
        scores = json.loads((out / "metrics.json").read_text())
        assert (scores["nmi"], scores["ari"], scores["acc"]) == pytest.approx((nmi, ari, acc), abs=1e-6), mode
        table = list(csv.DictReader(open(out / "predictions.csv")))
        assert [int(r["cluster"]) for r in table] == clusters, mode
        assert sum(float(r["distance"]) for r in table) == pytest.approx(distance, rel=1e-4), mode
        assert sum(float(r["outlier_score"]) for r in table) == pytest.approx(outlier, rel=1e-4), mode
