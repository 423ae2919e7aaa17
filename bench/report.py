"""What pred.py's page, thumbnails and map cost (docs/performance.md), as ratios measured in one run.

    python bench/report.py                      # the sample's 500 test images and Fashion-MNIST's 10,000
    python bench/report.py --sets sample --reps 2 --parts pred

Needs a trained run (`python train.py`: exp/fashion_mnist_small); the 10,000-image tree (data/fashion_mnist_200,
ignored by git) is built from Debian's dataset-fashion-mnist files when it is missing. For each image set pred.py
runs as a user runs it, in turn with `--report false --map false` and with the defaults, `reps` times each; the
fastest run of each side gives the overhead, in wall time and in CPU time (which other processes on the machine
disturb less). Then, in this process: the feature pass with and without the thumbnails, t-SNE at several sizes,
the page of a synthetic prediction of 100,000 images in 1,000 clusters, and train.py's curves.png. Prints a table
and writes bench/results_report.json.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import clustering  # noqa: E402
import curves  # noqa: E402
import report  # noqa: E402
import thumbnails  # noqa: E402
from cfg import load_cfg  # noqa: E402
from checkpoint import load_model, run_settings, stored_clustering  # noqa: E402
from dataset import eval_transform, open_split  # noqa: E402
from decoding import load_image  # noqa: E402
from engine import compute_features, make_loader  # noqa: E402
from errors import UserError  # noqa: E402
from models import build_model  # noqa: E402

SETS = {"sample": os.path.join("data", "fashion_mnist_small", "test"),
        "10k": os.path.join("data", "fashion_mnist_200", "test")}
IDX_DIR = "/usr/share/datasets/fashion-mnist"
OFF = ["--report", "false", "--map", "false"]


def ensure_tree(name):
    """The image folder of a set, built from the IDX files when it is the missing 10,000-image tree."""
    path = os.path.join(ROOT, SETS[name])
    if not os.path.isdir(path) and name == "10k":
        subprocess.run([sys.executable, "tools/make_fashion_mnist.py", "--idx_dir", IDX_DIR, "--out",
                        os.path.dirname(path), "--train_per_class", "200", "--test_per_class", "0"], cwd=ROOT,
                       check=True)
    return path


def timed_pred(exp_dir, images, out, extra):
    """(wall seconds, CPU seconds) of one `python pred.py` (a fresh process, as a user runs it). The CPU time (user +
    system, all threads) is what the run cost whatever else the machine was doing."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "pred.py", "--exp_dir", exp_dir, "--images", images, "--pred_dir", out,
                             "--verbose", "false", *extra], cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise UserError(f"pred.py failed on {images} ({extra})")
    return wall, usage.ru_utime + usage.ru_stime


def bench_pred(exp_dir, images, reps, extra=()):
    """pred.py without and with the new outputs, alternately: every run's wall and CPU seconds, and the overhead of
    the best run of each side (wall and CPU)."""
    runs = {"without": [], "with": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(reps):
            runs["without"].append(timed_pred(exp_dir, images, os.path.join(tmp, "off"), OFF + list(extra)))
            runs["with"].append(timed_pred(exp_dir, images, os.path.join(tmp, "on"), list(extra)))
    best = {side: [min(r[0] for r in t), min(r[1] for r in t)] for side, t in runs.items()}
    return {"runs_wall_cpu_s": runs, "best_wall_cpu_s": best,
            "overhead_wall": best["with"][0] / best["without"][0] - 1,
            "overhead_cpu": best["with"][1] / best["without"][1] - 1}


def bench_parts(exp_dir, images, sizes):
    """In this process: the feature pass with and without thumbnails (alternately, twice), and t-SNE per size."""
    given = set()
    c = load_cfg(["--exp_dir", exp_dir, "--test_path", images, "--verbose", "false"], script="pred", given=given)
    c, ckpt = run_settings(c, given, "pred.py")
    cpu = torch.device("cpu")
    model = load_model(c, cpu, ckpt)
    dataset = open_split(c, "test", eval_transform(c["input_size"]), log=lambda msg: None)
    plain, thumbs = [], []
    for _ in range(2):
        t0 = time.perf_counter()
        features = compute_features(make_loader(dataset, c, cpu), model, cpu, False)
        plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        kept = thumbnails.CollectThumbnails(make_loader(thumbnails.ThumbnailItems(dataset), c, cpu))
        compute_features(kept, model, cpu, False)
        thumbs.append(time.perf_counter() - t0)
    x = clustering.to_numpy(clustering.apply_pca(features, stored_clustering(ckpt)[1]))  # pred.py's embeddings
    tsne = {}
    for n in sizes:
        if n <= len(x):
            t0 = time.perf_counter()
            report.embed_2d(x[:n])
            tsne[n] = time.perf_counter() - t0
    jpeg = [len(b) for b in kept.thumbs if b is not None]
    return {"features_s": plain, "features_with_thumbnails_s": thumbs, "thumbnail_bytes_mean": float(np.mean(jpeg)),
            "tsne_s": tsne}


def bench_photo_thumbs(sources="/usr/share/backgrounds", input_size=64, reps=3):
    """Photos (the wallpapers bench/photos.py builds its tree from): milliseconds per thumbnail of a photo decoded as
    the loader decodes it (short side 4 x input_size), against the network's forward pass per image at input_size
    (VGG16-BN + Sobel, batch of all of them). None when the wallpapers are not installed."""
    files = sorted(f for f in glob.glob(os.path.join(sources, "**", "*"), recursive=True)
                   if f.lower().endswith((".jpg", ".jpeg", ".png", ".webp")))
    if not files:
        return None
    images = [load_image(f, 4 * input_size) for f in files]
    model = build_model("vgg16", True, out=0, input_size=input_size).eval()
    batch = torch.stack([eval_transform(input_size)(img) for img in images])
    thumb, forward, size = [], [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        size = [len(thumbnails.thumbnail_jpeg(img)) for img in images]
        thumb.append((time.perf_counter() - t0) / len(images))
        with torch.inference_mode():
            t0 = time.perf_counter()
            model(batch)
            forward.append((time.perf_counter() - t0) / len(images))
    return {"photos": len(images), "thumbnail_ms": 1000 * min(thumb), "forward_ms": 1000 * min(forward),
            "thumbnail_bytes_mean": float(np.mean(size))}


def bench_big_page(n=100_000, k=1000, seed=0):
    """The page of a synthetic prediction (n images, k clusters, 10 classes, thumbnails of 1 KB): seconds, bytes."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, k, n)
    labels = rng.integers(0, 10, n)
    result = {"n_images": n, "k": k, "mode": "assign", "checkpoint": "checkpoint.pth.tar", "checkpoint_epoch": 1,
              "clusters_nonempty": k, "images": "held_out", "nmi": 0.5, "acc": 0.5, "ari": 0.5}
    p = report.Prediction([f"/photos/img_{i}.jpg" for i in range(n)], [f"clusters/{c}/{i}.jpg" for i, c in
                          enumerate(ids)], ids, rng.random(n), labels, [f"class_{c}" for c in range(10)], result,
                          "/photos", [bytes(1000)] * n)
    t0 = time.perf_counter()
    report.page_html(p, set())
    html_seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        written = report.write_page(tmp, p)
        seconds = time.perf_counter() - t0
        size = os.path.getsize(os.path.join(tmp, "index.html"))
    return {"images": n, "clusters": k, "html_seconds": html_seconds, "seconds": seconds, "html_bytes": size,
            "thumbnails": written}


def bench_curves(exp_dir, epochs=(10, 100)):
    """Seconds of train.py's curves.png: the first drawing in a process (matplotlib's import included) and the mean of
    three more, for runs of 10 and 100 epochs (the run's rows, repeated)."""
    rows = curves.read_run(exp_dir).rows
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in epochs:
            run = curves.Curves([{**rows[e % len(rows)], "epoch": e} for e in range(n)], rows[-1], n // 2)
            times = []
            for _ in range(4):
                t0 = time.perf_counter()
                curves.plot_curves([run], os.path.join(tmp, "curves.png"))
                times.append(time.perf_counter() - t0)
            out[n] = {"first_s": times[0], "next_s": float(np.mean(times[1:]))}
    return out


def print_table(res):
    for name, r in res["pred"].items():
        (wall0, cpu0), (wall1, cpu1) = r["best_wall_cpu_s"]["without"], r["best_wall_cpu_s"]["with"]
        runs = " / ".join(", ".join(f"{w:.1f}" for w, _ in r["runs_wall_cpu_s"][side]) for side in ("without", "with"))
        print(f"pred.py on {name}: without {wall0:.1f} s (CPU {cpu0:.1f} s), with {wall1:.1f} s (CPU {cpu1:.1f} s); "
              f"overhead wall {100 * r['overhead_wall']:+.1f}%, CPU {100 * r['overhead_cpu']:+.1f}% (runs {runs})")
    for name, r in res["parts"].items():
        print(f"{name}: feature pass {min(r['features_s']):.2f} s, with thumbnails "
              f"{min(r['features_with_thumbnails_s']):.2f} s; thumbnail {r['thumbnail_bytes_mean']:.0f} bytes; "
              "t-SNE " + ", ".join(f"{n}: {s:.1f} s" for n, s in r["tsne_s"].items()))
    for n, r in res.get("curves", {}).items():
        print(f"curves.png of {n} epochs: {r['first_s']:.2f} s the first time in a process, then {r['next_s']:.2f} s")
    photo = res.get("photo_thumbnails")
    if photo:
        print(f"photos ({photo['photos']}): a thumbnail {photo['thumbnail_ms']:.1f} ms ({photo['thumbnail_bytes_mean']:.0f} "
              f"bytes), the forward pass at 64 px {photo['forward_ms']:.1f} ms an image")
    big = res.get("big_page")
    if big:
        print(f"page of {big['images']:,} images in {big['clusters']} clusters: {big['html_bytes'] / 1e6:.1f} MB of "
              f"HTML made in {big['html_seconds']:.2f} s, written with its {big['thumbnails']} thumbnails in "
              f"{big['seconds']:.2f} s")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exp_dir", default="exp/fashion_mnist_small", help="a trained run")
    p.add_argument("--sets", default="sample,10k", help="image sets: sample, 10k")
    p.add_argument("--reps", type=int, default=3, help="pred.py runs per side and set")
    p.add_argument("--tsne_sizes", default="500,1000,2000,3000,5000,10000")
    p.add_argument("--parts", default="curves,pred,parts,page", help="what to measure: curves (train.py's curves.png), "
                   "pred (pred.py runs), parts (feature pass, t-SNE sizes), page (100,000 images; photo thumbnails)")
    a = p.parse_args(argv)
    parts = a.parts.split(",")
    if not os.path.exists(os.path.join(ROOT, a.exp_dir, "checkpoint.pth.tar")):
        raise UserError(f"no trained run in '{a.exp_dir}': run python train.py first")
    start = time.perf_counter()
    res = {"pred": {}, "parts": {}, "cpu_cores": os.cpu_count()}
    if "curves" in parts:
        res["curves"] = bench_curves(os.path.join(ROOT, a.exp_dir))
    for name in a.sets.split(","):
        images = ensure_tree(name)
        if "pred" in parts:
            res["pred"][name] = bench_pred(a.exp_dir, images, a.reps)
        if "parts" in parts:
            res["parts"][name] = bench_parts(os.path.join(ROOT, a.exp_dir), images,
                                             [int(n) for n in a.tsne_sizes.split(",")])
    if "page" in parts:
        res["big_page"] = bench_big_page()
        res["photo_thumbnails"] = bench_photo_thumbs()
    res["seconds"] = time.perf_counter() - start
    print_table(res)
    with open(os.path.join(ROOT, "bench", "results_report.json"), "w", encoding="utf-8") as f:
        json.dump(res, f, indent=2)
    print(f"bench/report.py took {res['seconds']:.0f} s; wrote bench/results_report.json")


if __name__ == "__main__":
    main(sys.argv[1:])
