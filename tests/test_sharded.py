"""The clustering step sharded over torchrun processes (gloo on the CPU) against one process on the same features:
the whitening, k-means (empty clusters re-split, repeated rows), the equal-size step and the streamed PCA.

One torchrun launch of 3 processes (this file run as a script) computes everything sharded, with uneven shares
and one process holding no row at all; the test compares what every process got with the one-process forms.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import clustering  # noqa: E402
import distributed  # noqa: E402
import metrics  # noqa: E402

WORLD = 3
CPU = torch.device("cpu")


def split(n):
    """The rows of each process: uneven blocks, the middle one empty."""
    first = n * 5 // 12
    return [(0, first), (first, first), (first, n)]


def features():
    """(blobs 600 x 96: the covariance route; the same with noise columns, 600 x 640: the Gram route (n < d), held
    in bfloat16; 50 rows crowded round one point: empty clusters; 3 rows repeated 50 times beside 40 others)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 96)) * 3
    x = (centres[rng.integers(0, 8, 600)] + rng.normal(size=(600, 96))).astype(np.float32)
    wide = np.concatenate([x, 0.3 * rng.normal(size=(600, 544))], 1).astype(np.float32)
    crowd = np.concatenate([1 + 1e-3 * rng.normal(size=(40, 3)), rng.normal(size=(10, 3)) + 5]).astype(np.float32)
    repeated = np.concatenate([np.repeat(x[:3, :8], 50, 0), x[3:43, :8]])
    return {"x": x, "wide": torch.from_numpy(wide).bfloat16(), "crowd": crowd, "repeated": repeated}


def stream_batches(x, order, batch=64):
    return [(order[i:i + batch], x[order[i:i + batch]]) for i in range(0, len(order), batch)]


def cluster(data, rank=None):
    """Every step on the rows of process `rank` of every matrix, with the Shards of torchrun's processes (rank
    None: one process, every row). Returns the results as one dict of numpy arrays."""
    out = {}

    def mine(name):
        a, b = (0, len(data[name])) if rank is None else split(len(data[name]))[rank]
        return torch.as_tensor(data[name][a:b]), None if rank is None else distributed.Shards(b - a, CPU)

    rows, shards = mine("x")
    xb, pca = clustering.preprocess_features(rows, 16, seed=1, shards=shards)
    km = clustering.Kmeans(12, 16, niter=10, nredo=2, equal_size=True, device=CPU)
    out["assignment"] = km.cluster_whitened(xb, pca, seed=3, shards=shards)
    out.update(A=pca["A"], xb=xb.numpy(), centroids=km.centroids, offsets=km.offsets, loss=np.array(km.loss))
    rows, shards = mine("wide")
    xw, pw = clustering.preprocess_features(rows, 16, seed=1, shards=shards)
    out.update(wide_A=pw["A"], wide_xb=xw.numpy())
    for name, k in (("crowd", 6), ("repeated", 10)):
        rows, shards = mine(name)
        out[name], _, _ = clustering.run_kmeans(rows, k, 20, seed=2, device=CPU, shards=shards)
    x = data["x"]
    sample = np.random.default_rng(5).permutation(len(x))[:150]
    offset, end = (0, len(x)) if rank is None else split(len(x))[rank]
    order, fit = distributed.sample_first(np.arange(offset, end), sample)
    batches = stream_batches(x, order) or [(np.arange(0), x[:0])]  # a process without rows yields one empty batch
    xs, ps = clustering.streamed_whitening([(i - offset, torch.from_numpy(f)) for i, f in batches], len(order), 16,
                                           fit, shards=None if rank is None else distributed.Shards(len(order), CPU))
    out.update(stream_A=ps["A"], stream_xb=xs.numpy())
    return out


def worker(folder):
    """torchrun's processes: each clusters its own rows of every matrix and saves what it got."""
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    np.savez(os.path.join(folder, f"rank{rank}.npz"), **cluster(features(), rank))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """What each of the 3 processes got (one launch serves every test below)."""
    folder = tmp_path_factory.mktemp("sharded")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
                        os.path.abspath(__file__), str(folder)], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return [dict(np.load(folder / f"rank{rank}.npz")) for rank in range(WORLD)]


@pytest.fixture(scope="module")
def one():
    return cluster(features())


def test_every_process_ends_with_the_same_clustering(sharded):
    """The same start, the same empty clusters split, the same offsets: every decision is taken alike."""
    for name in ("assignment", "centroids", "offsets", "loss", "A", "wide_A", "crowd", "repeated", "stream_A"):
        for rank in range(1, WORLD):
            assert np.array_equal(sharded[0][name], sharded[rank][name]), (name, rank)


def test_sharded_kmeans_and_equal_size_step_match_one_process(sharded, one):
    got = sharded[0]
    assert np.abs(got["A"] - one["A"]).max() < 1e-4  # the covariance summed in another order: float32 rounding
    xb = np.concatenate([sharded[rank]["xb"] for rank in range(WORLD)])
    assert np.abs(xb - one["xb"]).max() < 1e-3
    assert metrics.nmi(one["assignment"], got["assignment"]) >= 0.99
    assert float(got["loss"]) == pytest.approx(float(one["loss"]), rel=1e-3)
    assert np.allclose(got["offsets"], one["offsets"], atol=1e-4)
    sizes = np.bincount(got["assignment"], minlength=12)
    assert sizes.min() >= 45 and sizes.max() <= 55  # 600 / 12: the equal-size step over all processes' rows


def test_sharded_gram_route_of_half_precision_features_matches_one_process(sharded, one):
    """Fewer rows than dimensions: the rows are gathered, so the PCA is the one process' own (up to the rounding of
    matmuls run with another number of threads)."""
    assert np.abs(sharded[0]["wide_A"] - one["wide_A"]).max() < 1e-6
    xb = np.concatenate([sharded[rank]["wide_xb"] for rank in range(WORLD)])
    assert np.abs(xb - one["wide_xb"]).max() < 1e-5


def test_empty_clusters_and_repeated_rows_are_handled_alike(sharded, one):
    for name, k in (("crowd", 6), ("repeated", 10)):
        assert np.array_equal(sharded[0][name], one[name]), name
    assert len(np.unique(sharded[0]["crowd"])) == 6


def test_streamed_pca_sample_is_drawn_across_processes(sharded, one):
    """pca_fit_samples under torchrun: each process contributes the part of the one sample in its rows."""
    assert np.abs(sharded[0]["stream_A"] - one["stream_A"]).max() < 1e-4
    xs = np.concatenate([sharded[rank]["stream_xb"] for rank in range(WORLD)])
    assert np.abs(xs - one["stream_xb"]).max() < 1e-4


def test_the_sample_comes_first_in_each_share():
    order, fit = distributed.sample_first(np.arange(10, 20), np.array([15, 3, 11, 25, 19]))
    assert fit == 3 and order[:3].tolist() == [15, 11, 19] and sorted(order.tolist()) == list(range(10, 20))
    order, fit = distributed.sample_first(np.arange(0), np.array([1, 2]))
    assert fit == 0 and len(order) == 0


if __name__ == "__main__":
    worker(sys.argv[1])
