"""How many PCA-whitened dimensions do n images keep informative? The measurement behind the whitening cap of
clustering.max_whitened_dim: k-means (k = the number of classes, 5 starts) after whitening to each dimension, on
20 class-balanced random subsets of the shipped sample per size, for the fc7 features of a random VGG16-BN +
Sobel network and for raw pixels; mean NMI against the classes. About 10 minutes on 2 CPU cores.

    python tools/whitening_dims.py [--out results.jsonl]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import clustering  # noqa: E402
import metrics  # noqa: E402
from dataset import ClusterDataset, eval_transform  # noqa: E402
from engine import compute_features, make_loader  # noqa: E402
from models import build_model  # noqa: E402

SAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "fashion_mnist_small",
                      "train")
SIZES = [(10, 2), (16, 2), (20, 2), (20, 4), (30, 3), (50, 5), (50, 10), (100, 10), (200, 10), (500, 10)]
DRAWS = 20


def features():
    """{name: n x d float32} for the 2,000 sample images, and their labels."""
    torch.manual_seed(31)
    ds = ClusterDataset(SAMPLE, eval_transform(32), log=lambda m: None, cache_mb=1024)
    model = build_model("vgg16", True, 0, 32).eval()
    loader = make_loader(ds, {"batch_size": 100, "workers": 0}, torch.device("cpu"))
    fc7 = compute_features(loader, model, torch.device("cpu"), False)
    pixels = np.stack([np.asarray(ds.load(i).convert("L"), dtype=np.float32).ravel() for i in range(len(ds))])
    return {"random_vgg16": fc7, "pixels": pixels}, ds.labels


def dims_for(n):
    candidates = [1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256,
                  n // 8, n // 6, n // 4, n // 3, n // 2, n - 1]
    return sorted({d for d in candidates if 1 <= d <= n - 1})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="also write one JSON object per (features, n, classes, dim) to this file")
    a = p.parse_args(argv)
    feats, labels = features()
    rng = np.random.default_rng(0)
    rows = []
    for n, n_cls in SIZES:
        draws = []
        for _ in range(DRAWS):
            chosen = rng.choice(10, n_cls, replace=False)
            draws.append(np.concatenate([rng.choice(np.flatnonzero(labels == k), n // n_cls, replace=False)
                                         for k in chosen]))
        for name, x in feats.items():
            for d in dims_for(n):
                scores = []
                for t, idx in enumerate(draws):
                    pca = clustering.fit_pca_whitening(x[idx], d, seed=t)
                    ids, _, _ = clustering.run_kmeans(clustering.apply_pca(x[idx], pca), n_cls, 20, seed=t, nredo=5)
                    scores.append(metrics.nmi(labels[idx], ids))
                rows.append({"features": name, "n": n, "classes": n_cls, "dim": d, "nmi": float(np.mean(scores)),
                             "std": float(np.std(scores))})
            best = max((r for r in rows if r["features"] == name and r["n"] == n and r["classes"] == n_cls),
                       key=lambda r: r["nmi"])
            at = {r["dim"]: r["nmi"] for r in rows if r["features"] == name and r["n"] == n and r["classes"] == n_cls}
            cap = clustering.max_whitened_dim(n)
            print(f"{name:>12} n {n:>3} classes {n_cls:>2}: best dim {best['dim']:>3} NMI {best['nmi']:.2f}; "
                  f"at the cap ({cap}) {at[cap]:.2f}; at n - 1 {at[n - 1]:.2f}", flush=True)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
