"""bench/imagenet.py, the ImageNet-scale benchmark, in miniature on the CPU: its tree, its clustering step and
its projection (the GPU runs it at full size through tools/gpu_check.sh); and bench/run.py's heads part."""
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import imagenet  # noqa: E402

from dataset import ClusterDataset  # noqa: E402


def test_the_tree_is_photos_of_imagenet_size_in_class_folders(tmp_path):
    root = imagenet.build_tree(str(tmp_path / "tree"), 12)
    ds = ClusterDataset(root, log=lambda m: None)
    assert len(ds) == 12 and len(ds.classes) == 12  # fewer photos than the 100 classes: one per folder
    with Image.open(ds.paths[0]) as img:
        assert img.format == "JPEG" and img.size == (500, 375)
    assert imagenet.build_tree(root, 12) == root  # made once


@pytest.mark.slow
def test_the_clustering_step_at_scale_runs_on_either_form():
    for where in (None, torch.device("cpu")):
        r = imagenet.cluster_at_scale(3000, 50, where, torch.device("cpu"))
        assert r["n"] == 3000 and r["pca_s"] > 0 and r["kmeans_s"] > 0
        assert (r["equal_size_s"] is None) == (where is None)
    forms = imagenet.both_forms(2000, 40, torch.device("cpu"))
    assert forms["loss_torch_over_faiss"] == pytest.approx(1.0, abs=0.01) and forms["nmi_between"] > 0.9


def test_the_projection_scales_each_phase_to_imagenet():
    run = {"images": 1000, "training_images": 1000, "startup_s": 6.0, "check_s": 2.0, "fixed_s": 4.0,
           "features_s": 10.0, "clustering_s": 1.0, "train_s": 30.0, "process_s": 100.0}
    scale = {"n": 10_000, "k": 100, "device": "faiss on the CPU", "pca_s": 1.0, "kmeans_s": 3.0, "equal_size_s": None,
             "gpu_peak_gib": None}
    forms = {"n": 100, "k": 10, "faiss_s": 1.0, "torch_s": 2.0, "torch_device": "cpu", "loss_torch_over_faiss": 1.0,
             "nmi_between": 1.0}
    lines, projection = imagenet.table(run, (200.0, 50.0), scale, 10_000, forms)
    n = imagenet.IMAGENET
    expected = {"features": 10 * n / 1000, "clustering": 4 * n / 10_000, "training": 30 * n / 1000}
    startup = 4.0 + 2 * n / 1000  # the fixed part once, the image check linear in the images
    assert projection["epoch_min"] == pytest.approx(sum(expected.values()) / 60)
    assert projection["startup_min"] == pytest.approx(startup / 60)
    assert projection["epochs_500_days"] == pytest.approx((startup + 500 * sum(expected.values())) / 86400)
    assert any("x 128.1 for 1,281,167 rows" in line for line in lines) and len(lines) == 10
    assert np.isclose(projection["phases_min"]["training"], expected["training"] / 60)


def test_the_sharded_projection_divides_the_features_not_the_traffic():
    """bench/sharded.py's model: per-rank features and whitened rows fall with the number of GPUs, the all-reduce
    of a k-means iteration does not grow with the images, and the n ids are what every rank holds of all n."""
    import sharded
    one, eight = sharded.rank_memory(1_000_000, 1, 1000), sharded.rank_memory(1_000_000, 8, 1000)
    assert eight["features"] * 8 == one["features"] == 1_000_000 * 4096 * 2
    assert eight["pca"] < one["pca"] and eight["equal_size"] < one["equal_size"]
    streamed = sharded.rank_memory(1_000_000, 8, 1000, fit_samples=80_000)
    assert streamed["features"] == 10_000 * 4096 * 4
    small, large = (sharded.traffic(n, 8, 1000)["kmeans_per_iteration"] for n in (10_000, 10_000_000))
    assert small == large == 2 * 7 / 8 * (1000 * 257 + 1) * 8
    rows = sharded.projection()
    assert {(r["n"], r["world"]) for r in rows} >= {(1_281_167, 8), (100_000_000, 512)}
    imagenet = next(r for r in rows if r["n"] == 1_281_167 and r["world"] == 1)
    assert imagenet["kmeans_s"] == pytest.approx(4.22)  # the measured rate it starts from


def test_the_heads_benchmark_times_both_settings_on_the_same_features():
    """bench/run.py --parts heads in miniature: both settings timed on the same images, the feature pass once."""
    import run
    from cfg import DEFAULTS
    r = run.bench_heads(40, 16, 1, dict(DEFAULTS), heads=("3", "3,5"))
    assert r["images"] == 40 and r["features"] > 0
    for ks in ("3", "3,5"):
        assert r[ks]["clustering"] > 0 and r[ks]["train"] > 0
        assert r[ks]["epoch"] == pytest.approx(r["features"] + r[ks]["clustering"] + r[ks]["train"])
    assert set(r["ratio"]) == {"clustering", "train", "epoch"} and all(v > 0 for v in r["ratio"].values())


def test_the_features_benchmark_scores_pixels_hog_and_networks_side_by_side(tmp_path):
    """bench/features.py in miniature: pixels, HOG and a network's run scored side by side on one tree, the scores
    high for grouped features and near chance for noise, and bad arguments are one-line errors."""
    import json

    import features
    import train
    from conftest import make_blob_tree, train_args
    from errors import UserError
    tree = make_blob_tree(tmp_path / "tree", classes=3, per_class=30)  # 16 whitened dims need well over 18 images
    exp = tmp_path / "exp"
    train.main("cpu", train_args(tree, exp, "--num_epoch", "0"))
    out = tmp_path / "scores.json"
    features.main(["--images", tree, "--runs", f"random={exp}", "--seeds", "1", "--spaces", "whitened",
                   "--out", str(out)])  # the UMAP space's own tests are in test_features.py
    result = json.loads(out.read_text())
    assert result["n"] == 90 and {(r["features"], r["space"]) for r in result["rows"]} == {
        ("pixels", "whitened"), ("hog", "whitened"), ("random", "whitened")}
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    grouped = np.eye(8, dtype=np.float32)[labels] * 3 + rng.standard_normal((120, 8)).astype(np.float32) * 0.3
    good = features.score(grouped, labels, "whitened", 1)
    assert good["nmi"] > 0.95 and good["p10"] > 0.8 and good["sil"] > 0.15
    noise = features.score(rng.standard_normal((120, 64)).astype(np.float32), labels, "whitened", 1)
    assert noise["nmi"] < 0.2 and noise["p10"] < 0.5
    assert all(-1 <= r["sil"] <= 1 and 0 <= r["p10"] <= 1 for r in result["rows"])
    with pytest.raises(UserError, match="--spaces takes"):
        features.main(["--images", tree, "--spaces", "tsne"])
    with pytest.raises(UserError, match="--runs takes NAME=EXP_DIR"):
        features.main(["--images", tree, "--baselines", "", "--runs", str(exp)])


def test_the_input_rows_time_every_pass_of_each_path(tmp_path):
    """bench/imagenet.py's input-path rows in miniature: on the CPU only the CPU path, every pass timed."""
    from cfg import DEFAULTS
    tree = imagenet.build_tree(str(tmp_path / "tree"), 12)
    c = {**DEFAULTS, "input_size": 32, "batch_size": 4, "num_classes": 3, "workers": 0}
    rows = imagenet.input_paths(tree, c, torch.device("cpu"), compiles=("off",), n=8)
    assert [(r["path"], r["compile"], r["images"]) for r in rows] == [("cpu", "off", 8)]
    assert all(rows[0][part] > 0 for part in ("decode", "features", "training"))
    lines = imagenet.input_table(rows, c, 0)
    assert len(lines) == 2 and lines[1].startswith("CPU decode, 0 workers")
