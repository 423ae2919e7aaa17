"""CPU checks of the multi-process path (torchrun + gloo) and of the GPU tooling's CPU-safe parts."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import clustering
import distributed
import engine
import train
from conftest import make_blob_tree, train_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def test_shards_cover_every_image_once():
    for n, world in [(21, 2), (20, 3), (5, 4)]:
        shares = [distributed.shard(n, r, world) for r in range(world)]
        assert sorted(np.concatenate(shares).tolist()) == list(range(n))


def test_epoch_sample_shares_are_disjoint_and_equal_in_length():
    sample = np.random.default_rng(0).permutation(21)
    shares = [distributed.share_of(sample, r, 2) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == 11  # same number of batches on every rank
    assert set(shares[0].tolist()) | set(shares[1].tolist()) == set(range(21))
    assert len(set(shares[0].tolist()) & set(shares[1].tolist())) == 1  # only the one wrap-around pad


def test_single_process_helpers_are_no_ops():
    rows = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert np.array_equal(distributed.gather_rows(np.array([2, 0, 3, 1]), rows, 4, "cpu")[2], rows[0])
    assert distributed.broadcast({"a": 1}) == {"a": 1} and distributed.in_sync(None, "cpu") is None
    assert distributed.all_mean(6.0, 3, "cpu") == 2.0


def test_one_process_gets_its_features_back_without_a_second_copy():
    """One process's share is all n rows in order (shard): gather_rows hands them back as they are, so the N x 4096
    features (21 GB at ImageNet's size) are never held twice on the GPU that clusters them."""
    index = distributed.shard(5, 0, 1)
    for rows in (np.ones((5, 3), np.float32), torch.ones(5, 3)):
        assert distributed.gather_rows(index, rows, 5, "cpu") is rows


def test_mixed_precision_only_on_cuda():
    c = dict(train.load_cfg([]))
    assert engine.amp_dtype(c, torch.device("cpu")) is None
    assert engine.amp_dtype(c, torch.device("cuda")) is torch.bfloat16
    assert engine.amp_dtype({**c, "amp": "fp16"}, torch.device("cuda")) is torch.float16
    assert engine.amp_dtype({**c, "amp": "off"}, torch.device("cuda")) is None


@pytest.mark.slow
def test_two_processes_cluster_like_one_and_stay_in_sync(tmp_path):
    """torchrun with 2 gloo processes, each clustering its own share of the features (all-reduced sums): epoch 0
    clusters as 1 process does with the same torch form (and with features held in float16), a training epoch
    leaves identical weights on both ranks, and a resumed run ends exactly where an uninterrupted one does; with
    two clusterings per epoch (num_classes 3,5), both sharded, and one head each."""
    tree = make_blob_tree(tmp_path / "tree", classes=3, per_class=7)  # 21 images: uneven shares
    one, half, two, straight = tmp_path / "one", tmp_path / "half", tmp_path / "two", tmp_path / "straight"
    ks = ("--num_classes", "3,5")
    train.main("cpu", train_args(tree, one, "--num_epoch", "0", "--clustering_device", "torch", *ks))
    train.main("cpu", train_args(tree, half, "--num_epoch", "0", "--feature_dtype", "float16", *ks))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    gathered = ("--shard_clustering", "false", "--clustering_device", "torch")  # epoch 0: rank 0 clusters, shares
    r = subprocess.run(TORCHRUN + ["train.py", *train_args(tree, two, "--num_epoch", "0", *ks, *gathered)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b, h = (torch.load(run / "checkpoint.pth.tar", weights_only=True) for run in (one, two, half))
    assert torch.equal(a["assignment"], b["assignment"]) and torch.equal(a["assignment"], h["assignment"])
    other = [ckpt["other_clusterings"][0]["assignment"] for ckpt in (a, b, h)]
    assert torch.equal(other[0], other[1]) and torch.equal(other[0], other[2]) and len(other[0].unique()) == 5
    loss = [ckpt["clustering_metrics"]["kmeans_loss"] for ckpt in (a, b)]
    assert loss[1] == pytest.approx(loss[0], rel=1e-3)
    assert "2 processes, clustering with torch on cpu\n" in (two / "train.log").read_text()  # gathered on rank 0
    args = ["--num_epoch", "1", "--verbose", "true", *ks]
    started = [subprocess.Popen(TORCHRUN + ["train.py", *train_args(tree, run, *args)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for run in (two, straight)]  # resumed after epoch 0, and in one go: both at once (free ports each)
    outputs = [p.communicate(timeout=300) for p in started]
    assert all(p.returncode == 0 for p in started), outputs[0][1][-3000:] + outputs[1][1][-3000:]
    assert outputs[0][0].count("resuming from") == 1  # only rank 0 speaks
    rows = [json.loads(line) for line in open(two / "metrics.jsonl")]
    assert len(rows) == 1 and rows[0]["ranks_in_sync"] is True and np.isfinite(rows[0]["loss"])
    assert "2 processes" in (two / "train.log").read_text() and "all-reduced sums" in (two / "train.log").read_text()
    resumed, whole = (torch.load(run / "checkpoint.pth.tar", weights_only=True) for run in (two, straight))
    assert torch.equal(resumed["assignment"], whole["assignment"]) and torch.equal(resumed["centroids"],
                                                                                  whole["centroids"])
    assert all(torch.equal(resumed["state_dict"][k], whole["state_dict"][k]) for k in whole["state_dict"])
    assert torch.equal(resumed["other_clusterings"][0]["assignment"], whole["other_clusterings"][0]["assignment"])
    assert resumed["state_dict"]["extra_heads.0.weight"].shape == (5, 4096)


def test_more_processes_than_gpus_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SystemExit) as e:
        distributed.check_gpu_count(2)
    message = str(e.value.code)
    assert "2 processes" in message and "1 GPU" in message and "--nproc_per_node=1" in message and "\n" not in message
    distributed.check_gpu_count(1)


def test_contiguous_shares_are_gathered_in_place():
    """One block per rank, in order: rank 0 receives each block straight into its rows of one buffer."""
    shares = [distributed.shard(21, r, 4) for r in range(4)]
    assert [s.tolist() for s in shares] == [list(range(0, 6)), list(range(6, 12)), list(range(12, 18)),
                                            list(range(18, 21))]
    assert distributed.shard(5, 3, 4).tolist() == []


@pytest.mark.slow
def test_gpu_check_script_cpu_safe_parts():
    script = os.path.join(ROOT, "tools", "gpu_check.sh")
    r = subprocess.run(["bash", script, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "GPU check" in r.stdout
    r = subprocess.run(["bash", script, "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown argument" in r.stderr
    if not torch.cuda.is_available():
        env = {**os.environ, "PYTHON": sys.executable}
        r = subprocess.run(["bash", script], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 3 and "CUDA is not available" in r.stderr
    # a python without the packages (-S: no site-packages), as on an offline GPU machine: one line naming what is
    # missing and how to provide it (a wheel installed with --target and PYTHONPATH); pip is never tried
    bare = {**os.environ, "PYTHON": f"{sys.executable} -S"}
    r = subprocess.run(["bash", script], capture_output=True, text=True, env=bare, timeout=60)
    assert r.returncode == 1 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "faiss-cpu" in r.stderr and "--target" in r.stderr and "PYTHONPATH" in r.stderr
    for bench in ("imagenet.py", "sharded.py"):  # the benchmarks it runs start (bench/decoding.py shadowed decoding.py)
        r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", bench), "--help"], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0 and "usage" in r.stdout, r.stderr[-2000:]


@pytest.mark.slow
def test_two_processes_with_the_centroid_head_and_a_streamed_pca(tmp_path):
    """Every rank builds the same head from the same PCA and centroids; pca_fit_samples under torchrun: the PCA
    is fitted on one sample drawn across the ranks, every later batch projected as it is computed, to the
    automatic dimension of that sample (pca_dim 0: 2 for 12 images, 3 for all 24), as one process does."""
    tree = make_blob_tree(tmp_path / "tree", classes=3, per_class=8)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(TORCHRUN + ["train.py", *train_args(tree, tmp_path / "exp", "--num_epoch", "2", "--head",
                                                           "centroids", "--pca_fit_samples", "12", "--pca_dim", "0")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in open(tmp_path / "exp" / "metrics.jsonl")]
    assert len(rows) == 2 and all(row["ranks_in_sync"] is True and np.isfinite(row["loss"]) for row in rows)
    assert rows[0]["nmi"] > 0.9  # the 3 visible kinds of image found
    ckpt = torch.load(tmp_path / "exp" / "checkpoint.pth.tar", weights_only=True)
    assert ckpt["pca_A"].shape == (clustering.auto_pca_dim(12), 4096) and clustering.auto_pca_dim(24) == 3
