"""Which k suits a small folder? The measurement behind num_classes 0 (clustering.auto_k).

Small class-balanced sets of Fashion-MNIST training images that the shipped sample does not hold (from image
2,000 of every class of the IDX training file on; never the test images), with 10 kinds and with 3, are trained
by train.py with the defaults for EPOCHS epochs and each k of K_VALUES; the run's last clustering is scored
against the classes: ARI (which, unlike NMI, does not reward splitting into many small clusters), NMI, and the
share of images in clusters of at most 2 images. One seed per cell; about 20 minutes on 2 CPU cores.

    python tools/k_rule.py [--seeds 31 32] [--out rows.jsonl]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))
from make_fashion_mnist import CLASSES, FILES, read_idx  # noqa: E402

IDX_DIR = "/usr/share/datasets/fashion-mnist"
SETS = [(30, 10), (60, 10), (120, 10), (300, 10), (30, 3), (60, 3), (120, 3)]  # (images, kinds)
K_VALUES = [2, 3, 5, 10, 20]
EPOCHS = 5
SKIP = 2000  # the sample holds the first 200 images of every class; tools/make_fashion_mnist.py's val up to 1,500


def build(root, n, kinds, images, labels, rng):
    """root/<class>/<i>.png: n images, n // kinds of each of `kinds` random classes."""
    for k in rng.choice(10, kinds, replace=False):
        members = np.flatnonzero(labels == k)[SKIP:]
        os.makedirs(os.path.join(root, CLASSES[k]))
        for i in rng.choice(members, n // kinds, replace=False):
            Image.fromarray(images[i], mode="L").save(os.path.join(root, CLASSES[k], f"{i:05d}.png"))
    return root


def score(tree, exp, k, seed):
    subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--dataset_path", tree, "--exp_dir", exp,
                    "--num_classes", str(k), "--num_epoch", str(EPOCHS), "--seed", str(seed), "--verbose", "false",
                    "--workers", "0"], check=True, cwd=ROOT)
    ckpt = torch.load(os.path.join(exp, "checkpoint.pth.tar"), weights_only=True)
    sizes = np.bincount(ckpt["assignment"].numpy(), minlength=k)
    tiny = float(sizes[sizes <= 2].sum() / sizes.sum())
    m = ckpt["clustering_metrics"]
    return {"ari": m["ari"], "nmi": m["nmi"], "tiny_share": tiny, "nonempty": int((sizes > 0).sum())}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[31])
    p.add_argument("--out", help="write one JSON object per (images, kinds, k, seed) to this file")
    a = p.parse_args(argv)
    images = read_idx(os.path.join(IDX_DIR, FILES["train"][0]))
    labels = read_idx(os.path.join(IDX_DIR, FILES["train"][1]))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for s, (n, kinds) in enumerate(SETS):
            tree = build(os.path.join(tmp, f"set{s}"), n, kinds, images, labels, np.random.default_rng(s))
            for k in [k for k in K_VALUES if k < n]:
                for seed in a.seeds:
                    r = {"images": n, "kinds": kinds, "k": k, "seed": seed,
                         **score(tree, os.path.join(tmp, f"exp{s}_{k}_{seed}"), k, seed)}
                    rows.append(r)
                    print(json.dumps(r), flush=True)
    print("\n| images, kinds | " + " | ".join(f"k = {k}" for k in K_VALUES) + " |")
    print("|---|" + "---|" * len(K_VALUES))
    for n, kinds in SETS:
        cells = []
        for k in K_VALUES:
            got = [r for r in rows if (r["images"], r["kinds"], r["k"]) == (n, kinds, k)]
            cells.append(f"{np.mean([r['ari'] for r in got]):.2f} / {np.mean([r['tiny_share'] for r in got]):.2f}"
                         if got else "-")
        print(f"| {n}, {kinds} | " + " | ".join(cells) + " |")
    print("(ARI of the last clustering / share of images in clusters of at most 2 images)")
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
