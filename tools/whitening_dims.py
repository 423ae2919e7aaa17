"""How many PCA-whitened dimensions do n images keep informative? The measurement behind the automatic
whitening dimension (clustering.auto_pca_dim, cfg pca_dim 0).

For each set size n and number of kinds (classes), DRAWS class-balanced random subsets are drawn from two
sources of real images: the shipped sample (data/fashion_mnist_small/train) and Fashion-MNIST training images
that the sample does not hold (images 2,000-2,199 of every class of the IDX training file; never the test
images). Each subset is whitened to every candidate dimension (then L2-normalised, as training does) and
clustered by k-means with k = the number of kinds (5 starts); the score is the mean NMI against the classes.
Features: the fc7 output of a random VGG16-BN + Sobel network (what epoch 0 clusters), optionally the fc7 of a
trained run (--checkpoint, what later epochs cluster), and the raw pixels. Candidate rules are scored by how
much NMI they lose against the best dimension of each row. About 20 minutes on 2 CPU cores.

    python tools/whitening_dims.py [--checkpoint exp/fashion_mnist_small/checkpoint.pth.tar] [--out rows.jsonl]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import clustering  # noqa: E402
import metrics  # noqa: E402
from dataset import ClusterDataset, eval_transform  # noqa: E402
from engine import compute_features, make_loader  # noqa: E402
from models import HEAD_PREFIXES, build_model  # noqa: E402

SAMPLE = os.path.join(ROOT, "data", "fashion_mnist_small", "train")
IDX_DIR = "/usr/share/datasets/fashion-mnist"
SIZES = [(8, 2), (12, 2), (16, 2), (20, 2), (24, 3), (20, 4), (30, 3), (40, 4), (50, 5), (50, 10), (100, 5),
         (100, 10), (200, 10)]
DRAWS = 30
RULES = {  # candidate automatic dimensions for n images and k clusters (each then kept below n - 1 and <= 16)
    "n // 8": lambda n, k: max(2, n // 8),
    "n // 4": lambda n, k: max(2, n // 4),
    "k": lambda n, k: k,
    "max(4, n // 8)": lambda n, k: max(4, n // 8),
    "max(k, n // 8)": lambda n, k: max(k, n // 8),
    "max(4, k, n // 8)": lambda n, k: max(4, k, n // 8),
    "16": lambda n, k: 16,
}


class Images(torch.utils.data.Dataset):
    """In-memory 28 x 28 gray images through the training's eval transform; item i is (tensor, i)."""

    def __init__(self, arrays, transform):
        self.arrays, self.transform = arrays, transform

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.arrays[i], mode="L").convert("RGB")), i


def fmnist_unseen(per_class=200, skip=2000):
    """Images skip .. skip + per_class - 1 of every class of the Fashion-MNIST training file, and their labels."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from make_fashion_mnist import FILES, read_idx
    images = read_idx(os.path.join(IDX_DIR, FILES["train"][0]))
    labels = read_idx(os.path.join(IDX_DIR, FILES["train"][1])).astype(np.int64)
    chosen = np.concatenate([np.flatnonzero(labels == k)[skip:skip + per_class] for k in range(10)])
    return images[chosen], labels[chosen]


def fc7(dataset, state=None):
    torch.manual_seed(31)
    model = build_model("vgg16", True, 0, 32)
    if state is not None:
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)})
    loader = make_loader(dataset, {"batch_size": 100, "workers": 0}, torch.device("cpu"))
    return compute_features(loader, model.eval(), torch.device("cpu"), False)


def sources(checkpoint):
    """{source: ({features: n x d float32}, labels)}."""
    transform = eval_transform(32)
    sample = ClusterDataset(SAMPLE, transform, log=lambda m: None, cache_mb=1024)
    sample_pixels = np.stack([np.asarray(sample.load(i).convert("L")) for i in range(len(sample))])
    out = {"sample": (sample, sample_pixels, sample.labels)}
    if os.path.exists(os.path.join(IDX_DIR, "train-images-idx3-ubyte.gz")):
        arrays, labels = fmnist_unseen()
        out["fmnist_unseen"] = (Images(arrays, transform), arrays, labels)
    else:
        print(f"{IDX_DIR} not found (apt-get install dataset-fashion-mnist): the sample only", flush=True)
    state = torch.load(checkpoint, weights_only=True)["state_dict"] if checkpoint else None
    result = {}
    for name, (dataset, pixels, labels) in out.items():
        feats = {"random_fc7": fc7(dataset), "pixels": pixels.reshape(len(pixels), -1).astype(np.float32)}
        if state is not None:
            feats["trained_fc7"] = fc7(dataset, state)
        result[name] = (feats, labels)
    return result


def dims_for(n):
    return sorted({d for d in [1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 24, 32, n // 8, n // 4, n // 2, n - 2]
                   if 1 <= d <= n - 2})


def draws_for(labels, n, n_cls, rng):
    out = []
    for _ in range(DRAWS):
        chosen = rng.choice(10, n_cls, replace=False)
        out.append(np.concatenate([rng.choice(np.flatnonzero(labels == k), n // n_cls, replace=False)
                                   for k in chosen]))
    return out


def score(x, labels, draws, d, n_cls):
    scores = []
    for t, idx in enumerate(draws):
        pca = clustering.fit_pca_whitening(x[idx], d, seed=t)
        ids, _, _ = clustering.run_kmeans(clustering.apply_pca(x[idx], pca), n_cls, 20, seed=t, nredo=5)
        scores.append(metrics.nmi(labels[idx], ids))
    return float(np.mean(scores)), float(np.std(scores))


def rule_dim(rule, n, k):
    return max(1, min(RULES[rule](n, k), n - 2, 16))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="also measure the fc7 features of this trained run's network")
    p.add_argument("--out", help="write one JSON object per (source, features, n, classes, dim) to this file")
    a = p.parse_args(argv)
    rows = []
    for source, (feats, labels) in sources(a.checkpoint).items():
        rng = np.random.default_rng(0)
        for n, n_cls in SIZES:
            draws = draws_for(labels, n, n_cls, rng)
            for name, x in feats.items():
                dims = sorted(set(dims_for(n)) | {rule_dim(r, n, n_cls) for r in RULES})
                at = {d: score(x, labels, draws, d, n_cls) for d in dims}
                for d, (mean, std) in at.items():
                    rows.append({"source": source, "features": name, "n": n, "classes": n_cls, "dim": d,
                                 "nmi": mean, "std": std})
                best = max(at, key=lambda d: at[d][0])
                rules = "  ".join(f"{r} {at[rule_dim(r, n, n_cls)][0]:.2f}" for r in RULES)
                print(f"{source:>13} {name:>11} n {n:>3} k {n_cls:>2}: best {best:>3} {at[best][0]:.2f}, "
                      f"n-2 {at[n - 2][0]:.2f} | {rules}", flush=True)
    print("\nmean NMI lost against the best dimension of each row, by rule (all rows; rows with n <= 30):")
    groups = {}
    for r in rows:
        groups.setdefault((r["source"], r["features"], r["n"], r["classes"]), {})[r["dim"]] = r["nmi"]
    for rule in RULES:
        lost = [max(at.values()) - at[rule_dim(rule, n, k)] for (_, _, n, k), at in groups.items()]
        small = [max(at.values()) - at[rule_dim(rule, n, k)] for (_, _, n, k), at in groups.items() if n <= 30]
        print(f"  {rule:>18}: {np.mean(lost):.3f} (worst {np.max(lost):.3f}); n <= 30: {np.mean(small):.3f} "
              f"(worst {np.max(small):.3f})")
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
