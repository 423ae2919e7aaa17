"""All settings of DeepCluster live in the dict `DEFAULTS` below; `c` is the name of a loaded config everywhere.

Edit the dict, or override any key without editing this file:

    python train.py --config my.json          # a JSON object of overrides
    python train.py --num_epoch 3 --sobel true

Precedence: the defaults here < the --config file < --key value flags.
The dict opens with the settings page: the 20 keys a run is set with, one line each. Below its "advanced" line are
the keys whose defaults decide well (docs/settings.md explains every key at length). `python train.py --help` shows
the page's keys that script reads, grouped, with defaults and comments; `--help all` every key it reads. Each group
header names the scripts that read its keys: that is where each script's list of keys comes from.
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
    # ======== the settings page: what a run needs (docs/settings.md explains every key at length) ========
    # --- data: train, pred, eval_linear ---
    "dataset_path": "data/fashion_mnist_small/train",  # images to learn from: ROOT/<class>/<image> or a flat folder
    "test_path": "data/fashion_mnist_small/test",  # images pred.py and eval_linear.py score; "" = hold out val_split
    "labels": "auto",  # the folders are classes ("folders"), albums ("none"), or as the tree looks ("auto")
    # --- model: train, pred, eval_linear ---
    "arch": "vgg16",  # "vgg16" (VGG16 with batch norm) or "alexnet" (AlexNet with batch norm)
    "sobel": True,  # fixed Sobel front (gray + two edge filters) before the first conv, as the paper
    "input_size": 32,  # images are resized to this square size; VGG16 needs >= 32, AlexNet >= 64
    # --- clustering: train, pred ---
    "num_classes": 0,  # k of k-means; 0 = one cluster per 10 images, 2 to 10; a list = one clustering per k
    "clustering_space": "whitened",  # where k-means cuts: "whitened" PCA features (the paper) or their "umap"
    "pca_dim": 0,  # PCA-whitening dimension; 0 = 16, fewer on small sets (the paper: 256)
    # --- training: train ---
    "init": "",  # weights to start from (a DeepCluster or torchvision VGG16-BN file); "" = random
    "num_epoch": 10,  # total epochs; raise it and re-run to continue a finished run
    "lr": 0.01,  # learning rate of the body and of the new head (the paper: 0.05)
    "select_epoch": "last",  # the epoch pred.py uses: "last", or chosen without labels: "nmi_prev", "kmeans_loss"
    # --- prediction: pred ---
    "pred_mode": "assign",  # "assign": nearest training centroid; "recluster": a fresh k-means with pred_k
    "pred_k": 0,  # recluster's k; 0 = the class count (else num_classes); "auto" = chosen without labels
    "similar_to": [],  # images (files or folders) whose nearest predicted images go to similar.csv
    "duplicate_threshold": 0.23,  # near-duplicate search: largest signature distance (0-4); 0 = off
    # --- run: train, pred, eval_linear ---
    "exp_dir": "exp/fashion_mnist_small",  # the run's folder: config, log, metrics, checkpoints
    "batch_size": 64,  # images per training and feature batch
    "seed": 31,  # seeds torch, numpy, python and each epoch's k-means (the reference's seed)
    # ======== advanced: the defaults decide well; docs/settings.md says when to change them ========
    # --- data: train, pred, eval_linear ---
    "val_split": 0.1,  # with test_path "": fraction of each class held out from training (seeded)
    "check_images": True,  # decode every image once at start-up, dropping unreadable files; false for huge sets
    "cache_mb": 1024,  # decoded images kept in memory up to this many MB (0 = off)
    "decode_side": 0,  # short side images are decoded to, in pixels (0 = 4 x input_size)
    "jpeg_decoder": "auto",  # "auto": torchvision's decode_jpeg for JPEGs up to 4 x decode_side, else Pillow; "pil"
    "check_workers": -1,  # processes of the start-up check; -1 = one per core, 0 = the main process
    "decode_device": "auto",  # JPEG decoding of training and feature passes: "auto" (nvJPEG on CUDA), "cpu", "cuda"
    # --- clustering: train, pred ---
    "clustering_device": "auto",  # "auto" (torch on the GPU, faiss on a CPU), "cpu" (faiss) or "torch"
    "pca_method": "torch",  # "torch" (eigh of the covariance; fast) or "faiss" (PCAMatrix, the reference)
    "kmeans_niter": 20,  # k-means iterations per clustering
    "kmeans_nredo": 5,  # k-means starts per clustering, the lowest loss kept (the paper: 1)
    # --- clustering: train ---
    "clustering": "kmeans",  # "kmeans" (the paper's default) or "pic" (power iteration clustering)
    "pca_fit_samples": 0,  # 0 = fit the PCA on all features; N >= 2 = on N images, the rest streamed
    "equal_size": True,  # re-split k-means' clusters into equal sizes (Sinkhorn-Knopp, as SeLa); the paper: false
    "equal_size_eps": 0.01,  # equal_size: temperature, relative to the mean squared distance
    "pic_nnn": 5,  # "pic": neighbours per image in the k-NN graph
    "pic_sigma": 0.2,  # "pic": edge weight exp(-d / sigma^2) on squared L2 distances
    "pic_alpha": 0.001,  # "pic": v <- alpha * W^T v + (1 - alpha) / n
    "pic_iterations": 200,  # "pic": power iterations
    "reassign": 1,  # epochs between two clusterings (1 = every epoch, as the paper)
    "shard_clustering": True,  # under torchrun: each process clusters its own share (all-reduced); false = rank 0
    "feature_dtype": "auto",  # dtype of the held fc7 features: "auto" (amp's on CUDA), "float32", "float16", "bfloat16"
    # --- training: train ---
    "optimizer": "sgd",  # optimizer of the body: "sgd" (the paper) or "adam"
    "momentum": 0.9,  # SGD momentum of the body (the head's SGD has none, as the reference)
    "weight_decay": 1e-5,  # L2 weight decay of body and head
    "lr_scheduler": "none",  # learning-rate schedule of the body, stepped per epoch: "none", "step", "plateau"
    "lr_step_size": 30,  # "step": multiply the lr by lr_gamma every this many epochs
    "lr_gamma": 0.1,  # "step" and "plateau": the factor applied to the lr
    "lr_patience": 3,  # "plateau": epochs without a lower training loss before the lr is cut
    "ema": 0.0,  # decay of a moving average of the weights used for features and saving (e.g. 0.99); 0 = off
    "head": "match",  # each epoch's classifier: "new" (the paper), "match" (rows kept by overlap), "centroids"
    "head_temperature": 0.1,  # "centroids": logits are cosines / this temperature
    "rrc_scale_min": 0.3,  # smallest crop area of RandomResizedCrop (the paper: torchvision's 0.08)
    "views": 1,  # augmented crops of each drawn image per epoch, with one pseudo-label (2 = two views)
    # --- prediction: pred ---
    "pred_dir": "",  # where pred.py writes; "" = exp_dir/pred
    "copy_images": False,  # clusters/<id>/ holds copies instead of symlinks
    "save_features": False,  # also write features.npy (fc7, float16) and embeddings.npy (whitened)
    "report": True,  # also write index.html, the page of the clusters with thumbnails
    "map": True,  # also write map.png, a t-SNE map of the embeddings
    "map_points": 3000,  # the map shows at most this many images (a seeded subset above)
    "pred_k_range": [2, 50],  # pred_k "auto": the smallest and the largest k considered
    "similar_k": 10,  # similar_to: neighbours listed per query image
    # --- prediction: pred, eval_linear ---
    "ckpt_path": "",  # checkpoint to read; "" = the run's chosen epoch in exp_dir
    # --- probe: eval_linear ---
    "probe_layer": 4,  # conv block whose output is probed (VGG16: 1-5, AlexNet: 1-5 convs)
    "probe_dims": 8192,  # the block's output is average-pooled to at most this many values
    "probe_epochs": 30,  # epochs of the linear classifier (on cached, frozen features)
    "probe_lr": 0.01,  # SGD learning rate of the probe (momentum 0.9)
    "probe_weight_decay": 1e-4,  # weight decay of the probe
    "baseline": False,  # also probe a randomly initialised network of the same arch, side by side
    # --- system: train, pred, eval_linear ---
    "workers": -1,  # DataLoader worker processes; -1 = from the cores (none up to 2 cores)
    "verbose": True,  # progress bars (on a terminal) and a summary line per epoch
    # --- system: train, pred ---
    "amp": "bf16",  # mixed precision on CUDA: "bf16", "fp16" (with loss scaling) or "off"; the CPU uses float32
    # --- system: train ---
    "compile": "auto",  # torch.compile of the body: "auto" (on CUDA, off on the CPU), "on" or "off"
    "sync_bn": False,  # under torchrun: SyncBatchNorm across processes
    "resume": True,  # continue from exp_dir/checkpoint.pth.tar when it exists; false starts over
    "tensorboard": False,  # also log every metrics.jsonl number to exp_dir/tensorboard (needs tensorboard)
}

CHOICES = {
    "jpeg_decoder": ("auto", "pil"),
    "decode_device": ("auto", "cpu", "cuda"),
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


SCRIPTS = ("train", "pred", "eval_linear")
HELP_FLAGS = ("-h", "--help")
ALIASES = {"images": "test_path"}  # --images FOLDER reads better in pred.py


@functools.lru_cache(maxsize=1)
def _source_notes():
    """What DEFAULTS' own lines say about each key, read from this file so that there is one place to edit:
    {key: (comment, group, the scripts that read it, advanced)}. A group header `# --- NAME: script, ... ---`
    names the group and the scripts that read its keys; keys below the `# ==== advanced` line are advanced."""
    with open(__file__, encoding="utf-8") as f:
        source = f.read()
    notes, group, readers, advanced = {}, "", (), False
    for line in source[source.index("DEFAULTS = {"):].splitlines()[1:]:
        header = re.match(r"\s*# --- (\w+): ([\w, ]+) ---", line)
        key = re.match(r'\s*"(\w+)":.*?#\s*(.*)$', line)
        if header:
            group, readers = header.group(1), tuple(r.strip() for r in header.group(2).split(","))
        elif re.match(r"\s*# =+ advanced", line):
            advanced = True
        elif key:
            notes[key.group(1)] = (key.group(2), group, readers, advanced)
        elif line.startswith("}"):
            return notes


# The keys each entry script reads, from the group headers of DEFAULTS; --help shows only these.
SCRIPT_KEYS = {script: [k for k, note in _source_notes().items() if script in note[2]] for script in SCRIPTS}
# The settings page: the keys above the advanced line; `--help` shows these, `--help all` every key.
PAGE = [k for k, note in _source_notes().items() if not note[3]]


def group_of(key):
    """The group a key is listed under in DEFAULTS (data, model, clustering, training, prediction, ...)."""
    return _source_notes()[key][1]


def help_text(script="train", width=None, everything=False):
    """The keys `script` reads, by group, with default and comment, wrapped to the terminal: the settings page,
    or (everything) the page and then the advanced keys."""
    width = max(60, width or shutil.get_terminal_size((100, 24)).columns)
    notes = _source_notes()
    keys = SCRIPT_KEYS[script]
    lines = textwrap.wrap(f"usage: python {script}.py [--config FILE.json] [--KEY VALUE ...] [--help [all]]",
                          width - 1, subsequent_indent="    ") + [""]
    lists = [k for k in LISTS if k in keys and (everything or k in PAGE)]
    lists = (f" A list-valued key ({', '.join(lists)}) takes every value after its flag up to the next --KEY "
             f"(--{lists[-1]} a b c), and a JSON list in a --config file.") if lists else ""
    lines += textwrap.wrap("Every key's default is in cfg.py; a --config file (a JSON object) overrides the "
                           "defaults and --KEY VALUE (or --KEY=VALUE) flags override both. Booleans take "
                           "true/false." + lists, width - 1)
    sections = [("", [k for k in keys if k in PAGE])]
    advanced = [k for k in keys if k not in PAGE]
    if everything:
        sections.append(("advanced ", advanced))
    for prefix, section in sections:
        for group in dict.fromkeys(notes[k][1] for k in section):
            lines += ["", f"{prefix}{group}:"]
            lines += _key_lines([k for k in section if notes[k][1] == group], notes, width)
    if not everything and advanced:
        lines += ["", *textwrap.wrap(f"{len(advanced)} advanced settings more, whose defaults decide well: "
                                     f"python {script}.py --help all (and docs/settings.md)", width - 1)]
    return "\n".join(lines)


def _key_lines(keys, notes, width):
    """One entry per key: --key, its default, its comment wrapped under the comment column."""
    lines, indent = [], 2 + 2 + 19 + 1 + 12 + 1  # "  --" key default
    for key in keys:
        head = f"  --{key:<19} {json.dumps(DEFAULTS[key]):<12} "
        if len(head) > indent:  # a long default: the comment starts on the next line
            lines.append(head.rstrip())
            head = " " * indent
        lines += textwrap.wrap(notes[key][0], width - 1, initial_indent=head,
                               subsequent_indent=" " * indent) or [head.rstrip()]
    return lines


def answer_help(script, argv=None):
    """Print the script's help and exit when -h/--help is among the arguments (nothing heavy imported yet)."""
    argv = sys.argv[1:] if argv is None else argv
    at = next((i for i, a in enumerate(argv) if a in HELP_FLAGS), None)
    if at is not None:
        print(help_text(script, everything=argv[at + 1:at + 2] == ["all"]))
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
