"""Assign images to clusters with a trained network: `python pred.py [--config FILE] [--key value ...]`.

Writes into pred_dir: predictions.csv, metrics.json, clusters/<id>/ (symlinks or copies)
and grids/ (cluster_<id>.png, overview.png). Two modes (cfg pred_mode):
  assign     nearest centroid of the last training clustering (stored PCA + centroids),
             so cluster ids are the training ids;
  recluster  fresh PCA-whitening + k-means with pred_k clusters on these images' features,
             the protocol papers use to report ACC / NMI of overclustered runs.
pred.py never deletes anything it did not create (it keeps a manifest of what it wrote).
"""
if __name__ == "__main__":
    import cfg
    cfg.answer_help("pred")  # before torch and faiss load: --help answers at once

import csv
import json
import os
import shutil

import numpy as np
import torch
from torchvision import transforms
from torchvision.utils import make_grid, save_image

import clustering
import metrics
from cfg import load_cfg
from checkpoint import checkpoint_path, load_model, stored_clustering
from dataset import eval_transform, open_split
from engine import amp_dtype, compute_features, make_loader
from errors import PredError

MANIFEST = ".pred_manifest.json"
OWNED = ("predictions.csv", "metrics.json", "clusters", "grids")
GRID_MAX = 64
OVERVIEW_PER_ROW = 12
THUMB = 64


# ---------------------------------------------------------------- pred_dir ownership

def prepare_pred_dir(pred_dir):
    """Make pred_dir ready: empty or new is fine; an earlier prediction is replaced; anything else stops us."""
    if os.path.exists(pred_dir) and not os.path.isdir(pred_dir):
        raise PredError(f"pred_dir '{pred_dir}' exists and is not a folder")
    os.makedirs(pred_dir, exist_ok=True)
    entries = sorted(os.listdir(pred_dir))
    if not entries:
        return
    manifest_path = os.path.join(pred_dir, MANIFEST)
    if not os.path.exists(manifest_path):
        raise PredError(f"pred_dir '{pred_dir}' is not empty and was not written by pred.py "
                        f"(it holds '{entries[0]}'); choose another --pred_dir")
    with open(manifest_path, encoding="utf-8") as f:
        owned = set(json.load(f)["files"])
    for dirpath, dirnames, filenames in os.walk(pred_dir):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            rel = os.path.relpath(os.path.join(dirpath, name), pred_dir)
            if rel != MANIFEST and rel not in owned:
                raise PredError(f"'{os.path.join(pred_dir, rel)}' was not written by pred.py; move it away or "
                                "choose another --pred_dir (nothing was deleted)")
    for rel in sorted(owned, reverse=True):
        path = os.path.join(pred_dir, rel)
        if os.path.islink(path) or os.path.isfile(path):
            os.remove(path)
    for top in OWNED:
        path = os.path.join(pred_dir, top)
        if os.path.isdir(path) and not os.path.islink(path):
            for dirpath, _, _ in sorted(os.walk(path), reverse=True):
                if not os.listdir(dirpath):
                    os.rmdir(dirpath)
    os.remove(manifest_path)


def write_manifest(pred_dir):
    files = []
    for dirpath, dirnames, filenames in os.walk(pred_dir):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            rel = os.path.relpath(os.path.join(dirpath, name), pred_dir)
            if rel != MANIFEST:
                files.append(rel)
    with open(os.path.join(pred_dir, MANIFEST), "w", encoding="utf-8") as f:
        json.dump({"files": sorted(files)}, f, indent=0)


# ---------------------------------------------------------------- outputs

def cluster_metrics(labels, ids, classes):
    """ACC (Hungarian), NMI, ARI, and purity + the majority class of every cluster."""
    out = {"nmi": metrics.nmi(labels, ids), "ari": metrics.ari(labels, ids),
           "acc": metrics.cluster_accuracy(labels, ids)}
    if len(np.unique(ids)) != len(classes):
        out["purity"] = metrics.purity(labels, ids)
    out["majority_class"] = {int(cid): classes[int(np.bincount(labels[ids == cid]).argmax())]
                             for cid in np.unique(ids)}
    return out


def thumbnails(dataset, indices):
    show = transforms.Compose([transforms.Resize(THUMB), transforms.CenterCrop(THUMB), transforms.ToTensor()])
    return torch.stack([show(dataset.load(int(i))) for i in indices])


def write_grids(dataset, ids, order, out_dir):
    """grids/cluster_<id>.png (up to 64 images each) and grids/overview.png (one row per cluster, largest first)."""
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for cid in order:
        members = np.flatnonzero(ids == cid)
        thumbs = thumbnails(dataset, members[:GRID_MAX])
        save_image(make_grid(thumbs, nrow=8, padding=2, pad_value=1.0), os.path.join(out_dir, f"cluster_{cid}.png"))
        row = thumbs[:OVERVIEW_PER_ROW]
        if len(row) < OVERVIEW_PER_ROW:
            row = torch.cat([row, torch.ones(OVERVIEW_PER_ROW - len(row), *row.shape[1:])])
        rows.append(row)
    save_image(make_grid(torch.cat(rows), nrow=OVERVIEW_PER_ROW, padding=2, pad_value=1.0),
               os.path.join(out_dir, "overview.png"))


def write_cluster_folders(dataset, ids, out_dir, copy):
    for i, (path, cid) in enumerate(zip(dataset.paths, ids)):
        folder = os.path.join(out_dir, str(int(cid)))
        os.makedirs(folder, exist_ok=True)
        target = os.path.join(folder, f"{i:06d}_{os.path.basename(path)}")
        if copy:
            shutil.copy2(path, target)
        else:
            os.symlink(os.path.abspath(path), target)


# ---------------------------------------------------------------- main

def predict(c, device="cpu"):
    device = torch.device(device)
    model, ckpt = load_model(c, device)
    dataset = open_split(c, "test", eval_transform(c["input_size"]), log=print)
    pred_dir = c["pred_dir"]
    prepare_pred_dir(pred_dir)

    features = compute_features(make_loader(dataset, c, device), model, device, c["verbose"], amp_dtype(c, device))
    if c["pred_mode"] == "assign":
        _, pca, centroids = stored_clustering(ckpt)
        ids, dist = clustering.assign_to_centroids(features, pca, centroids)
        k = len(centroids)
    else:
        k = c["pred_k"] or (len(dataset.classes) if dataset.has_labels else c["num_classes"])
        if k > len(dataset):
            raise PredError(f"pred_k = {k} is larger than the {len(dataset)} images to cluster")
        seed = clustering.epoch_seed(c["seed"], 0)
        xb, _ = clustering.preprocess_features(features, c["pca_dim"], log=print, method=c["pca_method"], seed=seed)
        ids, centroids, _ = clustering.run_kmeans(xb, k, c["kmeans_niter"], seed=seed, nredo=c["kmeans_nredo"])
        dist = ((xb - centroids[ids]) ** 2).sum(1)

    with open(os.path.join(pred_dir, "predictions.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "cluster", "label", "distance"])
        for path, cid, label, d in zip(dataset.paths, ids, dataset.labels, dist):
            w.writerow([path, int(cid), dataset.classes[label] if dataset.has_labels else "", f"{float(d):.6f}"])

    sizes = np.bincount(ids, minlength=k)
    order = [int(x) for x in np.argsort(-sizes, kind="stable") if sizes[x] > 0]
    result = {"n_images": len(dataset), "k": k, "mode": c["pred_mode"], "checkpoint": checkpoint_path(c),
              "checkpoint_epoch": int(ckpt["epoch"]), "clusters_nonempty": len(order),
              "cluster_sizes": {str(i): int(sizes[i]) for i in order}}
    if dataset.has_labels:
        result.update(cluster_metrics(dataset.labels, ids, dataset.classes))
        result["n_classes"] = len(dataset.classes)
    with open(os.path.join(pred_dir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)

    write_cluster_folders(dataset, ids, os.path.join(pred_dir, "clusters"), c["copy_images"])
    write_grids(dataset, ids, order, os.path.join(pred_dir, "grids"))
    write_manifest(pred_dir)
    summary = f"{len(dataset)} images -> {len(order)} clusters ({c['pred_mode']}, k = {k})"
    if dataset.has_labels:
        summary += f"  acc {result['acc']:.3f}  nmi {result['nmi']:.3f}  ari {result['ari']:.3f}"
    print(f"{summary}; wrote {pred_dir}/predictions.csv, metrics.json, clusters/, grids/")
    return result


def main(device="cpu", argv=None):
    return predict(load_cfg(argv, script="pred"), device)


if __name__ == "__main__":
    main("cpu")
