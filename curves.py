"""What train.py shows of a run as it goes: the training curves (curves.png), optional TensorBoard scalars, and
the training-gain line (did training make the clusters of the run's own images clearer than its start's, without
labels?) that train.log and pred.py's page print.
"""
import glob
import os
import re
from dataclasses import dataclass

import numpy as np
import torch

from checkpoint import CHECKPOINT, read_metrics
from errors import ConfigError, UserError, printable

# ---------------------------------------------------------------- training curves

CURVE_PANELS = [("loss", "training loss"), ("nmi_prev", "NMI with the previous clustering"),
                ("labels", "clustering against the labels"), ("kmeans_loss", "k-means loss"),
                ("images_per_s", "training images/s"), ("time", "seconds per epoch")]
# fields of a metrics row that describe the clustering the row's epoch trained on (the network after `epoch` epochs)
CLUSTERING_KEYS = ("nmi_prev", "nmi", "ari", "kmeans_loss", "clusters_found", "clusters_nonempty", "time_features_s",
                   "time_clustering_s")


def is_clustering_key(key):
    """A key of CLUSTERING_KEYS, or one of a further clustering's (nmi_k50, nmi_prev_k50: cfg num_classes a list)."""
    return re.sub(r"_k\d+$", "", key) in CLUSTERING_KEYS


def further_ks(rows, key):
    """The k of every further clustering whose `key` the rows hold (key_k50 -> 50), increasing."""
    pattern = re.compile(re.escape(key) + r"_k(\d+)$")
    return sorted({int(m.group(1)) for row in rows for name in row for m in [pattern.match(name)] if m})


@dataclass
class Curves:
    """One run's curves: `rows` (metrics.jsonl rows, any order), `final` (the clustering half of a row for the network
    after the last epoch, as train.py holds it, or None), `selected` (the epoch select_epoch chose: epochs done, or
    None) and a legend `label`."""
    rows: list
    final: dict = None
    selected: int = None
    label: str = ""


def curve_points(run, key):
    """(x, y) of one metric against the network's epochs: a clustering metric of row e belongs to the network after
    e epochs (e = 0: the random network; `final` after the last), a training metric of row e to epoch e + 1."""
    rows = sorted(run.rows, key=lambda r: r["epoch"])
    if is_clustering_key(key):  # an epoch that did not re-cluster (reassign > 1) repeats an earlier clustering
        pts = [(r["epoch"], r.get(key)) for r in rows if r.get("reclustered", True)]
        if run.final is not None and rows and run.final.get("reclustered", True):
            pts.append((rows[-1]["epoch"] + 1, run.final.get(key)))
    elif key == "time":
        pts = [(r["epoch"] + 1, sum(r.get(t) or 0 for t in ("time_features_s", "time_clustering_s", "time_train_s")))
               for r in rows]
    else:
        pts = [(r["epoch"] + 1, r.get(key)) for r in rows]
    pts = [(x, y) for x, y in pts if isinstance(y, (int, float)) and np.isfinite(y)]
    return [p[0] for p in pts], [p[1] for p in pts]


def draw_panel(ax, runs, key, name):
    from matplotlib.ticker import MaxNLocator
    keys = [("nmi", "NMI"), ("ari", "ARI")] if key == "labels" else [(key, "")]
    plotted = further = False
    for n, run in enumerate(runs):
        colour = f"C{n}"
        main_k = next((r["clusters_found"] for r in run.rows if r.get("clusters_found")), None)
        for (k, what), style in zip(keys, ("-", "--")):
            x, y = curve_points(run, k)
            if x:
                named = k != "ari" and further_ks(run.rows, k) and main_k  # beside further clusterings: its k
                label = " ".join(s for s in (run.label, what, f"k = {main_k}" if named else "") if s)
                ax.plot(x, y, style, color=colour, marker="o", markersize=3, linewidth=1.3, label=label or None)
                plotted = True
            if k == "ari":
                continue
            for j, other in enumerate(further_ks(run.rows, k)):  # the further clusterings (num_classes a list)
                x, y = curve_points(run, f"{k}_k{other}")
                if x:
                    label = " ".join(s for s in (run.label, what, f"k = {other}") if s)
                    ax.plot(x, y, ":", color=colour, marker="os^vD"[j % 5], markersize=3, linewidth=1.0, alpha=0.7,
                            label=label)
                    plotted = further = True
        if run.selected is not None:
            ax.axvline(run.selected, color=colour, linestyle=":", linewidth=1.2)
    if not plotted:  # (the dotted line of the chosen epoch is no data)
        ax.text(0.5, 0.5, "no labels" if key == "labels" else "not yet", ha="center", va="center",
                transform=ax.transAxes, color="grey")
    elif len(runs) > 1 or key == "labels" or further:
        ax.legend(fontsize=7)
    ax.set_title(name, fontsize=10)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def plot_curves(runs, out, title=None):
    """One PNG of the curves of one or more runs (list of Curves): loss, nmi_prev, NMI/ARI against the labels, the
    k-means loss, training images/s and seconds per epoch; a dotted line marks the epoch select_epoch chose.
    Written atomically (a temporary file renamed over `out`). Returns `out`."""
    from matplotlib.figure import Figure  # the Agg canvas, without pyplot's global state
    fig = Figure(figsize=(12, 6.4))
    axes = fig.subplots(2, 3, sharex=True)
    for ax, (key, name) in zip(axes.flat, CURVE_PANELS):
        draw_panel(ax, runs, key, name)
    for ax in axes[-1]:
        ax.set_xlabel("epochs trained (0: the random network)", fontsize=8)
    chosen = [r.selected for r in runs if r.selected is not None]
    sub = title or ""
    if len(runs) == 1 and chosen:
        sub += ("; " if sub else "") + f"dotted: the network after epoch {chosen[0]}, chosen by select_epoch"
    if sub:
        fig.suptitle(sub, fontsize=10)
    fig.tight_layout()
    out = os.path.abspath(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    for stale in glob.glob(glob.escape(out) + ".tmp.*"):  # left by a kill during an earlier write
        os.remove(stale)
    tmp = f"{out}.tmp.{os.getpid()}"
    try:
        fig.savefig(tmp, dpi=90, format="png")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out


def chosen_epoch(selected, rule, epochs_done):
    """The network select_epoch chose, in epochs trained: the run's stored choice (checkpoint field `selected`,
    {rule, epoch, score} or None), or with rule "last" the last epoch done."""
    if rule == "last":
        return epochs_done
    return int(selected["epoch"]) if selected else None


def read_run(exp_dir, label=""):
    """Curves of a run folder (or a metrics.jsonl file): its rows, and from its checkpoint, when there is one, the last
    clustering and the chosen epoch. Raises errors.UserError (one line) when there are no rows."""
    folder, path = (exp_dir, os.path.join(exp_dir, "metrics.jsonl")) if os.path.isdir(exp_dir) else (
        os.path.dirname(exp_dir), exp_dir)
    if not os.path.exists(path):
        raise UserError(f"'{printable(path)}' not found; pass an exp_dir of a run that trained at least one epoch")
    rows = read_metrics(path)
    if not rows:
        raise UserError(f"{printable(path)} has no epochs yet")
    final = selected = None
    ckpt_file = os.path.join(folder, CHECKPOINT)
    if os.path.exists(ckpt_file):
        try:
            ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=True, mmap=True)
            final = ckpt.get("clustering_metrics")
            selected = chosen_epoch(ckpt.get("selected"), (ckpt.get("cfg") or {}).get("select_epoch"),
                                    int(ckpt["epoch"]))
        except Exception:  # a checkpoint that cannot be read only loses the marks
            pass
    return Curves(rows, final, selected, label)


# ---------------------------------------------------------------- training gain

# How much the chosen network's silhouette must exceed the start's for training to count as having helped. Measured
# (docs/results.md, "Features against no learning"): on 2,000 Fashion-MNIST images, where training gained NMI against
# the labels, the silhouette rose 2.2-2.4-fold; on collections of 120-400 images, where training lost 0.09-0.13 NMI
# against its random start, it still rose, but only 1.27-1.30-fold. A rise alone does not tell.
CLEARER_RATIO = 1.5


def training_gain(rows, ckpt):
    """Did training make the clusters of the run's own images clearer than those of the network it started from,
    without labels? rows: the run's metrics.jsonl rows (epoch 0 holds the clustering of the starting network);
    ckpt: its checkpoint dict (the chosen epoch, `selected`, and the clustering of the last network). The silhouette
    of the first k-means partition in the whitened space (metrics.silhouette) of both. Returns
    {start, trained, epoch, k, n_images, start_network: "random" or the cfg init path, clearer: bool} or None where a
    score is missing (a run of an earlier layout, sharded k-means, no epoch trained, or no checkpoint: ckpt None)."""
    if not ckpt:
        return None
    first = next((r for r in rows if r.get("epoch") == 0), None)
    epochs = int(ckpt["epoch"])
    cfg = ckpt.get("cfg") or {}
    epoch = chosen_epoch(ckpt.get("selected"), cfg.get("select_epoch"), epochs) or epochs
    chosen = ckpt.get("clustering_metrics") if epoch == epochs else next(
        (r for r in rows if r.get("epoch") == epoch), None)
    if epochs < 1 or first is None or chosen is None or None in (first.get("silhouette"), chosen.get("silhouette")):
        return None
    start, trained = float(first["silhouette"]), float(chosen["silhouette"])
    n = int(ckpt["assignment"].numel()) if ckpt.get("assignment") is not None else None
    return {"start": start, "trained": trained, "epoch": epoch, "k": chosen.get("clusters_found"), "n_images": n,
            "start_network": cfg.get("init") or "random", "clearer": trained > start and trained >= start + (CLEARER_RATIO - 1) * abs(start)}


def training_gain_line(gain):
    """training_gain in one line for train.log and the page."""
    start = "the random start's" if gain["start_network"] == "random" else "the starting network's (init)"
    where = f"on the run's {gain['n_images']:,} training images" if gain.get("n_images") else "on the run's images"
    line = (f"without labels, {where}: the clusters of the network after epoch {gain['epoch']} "
            f"have silhouette {gain['trained']:.3f}, {start} {gain['start']:.3f} (k-means, k = {gain['k']}, both "
            "in the whitened space; -1 to 1, higher: images nearer their own cluster than the next one)")
    if gain["clearer"]:
        return line + (f"; at least {CLEARER_RATIO:g} times the start's, as where training helped in our measurements "
                       "(a sign, not a proof, that the clusters are closer to your own categories)")
    if gain["start_network"] == "random":
        return (line + f"; less than {CLEARER_RATIO:g} times the random start's, as where training did not help in our "
                "measurements: a pretrained start is likely the better one (--init, README 'Starting from pretrained "
                "weights')")
    return line + f"; less than {CLEARER_RATIO:g} times the starting network's: training may not have helped"


# ---------------------------------------------------------------- TensorBoard

def tensorboard_writer():
    """torch.utils.tensorboard's SummaryWriter class; errors.ConfigError (one line) when the tensorboard package is
    not installed. Asked before any work, so that a missing package stops a run before it writes anything."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("tensorboard true needs the tensorboard package, which is not installed: "
                          "pip install tensorboard, or --tensorboard false") from None
    return SummaryWriter


def open_tensorboard(log_dir):
    """A SummaryWriter on log_dir (which it creates); errors.ConfigError as tensorboard_writer."""
    return tensorboard_writer()(log_dir)


def log_scalars(writer, row):
    """Every number of a metrics.jsonl row as a scalar at step = epochs trained (training values of row e at e + 1,
    those of the clustering it trained on at e, as on curves.png)."""
    for key, value in row.items():
        if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
            step = row["epoch"] + (0 if is_clustering_key(key) else 1)
            writer.add_scalar(f"{'clustering' if is_clustering_key(key) else 'train'}/{key}", value, step)
    writer.flush()
