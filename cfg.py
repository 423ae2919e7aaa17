"""All settings of DeepCluster live in the dict `DEFAULTS` below; `c` is the name of a loaded config everywhere.

Edit the dict, or override any key without editing this file:

    python train.py --config my.json          # a JSON object of overrides
    python train.py --num_epoch 3 --sobel true

Precedence: the defaults here < the --config file < --key value flags.
`python train.py --help` lists the keys that script reads, grouped, with defaults and comments.
This module imports nothing heavy, so --help answers before torch and faiss load.
"""
import difflib
import functools
import json
import math
import os
import re
import shutil
import sys
import textwrap

from errors import ConfigError

DEFAULTS = {
    # --- data ---
    "dataset_path": "data/fashion_mnist_small/train",  # ImageFolder-style tree ROOT/<class>/<image> (or a flat folder of images)
    "test_path": "data/fashion_mnist_small/test",  # images for pred.py / eval_linear.py; "" = hold out val_split of dataset_path
    "val_split": 0.1,  # with test_path "": fraction of each class of dataset_path held out from training for pred/eval
    "labels": "auto",  # what the folders of dataset_path / test_path are: "auto" (ROOT/<class>/<image> trees give classes, a flat folder none), "folders" (class folders required) or "none" (albums, not classes: no label metrics, no class table, pred_k 0 not taken from the folder count)
    "check_images": True,  # decode every image once at start-up to drop unreadable files (and fill the cache); false for huge sets
    "cache_mb": 1024,  # keep decoded images in memory up to this many MB (0 = off); larger sets read the rest from disk
    "decode_side": 0,  # images are decoded with their short side reduced to this many pixels (0 = 4 x input_size)
    "jpeg_decoder": "auto",  # "auto": a JPEG under 4 x decode_side (short side) is decoded by torchvision's decode_jpeg and transformed as a tensor, larger ones and other formats by Pillow; "pil": every file by Pillow
    "check_workers": -1,  # processes that decode the images at start-up (check_images); -1 = one per core, 0 = the main process only
    # --- model ---
    "arch": "vgg16",  # "vgg16" (VGG16 with batch norm) or "alexnet" (AlexNet with batch norm)
    "sobel": True,  # fixed Sobel front: gray + two edge filters, the first conv then takes 2 channels
    "input_size": 32,  # images are resized to this many pixels (square); VGG16 needs >= 32, AlexNet >= 64
    "init": "",  # weights to start from: a DeepCluster checkpoint (VGG16/AlexNet + Sobel) or torchvision's VGG16-BN; "" = random
    # --- clustering ---
    "clustering": "kmeans",  # "kmeans" (paper default) or "pic" (power iteration clustering: k is an outcome)
    "clustering_space": "whitened",  # where k-means cuts the images (pseudo-labels, and pred.py's recluster): "whitened" (the PCA-whitened, L2-normalised features, the paper) or "umap" (their UMAP embedding to 10 dimensions, seeded; "kmeans" only, one process, at most 200,000 images)
    "clustering_device": "auto",  # where PCA-whitening, k-means, equal_size and PIC's k-NN graph run: "auto" (torch on the GPU the network runs on; faiss on a CPU), "cpu" (faiss on the CPU, the reference's path) or "torch" (torch on the network's device, a CPU included)
    "num_classes": 0,  # k of k-means: number of clusters = outputs of the classifier head; 0 = automatic: one per 10 images, 2 to 10 (10 on the shipped sample); a list (10,50,100 on the command line) = one k-means and one head per k every epoch, the first k is the run's clustering
    "pca_dim": 0,  # PCA-whitening dimension before k-means; 0 = automatic: 16, fewer on a small set (the rule in the README); N > 0 is kept below the number of images - 1. The paper: 256 (for k = 10000)
    "pca_method": "torch",  # "torch" (covariance or Gram matrix + eigh; a randomised subspace iteration above 2048 dims; many times faster) or "faiss" (PCAMatrix, the reference)
    "pca_fit_samples": 0,  # 0 = fit the PCA on all features (reference); N > 0 = fit on N images and stream the rest (memory)
    "kmeans_niter": 20,  # k-means iterations per clustering
    "kmeans_nredo": 5,  # k-means runs from different random starts per clustering, the lowest loss is kept (the paper: 1)
    "equal_size": True,  # after k-means, split the images into clusters of (almost) equal size (Sinkhorn-Knopp on the distances to the centroids, as SeLa; "kmeans" only); false = k-means' own partition (the paper)
    "equal_size_eps": 0.01,  # equal_size: temperature of the transport plan, relative to the mean squared distance; smaller = sizes closer to n / k, more iterations
    "pic_nnn": 5,  # "pic": neighbours per image in the k-NN graph
    "pic_sigma": 0.2,  # "pic": edge weight exp(-d / sigma^2) on squared L2 distances
    "pic_alpha": 0.001,  # "pic": v <- alpha * W^T v + (1 - alpha) / n
    "pic_iterations": 200,  # "pic": power iterations
    "reassign": 1,  # epochs between two re-clusterings (1 = re-cluster every epoch, as the paper)
    "shard_clustering": True,  # under torchrun: every process whitens and clusters its own share of the features (all-reduced sums, k-means in torch), only the cluster ids are gathered; false = rank 0 gathers all features and clusters alone (PIC always clusters on rank 0)
    "feature_dtype": "auto",  # dtype the fc7 features are held in until whitened: "auto" (the amp dtype on CUDA, in which the network computed them: lossless, half the memory; float32 on the CPU), "float32", "float16" or "bfloat16"
    # --- training ---
    "num_epoch": 10,  # total number of epochs (raise it and re-run to continue a finished run)
    "batch_size": 64,  # images per training / feature batch
    "optimizer": "sgd",  # optimizer of the body: "sgd" (paper) or "adam"
    "lr": 0.01,  # learning rate of the body and of the new head (the paper: 0.05)
    "momentum": 0.9,  # SGD momentum of the body (the head's SGD has none, as the reference)
    "weight_decay": 1e-5,  # L2 weight decay of body and head
    "lr_scheduler": "none",  # learning-rate schedule of the body, stepped once per epoch: "none", "step" or "plateau"
    "lr_step_size": 30,  # "step": multiply the lr by lr_gamma every this many epochs
    "lr_gamma": 0.1,  # "step" and "plateau": the factor applied to the lr
    "lr_patience": 3,  # "plateau": epochs without a lower training loss before the lr is cut
    "ema": 0.0,  # exponential moving average of the weights, updated every step with this decay (e.g. 0.99), used for the feature pass, the clustering and the saved network; 0 = off (the paper)
    "head": "match",  # classifier of each epoch: "new" (fresh random Linear, paper), "match" (keep the trained rows, matched to the new clusters by overlap) or "centroids" (DeepCluster-v2: cosine to the clustering's centroids, fixed)
    "head_temperature": 0.1,  # "centroids": logits are cosines / this temperature
    "select_epoch": "last",  # which epoch pred.py / eval_linear.py use: "last", or one chosen without labels: "nmi_prev" (the clustering that agrees most with the one before it) or "kmeans_loss" (the tightest clustering)
    "rrc_scale_min": 0.3,  # smallest crop area of the training RandomResizedCrop (the paper: torchvision's default 0.08)
    "views": 1,  # augmented crops of each drawn image per epoch, side by side in one batch with one pseudo-label (2 = two views, as DeepCluster-v2's multi-crop); the epoch's training work grows with it
    # --- prediction ---
    "ckpt_path": "",  # checkpoint to predict with; "" = the run's selected epoch (exp_dir/selected.pth.tar) when train.py kept one, else exp_dir/checkpoint.pth.tar
    "pred_dir": "",  # where pred.py writes predictions.csv, metrics.json, clusters/ and grids/; "" = exp_dir/pred
    "pred_mode": "assign",  # "assign": nearest centroid of the last training clustering; "recluster": fresh k-means
    "pred_k": 0,  # "recluster": number of clusters; 0 = number of label classes when known (labels), else the run's num_classes (its first k); "auto" = chosen without labels over pred_k_range (HDBSCAN's number of clusters, with one log line; assign mode switches to recluster, saying so)
    "copy_images": False,  # clusters/<id>/ holds copies instead of symlinks
    "save_features": False,  # also write features.npy (4096-d fc7, float16) and embeddings.npy (whitened), row-aligned with predictions.csv
    "report": True,  # also write index.html: a page of the clusters (largest first) with thumbnails (thumbs/), the cluster x class table and the scores
    "map": True,  # also write map.png: a t-SNE map of the embeddings, one colour per cluster and one marker per class
    "map_points": 3000,  # map: t-SNE of at most this many images (a random subset above); its time grows with this number
    "pred_k_range": [2, 50],  # pred_k "auto": the smallest and the largest k tried (the largest capped at n_images / 5); HDBSCAN's number of clusters, clamped into this range, is kept; the silhouette curve of every k is shown beside it
    "duplicate_threshold": 0.23,  # near-duplicates: exact copies (same decoded pixels) always, and pairs of images whose pixel signatures are at most this far apart (squared L2, 0-4), (above 20 images) at most a quarter of an image's usual distance to its 10th nearest other picture, that a pixel comparison confirms; 0 = no duplicate search
    "similar_to": [],  # images (files or folders; several after one flag) whose similar_k nearest predicted images go to similar.csv and the page
    "similar_k": 10,  # similar_to: neighbours listed per query image
    # --- probe ---
    "probe_layer": 4,  # conv block whose output is probed (VGG16: 1-5, AlexNet: 1-5 convs)
    "probe_dims": 8192,  # the block's output is average-pooled to at most this many values
    "probe_epochs": 30,  # epochs of the linear classifier (on cached, frozen features)
    "probe_lr": 0.01,  # SGD learning rate of the probe (momentum 0.9)
    "probe_weight_decay": 1e-4,  # weight decay of the probe
    "baseline": False,  # also probe a randomly initialised network of the same arch, side by side
    # --- system ---
    "exp_dir": "exp/fashion_mnist_small",  # where config.json, metrics.jsonl, train.log and checkpoint.pth.tar are written
    "workers": -1,  # DataLoader worker processes; -1 = from the cores (none up to 2 cores, else half of them, at most 8)
    "amp": "bf16",  # mixed precision on CUDA: "bf16", "fp16" (with loss scaling) or "off"; the CPU always uses float32
    "compile": "auto",  # torch.compile of the network's body (the head is replaced every clustering and stays eager): "auto" (on CUDA, off on the CPU, where it did not help), "on" or "off"
    "sync_bn": False,  # under torchrun: SyncBatchNorm across processes instead of per-process batch statistics
    "seed": 31,  # seeds torch, numpy, python and each epoch's k-means (the reference's seed)
    "resume": True,  # continue from exp_dir/checkpoint.pth.tar when it exists; false starts over
    "verbose": True,  # progress bars (on a terminal) and a summary line per epoch
    "tensorboard": False,  # train.py also logs every metrics.jsonl number as a TensorBoard scalar in exp_dir/tensorboard (needs the tensorboard package)
}

CHOICES = {
    "jpeg_decoder": ("auto", "pil"),
    "labels": ("auto", "folders", "none"),
    "arch": ("vgg16", "alexnet"),
    "optimizer": ("sgd", "adam"),
    "pred_mode": ("assign", "recluster"),
    "clustering": ("kmeans", "pic"),
    "clustering_space": ("whitened", "umap"),
    "pca_method": ("torch", "faiss"),
    "head": ("new", "match", "centroids"),
    "amp": ("bf16", "fp16", "off"),
    "clustering_device": ("auto", "cpu", "torch"),
    "feature_dtype": ("auto", "float32", "float16", "bfloat16"),
    "compile": ("auto", "on", "off"),
    "lr_scheduler": ("none", "step", "plateau"),
    "select_epoch": ("nmi_prev", "kmeans_loss", "last"),
}
# numeric keys that also take one of these words
WORDS = {"pred_k": ("auto",)}
# list-valued keys and the type of their items: on the command line every value after the flag up to the next --flag
LISTS = {"pred_k_range": int, "similar_to": str}
# keys that take one integer or a list of them (comma-separated on the command line: --num_classes 10,50,100)
INT_OR_LIST = ("num_classes",)
# smallest allowed value of numeric keys
MINIMUM = {
    "input_size": 32, "workers": -1, "decode_side": 0, "pca_dim": 0, "kmeans_niter": 1,
    "kmeans_nredo": 1,
    "check_workers": -1,
    "reassign": 1, "num_epoch": 0, "batch_size": 1, "lr": 0.0, "momentum": 0.0,
    "weight_decay": 0.0, "lr_step_size": 1, "lr_gamma": 0.0, "lr_patience": 0,
    "rrc_scale_min": 0.0, "views": 1, "val_split": 0.0, "cache_mb": 0, "pca_fit_samples": 0, "pred_k": 0, "map_points": 3,
    "probe_layer": 1, "probe_dims": 1, "probe_epochs": 1, "probe_lr": 0.0, "probe_weight_decay": 0.0,
    "ema": 0.0, "equal_size_eps": 1e-3, "pic_nnn": 1, "pic_sigma": 1e-6, "pic_alpha": 0.0, "pic_iterations": 1, "head_temperature": 1e-6,
    "duplicate_threshold": 0.0, "similar_k": 1,
}
# largest allowed value (inclusive) of numeric keys; val_split must stay below 1
MAXIMUM = {"input_size": 1024, "workers": 256, "rrc_scale_min": 1.0, "momentum": 1.0, "lr_gamma": 1.0,
           "check_workers": 256,
           "pic_alpha": 1.0, "duplicate_threshold": 4.0}
# paths that must not be empty, and the folders each script writes into
NON_EMPTY = ("dataset_path", "exp_dir")
OUTPUTS = {"train": ("exp_dir",), "pred": ("pred_dir",), "eval_linear": ("exp_dir",)}
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def _closest(key, keys, preferred=()):
    """The closest known key, looked for first among the keys the running script reads."""
    close = difflib.get_close_matches(key, [k for k in preferred if k in keys], n=1)
    close = close or difflib.get_close_matches(key, keys, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_key(key, defaults, preferred=()):
    if key not in defaults:
        raise ConfigError(f"unknown key '{key}'{_closest(key, list(defaults), preferred)}")


def _parse_flag(key, text, default):
    """Turn the string given after --key into the type of the default; a key of LISTS gets the list of strings
    given after its flag, each turned into the type of its items."""
    if key in LISTS:
        return [_parse_text(key, item, LISTS[key], "s") for item in text]
    if key in INT_OR_LIST and "," in text:
        return [_parse_text(key, item.strip(), int, "s") for item in text.split(",")]
    return _parse_text(key, text, type(default))


def _parse_text(key, text, kind, plural=""):
    if text.lower() in WORDS.get(key, ()):
        return text.lower()
    if kind is bool:
        if text.lower() in TRUE_WORDS:
            return True
        if text.lower() in FALSE_WORDS:
            return False
        raise ConfigError(f"'{key}' takes true or false, got '{text}'")
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            what = ("integer" if kind is int else "number") + plural
            what = what if plural else f"{'an' if kind is int else 'a'} {what}"
            words = "".join(f" or {w}" for w in WORDS.get(key, ()))
            raise ConfigError(f"'{key}' takes {what}{words}, got '{text}'") from None
    return text


def _check_json_value(key, value, default):
    """Values from a --config file must already have the default's type (ints are fine for floats); a key of LISTS
    takes a JSON list of items of its type, a key of WORDS also its words."""
    if key in LISTS:
        if not isinstance(value, list):
            raise ConfigError(f"'{key}' must be a list, got {type(value).__name__} {value!r}")
        return [_check_type(key, item, LISTS[key]) for item in value]
    if isinstance(value, str) and value in WORDS.get(key, ()):
        return value
    if key in INT_OR_LIST and isinstance(value, list):
        return [_check_type(key, item, int) for item in value]
    return _check_type(key, value, type(default))


def _check_type(key, value, kind):
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"'{key}' must be {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def cluster_ks(c):
    """The k of every clustering of an epoch (cfg num_classes: one k or a list); the first is the run's
    clustering (its assignment, centroids, head, metrics and pred.py's assign mode). [0]: automatic k."""
    ks = c["num_classes"]
    return list(ks) if isinstance(ks, list) else [ks]


def first_k(c):
    """The k of the run's clustering: num_classes, or the first k of a list."""
    return cluster_ks(c)[0]


def _check_num_classes(c):
    """num_classes: 0 (automatic), k >= 2, or a list of distinct k >= 2; a list of one k becomes that k."""
    ks = c["num_classes"]
    if isinstance(ks, list):
        if not ks:
            raise ConfigError("'num_classes' takes one k or a list of them, got an empty list")
        if any(k < 2 for k in ks) and len(ks) > 1:
            raise ConfigError(f"'num_classes' as a list takes k >= 2 for every clustering (0, automatic, only "
                              f"alone), got {ks}")
        if len(set(ks)) != len(ks):
            raise ConfigError(f"'num_classes' lists a k twice: {ks}; every clustering of an epoch takes its own k")
        c["num_classes"] = ks = ks[0] if len(ks) == 1 else list(ks)
    if isinstance(ks, int) and ks < 0:
        raise ConfigError(f"'num_classes' must be >= 0, got {ks}")
    if ks == 1:
        raise ConfigError("'num_classes' must be 0 (automatic) or >= 2, got 1")
    if isinstance(ks, list) and c["clustering"] != "kmeans":
        raise ConfigError(f"a list of num_classes ({ks}) needs clustering kmeans: PIC's number of clusters is its "
                          "outcome")


def validate(c):
    """Range and choice checks that do not need the data."""
    for key, allowed in CHOICES.items():
        if c[key] not in allowed:
            raise ConfigError(f"'{key}' must be one of {', '.join(allowed)}; got '{c[key]}'")
    for key, value in c.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"'{key}' must be a finite number, got {value}")
    _check_num_classes(c)
    for key, low in MINIMUM.items():
        if c[key] not in WORDS.get(key, ()) and c[key] < low:
            raise ConfigError(f"'{key}' must be >= {low}, got {c[key]}")
    for key, high in MAXIMUM.items():
        if c[key] > high:
            raise ConfigError(f"'{key}' must be <= {high}, got {c[key]}")
    if c["arch"] == "alexnet" and c["input_size"] < 64:
        raise ConfigError(f"arch alexnet needs input_size >= 64, got {c['input_size']}")
    low, high = (c["pred_k_range"] + [0, 0])[:2]
    if len(c["pred_k_range"]) != 2 or not 2 <= low <= high:
        raise ConfigError(f"'pred_k_range' takes two integers low high with 2 <= low <= high, got {c['pred_k_range']}")
    if c["clustering_space"] == "umap" and c["clustering"] != "kmeans":
        raise ConfigError("'clustering_space' umap is a space for k-means: PIC builds its own neighbour graph of the "
                          "whitened features; use clustering kmeans or clustering_space whitened")
    if c["pca_fit_samples"] == 1:  # a PCA of one image has no direction: it ended in a traceback mid-epoch
        raise ConfigError("'pca_fit_samples' takes 0 (fit the PCA on all images) or at least 2 (the PCA needs two "
                          "images to find a direction), got 1")
    for key in ("val_split", "ema"):
        if c[key] >= 1:
            raise ConfigError(f"'{key}' must be < 1, got {c[key]}")
    for key in NON_EMPTY:
        if not c[key].strip():
            raise ConfigError(f"'{key}' must not be empty")
    return c


def check_outputs(c, script):
    """The folders `script` writes into: a folder (or nothing yet) below a writable folder."""
    for key in OUTPUTS.get(script, ()):
        path = os.path.abspath(c[key])
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(f"'{key}' = '{c[key]}' is a file; it must be a folder (or not exist yet)")
        existing = path
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise ConfigError(f"'{key}' = '{c[key]}' cannot be created: '{existing}' is a file")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"'{key}' = '{c[key]}' is not writable (no write permission on '{existing}')")
    if script == "train" and c["init"] and not os.path.isfile(c["init"]):
        raise ConfigError(f"'init' = '{c['init']}' is not a file; it must be a checkpoint with weights to start from")
    if c["ckpt_path"] and os.path.isdir(c["ckpt_path"]):
        raise ConfigError(f"'ckpt_path' = '{c['ckpt_path']}' is a folder; it must be a checkpoint file")


# The keys each entry script reads (train.py reads every key of its groups); --help shows only these.
SCRIPT_KEYS = {
    "train": [k for k in DEFAULTS if k not in ("ckpt_path", "pred_dir", "pred_mode", "pred_k", "copy_images",
                                                "save_features", "report", "map", "map_points", "pred_k_range",
                                                "duplicate_threshold", "similar_to", "similar_k", "probe_layer",
                                                "probe_dims", "probe_epochs", "probe_lr", "probe_weight_decay",
                                                "baseline")],
    "pred": ["dataset_path", "test_path", "labels", "val_split", "check_images", "cache_mb", "decode_side", "arch", "sobel",
             "jpeg_decoder", "check_workers",
             "input_size", "num_classes", "clustering_device", "clustering_space", "pca_dim", "pca_method",
             "kmeans_niter", "kmeans_nredo", "batch_size", "ckpt_path", "pred_dir", "pred_mode", "pred_k", "copy_images",
             "save_features", "report", "map", "map_points", "pred_k_range", "duplicate_threshold", "similar_to",
             "similar_k", "exp_dir", "workers", "amp", "seed", "verbose"],
    "eval_linear": ["dataset_path", "test_path", "labels", "val_split", "check_images", "cache_mb", "decode_side", "arch",
                    "jpeg_decoder", "check_workers",
                    "sobel", "input_size", "batch_size", "ckpt_path", "probe_layer", "probe_dims", "probe_epochs",
                    "probe_lr", "probe_weight_decay", "baseline", "exp_dir", "workers", "seed", "verbose"],
}
HELP_FLAGS = ("-h", "--help")
ALIASES = {"images": "test_path"}  # --images FOLDER reads better in pred.py


@functools.lru_cache(maxsize=1)
def _source_notes():
    """(comment of every key, group of every key), read from this file so that there is one place to edit."""
    with open(__file__, encoding="utf-8") as f:
        source = f.read()
    comments = dict(re.findall(r'^\s*"(\w+)":.*?#\s*(.*)$', source, flags=re.M))
    groups, group = {}, ""
    for line in source[source.index("DEFAULTS = {"):].splitlines():
        header = re.match(r"\s*# --- (\w+) ---", line)
        key = re.match(r'\s*"(\w+)":', line)
        if header:
            group = header.group(1)
        elif key:
            groups[key.group(1)] = group
        elif line.startswith("}"):
            break
    return comments, groups


def group_of(key):
    """The group a key is listed under in DEFAULTS (data, model, clustering, training, ...)."""
    return _source_notes()[1][key]


def help_text(script="train", width=None):
    """The keys `script` reads, by group, with default and comment, wrapped to the terminal."""
    width = max(60, width or shutil.get_terminal_size((100, 24)).columns)
    comments, groups = _source_notes()
    keys = SCRIPT_KEYS[script]
    lines = [f"usage: python {script}.py [--config FILE.json] [--KEY VALUE ...]", ""]
    lists = [k for k in LISTS if k in keys]
    lists = (f" A list-valued key ({', '.join(lists)}) takes every value after its flag up to the next --KEY "
             f"(--{lists[-1]} a b c), and a JSON list in a --config file.") if lists else ""
    lines += textwrap.wrap("Every key's default is in cfg.py; a --config file (a JSON object) overrides the "
                           "defaults and --KEY VALUE (or --KEY=VALUE) flags override both. Booleans take "
                           "true/false." + lists, width - 1)
    indent = 2 + 2 + 18 + 1 + 12 + 1  # "  --" key default
    for group in dict.fromkeys(groups.values()):
        members = [k for k in keys if groups[k] == group]
        if not members:
            continue
        lines += ["", f"{group}:"]
        for key in members:
            head = f"  --{key:<18} {json.dumps(DEFAULTS[key]):<12} "
            if len(head) > indent:  # a long default: the comment starts on the next line
                lines.append(head.rstrip())
                head = " " * indent
            lines += textwrap.wrap(comments.get(key, ""), width - 1, initial_indent=head,
                                   subsequent_indent=" " * indent) or [head.rstrip()]
    return "\n".join(lines)


def answer_help(script, argv=None):
    """Print the script's help and exit when -h/--help is among the arguments (nothing heavy imported yet)."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in HELP_FLAGS for a in argv):
        print(help_text(script))
        raise SystemExit(0)


def split_flags(argv):
    """(key, text) pairs of --key value and --key=value; a key of LISTS takes every argument after its flag up to
    the next one that starts with "--" (text is then the list of them, at least one)."""
    pairs, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"expected --key value, got '{arg}'")
        key, eq, text = arg[2:].partition("=")
        key, i = ALIASES.get(key, key), i + 1
        if key in LISTS:
            values = [text] if eq else []
            while i < len(argv) and not argv[i].startswith("--"):
                values, i = values + [argv[i]], i + 1
            text = values
        elif not eq:
            if i >= len(argv):
                raise ConfigError(f"'{arg}' needs a value")
            text, i = argv[i], i + 1
        if key in LISTS and not text:
            raise ConfigError(f"'{arg}' needs at least one value")
        pairs.append((key, text))
    return pairs


def load_cfg(argv=None, defaults=None, script="train", given=None):
    """Defaults < --config FILE < --key value. Returns a new validated dict; `given`, a set, receives
    the keys that the config file or the flags set (pred.py and eval_linear.py take the rest from the run)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    defaults = DEFAULTS if defaults is None else defaults
    answer_help(script, argv)
    pairs = split_flags(argv)
    out, given = {k: list(v) if isinstance(v, list) else v for k, v in defaults.items()}, set() if given is None else given
    for key, text in pairs:
        if key == "config":
            from_file = read_config_file(text, defaults)
            out.update(from_file)
            given.update(from_file)
    for key, text in pairs:
        if key != "config":
            _check_key(key, defaults, SCRIPT_KEYS.get(script, ()))
            out[key] = _parse_flag(key, text, defaults[key])
            given.add(key)
    validate(out)
    if script == "pred" and not out["pred_dir"].strip():
        out["pred_dir"] = os.path.join(out["exp_dir"], "pred")  # every experiment keeps its own predictions
    check_outputs(out, script)
    return out


def read_config_file(path, defaults=None):
    defaults = DEFAULTS if defaults is None else defaults
    if not os.path.isfile(path):
        raise ConfigError(f"--config file '{path}' does not exist")
    try:
        with open(path, encoding="utf-8-sig") as f:  # a byte-order mark, as some editors write, is fine
            overrides = json.load(f)
    except UnicodeDecodeError as e:
        raise ConfigError(f"--config file '{path}' is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset "
                          f"{e.start}); save it as UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"--config file '{path}' is not valid JSON: {e}") from None
    except OSError as e:
        raise ConfigError(f"--config file '{path}' cannot be read: {e.strerror or e}") from None
    if not isinstance(overrides, dict):
        raise ConfigError(f"--config file '{path}' must hold a JSON object of key: value")
    result = {}
    for key, value in overrides.items():
        _check_key(key, defaults)
        result[key] = _check_json_value(key, value, defaults[key])
    return result


def save_cfg(c, exp_dir):
    os.makedirs(exp_dir, exist_ok=True)
    path = os.path.join(exp_dir, "config.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(c, f, indent=2)
        f.write("\n")
    return path
