"""The files a run keeps: the checkpoint (one layout, written atomically, read with weights_only=True
and checked), metrics.jsonl (strict JSON, one line per epoch) and the lock that gives a folder to one
run at a time.

Layout (every value a tensor, number, string, list or dict, so that torch.load(weights_only=True)
reads it without pickle): epoch (epochs completed), arch, sobel, input_size, num_classes, cfg,
state_dict, optimizer, scheduler, rng, assignment, pca_A, pca_b, centroids, cluster_offsets,
clustering_state_dict, data_fingerprint, classes, metrics, clustering_metrics, selected, ema_state_dict,
other_clusterings.
The clustering (assignment, pca_*, centroids, cluster_offsets) is the one of the saved weights: image i
is in argmin_j ||whitened_i - centroids_j||^2 + cluster_offsets_j, exactly the rule of pred.py's assign
mode; after an epoch that did not re-cluster (reassign > 1) clustering_state_dict holds the earlier
weights that made it (else None). data_fingerprint identifies the training images (a resume on other
images is refused). selected ({rule, epoch, score} or None) names the epoch that select_epoch
chose so far, whose checkpoint train.py keeps as selected.pth.tar beside checkpoint.pth.tar.
ema_state_dict (None when cfg ema is 0) holds the weight average: then the features, the clustering
and the network of pred.py are the average's, and state_dict holds the weights the optimizer trains.
other_clusterings (cfg num_classes a list) holds the further clusterings of the same whitened features, one
dict each {k, assignment, centroids, cluster_offsets, kmeans_loss}, in the order of the list ([] for one k);
their heads are state_dict's extra_heads.*.
"""
import contextlib
import fcntl
import functools
import glob
import json
import math
import os
import random
import shutil
import sys
import time
import warnings

import numpy as np
import torch

import cfg
from cfg import SCRIPT_KEYS
from engine import memory_format
from errors import BusyError, CheckpointError, printable
from models import HEAD_PREFIXES, build_model
from models.pretrained import unwrapped_names

CHECKPOINT = "checkpoint.pth.tar"
SELECTED = "selected.pth.tar"  # the checkpoint of the epoch select_epoch chose, when it is not the last
METRICS = "metrics.jsonl"
REQUIRED = ("epoch", "arch", "sobel", "input_size", "state_dict", "assignment", "pca_A", "pca_b", "centroids")
MODEL_KEYS = ("arch", "sobel", "input_size")
INHERITED_GROUPS = ("data", "model", "clustering", "training")  # what pred.py and eval_linear.py take from the run
INHERITED_KEYS = ("seed", "batch_size")  # and these of the "run" group: the seed drew the held-out split
TRAINING_KEYS = MODEL_KEYS + ("num_classes",)


def checkpoint_path(c):
    """The checkpoint pred.py and eval_linear.py read: ckpt_path, or the run's own in exp_dir."""
    return c["ckpt_path"] or os.path.join(c["exp_dir"], CHECKPOINT)


# ---------------------------------------------------------------- RNG state

def rng_state():
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
            "python": {"version": py_state[0], "state": list(py_state[1])}}


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    s = state["numpy"]
    np.random.set_state(("MT19937", s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"],
                         s["cached_gaussian"]))
    random.setstate((state["python"]["version"], tuple(state["python"]["state"]), None))


# ---------------------------------------------------------------- the layout

def clustering_tensors(assignment, pca, centroids, offsets=None):
    """A clustering as checkpoint entries: assignment (n,), pca_A, pca_b (y = x @ A.T + b), centroids (k, pca_dim)
    and cluster_offsets (k,): image i is in argmin_j ||y_i - centroids_j||^2 + cluster_offsets_j (zeros but
    for the equal-size step)."""
    centroids = np.asarray(centroids, dtype=np.float32)
    offsets = np.zeros(len(centroids), dtype=np.float32) if offsets is None else np.asarray(offsets, dtype=np.float32)
    return {"assignment": torch.from_numpy(np.asarray(assignment, dtype=np.int64)),
            "pca_A": torch.from_numpy(np.asarray(pca["A"])), "pca_b": torch.from_numpy(np.asarray(pca["b"])),
            "centroids": torch.from_numpy(centroids), "cluster_offsets": torch.from_numpy(offsets)}


def stored_clustering(ckpt):
    """The inverse of clustering_tensors: (assignment, pca dict, centroids, offsets) as numpy arrays (offsets
    zeros for a checkpoint written before they were stored)."""
    centroids = ckpt["centroids"].numpy()
    offsets = ckpt.get("cluster_offsets")
    offsets = np.zeros(len(centroids), dtype=np.float32) if offsets is None else offsets.numpy()
    return ckpt["assignment"].numpy(), {"A": ckpt["pca_A"].numpy(), "b": ckpt["pca_b"].numpy()}, centroids, offsets


def training_state(epochs_done, c, model, body_optimizer, scheduler, clusterer, classes, row, clustering_row,
                   selected=None, ema_model=None, clustering_weights=None, data_fingerprint=None):
    """Everything a resume or pred.py needs, in the layout above. clustering_weights: the weights that made the
    stored clustering when they are not the saved ones (an epoch without re-clustering, cfg reassign > 1)."""
    return {
        "epoch": epochs_done,
        **{key: c[key] for key in TRAINING_KEYS},
        "cfg": dict(c),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": body_optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_state(),
        **clustering_tensors(clusterer.assignment, clusterer.pca, clusterer.centroids, clusterer.offsets),
        "clustering_state_dict": clustering_weights,
        "data_fingerprint": data_fingerprint,
        "classes": list(classes),
        "metrics": row,
        "clustering_metrics": clustering_row,
        "selected": selected,
        "ema_state_dict": {k: v.detach().cpu() for k, v in ema_model.state_dict().items()} if ema_model else None,
        "other_clusterings": [other_clustering(cl) for cl in clusterer.others],
    }


def other_clustering(cl):
    """One further clustering of an epoch (a Kmeans of clusterer.others) as a checkpoint entry."""
    return {"k": int(cl.k), "assignment": torch.from_numpy(np.asarray(cl.assignment, dtype=np.int64)),
            "centroids": torch.from_numpy(np.asarray(cl.centroids, dtype=np.float32)),
            "cluster_offsets": torch.from_numpy(np.asarray(cl.offsets, dtype=np.float32)), "kmeans_loss": float(cl.loss)}


# What a checkpoint of an earlier layout may lack (keys added to the layout since), and what a resume does
# without it; the keys of REQUIRED cannot be done without.
EARLIER_LAYOUT = {
    "cfg": "the run's settings are this command's",
    "optimizer": "the body's SGD restarts without its momentum",
    "scheduler": "the learning-rate schedule restarts at this epoch",
    "rng": "the random generators are reseeded from seed and epoch",
    "cluster_offsets": "no equal-size offsets (all 0)",
    "clustering_state_dict": "the clustering is taken as the saved weights'",
    "data_fingerprint": "the image list is checked by its count only",
    "classes": "the class names are this tree's",
    "metrics": "no metrics row of the last epoch",
    "clustering_metrics": "the clustering's metrics are recomputed from the stored assignment",
    "selected": "no epoch chosen so far: select_epoch starts choosing now",
    "ema_state_dict": "the weight average starts from the weights",
    "other_clusterings": "one clustering per epoch (the only kind then)",
}


def earlier_layout(ckpt):
    """The keys of EARLIER_LAYOUT that ckpt lacks, in the layout's order; each is then set to None, which
    restore_training and train.py read as missing (None is also the value train.py writes for the keys that
    a run may not have: scheduler, selected, ema_state_dict ...)."""
    missing = [key for key in EARLIER_LAYOUT if key not in ckpt]
    for key in missing:
        ckpt[key] = None
    return missing


def restore_training(ckpt, model, body_optimizer, scheduler, clusterer, ema_model=None, seed=0):
    """Put a training_state back: weights (with the head they had), optimizer, schedule, RNG, clustering, and
    the averaged weights (which start from the weights when the checkpoint has none). What a checkpoint of an
    earlier layout lacks (None: see earlier_layout) is left as built: a fresh optimizer and schedule, and RNGs
    seeded from (seed, epoch)."""
    state = ckpt["state_dict"]
    if "top_layer.weight" in state:  # the heads as saved: top_layer, then extra_heads.0, .1, ...
        extra = sum(1 for key in state if key.startswith("extra_heads.") and key.endswith(".weight"))
        names = ["top_layer"] + [f"extra_heads.{i}" for i in range(extra)]
        model.add_heads([state[f"{name}.weight"].shape[0] for name in names])
    model.load_state_dict(state)
    if ema_model is not None:
        body = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
        ema_model.load_state_dict(ckpt.get("ema_state_dict") or body)  # the average is never DDP-wrapped
    if ckpt.get("optimizer") is not None:
        try:
            body_optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:  # another optimizer, or parameter groups of another layout
            raise CheckpointError(f"the body optimizer's state in the checkpoint does not fit this run's "
                                  f"{type(body_optimizer).__name__} ({e}); {RESUME_ADVICE}") from None
    if scheduler is not None and ckpt.get("scheduler"):
        scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt.get("rng") is not None:
        set_rng_state(ckpt["rng"])
    else:
        reseed = int(np.random.SeedSequence([seed, int(ckpt["epoch"])]).generate_state(1)[0])
        torch.manual_seed(reseed)
        np.random.seed(reseed)
        random.seed(reseed)
    clusterer.assignment, clusterer.pca, clusterer.centroids, clusterer.offsets = stored_clustering(ckpt)
    clusterer.k = int(clusterer.centroids.shape[0])
    stored = ckpt.get("other_clusterings") or []
    if [int(o["k"]) for o in stored] != [cl.k for cl in clusterer.others]:
        raise CheckpointError(f"the checkpoint holds further clusterings with k = {[int(o['k']) for o in stored]}, this "
                              f"run asks for {[cl.k for cl in clusterer.others]}; {RESUME_ADVICE}")
    for cl, o in zip(clusterer.others, stored):
        cl.assignment, cl.centroids = o["assignment"].numpy(), o["centroids"].numpy()
        cl.offsets, cl.loss, cl.pca = o["cluster_offsets"].numpy(), float(o["kmeans_loss"]), clusterer.pca


# ---------------------------------------------------------------- files

def save_checkpoint(path, state):
    """Write to a temporary file in the same folder, then rename: a kill never leaves half a checkpoint.
    A write that fails (a full disk, a lost mount) removes its temporary file and ends the run with one line;
    the previous checkpoint is untouched, so the same command resumes from it once the cause is fixed."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError of its zip writer
        with contextlib.suppress(OSError):
            os.remove(tmp)
        try:
            free = f"{shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free / 2 ** 20:.0f} MB free there"
        except OSError:
            free = "free space unknown"
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"could not write '{printable(path)}' ({free}): {reason}; the previous checkpoint is "
                              f"unchanged: free some space and run the same command again to resume from it") from e


def keep_as_selected(path, selected_path):
    """selected_path becomes the checkpoint at path (a hard link where the file system has them, so no
    second copy is written until path is replaced), atomically like save_checkpoint."""
    tmp = f"{selected_path}.tmp.{os.getpid()}"
    try:
        os.link(path, tmp)
    except OSError:
        shutil.copyfile(path, tmp)
    os.replace(tmp, selected_path)
    if os.path.lexists(tmp):  # rename() does nothing when both names already link to one file: tmp would stay
        os.remove(tmp)


RESUME_ONLY = ("optimizer", "scheduler", "rng")  # what only a resume reads: left out of selected.pth.tar


def keep_selected_apart(path, selected_path):
    """Before the checkpoint at path is replaced: when selected_path is a link to it (the chosen epoch was the
    last one so far), selected_path becomes a copy of that checkpoint read back from disk (the state dicts held in
    memory share storage with the live network, which has trained on since) without RESUME_ONLY, which pred.py
    and eval_linear.py never read: about half the file (the body optimizer's momentum is one more copy of the
    weights). Written atomically like save_checkpoint."""
    try:
        linked = os.path.samefile(path, selected_path)
    except OSError:  # one of them is not there
        return
    if linked:
        state = torch.load(path, map_location="cpu", weights_only=True)
        save_checkpoint(selected_path, {key: value for key, value in state.items() if key not in RESUME_ONLY})


def remove_stale_temporaries(path):
    """Delete the temporary files of saves that a kill interrupted (call with the folder's lock held)."""
    stale = glob.glob(glob.escape(path) + ".tmp.*")
    for tmp in stale:
        os.remove(tmp)
    return stale


def check_layout(ckpt, path, fix):
    """A readable file that is not a checkpoint of train.py: one line saying what was expected."""
    expected = f"a checkpoint written by train.py (a dict with {', '.join(REQUIRED)})"
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"'{path}' holds a {type(ckpt).__name__}, not {expected}; {fix}")
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise CheckpointError(f"'{path}' holds a bare state_dict (weights only), not a checkpoint written by "
                              f"train.py, which also holds its clustering; train.py --init FILE starts a run from such "
                              f"weights")
    missing = [key for key in REQUIRED if key not in ckpt]
    if missing:
        raise CheckpointError(f"'{path}' is not {expected}: it lacks {', '.join(missing)}; {fix}")


RESUME_ADVICE = "use another exp_dir, or --resume false to start over"


def load_checkpoint(path, c, keys=TRAINING_KEYS, advice=RESUME_ADVICE, fix=RESUME_ADVICE):
    """Load a checkpoint with weights_only=True and check it was made with the same model settings;
    `advice` ends the one-line error of a settings mismatch, `fix` that of a file that is no checkpoint."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or pickled objects that weights_only refuses
        raise CheckpointError(f"cannot read '{path}' as a checkpoint ({type(e).__name__}); expected a file "
                              f"written by train.py; {fix}") from None
    check_layout(ckpt, path, fix)
    ckpt["state_dict"] = unwrapped_names(ckpt["state_dict"])  # saved from a DDP-wrapped model: "module." prefixes
    if "num_classes" not in ckpt and isinstance(ckpt["centroids"], torch.Tensor):  # an earlier layout: its k
        ckpt["num_classes"] = int(ckpt["centroids"].shape[0])
    for key in keys:
        if ckpt.get(key) != c[key]:
            raise CheckpointError(f"'{path}' was trained with {key}={ckpt.get(key)!r}, not {key}={c[key]!r}; "
                                  f"{advice}")
    return ckpt


def run_settings(c, given, script):
    """The config of pred.py / eval_linear.py completed from the run it reads: every data, model,
    clustering and training key the script reads comes from the checkpoint's stored config unless
    the command line (or --config) set it (given None: every key of c counts as set); a model key
    set to another value than the checkpoint's is a one-line error. Returns (config, checkpoint)."""
    given = set(c) if given is None else given
    path = checkpoint_path(c)
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at '{path}': train first (python train.py) or set --ckpt_path / "
                              "--exp_dir")
    load = functools.partial(load_checkpoint, c=c, keys=[k for k in MODEL_KEYS if k in given],
                             advice=f"{script} takes it from the checkpoint: leave the flag out",
                             fix="point --ckpt_path (or --exp_dir) at a checkpoint of train.py")
    ckpt = load(path)
    if not c["ckpt_path"]:
        c["ckpt_path"], ckpt = selected_checkpoint(c["exp_dir"], ckpt, load)
    stored = ckpt.get("cfg") or {}
    inherit = [k for k in SCRIPT_KEYS[script.removesuffix(".py")] if k in stored and k not in given
               and (cfg.group_of(k) in INHERITED_GROUPS or k in INHERITED_KEYS)]
    c = {**c, **{k: stored[k] for k in inherit}}
    if ("test_path" not in given and stored.get("test_path") == cfg.DEFAULTS["test_path"]
            and stored.get("dataset_path") != cfg.DEFAULTS["dataset_path"]):
        c["test_path"] = stored["dataset_path"]  # the run set no test images: show where its own images landed
    return cfg.validate(c), ckpt


def selected_checkpoint(exp_dir, last, load):
    """(path, checkpoint) of the epoch the run's select_epoch rule chose when that is not its last epoch
    and train.py kept it; else the last checkpoint's. The checkpoint gets (in memory) `epochs_trained`: the
    epochs of the run's last checkpoint."""
    last["epochs_trained"] = int(last["epoch"])
    chosen, last_path = last.get("selected"), os.path.join(exp_dir, CHECKPOINT)
    if not chosen or int(chosen["epoch"]) == int(last["epoch"]):
        return last_path, last
    path = os.path.join(exp_dir, SELECTED)
    ckpt = load(path) if os.path.exists(path) else None
    if ckpt is None or int(ckpt["epoch"]) != int(chosen["epoch"]):
        print(printable(f"warning: '{path}' is not the checkpoint of epoch {chosen['epoch']} that the run "
                        f"chose; using the last epoch ({int(last['epoch'])})"), file=sys.stderr)
        return last_path, last
    print(printable(f"using the network after epoch {chosen['epoch']} of {int(last['epoch'])}, chosen without "
                    f"labels by select_epoch {chosen['rule']} ({chosen['rule']} {chosen['score']:.4f}); "
                    f"--ckpt_path {last_path} takes the last epoch"))
    ckpt["epochs_trained"] = int(last["epoch"])
    return path, ckpt


def clustering_network(ckpt):
    """The weights whose features the stored clustering was made from: the saved network (its weight average
    when the run kept one), or, after an epoch that did not re-cluster (cfg reassign > 1), the earlier weights
    train.py stored beside it. Returns (state_dict, True when those are the earlier weights)."""
    earlier = ckpt.get("clustering_state_dict")
    if earlier:
        return unwrapped_names(earlier), True
    return ckpt.get("ema_state_dict") or ckpt["state_dict"], False  # load_checkpoint unwrapped state_dict already


def load_model(c, device, ckpt, state=None):
    """The trained network of a checkpoint that run_settings read (its weight average when the run kept one),
    or the given state_dict, head removed, in eval mode."""
    model = build_model(c["arch"], c["sobel"], out=0, input_size=c["input_size"])
    state = state or ckpt.get("ema_state_dict") or ckpt["state_dict"]  # load_checkpoint unwrapped state_dict
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)})
    return model.to(device, memory_format=memory_format(device)).eval()


def strict_json(row):
    """A metrics row as one line of strict JSON: NaN and infinities (which JSON has no word for) become null."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
    return json.dumps(clean, allow_nan=False)


def append_metrics(path, row):
    with open(path, "a", encoding="utf-8") as f:
        f.write(strict_json(row) + "\n")


def read_metrics(path):
    """The rows of metrics.jsonl; a line that is not JSON (a write cut by a power loss) is dropped with a warning."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                warnings.warn(f"{path}: line {number} is not complete JSON (an interrupted write?) and is dropped")
    return [row for row in rows if isinstance(row, dict) and isinstance(row.get("epoch"), int)]


def truncate_metrics(path, epochs_done):
    """Keep the metrics lines of completed epochs only (a kill can leave one line past the checkpoint)."""
    if not os.path.exists(path):
        return
    kept = [row for row in read_metrics(path) if row["epoch"] < epochs_done]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(strict_json(row) + "\n" for row in kept)


@contextlib.contextmanager
def hold_lock(lock_path, what, flag):
    """Give `what` (a folder, named by its config key `flag`) to this process until the block ends.

    An exclusive flock on lock_path: the kernel releases it when the process exits in any way
    (kill -9 included), so a lock is never stale. A second process gets a one-line error that
    names the holder, as recorded in the lock file."""
    os.makedirs(os.path.dirname(os.path.abspath(lock_path)), exist_ok=True)
    with open(lock_path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise BusyError(f"{flag} '{what}' is in use by {holder}; wait for it to finish or choose another "
                            f"--{flag}") from None
        f.seek(0)
        f.truncate()
        script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
        f.write(f"{script} (pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')})")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
