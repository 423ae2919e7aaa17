"""Mean and spread over seeds of an experiment by tools/fashion_mnist_experiment.sh.

    python tools/seed_summary.py exp/experiment_subset          # prints a markdown table, writes summary.md / .json
    python tools/seed_summary.py exp/experiment_a exp/experiment_b  # also one comparison row per experiment

Reads EXP/seed_<S>/ of every seed: random/pred/metrics.json (the random network),
trained/pred/metrics.json (the epoch select_epoch chose), trained/pred_last/metrics.json (the last
epoch), trained/linear_probe.json (probe of both networks), trained/metrics.jsonl, trained/checkpoint.pth.tar
(the clustering of the last epoch) and trained/train_seconds.txt. Every number is the mean +- the sample standard deviation over the seeds
(a single seed shows +- 0.000). "trained - random" is the mean of the per-seed differences.
"""
import argparse
import glob
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from checkpoint import read_metrics  # noqa: E402
from errors import UserError  # noqa: E402

SCORES = ("acc", "nmi", "ari")


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def label_best_epoch(seed_dir, chosen, last):
    """(epoch whose training clustering has the highest NMI against the labels, that NMI, the NMI of the epoch
    the run's rule chose): the rule judged by labels it never saw."""
    rows = read_metrics(os.path.join(seed_dir, "trained", "metrics.jsonl"))
    final = torch.load(os.path.join(seed_dir, "trained", "checkpoint.pth.tar"), map_location="cpu", mmap=True,
                       weights_only=True)["clustering_metrics"]
    nmi = {r["epoch"]: r["nmi"] for r in rows[1:]} | {last: final["nmi"]}  # row e: the clustering after e epochs
    best = max(nmi, key=lambda e: (nmi[e], -e))
    return best, nmi[best], nmi.get(chosen)


def seed_results(seed_dir):
    """One seed's numbers: scores of the three networks, the probe, the training time and the epochs."""
    pred = {name: read_json(os.path.join(seed_dir, *path, "metrics.json"))
            for name, path in (("random", ("random", "pred")), ("selected", ("trained", "pred")),
                               ("last", ("trained", "pred_last")))}
    probe = read_json(os.path.join(seed_dir, "trained", "linear_probe.json"))
    out = {name: {s: r[s] for s in SCORES} for name, r in pred.items()}
    out["random"]["probe"] = probe["random"]["test_acc"]
    out["selected"]["probe"] = probe["trained"]["test_acc"]  # eval_linear.py probes the chosen epoch
    out["last"]["probe"] = None
    with open(os.path.join(seed_dir, "trained", "train_seconds.txt"), encoding="utf-8") as f:
        out["train_seconds"] = int(f.read().split()[0])
    chosen, last = pred["selected"]["checkpoint_epoch"], pred["last"]["checkpoint_epoch"]
    best, best_nmi, chosen_nmi = label_best_epoch(seed_dir, chosen, last)
    out["epochs"] = {"chosen": chosen, "label_best": best, "label_best_nmi": best_nmi, "chosen_nmi": chosen_nmi,
                     "last": last}
    return out


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def cell(ms):
    return "-" if ms is None else f"{ms[0]:.3f} +- {ms[1]:.3f}"


def summarize(exp):
    dirs = sorted(glob.glob(os.path.join(glob.escape(exp), "seed_*")), key=lambda d: int(d.rsplit("_", 1)[1]))
    if not dirs:
        raise UserError(f"no seed_<S> folders in '{exp}'; run tools/fashion_mnist_experiment.sh first")
    try:
        per_seed = {int(d.rsplit("_", 1)[1]): seed_results(d) for d in dirs}
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"an unfinished seed in '{exp}' ({type(e).__name__}: {e}); re-run the experiment "
                         "to complete it") from None
    runs = list(per_seed.values())
    table = {name: {s: mean_std([r[name][s] for r in runs]) for s in SCORES + ("probe",)}
             for name in ("random", "selected", "last")}
    gain = {s: mean_std([r["selected"][s] - r["random"][s] for r in runs]) for s in SCORES}
    return {"seeds": list(per_seed), "per_seed": per_seed, "mean_std": table, "trained_minus_random": gain,
            "train_seconds": mean_std([r["train_seconds"] for r in runs])}


def markdown(summary):
    n = len(summary["seeds"])
    lines = [f"| network ({n} seeds: {', '.join(map(str, summary['seeds']))}) | ACC | NMI | ARI | linear probe top-1 |",
             "|---|---|---|---|---|"]
    names = {"random": "random network (epoch 0)", "selected": "trained, epoch chosen by select_epoch",
             "last": "trained, last epoch"}
    for key, title in names.items():
        row = summary["mean_std"][key]
        lines.append(f"| {title} | {cell(row['acc'])} | {cell(row['nmi'])} | {cell(row['ari'])} | {cell(row['probe'])} |")
    gain = summary["trained_minus_random"]
    lines.append(f"| trained (chosen) - random, per seed | {cell(gain['acc'])} | {cell(gain['nmi'])} | "
                 f"{cell(gain['ari'])} | - |")
    secs = summary["train_seconds"]
    lines.append("")
    lines.append(f"training time per seed: {secs[0]:.0f} +- {secs[1]:.0f} s")
    for seed, r in summary["per_seed"].items():
        e = r["epochs"]
        chosen_nmi = "-" if e["chosen_nmi"] is None else f"{e['chosen_nmi']:.3f}"
        lines.append(f"seed {seed}: chosen epoch {e['chosen']} of {e['last']} (training-clustering NMI {chosen_nmi}); "
                     f"label-best epoch {e['label_best']} (NMI {e['label_best_nmi']:.3f}); scored NMI random "
                     f"{r['random']['nmi']:.3f}, chosen {r['selected']['nmi']:.3f}, last {r['last']['nmi']:.3f}")
    return "\n".join(lines)


def comparison(summaries):
    """One row per experiment: NMI of the random network, of the chosen and of the last epoch, and the gain."""
    lines = ["| experiment | seeds | random NMI | trained NMI (chosen epoch) | trained NMI (last epoch) | "
             "trained ACC (chosen) | NMI gain over random |", "|---|---|---|---|---|---|---|"]
    for exp, s in summaries.items():
        t = s["mean_std"]
        lines.append(f"| {os.path.basename(os.path.normpath(exp))} | {len(s['seeds'])} | {cell(t['random']['nmi'])} | "
                     f"{cell(t['selected']['nmi'])} | {cell(t['last']['nmi'])} | {cell(t['selected']['acc'])} | "
                     f"{cell(s['trained_minus_random']['nmi'])} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exp", nargs="+", help="experiment folders (each holds seed_<S>/)")
    args = parser.parse_args(argv)
    summaries = {}
    for exp in args.exp:
        summaries[exp] = summary = summarize(exp)
        with open(os.path.join(exp, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
        text = markdown(summary)
        with open(os.path.join(exp, "summary.md"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        print(f"{exp}:\n{text}\n" if len(args.exp) > 1 else text)
    if len(args.exp) > 1:
        print(comparison(summaries))
    return summaries[args.exp[0]] if len(args.exp) == 1 else summaries


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
