"""Do fc7 features held in float16 or bfloat16 (cfg feature_dtype) cluster as the float32 ones do? The measurement
behind feature_dtype: the features of the shipped sample's 2,000 training images (a random VGG16-BN + Sobel, or
the network of a checkpoint), rounded to each half dtype, PCA-whitened and clustered with the training step's
k-means (5 seeds each, equal_size off): the NMI between the half and the float32 partitions of the same seed
(beside the NMI between float32 partitions of two seeds), the k-means loss ratio, and the NMI of each with the
classes. It also checks that features computed under autocast (amp, as on
CUDA; here the CPU's bfloat16 autocast) are bfloat16 values already, so that feature_dtype auto loses nothing.
About 15 minutes on 2 CPU cores.

    python tools/feature_dtype.py [--checkpoint exp/fashion_mnist_small/checkpoint.pth.tar] [--out rows.jsonl]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import clustering  # noqa: E402
import metrics  # noqa: E402
from dataset import ClusterDataset, eval_transform  # noqa: E402
from engine import compute_features, make_loader  # noqa: E402
from models import HEAD_PREFIXES, build_model  # noqa: E402

SAMPLE = os.path.join(ROOT, "data", "fashion_mnist_small", "train")
SETTINGS = [(16, 10), (64, 100), (256, 100)]  # (pca_dim, k): the defaults, and overclustering as the paper does
SEEDS = 5
CPU = torch.device("cpu")


def network(checkpoint):
    """VGG16-BN + Sobel at 32 px without its head: random (seed 31) or the weights of a train.py checkpoint."""
    torch.manual_seed(31)
    model = build_model("vgg16", True, 0, 32)
    if checkpoint:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state = ckpt.get("ema_state_dict") or ckpt["state_dict"]  # the network the run clustered with
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)})
    return model.eval()


def features(model, autocast=False):
    """fc7 of the 2,000 sample images (float32), computed in float32 or under the CPU's bfloat16 autocast."""
    ds = ClusterDataset(SAMPLE, eval_transform(32), log=lambda m: None)
    loader = make_loader(ds, {"batch_size": 100, "workers": 0}, CPU)
    return compute_features(loader, model, CPU, False, torch.bfloat16 if autocast else None), ds.labels


def partitions(x, labels):
    """{(pca_dim, k, seed): (assignment, loss)} of the features x (a tensor of any float dtype)."""
    out = {}
    for pca_dim, k in SETTINGS:
        for seed in range(SEEDS):
            km = clustering.Kmeans(k, pca_dim, 20, "torch", 1, device=CPU)
            out[pca_dim, k, seed] = km.cluster(x, seed=seed), km.loss
    return out


def compare(reference, labels, held, name):
    """Rows comparing the partitions of the held features with the float32 ones of the same seed; beside them
    the NMI between the float32 partitions of two seeds (seed and seed + 1), the spread k-means has anyway."""
    rows = []
    for (pca_dim, k, seed), (b, loss_b) in held.items():
        a, loss_a = reference[pca_dim, k, seed]
        other = reference[pca_dim, k, (seed + 1) % SEEDS][0]
        rows.append({"dtype": name, "pca_dim": pca_dim, "k": k, "seed": seed, "nmi_between": metrics.nmi(a, b),
                     "nmi_other_seed": metrics.nmi(a, other), "loss_ratio": loss_b / loss_a,
                     "nmi_classes_float32": metrics.nmi(labels, a), "nmi_classes_half": metrics.nmi(labels, b)})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="", help="a train.py checkpoint whose network computes the features")
    p.add_argument("--out", help="also write one JSON object per (dtype, setting, seed) to this file")
    a = p.parse_args(argv)
    model = network(a.checkpoint)
    x, labels = features(model)
    amp, _ = features(model, autocast=True)
    exact = bool(np.array_equal(torch.from_numpy(amp).bfloat16().float().numpy(), amp))
    print(f"features under bfloat16 autocast are bfloat16 values (held as bfloat16 without loss): {exact}")
    reference = partitions(torch.from_numpy(x), labels)
    rows = []
    for dtype in (torch.float16, torch.bfloat16):
        rows += compare(reference, labels, partitions(torch.from_numpy(x).to(dtype), labels), str(dtype)[6:])
    print(f"{'dtype':>9} {'pca_dim':>7} {'k':>4}  {'NMI half vs float32':>19}  {'float32, 2 seeds':>16}  "
          f"{'loss ratio':>17}  {'NMI classes f32 / half':>22}")
    for dtype in ("float16", "bfloat16"):
        for pca_dim, k in SETTINGS:
            group = [r for r in rows if r["dtype"] == dtype and r["pca_dim"] == pca_dim and r["k"] == k]
            nmi, ratio = [r["nmi_between"] for r in group], [r["loss_ratio"] for r in group]
            seeds = np.mean([r["nmi_other_seed"] for r in group])
            print(f"{dtype:>9} {pca_dim:>7} {k:>4}  {np.mean(nmi):.4f} (min {min(nmi):.4f})  {seeds:>16.4f}  "
                  f"{np.mean(ratio):.5f} ({min(ratio):.5f}-{max(ratio):.5f})  "
                  f"{np.mean([r['nmi_classes_float32'] for r in group]):.3f} / "
                  f"{np.mean([r['nmi_classes_half'] for r in group]):.3f}")
    if a.out:
        with open(a.out, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
