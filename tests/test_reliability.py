"""Hostile inputs and faults: any file name, symlink loops, non-finite values, concurrent runs,
interrupted writes, pred.py's own outputs, files that are not our checkpoints."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import checkpoint
import clustering
import output_folder
import pred
import train
from conftest import make_blob_tree, train_args
from dataset import ClusterDataset
from errors import printable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_line(excinfo):
    msg = str(excinfo.value.code)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


def pred_args(trained, *extra):
    tree, exp = trained
    return train_args(tree, exp, *extra)


# ---------------------------------------------------------------- file names are bytes

@pytest.mark.slow
def test_names_that_are_not_utf8_or_very_long_work_end_to_end(tmp_path):
    tree = make_blob_tree(tmp_path / "tree", classes=3, per_class=6)
    first = os.path.join(tree, "class_0", "000.png")
    odd = os.fsencode(os.path.join(tree, "class_0")) + b"/caf\xe9_\xff.png"  # Latin-1 bytes, not UTF-8
    os.rename(first, odd)
    long_name = os.path.join(tree, "class_1", "x" * 240 + ".png")  # 247 bytes: the link prefix would pass 255
    os.rename(os.path.join(tree, "class_1", "000.png"), long_name)
    exp = tmp_path / "exp"
    broken = os.fsencode(os.path.join(tree, "class_2")) + b"/broken_\xfe.png"  # logged when skipped
    with open(broken, "wb") as f:
        f.write(b"not an image")
    train.main("cpu", train_args(tree, exp, "--num_epoch", "1"))
    assert "broken_\\xfe.png" in (exp / "train.log").read_text(encoding="utf-8")
    out = tmp_path / "out"
    result = pred.main("cpu", train_args(tree, exp, "--test_path", tree, "--pred_dir", str(out)))
    assert result["n_images"] == 18
    text = (out / "predictions.csv").read_bytes().decode("utf-8")  # valid UTF-8
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == 18 and any(r["path"].endswith("caf\\xe9_\\xff.png") for r in rows)
    links = [name for folder in os.listdir(out / "clusters") for name in os.listdir(out / "clusters" / folder)]
    assert len(links) == 18 and all(len(os.fsencode(name)) <= 255 for name in links)
    assert any(os.fsencode(name).endswith(b"caf\xe9_\xff.png") for name in links)
    assert any(name.endswith(".png") and "xxxx" in name for name in links)
    assert all(os.path.exists(out / "clusters" / f / n) for f in os.listdir(out / "clusters")
               for n in os.listdir(out / "clusters" / f))


def test_printable_escapes_only_what_is_not_utf8():
    assert printable("caf\u00e9") == "caf\u00e9"
    assert printable(os.fsdecode(b"caf\xe9")) == "caf\\xe9"


def test_a_log_line_with_such_a_name_is_written(tmp_path):
    from engine import Logger
    log = Logger(str(tmp_path), verbose=True)
    log("skipping " + os.fsdecode(b"bad_\xff.png"))
    assert "bad_\\xff.png" in (tmp_path / "train.log").read_text(encoding="utf-8")


# ---------------------------------------------------------------- symlinks

def test_symlink_loops_and_second_paths_are_visited_once(tmp_path):
    tree = make_blob_tree(tmp_path / "tree", classes=3, per_class=5)
    os.symlink(".", os.path.join(tree, "class_0", "a"))             # a loop onto its own folder
    os.symlink("..", os.path.join(tree, "class_1", "up"))           # a loop onto the root (other classes)
    os.symlink(os.path.join(tree, "class_0"), os.path.join(tree, "class_2", "again"))  # another class's folder
    os.symlink(os.path.join(tree, "class_2", "000.png"), os.path.join(tree, "class_2", "zz_dup.png"))
    notes = []
    ds = ClusterDataset(tree, log=notes.append)
    assert len(ds) == 15
    assert np.bincount(ds.labels).tolist() == [5, 5, 5]
    assert all(os.path.dirname(p).endswith(f"class_{label}") for p, label in zip(ds.paths, ds.labels))
    skipped = "\n".join(notes)
    for name in ("a", "up", "again", "zz_dup.png"):
        assert f"{name}' skipped" in skipped


# ---------------------------------------------------------------- config values

@pytest.mark.parametrize("flag, value, key", [
    ("--lr", "nan", "lr"), ("--lr", "inf", "lr"), ("--weight_decay", "-inf", "weight_decay"),
    ("--momentum", "1.5", "momentum"), ("--input_size", "100000", "input_size"),
    ("--exp_dir", "", "exp_dir"), ("--dataset_path", " ", "dataset_path"),
])
def test_bad_values_stop_before_work_naming_the_key(tmp_path, flag, value, key):
    with pytest.raises(SystemExit) as e:
        train.main("cpu", train_args(tmp_path / "none", tmp_path / "exp", flag, value))
    assert f"'{key}'" in one_line(e) and not (tmp_path / "exp").exists()


def test_a_fit_sample_of_one_image_is_refused_before_work_naming_the_smallest_that_works(tmp_path):
    with pytest.raises(SystemExit) as e:
        train.main("cpu", train_args(tmp_path / "none", tmp_path / "exp", "--pca_fit_samples", "1"))
    assert "'pca_fit_samples'" in one_line(e) and "at least 2" in one_line(e) and not (tmp_path / "exp").exists()


def test_a_small_fit_sample_is_used_and_the_log_says_what_it_keeps(blob_tree, tmp_path):
    train.main("cpu", train_args(blob_tree, tmp_path / "exp", "--num_epoch", "0", "--pca_fit_samples", "2",
                                 "--pca_dim", "0"))
    log = (tmp_path / "exp" / "train.log").read_text()
    assert "pca_fit_samples 2: the PCA is fitted on a random 2 of the 18 images" in log
    assert "whitens to 1 dimension where all 18 would keep 2; pca_fit_samples 4 or more keeps them" in log
    ckpt = torch.load(tmp_path / "exp" / "checkpoint.pth.tar", weights_only=True)
    assert ckpt["pca_A"].shape == (1, 4096)


def copies_tree(root):
    """20 byte-identical copies of one Fashion-MNIST image and 3 distinct images of other classes, flat."""
    import shutil
    sample = os.path.join(ROOT, "data", "fashion_mnist_small", "test")
    os.makedirs(root)
    for i in range(20):
        shutil.copy(os.path.join(sample, "Ankle_boot", "test_00000.png"), os.path.join(root, f"copy_{i:02d}.png"))
    for cls in ("Trouser", "Bag", "Sandal"):
        first = sorted(os.listdir(os.path.join(sample, cls)))[0]
        shutil.copy(os.path.join(sample, cls, first), os.path.join(root, f"zz_{cls}.png"))
    return root


@pytest.mark.parametrize("seed", ["31", "32", "33"])
def test_many_copies_beside_few_distinct_images_leave_each_distinct_image_its_own_cluster(tmp_path, seed):
    # 23 images keep 2 dimensions by the image count; the 4 distinct rows span 3: two of the 3 shared a cluster
    tree = copies_tree(tmp_path / "imgs")
    exp = tmp_path / "exp"
    train.main("cpu", ["--dataset_path", str(tree), "--exp_dir", str(exp), "--num_epoch", "0", "--num_classes", "6",
                       "--pca_dim", "0", "--workers", "0", "--seed", seed])
    ckpt = torch.load(exp / "checkpoint.pth.tar", weights_only=True)
    labels = ckpt["assignment"].tolist()
    copies, distinct = set(labels[:20]), labels[20:]
    assert len(copies) == 1 and len(set(distinct)) == 3 and not copies & set(distinct), labels
    assert ("23 images hold 4 distinct feature rows (copies); whitened to 3 dimensions instead of 2, so that each "
            "distinct image can have its own of the 6 clusters") in (exp / "train.log").read_text()


def test_the_copies_rule_leaves_sets_without_copies_and_large_sets_alone():
    assert clustering.copies_pca_dim(23, 23, 6, 4096) is None  # no copies: the image count stands
    assert clustering.copies_pca_dim(23, 4, None, 4096) is None  # no k (pred.py's automatic k)
    assert clustering.copies_pca_dim(5000, 40, 10, 4096) is None  # 16 dimensions already
    assert clustering.copies_pca_dim(23, 4, 6, 4096) == 3  # every distinct row its own cluster: m - 1
    assert clustering.copies_pca_dim(100, 40, 10, 4096) == 5  # else the rule on the distinct rows
    x = np.zeros((6, 3), np.float32)
    x[3:] = 1
    assert clustering.distinct_rows(x) == 2 and clustering.distinct_rows(torch.from_numpy(x)) == 2


def test_outputs_that_are_files_are_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as e:
        train.main("cpu", train_args(tmp_path / "none", tmp_path / "file"))
    assert "'exp_dir'" in one_line(e) and "is a file" in str(e.value.code)
    with pytest.raises(SystemExit) as e:
        pred.main("cpu", train_args(tmp_path / "none", tmp_path / "exp", "--pred_dir", str(tmp_path / "file" / "p")))
    assert "'pred_dir'" in one_line(e)


# ---------------------------------------------------------------- divergence

@pytest.mark.slow
def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(blob_tree, tmp_path):
    exp = tmp_path / "exp"
    with pytest.raises(SystemExit) as e:
        train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "3", "--lr", "1e12"))
    msg = one_line(e)
    assert msg.startswith("training error: epoch 1 diverged") and "lower --lr" in msg
    ckpt = torch.load(exp / "checkpoint.pth.tar", weights_only=True)
    assert ckpt["epoch"] == 0 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values()
                                      if v.is_floating_point())


def test_metrics_lines_are_strict_json(tmp_path):
    path = tmp_path / "metrics.jsonl"
    checkpoint.append_metrics(str(path), {"epoch": 0, "loss": float("nan"), "kmeans_loss": float("inf"), "nmi": 0.5})
    row = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in metrics.jsonl"))
    assert row == {"epoch": 0, "loss": None, "kmeans_loss": None, "nmi": 0.5}


# ---------------------------------------------------------------- concurrency

def hold(lock_path):
    """A process that holds lock_path the way a run does, until it is killed."""
    code = ("import sys, time, checkpoint\n"
            "with checkpoint.hold_lock(sys.argv[1], 'x', 'exp_dir'):\n"
            "    print('held', flush=True)\n    time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(lock_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.slow
def test_a_second_trainer_on_one_exp_dir_stops_and_a_killed_one_leaves_no_stale_lock(blob_tree, tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    holder = hold(exp / ".train.lock")
    try:
        with pytest.raises(SystemExit) as e:
            train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "0"))
        assert f"pid {holder.pid}" in one_line(e) and "--exp_dir" in str(e.value.code)
        assert not (exp / "checkpoint.pth.tar").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "0"))  # the kernel released the lock
    assert (exp / "checkpoint.pth.tar").exists()


def test_a_second_prediction_into_one_pred_dir_stops(trained, tmp_path):
    out = tmp_path / "out"
    holder = hold(output_folder.beside(str(out), "lock"))
    try:
        with pytest.raises(SystemExit) as e:
            pred.main("cpu", pred_args(trained, "--pred_dir", str(out)))
        assert f"pid {holder.pid}" in one_line(e) and "--pred_dir" in str(e.value.code)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


# ---------------------------------------------------------------- interrupted writes

@pytest.mark.slow
def test_a_partial_metrics_line_and_a_stale_temporary_do_not_block_a_resume(blob_tree, tmp_path):
    exp = tmp_path / "exp"
    train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "1"))
    with open(exp / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 1, "loss": 1.2')  # a power loss in the middle of a line
    stale = exp / "checkpoint.pth.tar.tmp.999999"
    stale.write_bytes(b"half a checkpoint")
    with pytest.warns(UserWarning, match="line 2 is not complete JSON"):
        train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "2"))
    rows = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1] and not stale.exists()
    assert "removed" in (exp / "train.log").read_text()


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_is_one_line_and_the_run_resumes(blob_tree, tmp_path, monkeypatch):
    exp = tmp_path / "exp"
    train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "1"))

    def disk_full(state, f):  # what torch.save does when the disk fills: part of the file, then its zip writer fails
        with open(f, "wb") as out:
            out.write(b"PK part of a checkpoint")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 179904 vs 179800")

    with monkeypatch.context() as m:
        m.setattr(checkpoint.torch, "save", disk_full)
        with pytest.raises(SystemExit) as e:
            train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "2"))
    msg = one_line(e)
    assert msg.startswith(f"checkpoint error: could not write '{exp / 'checkpoint.pth.tar'}' (")
    assert "MB free there" in msg and "unexpected pos" in msg and "resume" in msg
    assert not list(exp.glob("*.tmp.*"))  # the partial file is gone
    assert torch.load(exp / "checkpoint.pth.tar", weights_only=False)["epoch"] == 1  # the previous one is intact
    train.main("cpu", train_args(blob_tree, exp, "--num_epoch", "2"))  # the same command resumes
    rows = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1] and torch.load(exp / "checkpoint.pth.tar", weights_only=False)["epoch"] == 2


def test_selecting_the_same_checkpoint_twice_leaves_no_temporary(tmp_path):
    ckpt, selected = tmp_path / "checkpoint.pth.tar", tmp_path / "selected.pth.tar"
    ckpt.write_bytes(b"weights")
    checkpoint.keep_as_selected(str(ckpt), str(selected))
    checkpoint.keep_as_selected(str(ckpt), str(selected))  # both names already link to one file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth.tar", "selected.pth.tar"]
    assert selected.read_bytes() == b"weights"


@pytest.mark.slow
def test_an_interrupted_prediction_leaves_the_previous_one_and_can_be_run_again(trained, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = pred.main("cpu", pred_args(trained, "--pred_dir", str(out)))
    before = sorted(os.listdir(out))

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(pred, "write_grids", interrupted)
    with pytest.raises(SystemExit) as e:
        pred.main("cpu", pred_args(trained, "--pred_dir", str(out), "--pred_mode", "recluster"))
    assert e.value.code == 130
    assert sorted(os.listdir(out)) == before  # untouched
    assert json.loads((out / "metrics.json").read_text())["mode"] == first["mode"]
    monkeypatch.undo()
    result = pred.main("cpu", pred_args(trained, "--pred_dir", str(out), "--pred_mode", "recluster"))
    assert result["mode"] == "recluster" and json.loads((out / "metrics.json").read_text())["mode"] == "recluster"
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".out.") and name != ".out.lock"]


# ---------------------------------------------------------------- pred.py's own outputs

@pytest.mark.slow
def test_a_pred_dir_inside_the_test_tree_is_never_scanned(trained, tmp_path):
    tree, _ = trained
    inside = os.path.join(tree, "zz_predictions")
    for _ in range(2):
        result = pred.main("cpu", pred_args(trained, "--test_path", tree, "--pred_dir", inside))
        assert result["n_images"] == 24 and result["n_classes"] == 3
    other = pred.main("cpu", pred_args(trained, "--test_path", tree, "--pred_dir", str(tmp_path / "o")))
    assert other["n_images"] == 24  # a prediction folder is recognised by its manifest too


def test_manifest_entries_outside_pred_dir_are_ignored(trained, tmp_path):
    out = tmp_path / "out"
    pred.main("cpu", pred_args(trained, "--pred_dir", str(out)))
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    manifest = out / ".pred_manifest.json"
    files = json.loads(manifest.read_text())["files"]
    manifest.write_text(json.dumps({"files": files + ["../precious.txt", str(victim)]}))
    pred.main("cpu", pred_args(trained, "--pred_dir", str(out)))
    assert victim.read_text() == "keep me"


# ---------------------------------------------------------------- files that are not our checkpoints

@pytest.mark.parametrize("content, words", [
    ({"conv.weight": torch.zeros(2)}, "bare state_dict"),
    ([1, 2, 3], "holds a list"),
    ({"epoch": 3}, "lacks"),
])
def test_a_checkpoint_that_is_not_ours_is_one_line(trained, tmp_path, content, words):
    path = tmp_path / "other.pth"
    torch.save(content, path)
    with pytest.raises(SystemExit) as e:
        pred.main("cpu", pred_args(trained, "--ckpt_path", str(path), "--pred_dir", str(tmp_path / "o")))
    msg = one_line(e)
    assert msg.startswith("checkpoint error:") and words in msg and "written by train.py" in msg


def test_a_file_that_is_not_a_checkpoint_at_all_is_one_line(trained, tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello")
    with pytest.raises(SystemExit) as e:
        pred.main("cpu", pred_args(trained, "--ckpt_path", str(path), "--pred_dir", str(tmp_path / "o")))
    assert one_line(e).startswith("checkpoint error: cannot read")


@pytest.mark.slow
def test_kill_minus_nine_during_a_prediction_then_rerun(trained, tmp_path):
    """A pred.py killed at any moment: the next run works and leaves no staging folder behind."""
    out = tmp_path / "out"
    cmd = [sys.executable, "pred.py", *pred_args(trained, "--pred_dir", str(out), "--copy_images", "true")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not any(n.startswith(".out.tmp-") for n in os.listdir(tmp_path)) and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (out / "predictions.csv").exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".out.") and n != ".out.lock"]


def test_a_damaged_manifest_is_one_line_and_nothing_is_deleted(trained, tmp_path):
    out = tmp_path / "out"
    pred.main("cpu", pred_args(trained, "--pred_dir", str(out)))
    (out / ".pred_manifest.json").write_text('{"files": ["predictions.csv"')  # cut short
    with pytest.raises(SystemExit) as e:
        pred.main("cpu", pred_args(trained, "--pred_dir", str(out)))
    assert "damaged" in one_line(e) and (out / "predictions.csv").exists() and (out / "grids").is_dir()
