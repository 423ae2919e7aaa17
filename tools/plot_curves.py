"""The curves train.py writes to exp_dir/curves.png after every epoch, drawn again for one or more runs.

    python tools/plot_curves.py exp/fashion_mnist_small --out curves.png --title "the sample, seed 31"
    python tools/plot_curves.py exp/run_a exp/run_b --labels "paper head" "matched head" --out cmp.png

Six panels against the epochs trained (curves.plot_curves): training loss, NMI with the previous clustering,
NMI and ARI of the clustering against the labels (needs class folders), the k-means loss, training images/s and
seconds per epoch; a dotted line marks the epoch select_epoch chose (read from the run's checkpoint). Each
argument is an exp_dir (or a metrics.jsonl file).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import curves  # noqa: E402
from errors import UserError  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="exp_dir(s) or metrics.jsonl file(s)")
    p.add_argument("--labels", nargs="+", help="one legend label per run (default: the folder names)")
    p.add_argument("--out", default="curves.png", help="PNG to write")
    p.add_argument("--title", default=None)
    a = p.parse_args(argv)
    if a.labels and len(a.labels) != len(a.runs):
        raise UserError(f"{len(a.runs)} runs but {len(a.labels)} labels")
    labels = a.labels or ([os.path.basename(os.path.normpath(r)) for r in a.runs] if len(a.runs) > 1 else [""])
    curves.plot_curves([curves.read_run(r, label) for r, label in zip(a.runs, labels)], a.out, a.title)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
