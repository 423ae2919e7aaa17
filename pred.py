"""Assign images to clusters with a trained network: `python pred.py [--config FILE] [--key value ...]`.

The run's settings come from its checkpoint (flags still win). Writes into pred_dir (default
exp_dir/pred): predictions.csv (with each image's outlier_score), metrics.json, clusters/<id>/ (symlinks
or copies), grids/ (cluster_<id>.png, overview.png), index.html with thumbs/ (cfg report), map.png (cfg
map), duplicates.csv (cfg duplicate_threshold > 0), similar.csv (--similar_to FILE_OR_FOLDER ...),
k_selection.png (--pred_k auto) and, with save_features, features.npy and embeddings.npy. What is found
besides the clusters (k without labels, near-duplicates, similar images, outliers) is collection.py's.
Two modes (cfg pred_mode):
  assign     nearest centroid of the last training clustering (stored PCA + centroids),
             so cluster ids are the training ids;
  recluster  fresh PCA-whitening + k-means with pred_k clusters on these images' features,
             the protocol papers use to report ACC / NMI of overclustered runs.
pred.py never deletes anything it did not create (it keeps a manifest of what it wrote), writes
into a hidden staging folder beside pred_dir and swaps it in at the end (a killed run leaves the
previous prediction as it was), and holds pred_dir for itself while it runs (output_folder.py).
"""
if __name__ == "__main__":
    import cfg
    cfg.answer_help("pred")  # before torch and faiss load: --help answers at once

import csv
import json
import os
import shutil
import sys
import time

import numpy as np
import torch
from torchvision import transforms
from torchvision.utils import make_grid, save_image

import clustering
import collection
import curves
import gpu_input
import metrics
import output_folder
import report
from cfg import first_k, load_cfg
from checkpoint import (METRICS, checkpoint_path, clustering_network, load_model, read_metrics, run_settings,
                        stored_clustering)
from dataset import ClusterDataset, decode_side, eval_transform, file_identities, open_split, training_images_among
from decoding import as_pil
from engine import amp_dtype, compute_features, make_loader
from errors import DataError, PredError, counted, printable
from thumbnails import CollectThumbnails, ThumbnailItems

NAME_MAX = 255  # bytes in one file name on common file systems
GRID_MAX = 64
OVERVIEW_PER_ROW = 12
THUMB = 64


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
    return torch.stack([show(as_pil(dataset.load(int(i)))) for i in indices])


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


def link_name(index, path):
    """<index>_<file name> for clusters/<id>/, shortened (extension kept) to fit the 255-byte name limit."""
    prefix, name = f"{index:06d}_".encode(), os.fsencode(os.path.basename(path))
    room = NAME_MAX - len(prefix)
    if len(name) > room:
        stem, ext = os.path.splitext(name)
        ext = ext[:16]
        stem = stem[:room - len(ext)]
        try:  # a name that is UTF-8 stays UTF-8: never cut one character in half
            name.decode("utf-8")
            stem = stem.decode("utf-8", "ignore").encode("utf-8")
        except UnicodeDecodeError:
            pass
        name = stem + ext
    return os.fsdecode(prefix + name)


def write_cluster_folders(dataset, ids, out_dir, copy, final_dir):
    """clusters/<id>/<index>_<name> under out_dir: copies, or symlinks relative to where they will finally lie
    (final_dir, the clusters/ folder of pred_dir; out_dir is its twin in the staging folder, at the same depth),
    so that the links stay valid when the images and pred_dir move together (cp -r, tar, rsync)."""
    final_real = os.path.realpath(final_dir)
    for i, (path, cid) in enumerate(zip(dataset.paths, ids)):
        folder = os.path.join(out_dir, str(int(cid)))
        os.makedirs(folder, exist_ok=True)
        target = os.path.join(folder, link_name(i, path))
        if copy:
            shutil.copy2(path, target)
        else:
            os.symlink(os.path.relpath(os.path.realpath(path), os.path.join(final_real, str(int(cid)))), target)


def write_predictions(path, dataset, ids, dist, outlier):
    """predictions.csv: valid UTF-8, one row per image; name bytes that are not UTF-8 appear as \\xNN."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "cluster", "label", "distance", "outlier_score"])
        for file, cid, label, d, o in zip(dataset.paths, ids, dataset.labels, dist, outlier):
            w.writerow([printable(file), int(cid), printable(dataset.classes[label]) if dataset.has_labels else "",
                        f"{float(d):.6f}", f"{float(o):.6f}"])


# ---------------------------------------------------------------- main

def cluster_images(c, dataset, features, ckpt, device=None, neighbours=None):
    """(cluster ids, squared distances to their centroids, k, the whitened embeddings, metrics.json's k_selection
    (pred_k auto) or None) in pred_mode, numpy arrays; device: where the whitening and the clustering run
    (clustering.resolve_device; None: faiss on the CPU); neighbours: the images' rows in the neighbour space
    (neighbour_space), on which pred_k auto scores each k."""
    x = features if device is None else torch.from_numpy(features).to(device)
    if c["pred_mode"] == "assign":
        _, pca, centroids, offsets = stored_clustering(ckpt)
        ids, dist = clustering.assign_to_centroids(x, pca, centroids, offsets, device)  # the training rule
        # the embeddings of the map and embeddings.npy: whitened once more, a small cost beside the network's pass
        return ids, dist, len(centroids), clustering.to_numpy(clustering.apply_pca(x, pca)), None
    auto = c["pred_k"] == "auto"
    k = 0 if auto else c["pred_k"] or (len(dataset.classes) if dataset.has_labels else first_k(c)
                                       or clustering.auto_k(len(dataset)))  # a run of PIC has no k of its own
    if len(dataset) < 2 + auto:
        raise PredError(f"recluster{' with pred_k auto' * auto} needs at least {2 + auto} images to cluster, got "
                        f"{len(dataset)}; use --pred_mode assign to put single images into the training clusters")
    if k > len(dataset):
        raise PredError(f"pred_k = {k} is larger than the {len(dataset)} images to cluster")
    seed = clustering.epoch_seed(c["seed"], 0)
    note = clustering.clamp_note(c["pca_dim"], *features.shape)
    if note:
        say(note)
    xb, _ = clustering.preprocess_features(x, c["pca_dim"], log=say, method=c["pca_method"], seed=seed,
                                           k=None if auto else k)
    umap = c["clustering_space"] == "umap"
    if umap and clustering.umap_refusal(len(xb)):
        raise PredError(clustering.umap_refusal(len(xb)))
    if umap and auto:  # k is not known yet: the neighbourhood (clustering.umap_neighbors) of the range's smallest
        k = min(collection.k_candidates(len(xb), *c["pred_k_range"]))
    rows = clustering.umap_embed(xb, seed, say, k) if umap else xb  # where k-means cuts
    k, selection = choose_k(c, rows, neighbours, seed, device) if auto else (k, None)
    ids, centroids, _ = clustering.run_kmeans(rows, k, c["kmeans_niter"], seed=seed, nredo=c["kmeans_nredo"],
                                              device=device)
    xb = clustering.to_numpy(xb)
    if umap:  # the distances of predictions.csv stay those of the whitened embeddings, to each cluster's mean
        centroids = clustering.cluster_means(xb, ids, np.zeros((k, xb.shape[1]), dtype=np.float32))
    return ids, ((xb - centroids[ids]) ** 2).sum(1), k, xb, selection


def choose_k(c, xb, neighbours, seed, device):
    """pred_k auto: (k, k_selection) by collection.choose_k over pred_k_range (HDBSCAN's number of clusters in the
    neighbour space; the silhouette there of the k-means of the whitened rows xb for every k, for the curve and the
    runner-up), with one log line."""
    t0 = time.time()
    ks = collection.k_candidates(len(xb), *c["pred_k_range"])
    k, selection = collection.choose_k(xb, ks, niter=c["kmeans_niter"], seed=seed, device=device,
                                       scored=clustering.to_numpy(neighbours))
    subset = f"a random {selection['rows']} of the images" if selection["rows"] < len(xb) else "all images"
    found = selection["hdbscan_clusters"]
    clamped = "" if found == k else f", {found} clamped into {ks[0]}-{ks[-1]}"
    say(f"pred_k auto: k = {k}, HDBSCAN's number of clusters of {subset} in the neighbour space{clamped}; runner-up "
        f"k = {selection['runner_up']} (the next best {selection['criterion']} of k-means of them for k = "
        f"{ks[0]}-{ks[-1]}, scored on {selection['rows_scored']}; {time.time() - t0:.1f} s)")
    return k, selection


def neighbour_space(c, features, device=None):
    """(the projection, the images' rows) of the neighbour space (collection.neighbour_space) of the features, with
    one log line; the rows are a tensor on `device` (the clustering's), a numpy array for None."""
    t0 = time.time()
    x = features if device is None else torch.from_numpy(features).to(device)
    space, rows = collection.neighbour_space(x, seed=c["seed"])
    what = (f"the cosine of the features ({len(features)} images: too few for principal directions to mean "
            "something)" if space.get("cosine") else f"the top {len(space['A'])} principal directions of the features")
    say(f"neighbour space: {what} ({time.time() - t0:.1f} s)")
    return space, rows


def image_features(c, dataset, model, device):
    """The network's pass over the images: (fc7 features (n, 4096) float32 numpy, the thumbnails (cfg report: JPEG
    bytes per image) or None, with duplicate_threshold > 0 their fingerprints (collection.fingerprint's arrays
    stacked, one row per image) or None), thumbnails and fingerprints made from the same decode as the network's
    input. Raises PredError when the features are not finite."""
    extras = c["report"] or c["duplicate_threshold"] > 0
    signature = collection.fingerprint if c["duplicate_threshold"] > 0 else None
    batches = make_loader(ThumbnailItems(dataset, c["report"], signature) if extras else dataset, c, device)
    batches = CollectThumbnails(batches) if extras else batches
    features = compute_features(batches, model, device, c["verbose"], amp_dtype(c, device))
    if not np.isfinite(features).all():
        raise PredError(f"the network of '{printable(checkpoint_path(c))}' gives features that are not finite "
                        "(a diverged training?); use the checkpoint of an earlier run")
    prints = getattr(batches, "signatures", None) if signature else None
    return features, getattr(batches, "thumbs", None), prints


def no_pixels(image):
    """The transform of images read for their fingerprints only: no network input."""
    return torch.zeros(0)


def training_fingerprints(c, dataset, seen):
    """pred.py --images NEW (test_path set, duplicate_threshold > 0, not all of them training images): (the
    fingerprints of the run's training images (dataset_path), stacked; (p, 2) pairs of (row, training row) that
    are one file; the training paths), for collection.answers. Decodes the training images once more
    (fingerprints only, no network). None otherwise, or when the training tree cannot be read (one note)."""
    if not c["test_path"] or c["duplicate_threshold"] <= 0 or seen == len(dataset):  # all: duplicates.csv has them
        return None
    try:
        training = ClusterDataset(c["dataset_path"], no_pixels, check_images=False, log=lambda msg: None,
                                  exclude=(c["exp_dir"], c["pred_dir"]), decode_side=decode_side(c),
                                  jpeg_decoder=c["jpeg_decoder"])
    except DataError:
        say(f"note: the training images '{printable(c['dataset_path'])}' cannot be read; no "
            "duplicates_of_training.csv")
        return None
    batches = CollectThumbnails(make_loader(ThumbnailItems(training, False, collection.fingerprint), c,
                                            torch.device("cpu")))
    for _ in batches:
        pass
    own = {f: i for i, f in enumerate(file_identities(training.paths))}
    same = [(i, own[f]) for i, f in enumerate(file_identities(dataset.paths)) if f in own]
    return batches.signatures, np.array(same).reshape(-1, 2), training.paths


def query_features(c, dataset, model, device):
    """The similar_to files and folders, in their order, for collection.answers: [(paths, thumbnails (JPEG bytes
    with cfg report, else None each), fc7 features (q, 4096) float32 numpy, (q,) rows of the predicted image that
    is the same file or -1)] per file or folder with a decodable image (one warning line for one without); None
    without similar_to. device: the network's."""
    if not c["similar_to"]:
        return None
    own_row, out = {f: i for i, f in enumerate(file_identities(dataset.paths))}, []
    for path in c["similar_to"]:
        said = []

        def log(msg):
            said.append(msg)
            say(msg)
        try:
            queries = ClusterDataset(path, eval_transform(c["input_size"]), log=log,
                                     exclude=(c["exp_dir"], c["pred_dir"]), decode_side=decode_side(c),
                                     jpeg_decoder=c["jpeg_decoder"], check_workers=0, what="similar_to")
        except DataError as e:  # nothing of it decodes: the file's own line was said, or say one for the folder
            if not said:
                say(f"warning: similar_to: {e.msg}; no query from it")
            continue
        batches = make_loader(ThumbnailItems(queries) if c["report"] else queries, c, device)  # no signatures
        batches = CollectThumbnails(batches) if c["report"] else batches
        features = compute_features(batches, model, device, False, amp_dtype(c, device))
        out.append((queries.paths, getattr(batches, "thumbs", [None] * len(queries)), features,
                    [own_row.get(f, -1) for f in file_identities(queries.paths)]))
    return out


def image_split(seen, n):
    """What the predicted images are to the run: "held_out" (none trained on), "training" (all), "mixed" or
    "unknown" (the training tree is gone)."""
    return "unknown" if seen is None else "held_out" if seen == 0 else "training" if seen == n else "mixed"


def write_outputs(c, folder, dataset, clusters, vectors, ckpt, seen, answers):
    """The files of the prediction, into folder (the page is write_page's): clusters = (ids, distances, k,
    k_selection or None), vectors = (features, embeddings), saved with save_features, row i of both = row i of
    predictions.csv; seen = how many of the images the run trained on; answers = collection.answers' Answers.
    Returns the metrics (metrics.json as a dict)."""
    (ids, dist, k, selection), (features, embeddings) = clusters, vectors
    write_predictions(os.path.join(folder, "predictions.csv"), dataset, ids, dist, answers.outlier)
    answers.write_csv(folder, dataset.paths)
    if c["save_features"]:
        np.save(os.path.join(folder, "features.npy"), features.astype(np.float16))
        np.save(os.path.join(folder, "embeddings.npy"), embeddings.astype(np.float32))
    sizes = np.bincount(ids, minlength=k)
    order = [int(x) for x in np.argsort(-sizes, kind="stable") if sizes[x] > 0]
    result = {"n_images": len(dataset), "k": k, "mode": c["pred_mode"], "checkpoint": printable(checkpoint_path(c)),
              "checkpoint_epoch": int(ckpt["epoch"]), "epochs_trained": int(ckpt.get("epochs_trained", ckpt["epoch"])),
              "images": image_split(seen, len(dataset)),
              "n_training_images": seen, "clusters_nonempty": len(order),
              "cluster_sizes": {str(i): int(sizes[i]) for i in order}, **answers.summary()}
    if selection:
        result["k_selection"] = selection
    gain = curves.training_gain(read_metrics(os.path.join(os.path.dirname(checkpoint_path(c)), METRICS)), ckpt)
    if gain is not None:
        result["training_gain"] = gain
    if dataset.has_labels:
        result.update(cluster_metrics(dataset.labels, ids, [printable(name) for name in dataset.classes]))
        result["n_classes"] = len(dataset.classes)
    with open(os.path.join(folder, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    write_cluster_folders(dataset, ids, os.path.join(folder, "clusters"), c["copy_images"],
                          os.path.join(c["pred_dir"], "clusters"))
    write_grids(dataset, ids, order, os.path.join(folder, "grids"))
    return result


def start_map(c, dataset, ids, embeddings):
    """cfg map: the t-SNE map, drawn in the background while the other files are written (report.MapJob); None
    when off or under 3 images."""
    if not c["map"] or len(dataset) < 3:
        return None
    labels = dataset.labels if dataset.has_labels else None
    return report.MapJob(embeddings, ids, labels, dataset.classes, c["map_points"], c["seed"])


def write_page(c, folder, dataset, clusters, result, page, answers):
    """map.png when its background job (report.MapJob) succeeds (a failure is one warning line: no map), then, with
    cfg report, index.html and thumbs/ (report.write_page). clusters = (ids, distances); page = (the thumbnails'
    JPEG bytes per image (image_features) or None, the report.MapJob drawing map.png or None); answers: the
    collection.Answers whose sections the page shows. Returns whether the map was written."""
    (ids, dist), (thumbs, map_job) = clusters, page
    drawn = False
    if map_job is not None:
        try:
            map_job.wait()
        except Exception as e:  # scikit-learn or matplotlib: the predictions stand without the picture
            say(f"warning: map.png not written: {type(e).__name__}: {e}")
        else:
            drawn = map_job.write(os.path.join(folder, "map.png")) > 0
    if c["report"]:
        links = [os.path.join("clusters", str(int(cid)), link_name(i, path))
                 for i, (path, cid) in enumerate(zip(dataset.paths, ids))]
        source = c["test_path"] or f"the val_split held out of {c['dataset_path']}"
        labels = dataset.labels if dataset.has_labels else None
        report.write_page(folder, report.Prediction(dataset.paths, links, ids, dist, labels, dataset.classes, result,
                                                    source, thumbs or [], answers.pairs, answers.outlier,
                                                    answers.similar or [], answers.group), "map.png" if drawn else None)
    return drawn


def predict(c, device="cpu", given=None):
    """Predict with the run of c's exp_dir (or ckpt_path); the keys not in `given` come from that run
    (given None: every key of c is taken as set). Returns the metrics (metrics.json as a dict)."""
    device = torch.device(device)
    c, ckpt, model = load_run(c, given, device)
    gpu_input.gpu_decode(c, device)  # decode_device's one-line errors before the images are opened
    dataset, seen = open_images(c, ckpt)
    with output_folder.held(c["pred_dir"]):  # new, empty or ours; a killed run's leftovers beside it removed
        # the network's pass, with each image's thumbnail and fingerprint from the same decode
        features, thumbs, prints = image_features(c, dataset, model, device)
        search = clustering.resolve_device(c["clustering_device"], device)
        # the neighbour space, where k (pred_k auto), outliers and similar images are found
        neighbours = neighbour_space(c, features, search)
        # the clustering, and its map drawn in the background meanwhile
        ids, dist, k, embeddings, selection = cluster_images(c, dataset, features, ckpt, search, neighbours[1])
        map_job = start_map(c, dataset, ids, embeddings)
        # what else is asked of the collection: near-duplicates, outliers, similar images
        queries = query_features(c, dataset, model, device)
        training = training_fingerprints(c, dataset, seen)
        duplicates = None if prints is None else (prints, c["duplicate_threshold"])
        answers = collection.answers(len(dataset), neighbours, duplicates, training, queries, c["similar_k"],
                                     search, say)
        # the files, into a staging folder
        staging = output_folder.open_staging(c["pred_dir"])
        result = write_outputs(c, staging, dataset, (ids, dist, k, selection), (features, embeddings), ckpt, seen,
                               answers)
        # the page: map.png and index.html
        write_page(c, staging, dataset, (ids, dist), result, (thumbs, map_job), answers)
        output_folder.publish(staging, c["pred_dir"])  # manifest, then swapped into pred_dir's place
    say(summary_line(c, dataset, result, k, seen))
    return result


def load_run(c, given, device):
    """(the run's settings with the flags in `given` on top, its checkpoint, the network on `device`); pred_k auto
    turns pred_mode assign into recluster (one line). Raises PredError for a similar_to path that does not exist."""
    c, ckpt = run_settings(c, given, "pred.py")
    if c["pred_k"] == "auto" and c["pred_mode"] == "assign":  # the stored clustering has its k: choosing one reclusters
        say("pred_k auto: choosing k makes a new clustering, so pred_mode is recluster (the training clusters have "
            "their own k; --pred_k 0 --pred_mode assign keeps them)")
        c["pred_mode"] = "recluster"
    model = load_model(c, device, ckpt, assign_network(c, ckpt))
    missing = [path for path in c["similar_to"] if not os.path.exists(path)]
    if missing:
        raise PredError(f"similar_to '{printable(missing[0])}' does not exist (a file or a folder of images)")
    return c, ckpt, model


def open_images(c, ckpt):
    """(the images to predict (open_split's test split), how many of them the run trained on, None when the
    training tree is gone), with a line on what they are and a note when some are training images."""
    dataset = open_split(c, "test", eval_transform(c["input_size"]), log=say)
    source = c["test_path"] or f"the val_split held out of {c['dataset_path']}"
    epoch, of = int(ckpt["epoch"]), int(ckpt.get("epochs_trained", ckpt["epoch"]))
    say(f"{counted(len(dataset), 'image')} of '{source}', the network after epoch {epoch} of {of} "
        f"('{checkpoint_path(c)}')")
    seen = training_images_among(dataset.paths, c)
    if seen:
        say(f"note: {seen} of these {len(dataset)} images are training images of the run (its clustering was fitted "
            "on them)" + (": the label metrics are not test scores" if dataset.has_labels else ""))
    return dataset, seen


def summary_line(c, dataset, result, k, seen):
    """The last line pred.py says: images, clusters, the label scores, and the files it wrote."""
    summary = (f"{counted(len(dataset), 'image')} -> {counted(result['clusters_nonempty'], 'cluster')} "
               f"({c['pred_mode']}, k = {k})")
    if dataset.has_labels:
        summary += f"  acc {result['acc']:.3f}  nmi {result['nmi']:.3f}  ari {result['ari']:.3f}"
        summary += {"training": " (training images)", "mixed": f" ({seen} of them training images)"}.get(
            result["images"], "")
    pred_dir = c["pred_dir"]
    extra = ", index.html" * c["report"] + ", map.png" * os.path.exists(os.path.join(pred_dir, "map.png"))
    extra += ", duplicates.csv" * ("duplicates" in result) + ", similar.csv" * ("similar_queries" in result)
    extra += ", duplicates_of_training.csv" * ("duplicates_of_training" in result)
    return f"{summary}; wrote {pred_dir}/predictions.csv, metrics.json, clusters/, grids/{extra}"


def assign_network(c, ckpt):
    """assign mode: the weights that made the stored clustering (an earlier epoch's after an epoch without
    re-clustering, cfg reassign > 1); recluster mode: None, the saved network."""
    if c["pred_mode"] != "assign":
        return None
    state, earlier = clustering_network(ckpt)
    if earlier:
        epoch, every = int(ckpt["epoch"]), int((ckpt.get("cfg") or {}).get("reassign", 1))
        say(f"assign: the checkpoint after epoch {epoch} holds the clustering made after epoch {epoch - epoch % every} "
            f"(reassign {every}); the images are assigned with the network of that epoch, which made it")
    return state


def say(msg):
    """print, with file names that are not UTF-8 shown as \\xNN escapes."""
    print(printable(msg))


def main(device="cpu", argv=None):
    given = set()
    c = load_cfg(argv, script="pred", given=given)
    try:
        return predict(c, device, given)
    except KeyboardInterrupt:
        print(f"\ninterrupted: '{printable(c['pred_dir'])}' is as it was before this run; run the same command "
              "again to predict", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    main("cpu")
