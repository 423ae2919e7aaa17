"""The clustering step sharded over torchrun processes (bench/run.py --parts sharded): what each rank holds and how
long the step takes with 1, 2 and 4 gloo processes on the same synthetic fc7-like features, and a projection of
the memory per rank and of the traffic to ImageNet (1,281,167 images) and 100M images on 8, 64 and 512 GPUs.

Each run is `torchrun --nproc_per_node=W bench/sharded.py --_child ...`: every rank makes the rows of its own
share (the same rows whatever W), keeps them in the feature dtype, then runs the clustering step of train.py's
sharded path (PCA-whitening from all-reduced statistics, k-means, one round of the equal-size step: its memory,
and the time of a Sinkhorn iteration, since the number of iterations depends on the data), timing each phase and
reading its peak resident memory (Linux's VmHWM, reset before each phase, so that the features' generation does
not count). One process is train.py's one-process path (no Shards). The partitions of the runs are compared
with the one-process one (NMI, k-means loss).
"""
import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # before bench/ (a script's own folder): bench/decoding.py and bench/report.py
# would shadow the repository's decoding.py and report.py

import clustering  # noqa: E402
from clustering.equal_size import torch_bytes  # noqa: E402
import distributed  # noqa: E402
import metrics  # noqa: E402
from synthetic import SyntheticFeatures  # noqa: E402

D, PCA_DIM, CANDIDATES, BLOCK, SINKHORN = 4096, 256, clustering.EQUAL_SIZE_CANDIDATES, 4096, 20
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
IMAGENET = 1_281_167
GIB = 2**30
# k-means' assignment on a GPU: 1,281,167 x 256 rows, k = 10,000, 20 iterations in 4.22 s in float32 on one H200
# (docs/gpu.md, measured before the work on scale): 2 n k 256 x 20 / 4.22 s = 31 TFLOP/s
GPU_KMEANS_FLOPS = 2 * IMAGENET * 10_000 * 256 * 20 / 4.22


def peak_gib(reset=False, device="cpu"):
    """This process' peak memory since the last reset, in GiB: resident (VmHWM) on the CPU, allocated by torch on
    a GPU; reset=True starts a new peak."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / GIB
        if reset:
            torch.cuda.reset_peak_memory_stats()
        return peak
    with open("/proc/self/status") as f:
        kib = int(next(line.split()[1] for line in f if line.startswith("VmHWM")))
    if reset:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    return kib / 2**20


def share_rows(share, dtype, source, device="cpu"):
    """The synthetic features of the images `share` (a contiguous block), made block by block of BLOCK rows of the
    whole set, so that every number of processes clusters the same rows; held on `device`."""
    out = torch.empty(len(share), D, dtype=dtype, device=device)
    if not len(share):
        return out
    for block in range(share[0] // BLOCK, share[-1] // BLOCK + 1):
        lo, hi = max(block * BLOCK, share[0]), min((block + 1) * BLOCK, share[-1] + 1)
        rows = torch.from_numpy(source.rows(BLOCK, seed=block + 1)[0])
        out[lo - share[0]:hi - share[0]] = rows[lo - block * BLOCK:hi - block * BLOCK].to(dtype)
    return out


def equal_size_round(xb, centroids, shards):
    """One round of the equal-size step's torch form (equal_size.torch_equal_size_offsets): each row's 64 nearest
    centroids and SINKHORN iterations, the memory of a full step (it runs more iterations, and widens the
    candidates only where they do not suffice) in a known time."""
    from clustering.common import one_process
    from clustering.equal_size import candidate_sinkhorn, nearest_candidates
    c = torch.from_numpy(centroids).to(xb.device)
    dist, ids = nearest_candidates(xb, c, min(len(c), CANDIDATES))
    total, count = one_process(shards, len(xb)).sum(dist.sum(), torch.tensor(float(dist.numel()), dtype=torch.float64))
    candidate_sinkhorn(dist, ids, len(c), 0.01 * float(total / count), SINKHORN, 0.0, shards)


def child(n, k, niter, dtype, folder, device_type="cpu"):
    """One rank of a run: its share of the features, then the sharded clustering step phase by phase (on the CPU
    with gloo, or on this rank's GPU with NCCL)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, _, local_rank = distributed.setup(device_type)
    device = torch.device("cuda", local_rank) if device_type == "cuda" else torch.device("cpu")
    torch.set_num_threads(max(1, distributed.usable_cores() // world))
    share = distributed.shard(n, rank, world)
    x = share_rows(share, DTYPES[dtype], SyntheticFeatures(k=100), device)
    gc.collect()
    shards = distributed.Shards(len(share), device) if world > 1 else None
    km = clustering.Kmeans(k, PCA_DIM, niter, "torch", 1, equal_size=False, device=device)
    base = peak_gib(reset=True, device=device)
    t0 = time.perf_counter()
    xb, pca = km.whiten(x, seed=1, shards=shards)
    del x
    t1, pca_peak = time.perf_counter(), peak_gib(reset=True, device=device)
    km.cluster_whitened(xb, pca, seed=1, shards=shards)
    t2, kmeans_peak = time.perf_counter(), peak_gib(reset=True, device=device)
    equal_size_round(xb, km.centroids, shards)
    t3, equal_peak = time.perf_counter(), peak_gib(device=device)
    row = {"rank": rank, "world": world, "rows": len(share), "base_gib": base, "pca_peak_gib": pca_peak,
           "kmeans_peak_gib": kmeans_peak, "equal_size_peak_gib": equal_peak, "pca_s": t1 - t0, "kmeans_s": t2 - t1,
           "equal_round_s": t3 - t2, "loss": km.loss}
    with open(os.path.join(folder, f"rank{rank}.json"), "w") as f:
        json.dump(row, f)
    if rank == 0:
        np.save(os.path.join(folder, "assignment.npy"), km.assignment)
    distributed.cleanup()


def run(world, n, k, niter, dtype, device_type="cpu"):
    """One torchrun launch of `world` processes (gloo, or NCCL one per GPU); returns (per-rank rows, rank 0's
    assignment, seconds)."""
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, distributed.usable_cores() // world))}
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
                            os.path.abspath(__file__), "--_child", str(n), str(k), str(niter), dtype, folder,
                            device_type],
                           cwd=ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"bench: {world} processes failed:\n{r.stderr[-3000:]}")
        ranks = [json.load(open(os.path.join(folder, f"rank{rank}.json"))) for rank in range(world)]
        return ranks, np.load(os.path.join(folder, "assignment.npy")), seconds


def bench_sharded(n, k, niter, worlds=(1, 2, 4), dtypes=("float32", "bfloat16"), device_type="cpu"):
    """Every (dtype, world) run; the largest rank's numbers, and its partition against the one-process one."""
    results = []
    for dtype in dtypes:
        reference = None
        for world in worlds:
            ranks, assignment, seconds = run(world, n, k, niter, dtype, device_type)
            top = max(ranks, key=lambda r: max(r["pca_peak_gib"], r["kmeans_peak_gib"], r["equal_size_peak_gib"]))
            row = {"dtype": dtype, "world": world, "n": n, "k": k, "niter": niter, "launch_s": seconds,
                   **{key: top[key] for key in ("rows", "base_gib", "pca_peak_gib", "kmeans_peak_gib",
                                                "equal_size_peak_gib")},
                   **{key: max(r[key] for r in ranks) for key in ("pca_s", "kmeans_s", "equal_round_s")},
                   "loss": ranks[0]["loss"]}
            if reference is None:
                reference = assignment, row["loss"]
            model = rank_memory(n, world, k, 2 if dtype == "bfloat16" else 4,
                                chunk=2 * GIB if device_type == "cuda" else 256 * 2**20)
            interpreter = row["base_gib"] - model["features"] / GIB  # base: the features are held already
            row["model_gib"] = {p: interpreter + model[p] / GIB for p in ("pca", "kmeans", "equal_size")}
            row["nmi_vs_one"] = metrics.nmi(reference[0], assignment)
            row["loss_vs_one"] = row["loss"] / reference[1]
            results.append(row)
    return results


def rank_memory(n, world, k, feature_bytes=2, fit_samples=0, chunk=2 * GIB):
    """The largest buffers one rank holds in each phase of the sharded step, in bytes (the model the measured table
    checks): features (rows x 4096 in the feature dtype; with pca_fit_samples only its part of the sample, float32),
    whitened rows (rows x 256 float32, and the float64 copy the equal-size step's candidate search makes), the
    PCA's covariance (4096^2 float32 twice: its sum and the all-reduced copy; float64 once, in the eigensolver's
    last step) and one float32 chunk of 8192 rows, k-means' centroids, float64 sums and
    their all-reduce buffer, one distance chunk, the equal-size step's candidates (clustering.equal_size.torch_bytes:
    nine rows x m float64 / int64 arrays at once and the float64 copy of the rows; 104 bytes per row and candidate
    at m = 64, as measured at 300,000 rows), and the n int64 ids gathered at the end."""
    rows, m = -(-n // world), min(k, CANDIDATES)
    features = (-(-fit_samples // world) * D * 4) if fit_samples else rows * D * feature_bytes
    whitened, cov, ids = rows * PCA_DIM * 4, D * D * (4 + 4 + 8) + 8192 * D * 4, n * 8
    kmeans = k * PCA_DIM * (4 + 8 + 8 + 8) + min(chunk, rows * k * 4) + rows * 12
    equal = torch_bytes(rows, m, PCA_DIM)
    return {"pca": features + cov + whitened, "kmeans": whitened + kmeans + ids, "equal_size": whitened + equal + ids,
            "features": features, "whitened": whitened}


def traffic(n, world, k, niter=20, sinkhorn_iterations=300):
    """Bytes one rank sends (= receives) in the sharded step, for a ring all-reduce (2 (W-1) / W of the buffer)
    and all-gather ((W-1) / W of the result): the PCA's sums and covariance once; per k-means iteration the
    float64 sums, counts and objective; per Sinkhorn iteration k column sums; the n int64 ids (and the n row
    keys of the repeated-rows check) gathered once."""
    ring = 2 * (world - 1) / world
    per_iteration = ring * (k * (PCA_DIM + 1) + 1) * 8
    once = ring * (D + D * D) * 4 + 2 * (world - 1) / world * n * 8
    return {"kmeans_per_iteration": per_iteration, "step": once + niter * per_iteration
            + sinkhorn_iterations * ring * k * 8}


def projection(kmeans_rate_flops=GPU_KMEANS_FLOPS):
    """Rows of the projected table: ImageNet (k = 10,000) and 100M images (k = 10,000 and DeeperCluster's 320,000)
    on 1, 8, 64 and 512 GPUs: each phase's working set per GPU with the features held in bfloat16
    (feature_dtype auto with amp bf16) or streamed (pca_fit_samples 100,000), and what rank 0 held before
    (all N x 4096 float32 features gathered, and the whitened rows). k-means seconds: the assignment's
    2 n k 256 FLOP per iteration at the rate one GPU measured, 20 iterations, divided among the GPUs."""
    rows = []
    for n, k in ((IMAGENET, 10_000), (100_000_000, 10_000), (100_000_000, 320_000)):
        for world in (1, 8, 64, 512):
            if world == 1 and n > IMAGENET:
                continue
            held, streamed = rank_memory(n, world, k, 2), rank_memory(n, world, k, fit_samples=100_000)
            rows.append({"n": n, "k": k, "world": world, "gathered_gib": n * (D + PCA_DIM) * 4 / GIB,
                         **{f"{phase}_gib": held[phase] / GIB for phase in ("pca", "kmeans", "equal_size")},
                         "pca_streamed_gib": streamed["pca"] / GIB,
                         "allreduce_mb_per_iteration": traffic(n, world, k)["kmeans_per_iteration"] / 1e6,
                         "step_traffic_gb": traffic(n, world, k)["step"] / 1e9,
                         "kmeans_s": 2 * n * k * PCA_DIM * 20 / world / kmeans_rate_flops})
    return rows


def print_sharded(results, projected, gpu=False):
    print("sharded clustering step (PCA-whitening 4096 -> 256, k-means, one equal-size round), "
          + ("NCCL on GPUs:" if gpu else "gloo on this CPU:"))
    print(f"  {'dtype':>8} {'procs':>5} {'rows/rank':>9} {'held GiB':>8} {'base':>5} {'PCA peak':>8} {'k-means':>8} "
          f"{'equal-size':>10}  {'PCA s':>6} {'k-means s':>9} {'equal s':>7}  {'NMI vs 1':>8} {'loss / 1':>8}")
    for r in results:
        held = r["rows"] * D * (2 if r["dtype"] == "bfloat16" else 4) / GIB
        print(f"  {r['dtype']:>8} {r['world']:>5} {r['rows']:>9,} {held:>8.2f} {r['base_gib']:>5.2f} "
              f"{r['pca_peak_gib']:>8.2f} {r['kmeans_peak_gib']:>8.2f} {r['equal_size_peak_gib']:>10.2f}  "
              f"{r['pca_s']:>6.1f} {r['kmeans_s']:>9.1f} {r['equal_round_s']:>7.1f}  {r['nmi_vs_one']:>8.4f} "
              f"{r['loss_vs_one']:>8.5f}")
        model = r["model_gib"]
        print(f"  {'':>8} {'':>5} {'model':>9} {'':>8} {'':>5} {model['pca']:>8.2f} {model['kmeans']:>8.2f} "
              f"{model['equal_size']:>10.2f}")
    print("  (GPU GiB allocated by torch" if gpu else "  (resident GiB", end="")
    print(" of the largest rank: base = the interpreter, torch and the features held; each phase's peak)")
    print("projected per GPU, GiB (PCA phase with bf16 features held / streamed, pca_fit_samples 100,000), traffic per "
          "rank:")
    print(f"  {'images':>11} {'k':>7} {'GPUs':>5} {'before':>7} {'PCA bf16':>8} {'streamed':>8} {'k-means':>7} "
          f"{'equal':>6} {'all-reduce/iter':>15} {'step traffic':>12} {'k-means s':>9}")
    for r in projected:
        print(f"  {r['n']:>11,} {r['k']:>7,} {r['world']:>5} {r['gathered_gib']:>7.1f} {r['pca_gib']:>8.1f} "
              f"{r['pca_streamed_gib']:>8.1f} {r['kmeans_gib']:>7.1f} {r['equal_size_gib']:>6.1f} "
              f"{r['allreduce_mb_per_iteration']:>13.1f}MB {r['step_traffic_gb']:>10.2f}GB {r['kmeans_s']:>9.1f}")
    print("  (before: rank 0 held all N x 4096 float32 features and the N x 256 whitened rows; k-means s: 20 "
          "iterations at the 31 TFLOP/s one H200 measured, float32)")


def main(argv=None):
    """On a GPU machine (tools/gpu_check.sh): the step at ImageNet's size on 1 GPU and on every GPU (NCCL), GPU
    memory allocated by torch per phase; bench/run.py --parts sharded runs the CPU (gloo) version."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=IMAGENET, help="images (rows of 4096)")
    p.add_argument("--k", type=int, default=10_000, help="clusters")
    p.add_argument("--dtypes", default="bfloat16", help="comma-separated feature dtypes: float32, bfloat16")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results_sharded_gpu.json"))
    p.add_argument("--_child", nargs=6, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._child:
        n, k, niter, dtype, folder, device_type = a._child
        return child(int(n), int(k), int(niter), dtype, folder, device_type)
    gpus = torch.cuda.device_count()
    if not gpus:
        raise SystemExit("bench/sharded.py: no GPU here; python bench/run.py --parts sharded runs it on the CPU")
    results = bench_sharded(a.n, a.k, 20, sorted({1, gpus}), a.dtypes.split(","), "cuda")
    print_sharded(results, projection(), gpu=True)
    with open(a.out, "w") as f:
        json.dump({"gpu": torch.cuda.get_device_name(0), "runs": results}, f, indent=2)


if __name__ == "__main__":
    main()
