"""What pred.py's answers about one's own collection cost (docs/performance.md): k chosen without labels,
near-duplicates, similar images and outlier scores.

    python bench/collection.py --parts k           # pred_k auto against one recluster, 10,000 images
    python bench/collection.py --parts pred        # pred.py on 100,000 images with and without the answers

Needs a trained run (`python train.py`: exp/fashion_mnist_small).
k: the fc7 features of Fashion-MNIST's 10,000 test images (data/fashion_mnist_200/test, built from Debian's
    dataset-fashion-mnist files when missing); the time of one recluster as pred.py runs it (PCA-whitening, k-means
    with k = 10 and kmeans_nredo starts) against pred_k auto's range (collection.choose_k over 2-50) after the same
    whitening, each the fastest of `reps` runs.
pred: a tree of --n images (Fashion-MNIST's 70,000, then JPEG copies of the first ones up to n: planted
    near-duplicates; bench/collection_tree/, ignored by git), and pred.py run as a user runs it: once with
    `--pred_mode recluster --pred_k 10 --duplicate_threshold 0` and once with `--pred_k auto` and 10 similar_to
    queries. The first run still fits the neighbour space and computes the outlier scores (their kNN search); its
    log lines give their time, which is taken off to give pred.py's time without the answers. Prints a table and writes
    bench/results_collection.json.
"""
import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
from PIL import Image  # noqa: E402

import clustering  # noqa: E402
import collection  # noqa: E402
from cfg import DEFAULTS, load_cfg  # noqa: E402
from checkpoint import load_model, run_settings  # noqa: E402
from dataset import eval_transform, open_split  # noqa: E402
from engine import compute_features, make_loader  # noqa: E402
from errors import UserError  # noqa: E402

IDX_DIR = "/usr/share/datasets/fashion-mnist"
TEST_10K = os.path.join(ROOT, "data", "fashion_mnist_200", "test")
TREE = os.path.join(ROOT, "bench", "collection_tree")


def features_of(exp_dir, images):
    """fc7 features (n, 4096) float32 of the images with the run's network, and the run's settings."""
    if not os.path.isdir(images):
        subprocess.run([sys.executable, "tools/make_fashion_mnist.py", "--idx_dir", IDX_DIR, "--out",
                        os.path.dirname(images), "--train_per_class", "200", "--test_per_class", "0"], cwd=ROOT,
                       check=True)
    given = set()
    c = load_cfg(["--exp_dir", exp_dir, "--test_path", images, "--verbose", "false"], script="pred", given=given)
    c, ckpt = run_settings(c, given, "pred.py")
    cpu = torch.device("cpu")
    data = open_split(c, "test", eval_transform(c["input_size"]), log=lambda msg: None)
    return compute_features(make_loader(data, c, cpu), load_model(c, cpu, ckpt), cpu, False), c


def bench_k(exp_dir, reps=3):
    """Seconds of one recluster (whitening + k-means, k = 10), of the neighbour space (its PCA, which the outlier
    scores and the similar images need too) and of pred_k auto's range scored there, the fastest of reps runs
    each, on the 10,000 test images."""
    features, c = features_of(exp_dir, TEST_10K)
    seed, times = clustering.epoch_seed(c["seed"], 0), {"whitening_s": [], "kmeans_s": [], "neighbour_s": [],
                                                        "range_s": []}
    for _ in range(reps):
        t0 = time.perf_counter()
        xb, _ = clustering.preprocess_features(features, c["pca_dim"], method=c["pca_method"], seed=seed)
        t1 = time.perf_counter()
        clustering.run_kmeans(xb, 10, c["kmeans_niter"], seed=seed, nredo=c["kmeans_nredo"])
        t2 = time.perf_counter()
        rows = clustering.apply_pca(features, collection.fit_neighbour_space(features, seed=c["seed"]))
        t3 = time.perf_counter()
        k, selection = collection.choose_k(xb, collection.k_candidates(len(xb), *DEFAULTS["pred_k_range"]),
                                           niter=c["kmeans_niter"], seed=seed, scored=rows)
        t4 = time.perf_counter()
        for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[key].append(value)
    best = {key: min(v) for key, v in times.items()}
    recluster = best["whitening_s"] + best["kmeans_s"]
    return {"images": len(features), "runs": times, "recluster_s": recluster, "range_s": best["range_s"],
            "neighbour_s": best["neighbour_s"], "range_over_recluster": best["range_s"] / recluster,
            "range_and_space_over_recluster": (best["range_s"] + best["neighbour_s"]) / recluster, "chosen_k": k,
            "rows_clustered": selection["rows"], "rows_scored": selection["rows_scored"]}


def build_tree(n, out=TREE):
    """out/<class>/: Fashion-MNIST's 70,000 images (hard links to data/fashion_mnist_full, which
    tools/make_fashion_mnist.py builds when missing), then JPEG copies (quality 75) of the first ones up to n
    images; reused when it holds n images."""
    done = os.path.join(out, f".complete-{n}")
    if os.path.exists(done):
        return out
    full = os.path.join(ROOT, "data", "fashion_mnist_full")
    if not os.path.isdir(os.path.join(full, "test")):
        subprocess.run([sys.executable, "tools/make_fashion_mnist.py", "--idx_dir", IDX_DIR, "--out", full,
                        "--train_per_class", "0", "--test_per_class", "0"], cwd=ROOT, check=True)
    shutil.rmtree(out, ignore_errors=True)
    files = sorted(glob.glob(os.path.join(full, "*", "*", "*.png")))
    for i, path in enumerate(files[:n]):
        target = os.path.join(out, os.path.basename(os.path.dirname(path)), os.path.basename(path))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.link(path, target)
    for path in files[:max(0, n - len(files))]:
        with Image.open(path) as img:
            img.save(os.path.join(out, os.path.basename(os.path.dirname(path)),
                                  os.path.basename(path)[:-4] + "_copy.jpg"), quality=75)
    open(done, "w").close()
    return out


def timed_pred(exp_dir, images, out, extra):
    """(wall seconds, CPU seconds, stdout) of one `python pred.py` in a fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "pred.py", "--exp_dir", exp_dir, "--images", images, "--pred_dir", out,
                             "--verbose", "false", *extra], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    said = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise UserError(f"pred.py failed on {images} ({extra})")
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime, said


def logged_seconds(said, prefix):
    """The seconds of pred.py's log line that starts with prefix ("... (12.3 s)"), 0 when there is none."""
    line = next((line for line in said.splitlines() if line.startswith(prefix)), "")
    found = re.search(r"([0-9.]+) s\)$", line)
    return float(found.group(1)) if found else 0.0


def bench_pred(exp_dir, n, queries=10):
    """pred.py on n images without the answers (fixed k, no duplicate search; its outlier search taken off) and
    with them (pred_k auto, duplicates, `queries` similar_to images)."""
    images = build_tree(n)
    query_dir = os.path.join(TREE + "_queries")
    os.makedirs(query_dir, exist_ok=True)
    originals = sorted(glob.glob(os.path.join(images, "*", "*.png")))
    for i in range(queries):
        shutil.copy(originals[i * 1000], os.path.join(query_dir, f"query_{i}.png"))
    out = os.path.join(ROOT, "bench", "collection_pred")
    base = ["--pred_mode", "recluster"]
    without = timed_pred(exp_dir, images, out, base + ["--pred_k", "10", "--duplicate_threshold", "0"])
    with_ = timed_pred(exp_dir, images, out, base + ["--pred_k", "auto", "--similar_to", query_dir])
    search = logged_seconds(without[2], "neighbour space:") + logged_seconds(without[2], "neighbours:")
    result = {"images": n, "without_s": without[0] - search, "without_cpu_s": without[1], "outlier_search_s": search,
              "with_s": with_[0], "with_cpu_s": with_[1], "auto_k_s": logged_seconds(with_[2], "pred_k auto:"),
              "neighbours_s": logged_seconds(with_[2], "neighbour space:") + logged_seconds(with_[2], "neighbours:"),
              "training_duplicates_s": logged_seconds(with_[2], "duplicates of training images:"),
              "with_log": with_[2]}
    result["overhead"] = result["with_s"] / result["without_s"] - 1
    with open(os.path.join(out, "metrics.json")) as f:
        result["metrics"] = {key: value for key, value in json.load(f).items() if key != "cluster_sizes"}
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exp_dir", default="exp/fashion_mnist_small", help="a trained run")
    p.add_argument("--parts", default="k,pred", help="k (auto against one recluster), pred (pred.py on --n images)")
    p.add_argument("--n", type=int, default=100_000, help="pred: images")
    p.add_argument("--reps", type=int, default=3, help="k: runs (the fastest counts)")
    a = p.parse_args(argv)
    if not os.path.exists(os.path.join(ROOT, a.exp_dir, "checkpoint.pth.tar")):
        raise UserError(f"no trained run in '{a.exp_dir}': run python train.py first")
    start, res = time.perf_counter(), {"load_before": os.getloadavg()}
    if "k" in a.parts.split(","):
        res["k"] = r = bench_k(a.exp_dir, a.reps)
        print(f"{r['images']:,} images: one recluster {r['recluster_s']:.2f} s, pred_k auto's range "
              f"{r['range_s']:.2f} s ({r['range_over_recluster']:.2f}x; k-means of {r['rows_clustered']:,} rows per "
              f"k, silhouette of {r['rows_scored']:,}), with the neighbour space {r['neighbour_s']:.2f} s more "
              f"({r['range_and_space_over_recluster']:.2f}x), chose k = {r['chosen_k']}")
    if "pred" in a.parts.split(","):
        res["pred"] = r = bench_pred(a.exp_dir, a.n)
        print(f"pred.py on {r['images']:,} images: without the answers {r['without_s']:.0f} s, with them "
              f"{r['with_s']:.0f} s ({100 * r['overhead']:+.1f}%; auto k {r['auto_k_s']:.1f} s, neighbours "
              f"{r['neighbours_s']:.1f} s, duplicates of the training images {r['training_duplicates_s']:.1f} s)")
    res["load_after"], res["seconds"] = os.getloadavg(), time.perf_counter() - start
    with open(os.path.join(ROOT, "bench", "results_collection.json"), "w", encoding="utf-8") as f:
        json.dump(res, f, indent=2)
    print(f"bench/collection.py took {res['seconds']:.0f} s; wrote bench/results_collection.json")


if __name__ == "__main__":
    main(sys.argv[1:])
