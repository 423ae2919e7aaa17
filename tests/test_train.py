import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import checkpoint
import clustering
import train
from conftest import kill_after_first_metrics, make_blob_tree, train_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED = {"epoch", "loss", "nmi_prev", "nmi", "ari", "clusters_nonempty", "time_features_s", "time_clustering_s",
            "time_train_s", "images_per_s"}


def read_metrics(exp):
    with open(os.path.join(exp, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def run(tree, exp, *extra):
    return train.main("cpu", train_args(tree, exp, *extra))


@pytest.mark.slow
def test_two_epochs_write_metrics_config_and_a_safe_checkpoint(blob_tree, tmp_path):
    exp = tmp_path / "exp"
    run(blob_tree, exp, "--num_epoch", "2", "--head", "new")  # the paper's head: none is kept between epochs
    rows = read_metrics(exp)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert all(REQUIRED <= set(r) for r in rows)
    assert rows[0]["nmi_prev"] is None and 0 <= rows[1]["nmi_prev"] <= 1
    assert all(0 <= r["nmi"] <= 1 and -1 <= r["ari"] <= 1 and 1 <= r["clusters_nonempty"] <= 3 for r in rows)
    assert json.loads((exp / "config.json").read_text())["num_epoch"] == 2
    ckpt = torch.load(exp / "checkpoint.pth.tar", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["arch"] == "vgg16" and ckpt["num_classes"] == 3
    assert ckpt["assignment"].shape == (18,) and ckpt["assignment"].dtype == torch.int64
    # an explicit pca_dim 8 stands on 18 images (only n - 1 and more are clamped)
    assert ckpt["pca_A"].shape == (8, 4096) and ckpt["pca_b"].shape == (8,) and ckpt["centroids"].shape == (3, 8)
    assert ckpt["cluster_offsets"].shape == (3,) and ckpt["data_fingerprint"] and ckpt["clustering_state_dict"] is None
    # the checkpoint ends with the next epoch's clustering, which removed the old head
    assert not any(k.startswith("top_layer") for k in ckpt["state_dict"])
    assert ckpt["clustering_metrics"]["reclustered"] and 0 <= ckpt["clustering_metrics"]["nmi_prev"] <= 1
    assert not any(k.startswith("sobel") and v.requires_grad for k, v in ckpt["state_dict"].items())
    assert {"torch", "numpy", "python"} <= set(ckpt["rng"]) and ckpt["cfg"]["num_epoch"] == 2
    assert "optimizer" in ckpt and ckpt["classes"] == ["class_0", "class_1", "class_2"]
    assert ckpt["ema_state_dict"] is None  # cfg ema 0: no weight average
    assert not [f for f in os.listdir(exp) if ".tmp." in f]


@pytest.mark.slow
def test_unchecked_bad_file_becomes_a_black_image_not_a_crash(blob_tree, tmp_path):
    bad = os.path.join(blob_tree, "class_1", "zz_broken.png")
    open(bad, "wb").write(b"not a png")
    with pytest.warns(UserWarning, match="zz_broken.png"):
        run(blob_tree, tmp_path / "exp", "--num_epoch", "1", "--check_images", "false")
    assert torch.load(tmp_path / "exp" / "checkpoint.pth.tar", weights_only=True)["assignment"].shape == (19,)
    run(blob_tree, tmp_path / "checked", "--num_epoch", "0")  # checked: the file is dropped with a log line
    assert "skipping" in (tmp_path / "checked" / "train.log").read_text()
    assert torch.load(tmp_path / "checked" / "checkpoint.pth.tar", weights_only=True)["assignment"].shape == (18,)


@pytest.mark.slow
def test_flat_folder_has_null_label_metrics(tmp_path):
    from conftest import make_blob_tree
    tree = make_blob_tree(tmp_path / "t", classes=1, per_class=10)
    run(os.path.join(tree, "class_0"), tmp_path / "exp", "--num_epoch", "1")
    row = read_metrics(tmp_path / "exp")[0]
    assert row["nmi"] is None and row["ari"] is None and np.isfinite(row["loss"])


@pytest.mark.slow
def test_albums_with_labels_none_have_null_label_metrics_and_folders_insists_on_classes(tmp_path):
    from conftest import make_blob_tree
    from errors import DataError
    tree = make_blob_tree(tmp_path / "t", classes=2, per_class=6)  # two albums, not two classes
    run(tree, tmp_path / "exp", "--num_epoch", "1", "--labels", "none")
    row = read_metrics(tmp_path / "exp")[0]
    assert row["nmi"] is None and row["ari"] is None
    with pytest.raises(DataError, match="labels folders"):
        run(os.path.join(tree, "class_0"), tmp_path / "flat", "--num_epoch", "0", "--labels", "folders")


@pytest.mark.slow
@pytest.mark.parametrize("head", ["new", "match", "centroids"])
def test_resumed_run_matches_uninterrupted_run(blob_tree, tmp_path, head):
    rule = ("--select_epoch", "nmi_prev")  # the choice of an epoch is resumed too
    run(blob_tree, tmp_path / "full", "--num_epoch", "3", "--head", head, *rule)
    run(blob_tree, tmp_path / "split", "--num_epoch", "1", "--head", head, *rule)
    run(blob_tree, tmp_path / "split", "--num_epoch", "3", "--head", head, *rule)  # raising num_epoch continues it
    full, split = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "split")
    assert [r["epoch"] for r in split] == [0, 1, 2]
    for a, b in zip(full, split):
        for key in ("loss", "nmi", "ari", "nmi_prev", "kmeans_loss", "clusters_nonempty"):
            if a[key] is None:
                assert b[key] is None, (a["epoch"], key)
            else:
                assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), (a["epoch"], key)
    wa = torch.load(tmp_path / "full" / "checkpoint.pth.tar", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "split" / "checkpoint.pth.tar", weights_only=True)["state_dict"]
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-6) for k in wa)
    # only "match" carries a trained head in the checkpoint ("centroids" rebuilds it from pca + centroids)
    assert ("top_layer.weight" in wa) == (head == "match")
    sa = torch.load(tmp_path / "full" / "checkpoint.pth.tar", weights_only=True)["selected"]
    sb = torch.load(tmp_path / "split" / "checkpoint.pth.tar", weights_only=True)["selected"]
    assert sa["epoch"] == sb["epoch"] and sa["score"] == pytest.approx(sb["score"], rel=1e-6)
    log = (tmp_path / "split" / "train.log").read_text()
    assert "resuming" in log and "1 epoch done" in log


@pytest.mark.slow
def test_zero_epochs_checkpoints_the_random_network(blob_tree, tmp_path):
    exp = tmp_path / "exp"
    run(blob_tree, exp, "--num_epoch", "0")
    ckpt = torch.load(exp / "checkpoint.pth.tar", weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["metrics"] is None and ckpt["assignment"].shape == (18,)
    assert not (exp / "metrics.jsonl").exists() or read_metrics(exp) == []
    run(blob_tree, exp, "--num_epoch", "1")  # and it resumes from there
    assert [r["epoch"] for r in read_metrics(exp)] == [0]


@pytest.mark.slow
def test_finished_run_is_not_trained_again(blob_tree, tmp_path):
    exp = tmp_path / "exp"
    run(blob_tree, exp, "--num_epoch", "1")
    before = (exp / "checkpoint.pth.tar").stat().st_mtime_ns
    run(blob_tree, exp, "--num_epoch", "1")
    assert (exp / "checkpoint.pth.tar").stat().st_mtime_ns == before
    assert len(read_metrics(exp)) == 1
    assert "already finished 1 epoch" in (exp / "train.log").read_text()


@pytest.mark.slow
def test_resume_false_starts_over(blob_tree, tmp_path):
    exp = tmp_path / "exp"
    run(blob_tree, exp, "--num_epoch", "2")
    run(blob_tree, exp, "--num_epoch", "1", "--resume", "false")
    assert [r["epoch"] for r in read_metrics(exp)] == [0]
    assert torch.load(exp / "checkpoint.pth.tar", weights_only=True)["epoch"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("flag, value", [("--sobel", "false"), ("--num_classes", "2"), ("--input_size", "64")])
def test_checkpoint_of_another_model_stops_clearly(blob_tree, tmp_path, flag, value):
    exp = tmp_path / "exp"
    run(blob_tree, exp, "--num_epoch", "1")
    with pytest.raises(SystemExit) as e:
        run(blob_tree, exp, "--num_epoch", "2", flag, value)
    msg = str(e.value.code)
    assert flag[2:] in msg and "--resume false" in msg and "\n" not in msg


def test_k_larger_than_the_data_stops_before_work(blob_tree, tmp_path):
    with pytest.raises(SystemExit) as e:
        run(blob_tree, tmp_path / "exp", "--num_classes", "19")
    assert "num_classes" in str(e.value.code) and "18 images" in str(e.value.code)
    assert not (tmp_path / "exp" / "checkpoint.pth.tar").exists()


@pytest.mark.parametrize("rule", [[], ["--clustering", "pic"]])
def test_a_single_training_image_is_one_line_for_both_clusterings(tmp_path, rule):
    """One image: the automatic k (at most n) and PIC cannot cluster it; it was a PCA traceback for k-means."""
    tree = make_blob_tree(tmp_path / "t", classes=1, per_class=1)
    with pytest.raises(SystemExit) as e:
        run(tree, tmp_path / "exp", *rule)
    assert "at least 2, there is 1 image in" in str(e.value.code) and not (tmp_path / "exp").exists()


@pytest.mark.slow
def test_optimizers_schedulers_and_reassign(blob_tree, tmp_path):
    run(blob_tree, tmp_path / "step", "--num_epoch", "3", "--lr", "0.04", "--lr_scheduler", "step",
        "--lr_step_size", "1", "--lr_gamma", "0.5", "--reassign", "2")
    rows = read_metrics(tmp_path / "step")
    assert [r["lr"] for r in rows] == pytest.approx([0.04, 0.02, 0.01])
    assert [r["reclustered"] for r in rows] == [True, False, True]
    assert rows[1]["nmi_prev"] is None and rows[1]["time_clustering_s"] == 0
    assert rows[1]["nmi"] == rows[0]["nmi"]  # the same assignment, trained on twice
    run(blob_tree, tmp_path / "adam", "--num_epoch", "2", "--optimizer", "adam", "--lr", "0.0001",
        "--lr_scheduler", "plateau")
    ckpt = torch.load(tmp_path / "adam" / "checkpoint.pth.tar", weights_only=True)
    assert "exp_avg" in next(iter(ckpt["optimizer"]["state"].values()))
    assert ckpt["scheduler"] is not None


def test_truncate_metrics_drops_epochs_past_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"epoch": e}) + "\n" for e in range(4)))
    checkpoint.truncate_metrics(str(path), 2)
    assert [json.loads(line)["epoch"] for line in path.read_text().splitlines()] == [0, 1]


@pytest.mark.slow
def test_kill_minus_nine_then_rerun_continues(blob_tree, tmp_path):
    """kill -9 right after the first metrics line, while the next clustering runs and before the
    checkpoint that matches the line is written; re-run the same command, lose nothing, repeat nothing."""
    exp = tmp_path / "exp"
    cmd = [sys.executable, "train.py", *train_args(blob_tree, exp, "--num_epoch", "4")]
    done = kill_after_first_metrics(cmd, exp, ROOT)
    assert 0 <= done < 4
    r = subprocess.run(cmd + ["--verbose", "true"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"resuming from {exp / 'checkpoint.pth.tar'}: {done} epoch{'' if done == 1 else 's'} done" in r.stdout
    assert [row["epoch"] for row in read_metrics(exp)] == [0, 1, 2, 3]


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume(blob_tree, tmp_path):
    exp = tmp_path / "exp"
    cmd = [sys.executable, "train.py", *train_args(blob_tree, exp, "--num_epoch", "50")]
    # a suite started in the background of a shell without job control inherits an ignored SIGINT: undo that
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (exp / "checkpoint.pth.tar").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "run the same command again to resume" in err and "Traceback" not in err
    assert "interrupted: run the same command again to resume" in (exp / "train.log").read_text()  # every line


@pytest.mark.parametrize("bad", ["dataset", "k", "init", "resume"])
def test_a_start_that_fails_its_checks_leaves_no_folder_behind(blob_tree, tmp_path, bad):
    """A missing dataset, k above the images, starting weights that do not fit: one line, and exp_dir is not
    created (it held a .train.lock and a train.log). A resume refused on an existing folder adds nothing to it."""
    exp = tmp_path / "exp"
    args = {"dataset": ["--dataset_path", str(tmp_path / "nope")], "k": ["--num_classes", "500"],
            "init": ["--init", str(tmp_path / "weights.pth")], "resume": ["--input_size", "64"]}[bad]
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "weights.pth")
    if bad == "resume":
        run(blob_tree, exp, "--num_epoch", "0")
        before = sorted(os.listdir(exp)), (exp / "train.log").read_text()
    with pytest.raises(SystemExit) as e:
        run(blob_tree, exp, *args)
    assert "\n" not in str(e.value.code)
    if bad == "resume":
        assert (sorted(os.listdir(exp)), (exp / "train.log").read_text()) == before
    else:
        assert not exp.exists()


@pytest.mark.slow
def test_cache_and_streaming_do_not_change_the_default_result(blob_tree, tmp_path):
    """The decoded-image cache and the streamed PCA (when its sample covers the whole set) are pure
    speed/memory options: the clustering and the training must be exactly those of the plain path."""
    variants = {"default": [], "no_cache": ["--cache_mb", "0"], "stream_all": ["--pca_fit_samples", "1000"]}
    results = {}
    for name, extra in variants.items():
        run(blob_tree, tmp_path / name, "--num_epoch", "1", *extra)
        results[name] = torch.load(tmp_path / name / "checkpoint.pth.tar", weights_only=True)
    base = results["default"]
    for name in ("no_cache", "stream_all"):
        assert torch.equal(results[name]["assignment"], base["assignment"]), name
        assert torch.equal(results[name]["pca_A"], base["pca_A"]), name
        assert read_metrics(tmp_path / name)[0]["loss"] == read_metrics(tmp_path / "default")[0]["loss"], name


@pytest.mark.slow
def test_streaming_with_a_sample_smaller_than_the_set(blob_tree, tmp_path):
    run(blob_tree, tmp_path / "exp", "--num_epoch", "1", "--pca_fit_samples", "10", "--pca_dim", "2")
    ckpt = torch.load(tmp_path / "exp" / "checkpoint.pth.tar", weights_only=True)
    assert ckpt["assignment"].shape == (18,) and ckpt["pca_A"].shape == (2, 4096)
    assert "clamped" not in (tmp_path / "exp" / "train.log").read_text()


def test_average_into_is_an_exponential_moving_average_of_the_body():
    from engine import average_into
    from models import build_model
    torch.manual_seed(0)
    net, avg = build_model("vgg16", True, out=0, input_size=32), build_model("vgg16", True, out=0, input_size=32)
    net.add_head(3)
    before = {k: v.clone() for k, v in avg.state_dict().items()}
    net.state_dict()["features.1.num_batches_tracked"].fill_(7)
    average_into(avg.state_dict(), net, 0.75)
    after, now = avg.state_dict(), net.state_dict()
    for k, v in after.items():
        if v.is_floating_point():
            assert torch.allclose(v, 0.75 * before[k] + 0.25 * now[k]), k
    assert int(after["features.1.num_batches_tracked"]) == 7  # integer buffers are copied
    assert not any(k.startswith("top_layer.") for k in after)  # the head changes every epoch: never averaged


@pytest.mark.slow
def test_ema_run_resumes_exactly_and_pred_uses_the_average(blob_tree, tmp_path):
    run(blob_tree, tmp_path / "full", "--num_epoch", "2", "--ema", "0.9")
    run(blob_tree, tmp_path / "split", "--num_epoch", "1", "--ema", "0.9")
    run(blob_tree, tmp_path / "split", "--num_epoch", "2", "--ema", "0.9")
    a = torch.load(tmp_path / "full" / "checkpoint.pth.tar", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoint.pth.tar", weights_only=True)
    for k, v in a["ema_state_dict"].items():
        assert torch.allclose(v.float(), b["ema_state_dict"][k].float(), atol=1e-6), k
    assert not torch.allclose(a["ema_state_dict"]["features.0.weight"], a["state_dict"]["features.0.weight"])
    c = {**train.load_cfg(train_args(blob_tree, tmp_path / "full")), "ema": 0.9}
    model = checkpoint.load_model(c, torch.device("cpu"), a)
    assert all(torch.equal(v, a["ema_state_dict"][k]) for k, v in model.state_dict().items())


def test_ema_must_be_below_one(blob_tree, tmp_path):
    with pytest.raises(SystemExit, match="'ema' must be < 1"):
        run(blob_tree, tmp_path / "exp", "--ema", "1")


def test_equal_size_gives_clusters_of_one_size(tmp_path, monkeypatch):
    """--equal_size true: every epoch's pseudo-labels come from the Sinkhorn partition, n / k images per cluster."""
    calls = []
    real = clustering.equal_size_offsets
    monkeypatch.setattr(clustering.kmeans, "equal_size_offsets", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    tree = make_blob_tree(tmp_path / "tree", classes=2, per_class=6)
    exp = tmp_path / "exp"
    run(tree, exp, "--num_epoch", "1", "--num_classes", "3", "--equal_size", "true")
    ckpt = torch.load(exp / "checkpoint.pth.tar", weights_only=True)
    assert np.bincount(ckpt["assignment"].numpy(), minlength=3).tolist() == [4, 4, 4]
    assert len(calls) == 2 and calls[0][0] == 12  # the random network's clustering and the one after epoch 1


def test_equal_size_too_large_stops_before_any_feature_pass(blob_tree, tmp_path, monkeypatch):
    monkeypatch.setattr(clustering.equal_size, "EQUAL_SIZE_MAX_CELLS", 10)
    monkeypatch.setattr(train, "compute_features", lambda *a, **k: pytest.fail("features computed before the check"))
    with pytest.raises(SystemExit, match=r"equal_size holds 18 images x 3 clusters = 54 distances.*set equal_size false"):
        run(blob_tree, tmp_path / "exp", "--equal_size", "true")
    assert not (tmp_path / "exp" / "checkpoint.pth.tar").exists()


def test_a_run_resumes_only_on_its_own_images(tmp_path):
    """Same count, other files: one line naming both folders, before any work; a moved copy of the same tree resumes."""
    first = make_blob_tree(tmp_path / "first", classes=3, per_class=6)
    other = make_blob_tree(tmp_path / "other", classes=3, per_class=6, seed=9)
    os.rename(os.path.join(other, "class_2"), os.path.join(other, "class_z"))
    exp = tmp_path / "exp"
    run(first, exp, "--num_epoch", "1")
    with pytest.raises(SystemExit) as e:
        run(other, exp, "--num_epoch", "2")
    message = str(e.value.code)
    assert message.startswith("checkpoint error:") and "other images" in message and "\n" not in message
    assert str(first) in message and str(other) in message
    assert len(read_metrics(exp)) == 1
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)
    run(moved, exp, "--num_epoch", "2")
    assert len(read_metrics(exp)) == 2


def test_k_larger_than_the_images_left_after_the_hold_out_says_so(blob_tree, tmp_path):
    with pytest.raises(SystemExit) as e:
        run(blob_tree, tmp_path / "exp", "--test_path", "", "--val_split", "0.5", "--num_classes", "10")
    assert "9 images" in str(e.value.code) and "val_split 0.5" in str(e.value.code)


def test_pic_does_not_need_more_images_than_num_classes(blob_tree, tmp_path):
    run(blob_tree, tmp_path / "exp", "--clustering", "pic", "--num_classes", "50", "--num_epoch", "0")
    assert (tmp_path / "exp" / "checkpoint.pth.tar").exists()


def test_a_small_set_of_two_kinds_is_not_clustered_at_chance(tmp_path):
    """16 images of the shipped sample, 8 bags and 8 trousers, random networks with the default pca_dim: the
    automatic whitening keeps 2 dimensions, well below n - 1 (where every pair of images is equally far apart and k-means is at
    chance: NMI 0.01-0.05), so that the whitened distances still tell the two kinds apart."""
    sample = os.path.join(ROOT, "data", "fashion_mnist_small", "train")
    tree = tmp_path / "two_kinds"
    for cls in ("Bag", "Trouser"):
        os.makedirs(tree / cls)
        for name in sorted(os.listdir(os.path.join(sample, cls)))[:8]:
            shutil.copy(os.path.join(sample, cls, name), tree / cls / name)
    scores = []
    for seed in (31, 32, 33):
        exp = tmp_path / f"exp{seed}"
        train.main("cpu", ["--dataset_path", str(tree), "--exp_dir", str(exp), "--num_classes", "2", "--num_epoch",
                           "0", "--seed", str(seed), "--workers", "0", "--verbose", "false"])
        ckpt = torch.load(exp / "checkpoint.pth.tar", weights_only=True)
        assert ckpt["pca_A"].shape[0] == 2
        assert "pca_dim 0 (automatic): 2 whitened dimensions for 16 images" in (exp / "train.log").read_text()
        scores.append(ckpt["clustering_metrics"]["nmi"])
    assert np.mean(scores) > 0.6 and max(scores) == pytest.approx(1.0)  # measured: 0.19, 1.0, 1.0


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """A 1-epoch run whose checkpoint the earlier-layout tests strip of keys."""
    base = tmp_path_factory.mktemp("one_epoch")
    tree = make_blob_tree(base / "tree")
    run(tree, base / "exp", "--num_epoch", "1")
    return tree, base / "exp"


@pytest.mark.parametrize("keys", [[key] for key in checkpoint.EARLIER_LAYOUT] + [["num_classes"],
                                  list(checkpoint.EARLIER_LAYOUT) + ["num_classes"]])
def test_a_checkpoint_of_an_earlier_layout_resumes_and_says_what_it_lacks(one_epoch, tmp_path, keys):
    """A checkpoint written before a key joined the layout resumes (one log line naming what it lacks and what the
    resume does instead); it was a KeyError traceback. One key missing: the resume's set-up (a finished run);
    all of them: a resumed epoch of training, written back in today's layout."""
    tree, source = one_epoch
    exp = tmp_path / "exp"
    shutil.copytree(source, exp)
    path = exp / "checkpoint.pth.tar"
    ckpt = torch.load(path, weights_only=True)
    for key in keys:
        del ckpt[key]
    torch.save(ckpt, path)
    every = len(keys) > 1
    run(tree, exp, "--num_epoch", "2" if every else "1")
    log = (exp / "train.log").read_text()
    for key in set(keys) & set(checkpoint.EARLIER_LAYOUT):
        assert f"{key} ({checkpoint.EARLIER_LAYOUT[key]})" in log
    assert ("was written by an earlier train.py" in log) == (keys != ["num_classes"])
    if not every:
        assert "already finished 1 epoch" in log
        return
    rows = read_metrics(exp)
    assert [r["epoch"] for r in rows] == [0, 1]
    resumed = torch.load(path, weights_only=True)
    assert resumed["epoch"] == 2 and set(checkpoint.EARLIER_LAYOUT) <= set(resumed)  # written in today's layout
    # clustering_metrics recomputed from the stored assignment: the label scores of the clustering epoch 1 trained on
    stored = torch.load(source / "checkpoint.pth.tar", weights_only=True)["clustering_metrics"]
    assert rows[1]["nmi"] == pytest.approx(stored["nmi"]) and rows[1]["kmeans_loss"] is None
