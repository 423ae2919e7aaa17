"""Per-epoch curves of one or more runs from their metrics.jsonl, as one PNG.

    python tools/plot_curves.py exp/fashion_mnist --out docs/curves.png
    python tools/plot_curves.py exp/run_a exp/run_b --labels "paper head" "matched head" --out cmp.png

Three panels against the epoch: NMI of the clustering with the labels (the clustering that epoch
trained on; needs class folders), NMI with the previous epoch's clustering (stability), and the
training loss. Each argument is an exp_dir (or a metrics.jsonl file).
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from errors import UserError  # noqa: E402

PANELS = [("nmi", "NMI with the labels"), ("nmi_prev", "NMI with the previous clustering"), ("loss", "training loss")]


def read_rows(path):
    """The metrics rows of a run, in epoch order; a clear error when there are none."""
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    if not os.path.exists(path):
        raise UserError(f"'{path}' not found; pass an exp_dir of a run that trained at least one epoch")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise UserError(f"{path} line {n} is not JSON") from None
    if not rows:
        raise UserError(f"{path} has no epochs yet")
    return sorted(rows, key=lambda r: r["epoch"])


def series(rows, key):
    """(epochs, values) of one metric, skipping epochs where it is null (no labels, no re-clustering)."""
    pts = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot(runs, out, title=None):
    """runs: list of (label, rows). Writes the PNG and returns the figure's panel count."""
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    for ax, (key, name) in zip(axes, PANELS):
        for label, rows in runs:
            x, y = series(rows, key)
            if x:
                ax.plot(x, y, marker="o", markersize=3, linewidth=1.4, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if key != "loss":
            ax.set_ylim(0, 1)
    if len(runs) > 1:
        axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return len(PANELS)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="exp_dir(s) or metrics.jsonl file(s)")
    p.add_argument("--labels", nargs="+", help="one legend label per run (default: the folder names)")
    p.add_argument("--out", default="curves.png", help="PNG to write")
    p.add_argument("--title", default=None)
    a = p.parse_args(argv)
    if a.labels and len(a.labels) != len(a.runs):
        raise UserError(f"{len(a.runs)} runs but {len(a.labels)} labels")
    labels = a.labels or [os.path.basename(os.path.normpath(r)) for r in a.runs]
    plot([(label, read_rows(r)) for label, r in zip(labels, a.runs)], a.out, a.title)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
