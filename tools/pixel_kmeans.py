"""The raw-pixel baseline: k-means on the grayscale pixels of a labelled image tree.

    python tools/pixel_kmeans.py data/fashion_mnist_full/test --k 10 --out exp/pixel_kmeans.json

Every image is converted to grayscale at its own size (all images must share one size, as in
Fashion-MNIST), scaled to [0, 1] and flattened; scikit-learn's KMeans (k-means++, n_init
restarts, the usual protocol of clustering papers) clusters them. Prints and writes ACC
(Hungarian), NMI and ARI against the class folders.
"""
import argparse
import json
import os
import sys

import numpy as np
from sklearn.cluster import KMeans

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import metrics  # noqa: E402
from dataset import ClusterDataset  # noqa: E402
from decoding import as_pil  # noqa: E402
from errors import UserError  # noqa: E402


def pixels(dataset):
    """N x (h*w) float32 grayscale pixels in [0, 1]; all images must have one size."""
    rows, size = [], None
    for i in range(len(dataset)):
        img = as_pil(dataset.load(i)).convert("L")
        if size is None:
            size = img.size
        elif img.size != size:
            raise UserError(f"'{dataset.paths[i]}' is {img.size[0]}x{img.size[1]}, the first image is "
                             f"{size[0]}x{size[1]}; raw-pixel k-means needs images of one size")
        rows.append(np.asarray(img, dtype=np.float32).ravel() / 255.0)
    return np.stack(rows)


def pixel_kmeans(root, k, n_init=10, seed=0):
    dataset = ClusterDataset(root, log=lambda msg: None)
    if not dataset.has_labels:
        raise UserError(f"'{root}' has no class folders; the baseline is scored against them")
    if k > len(dataset):
        raise UserError(f"k = {k} is larger than the {len(dataset)} images in '{root}'")
    ids = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(pixels(dataset))
    y = dataset.labels
    return {"n_images": len(dataset), "k": k, "n_init": n_init, "acc": metrics.cluster_accuracy(y, ids),
            "nmi": metrics.nmi(y, ids), "ari": metrics.ari(y, ids)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="image tree ROOT/<class>/<image>")
    p.add_argument("--k", type=int, default=10, help="number of clusters")
    p.add_argument("--n_init", type=int, default=10, help="k-means restarts (the best inertia is kept)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="also write the result as JSON here")
    a = p.parse_args(argv)
    if not os.path.isdir(a.root):
        raise UserError(f"'{a.root}' is not a folder")
    r = pixel_kmeans(a.root, a.k, a.n_init, a.seed)
    print(f"raw-pixel k-means: {r['n_images']} images, k = {r['k']}  acc {r['acc']:.3f}  nmi {r['nmi']:.3f}  "
          f"ari {r['ari']:.3f}")
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump(r, f, indent=2)
    return r


if __name__ == "__main__":
    main(sys.argv[1:])
