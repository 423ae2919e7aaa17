"""What the learned features are worth: trained networks beside their random start and beside features that need
no learning (raw pixels, HOG), each clustered in the same spaces and scored against the class folders
(docs/results.md, "Features against no learning").

    python bench/features.py --images data/fashion_mnist_200_val/test \\
        --runs random=exp/feat/random_s31,exp/feat/random_s32 trained=exp/feat/base_s31,exp/feat/base_s32 \\
        --out exp/feat/test.json
    python bench/features.py --umap_cost 2000,10000,60000     # seconds of clustering_space umap's step per epoch

Feature sets: `pixels` (the grayscale image at --side x --side, in [0, 1], flattened), `hog` (scikit-image's
`hog` of the same grayscale image: 9 orientations, 4 x 4-pixel cells, 2 x 2-cell blocks, L2-Hys), and one per
--runs name: the 4096-d fc7 features of each run's network (its selected epoch, as pred.py reads it), so a name
given several runs (one per seed) is reported as mean +- std over them.

Spaces, the same for every feature set:
  whitened  the fixed protocol of this project's tables: PCA-whitening to 16 dimensions, L2 normalisation,
            k-means with k = the number of classes, 20 iterations, the best of 5 starts (pred.py --pred_mode
            recluster --pca_dim 16 --kmeans_nredo 5); neighbours by cosine.
  umap      the space of clustering_space umap: the whitened rows above embedded by UMAP (umap-learn: 10
            dimensions, 20 neighbours, min_dist 0, seeded; clustering.umap_embed), then the same k-means; neighbours
            by Euclidean distance in the 10 dimensions. As N2D (McConville et al., 2020) clusters an autoencoder's
            features.
Scores: ACC (Hungarian), NMI, ARI at the true k, the 10-nearest precision (the share of each image's 10
nearest other images that are of its class), and the silhouette of the partition in the whitened rows (no labels). Features that need no learning are scored once per --seeds value
(the clustering seed), a network once per run with its run's seed.
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import clustering  # noqa: E402
import metrics  # noqa: E402
from cfg import load_cfg  # noqa: E402
from checkpoint import load_model, run_settings  # noqa: E402
from dataset import ClusterDataset, eval_transform, open_split  # noqa: E402
from decoding import as_pil  # noqa: E402
from engine import compute_features, make_loader  # noqa: E402
from errors import UserError  # noqa: E402

SPACES = ("whitened", "umap")
PROTOCOL = {"pca_dim": 16, "niter": 20, "nredo": 5}
UMAP = {"n_neighbors": clustering.umap_space.UMAP_NEIGHBORS, "min_dist": clustering.umap_space.UMAP_MIN_DIST,
        "n_components": clustering.UMAP_DIM}


def gray_images(root, side):
    """(n, side, side) float32 grayscale images in [0, 1] of the tree, and its labels (n,) int64."""
    data = ClusterDataset(root, log=lambda msg: None)
    if not data.has_labels:
        raise UserError(f"'{root}' has no class folders: the features are scored against them")
    rows = [np.asarray(as_pil(data.load(i)).convert("L").resize((side, side)), dtype=np.float32) / 255.0
            for i in range(len(data))]
    return np.stack(rows), np.asarray(data.labels)


def hog_features(images):
    """(n, 1764) float32 HOG descriptors of (n, 32, 32) images (scikit-image)."""
    from skimage.feature import hog
    return np.stack([hog(im, orientations=9, pixels_per_cell=(4, 4), cells_per_block=(2, 2), block_norm="L2-Hys")
                     for im in images]).astype(np.float32)


def network_features(exp_dir, images):
    """(fc7 features (n, 4096) float32 of the images with the run's network, the run's seed)."""
    given = set()
    c = load_cfg(["--exp_dir", exp_dir, "--test_path", images, "--verbose", "false"], script="pred", given=given)
    c, ckpt = run_settings(c, given, "pred.py")
    cpu = torch.device("cpu")
    data = open_split(c, "test", eval_transform(c["input_size"]), log=lambda msg: None)
    return compute_features(make_loader(data, c, cpu), load_model(c, cpu, ckpt), cpu, False), c["seed"]


def whitened_space(x, seed):
    """The fixed protocol's rows: PCA-whitened to 16 dimensions, L2-normalised (n, 16) float32."""
    xb, _ = clustering.preprocess_features(x, PROTOCOL["pca_dim"], seed=seed)
    return np.ascontiguousarray(clustering.to_numpy(xb), dtype=np.float32)


def precision_at(rows, labels, m=10, cosine=False):
    """The share of each row's m nearest other rows (Euclidean, or inner product for cosine) that share its label,
    averaged over the rows."""
    import faiss
    index = faiss.IndexFlatIP(rows.shape[1]) if cosine else faiss.IndexFlatL2(rows.shape[1])
    index.add(rows)
    _, nn = index.search(rows, m + 1)
    others = np.array([[j for j in row if j != i][:m] for i, row in enumerate(nn)])
    return float((labels[others] == labels[:, None]).mean())


def score(x, labels, space, seed):
    """{acc, nmi, ari, p10, sil, seconds} of the features x (n, d) in the space, k = the number of classes; sil: the
    silhouette of the partition in the whitened space whatever the space (what train.log's training-gain line
    compares, needing no labels)."""
    t0 = time.perf_counter()
    k = len(np.unique(labels))
    white = whitened_space(x, seed)
    rows = white if space == "whitened" else clustering.umap_embed(white, seed, k=k)
    ids, _, _ = clustering.run_kmeans(rows, k, PROTOCOL["niter"], seed=seed, nredo=PROTOCOL["nredo"])
    return {"acc": metrics.cluster_accuracy(labels, ids), "nmi": metrics.nmi(labels, ids),
            "ari": metrics.ari(labels, ids), "p10": precision_at(rows, labels, cosine=space == "whitened"),
            "sil": metrics.silhouette(white, ids, seed), "seconds": time.perf_counter() - t0}


def umap_cost(sizes, idx_dir, seed=31):
    """Seconds of the UMAP step of one epoch of clustering_space umap (clustering.umap_embed of n whitened rows,
    k = 10) for each n of sizes: the rows are the fixed protocol's whitening of the first n Fashion-MNIST training
    images' pixels (real structure, 16 dimensions like the features). The first calls, on 200 and 5,000 rows,
    pay numba's compilation and are reported apart (with the 5,000 rows' own time). Returns [{n, seconds}] and the compile seconds."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from make_fashion_mnist import FILES, read_idx
    path = os.path.join(idx_dir, FILES["train"][0])
    if not os.path.exists(path):
        raise UserError(f"{path} not found; install it with 'apt-get install dataset-fashion-mnist' or pass --idx_dir")
    pixels = read_idx(path).reshape(-1, 28 * 28).astype(np.float32) / 255.0
    if max(sizes) > len(pixels):
        raise UserError(f"--umap_cost takes at most {len(pixels)} images, got {max(sizes)}")
    t0 = time.perf_counter()
    for n in (200, 5000):  # numba compiles here: umap-learn's exact neighbours below 4,096 rows, NN-descent above
        clustering.umap_embed(whitened_space(pixels[:n], seed), seed, k=10)
    compile_s = time.perf_counter() - t0
    out = []
    for n in sizes:
        white = whitened_space(pixels[:n], seed)
        t0 = time.perf_counter()
        clustering.umap_embed(white, seed, k=10)
        out.append({"n": n, "seconds": time.perf_counter() - t0})
        print(f"UMAP of {n} whitened rows: {out[-1]['seconds']:.1f} s", flush=True)
    return out, compile_s


def summarise(rows):
    """{feature set: {space: {metric: [mean, std, count]}}} of score rows."""
    out = {}
    for r in rows:
        out.setdefault(r["features"], {}).setdefault(r["space"], []).append(r)
    return {f: {s: {m: [float(np.mean([r[m] for r in rs])), float(np.std([r[m] for r in rs])), len(rs)]
                    for m in ("acc", "nmi", "ari", "p10", "sil")} for s, rs in spaces.items()} for f, spaces in out.items()}


def table(summary, spaces):
    """The summary as a markdown table, one row per feature set and space."""
    lines = ["| features | space | runs | ACC | NMI | ARI | 10-NN precision | silhouette (whitened) |",
             "|---|---|---|---|---|---|---|---|"]
    for f, by_space in summary.items():
        for s in spaces:
            if s in by_space:
                v = by_space[s]
                cells = " | ".join(f"{v[m][0]:.3f} +- {v[m][1]:.3f}" for m in ("acc", "nmi", "ari", "p10", "sil"))
                lines.append(f"| {f} | {s} | {v['nmi'][2]} | {cells} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", default="", help="labelled image tree ROOT/<class>/<image> to score on")
    p.add_argument("--runs", nargs="*", default=[], help="NAME=EXP_DIR[,EXP_DIR...]: networks, one per seed")
    p.add_argument("--baselines", default="pixels,hog", help="comma-separated: pixels, hog, or empty")
    p.add_argument("--spaces", default=",".join(SPACES), help="comma-separated: whitened, umap")
    p.add_argument("--seeds", default="31,32,33", help="clustering seeds of the features that need no learning")
    p.add_argument("--side", type=int, default=32, help="pixels and HOG: grayscale images resized to side x side")
    p.add_argument("--out", default="", help="write every row and the summary as JSON here")
    p.add_argument("--umap_cost", default="", help="comma-separated image counts: time the UMAP step of an epoch "
                                                    "at each (Fashion-MNIST pixels, --idx_dir) instead of scoring")
    p.add_argument("--idx_dir", default="/usr/share/datasets/fashion-mnist", help="the Fashion-MNIST IDX files")
    a = p.parse_args(argv)
    if a.umap_cost:
        sizes = [int(n) for n in a.umap_cost.split(",") if n]
        cost, compile_s = umap_cost(sizes, a.idx_dir)
        print(f"(numba's compilation on first use: {compile_s:.1f} s)")
        if a.out:
            with open(a.out, "w") as f:
                json.dump({"umap_cost": cost, "compile_s": compile_s, "threads": torch.get_num_threads()}, f, indent=1)
        return
    if not a.images or not os.path.isdir(a.images):
        raise UserError(f"'{a.images}' is not a folder")
    spaces = [s for s in a.spaces.split(",") if s]
    unknown = sorted(set(spaces) - set(SPACES))
    if unknown:
        raise UserError(f"--spaces takes {', '.join(SPACES)}, got {unknown[0]}")
    seeds = [int(s) for s in a.seeds.split(",") if s]
    sets = []  # (name, features, clustering seed)
    baselines = [b for b in a.baselines.split(",") if b]
    if baselines:
        images, labels = gray_images(a.images, a.side)
        for name in baselines:
            if name not in ("pixels", "hog"):
                raise UserError(f"--baselines takes pixels, hog, got {name}")
            x = images.reshape(len(images), -1) if name == "pixels" else hog_features(images)
            sets += [(name, x, s) for s in seeds]
    else:
        labels = np.asarray(ClusterDataset(a.images, log=lambda msg: None).labels)
    for spec in a.runs:
        name, _, dirs = spec.partition("=")
        if not dirs:
            raise UserError(f"--runs takes NAME=EXP_DIR[,EXP_DIR...], got '{spec}'")
        for d in dirs.split(","):
            x, seed = network_features(d, a.images)
            sets.append((name, x, seed))
    rows = []
    for name, x, seed in sets:
        for space in spaces:
            r = {"features": name, "space": space, "seed": seed, **score(x, labels, space, seed)}
            rows.append(r)
            print(f"{name:12s} {space:9s} seed {seed}: acc {r['acc']:.3f} nmi {r['nmi']:.3f} ari {r['ari']:.3f} "
                  f"p10 {r['p10']:.3f} sil {r['sil']:.3f} ({r['seconds']:.1f} s)", flush=True)
    summary = summarise(rows)
    print(table(summary, spaces))
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump({"images": a.images, "n": int(len(labels)), "protocol": PROTOCOL, "umap": UMAP, "rows": rows,
                       "summary": summary}, f, indent=1)


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        sys.exit(f"error: {e}")
