"""The checkpoint of a run: one layout, written atomically, read with weights_only=True and checked.

Layout (every value a tensor, number, string, list or dict, so that torch.load(weights_only=True)
reads it without pickle): epoch (epochs completed), arch, sobel, input_size, num_classes, cfg,
state_dict, optimizer, scheduler, rng, assignment, pca_A, pca_b, centroids, classes, metrics,
clustering_metrics. The clustering (assignment, pca_*, centroids) is the one of the saved weights.
"""
import json
import os
import random

import numpy as np
import torch

from engine import memory_format
from errors import CheckpointError, PredError
from models import build_model

CHECKPOINT = "checkpoint.pth.tar"
METRICS = "metrics.jsonl"
MODEL_KEYS = ("arch", "sobel", "input_size")
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

def clustering_tensors(assignment, pca, centroids):
    """A clustering as checkpoint entries: assignment (n,), pca_A, pca_b (y = x @ A.T + b), centroids."""
    return {"assignment": torch.from_numpy(np.asarray(assignment, dtype=np.int64)),
            "pca_A": torch.from_numpy(np.asarray(pca["A"])), "pca_b": torch.from_numpy(np.asarray(pca["b"])),
            "centroids": torch.from_numpy(np.asarray(centroids))}


def stored_clustering(ckpt):
    """The inverse of clustering_tensors: (assignment, pca dict, centroids) as numpy arrays."""
    return (ckpt["assignment"].numpy(), {"A": ckpt["pca_A"].numpy(), "b": ckpt["pca_b"].numpy()},
            ckpt["centroids"].numpy())


def training_state(epochs_done, c, model, body_optimizer, scheduler, clusterer, classes, row, clustering_row):
    """Everything a resume or pred.py needs, in the layout above."""
    return {
        "epoch": epochs_done,
        **{key: c[key] for key in TRAINING_KEYS},
        "cfg": dict(c),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": body_optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_state(),
        **clustering_tensors(clusterer.assignment, clusterer.pca, clusterer.centroids),
        "classes": list(classes),
        "metrics": row,
        "clustering_metrics": clustering_row,
    }


def restore_training(ckpt, model, body_optimizer, scheduler, clusterer):
    """Put a training_state back: weights (with the head they had), optimizer, schedule, RNG, clustering."""
    state = ckpt["state_dict"]
    if "top_layer.weight" in state:
        model.add_head(state["top_layer.weight"].shape[0])
    model.load_state_dict(state)
    body_optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler"):
        scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    clusterer.assignment, clusterer.pca, clusterer.centroids = stored_clustering(ckpt)
    clusterer.k = int(clusterer.centroids.shape[0])


# ---------------------------------------------------------------- files

def save_checkpoint(path, state):
    """Write to a temporary file in the same folder, then rename: a kill never leaves half a checkpoint."""
    tmp = f"{path}.tmp.{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, c, keys=TRAINING_KEYS, advice="use another exp_dir, or --resume false to start over"):
    """Load a checkpoint with weights_only=True and check it was made with the same model settings;
    `advice` ends the one-line error of a mismatch."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read '{path}' ({type(e).__name__}: {e}); {advice}") from None
    # weights saved from a wrapped model (DistributedDataParallel) carry a "module." prefix
    ckpt["state_dict"] = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
    for key in keys:
        if ckpt.get(key) != c[key]:
            raise CheckpointError(f"'{path}' was trained with {key}={ckpt.get(key)!r} but the config says "
                                  f"{key}={c[key]!r}; {advice}")
    return ckpt


def load_model(c, device, script="pred.py"):
    """The trained network of the checkpoint (head removed, eval mode) for prediction, and the checkpoint."""
    path = checkpoint_path(c)
    if not os.path.exists(path):
        raise PredError(f"no checkpoint at '{path}': train first (python train.py) or set --ckpt_path")
    ckpt = load_checkpoint(path, c, keys=MODEL_KEYS,
                           advice=f"give {script} the settings the checkpoint was trained with")
    model = build_model(c["arch"], c["sobel"], out=0, input_size=c["input_size"])
    model.load_state_dict({k: v for k, v in ckpt["state_dict"].items() if not k.startswith("top_layer.")})
    return model.to(device, memory_format=memory_format(device)).eval(), ckpt


def truncate_metrics(path, epochs_done):
    """Keep the metrics lines of completed epochs only (a kill can leave one line past the checkpoint)."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        rows = [line for line in f if line.strip()]
    kept = [line for line in rows if json.loads(line)["epoch"] < epochs_done]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(kept)
