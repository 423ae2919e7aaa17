"""Linear probe of the learned representation: `python eval_linear.py [--baseline true] [--key value ...]`.

Freezes the trained network (eval mode, BN frozen), takes the output of conv block
`probe_layer`, average-pools it to at most `probe_dims` values, and trains one linear layer
with SGD on the labelled training images; reports top-1 on the test images. A k-NN
classifier (cosine, k = 20, or every training image when fewer) on the fc7 features is a second,
cheaper number. With `--baseline true` the same is measured for a randomly initialised network
of the same arch.
Writes exp_dir/linear_probe.json.

Deviation from the reference probe, for speed on a CPU: the frozen features are computed
once per image (centre crop, no augmentation) and cached, and standardised with the
training set's mean and std (the std floored, see standardise) before the linear layer.
"""
if __name__ == "__main__":
    import cfg
    cfg.answer_help("eval_linear")  # before torch and faiss load: --help answers at once

import json
import os

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler
from torch import nn

import gpu_input
from cfg import load_cfg
from checkpoint import load_model, run_settings
from dataset import eval_transform, file_identities, open_split, split_indices
from engine import compute_features, make_loader
from errors import ConfigError, DataError
from models import build_model

KNN_K = 20


def block_end(model, arch, layer):
    """Where conv block `layer` (1-based) of the model ends in model.features; the one check of probe_layer."""
    ends = model.block_ends
    if not 1 <= layer <= len(ends):
        raise ConfigError(f"'probe_layer' must be 1-{len(ends)} for {arch}, got {layer}")
    return ends[layer - 1]


class BlockProbe(nn.Module):
    """sobel -> features[:end] -> adaptive average pool to at most `max_dims` values -> flatten."""

    def __init__(self, model, arch, layer, max_dims, input_size):
        super().__init__()
        self.sobel = model.sobel
        self.body = model.features[:block_end(model, arch, layer)]
        with torch.no_grad():
            shape = self._convs(torch.zeros(1, 3, input_size, input_size)).shape
        channels, side = shape[1], shape[2]
        s = max(1, min(side, int((max_dims / channels) ** 0.5)))
        self.pool = nn.AdaptiveAvgPool2d(s)
        self.dims = channels * s * s

    def _convs(self, x):
        return self.body(self.sobel(x) if self.sobel is not None else x)

    def forward(self, x):
        return torch.flatten(self.pool(self._convs(x)), 1)


def standardise(x_train, x_test):
    """(x_train, x_test) as float32 z-scores: minus the training rows' mean (scikit-learn's StandardScaler), divided
    by each dimension's standard deviation over the training rows, floored at the root mean square of those
    deviations over all dimensions. On a few labelled images many dimensions are constant or fire on one image
    (a ReLU): divided by their own ~0 deviation, a test row's small value there became |z| ~ 1e4 and drowned the
    rest; with the floor no |z| exceeds |x - mean| / (the features' typical deviation)."""
    scaler = StandardScaler().fit(x_train.astype(np.float64))
    scale = np.maximum(np.sqrt(scaler.var_), np.sqrt(scaler.var_.mean()) or 1.0)
    return tuple(((x.astype(np.float64) - scaler.mean_) / scale).astype(np.float32) for x in (x_train, x_test))


def train_linear(x_train, y_train, x_test, y_test, n_classes, c, seed):
    """SGD (momentum 0.9) on standardised frozen features (standardise); x_* (n, d) float32, y_* (n,) int64.
    Returns (final train acc, best test acc), fractions in [0, 1]."""
    xtr, xte = (torch.from_numpy(x) for x in standardise(x_train, x_test))
    ytr, yte = torch.from_numpy(y_train), torch.from_numpy(y_test)
    gen = torch.Generator().manual_seed(seed)
    linear = nn.Linear(xtr.shape[1], n_classes)
    linear.weight.data.normal_(0, 0.01, generator=gen)
    linear.bias.data.zero_()
    opt = torch.optim.SGD(linear.parameters(), lr=c["probe_lr"], momentum=0.9, weight_decay=c["probe_weight_decay"])
    best_test = 0.0
    for _ in range(c["probe_epochs"]):
        for idx in torch.randperm(len(xtr), generator=gen).split(256):
            loss = nn.functional.cross_entropy(linear(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            best_test = max(best_test, (linear(xte).argmax(1) == yte).float().mean().item())
    with torch.no_grad():
        train_acc = (linear(xtr).argmax(1) == ytr).float().mean().item()
    return train_acc, best_test


def knn_k(n_train, k=KNN_K):
    """The k the k-NN really uses: KNN_K, or every training image when there are fewer."""
    return min(k, n_train)


def knn_accuracy(f_train, y_train, f_test, y_test, n_classes, k=KNN_K):
    """Cosine k-NN (k = knn_k(len(f_train), k)) with similarity-weighted votes on L2-normalised features."""
    a = torch.nn.functional.normalize(torch.from_numpy(f_train), dim=1)
    b = torch.nn.functional.normalize(torch.from_numpy(f_test), dim=1)
    k = knn_k(len(a), k)
    sim, nn_idx = (b @ a.T).topk(k, dim=1)
    votes = torch.zeros(len(b), n_classes)
    votes.scatter_add_(1, torch.from_numpy(y_train)[nn_idx], sim.clamp(min=0) + 1e-6)
    return float((votes.argmax(1).numpy() == y_test).mean())


def probe_network(model, train_set, test_set, c, device):
    model = model.to(device).eval()
    probe = BlockProbe(model, c["arch"], c["probe_layer"], c["probe_dims"], c["input_size"]).to(device)
    train_loader, test_loader = make_loader(train_set, c, device), make_loader(test_set, c, device)
    x_train = compute_features(train_loader, probe, device, c["verbose"], dim=probe.dims)
    x_test = compute_features(test_loader, probe, device, c["verbose"], dim=probe.dims)
    n_classes = len(train_set.classes)
    train_acc, test_acc = train_linear(x_train, train_set.labels, x_test, test_set.labels, n_classes, c, c["seed"])
    model.remove_head()
    knn = knn_accuracy(compute_features(train_loader, model, device, c["verbose"]), train_set.labels,
                       compute_features(test_loader, model, device, c["verbose"]), test_set.labels, n_classes)
    return {"dims": probe.dims, "train_acc": train_acc, "test_acc": test_acc, "knn_acc": knn}


def probe_split(c, train_set, test_set):
    """(probe training images, probe test images, their description): the probe never tests on an image it
    trained on. When the test images are the run's training images (a run on its own labelled folder), the
    probe holds out val_split of them itself; when some are, those are left out of the probe's training.
    `n_test_trained_on` counts the test images the network itself trained on (without their labels)."""
    trained = set(file_identities(train_set.paths))
    seen = np.array([ident in trained for ident in file_identities(test_set.paths)], dtype=bool)
    source = c["test_path"] or f"val_split {c['val_split']} held out of dataset_path"
    if not seen.any():
        return train_set, test_set, {"test_images": source, "n_test_trained_on": 0}
    if seen.all():
        if not c["val_split"]:
            raise DataError("the test images are the run's training images and val_split is 0: the probe needs "
                            "images it does not train on; set --val_split (e.g. 0.1) or a --test_path of other images")
        keep, held = split_indices(train_set.labels, c["val_split"], c["seed"])
        print(f"note: the test images are the run's training images: the probe holds out val_split {c['val_split']} "
              f"({len(held)} images) to test on; the network trained on them without labels")
        return train_set.subset(keep), train_set.subset(held), {
            "test_images": f"val_split {c['val_split']} held out of the training images by the probe",
            "n_test_trained_on": len(held)}
    tested = set(file_identities(np.asarray(test_set.paths, dtype=object)[seen]))
    keep = [i for i, ident in enumerate(file_identities(train_set.paths)) if ident not in tested]
    print(f"note: {int(seen.sum())} of the {len(test_set)} test images are training images of the run: the probe "
          "leaves them out of its training; the network trained on them without labels")
    return train_set.subset(keep), test_set, {"test_images": source, "n_test_trained_on": int(seen.sum())}


def summary_lines(result):
    """One line per probed network: linear top-1 (and train), fc7 k-NN."""
    return [f"{name:>8}: block {result['layer']} ({r['dims']} dims) linear top-1 test {r['test_acc']:.3f} "
            f"(train {r['train_acc']:.3f}), fc7 {result['knn_k']}-NN {r['knn_acc']:.3f}"
            for name, r in result.items() if name in ("trained", "random")]


def evaluate(c, device="cpu", given=None):
    """The probe of the run of c's exp_dir (or ckpt_path); keys not in `given` come from that run."""
    device = torch.device(device)
    c, ckpt = run_settings(c, given, "eval_linear.py")
    model = load_model(c, device, ckpt)
    block_end(model, c["arch"], c["probe_layer"])  # a bad probe_layer stops before the data is read
    gpu_input.gpu_decode(c, device)  # and a decode_device this machine cannot do
    transform = eval_transform(c["input_size"])
    train_set, test_set = open_split(c, "train", transform), open_split(c, "test", transform)
    for name, ds in (("training", train_set), ("test", test_set)):
        if not ds.has_labels:
            why = " (labels none: the folders are not classes)" if c["labels"] == "none" else ""
            raise DataError(f"the linear probe needs class folders; the {name} images have none{why}")
    if train_set.classes != test_set.classes:
        raise DataError(f"training classes {train_set.classes} differ from test classes {test_set.classes}")
    train_set, test_set, split = probe_split(c, train_set, test_set)
    result = {"layer": c["probe_layer"], "epochs": c["probe_epochs"], "n_train": len(train_set),
              "n_test": len(test_set), **split, "checkpoint_epoch": int(ckpt["epoch"]), "knn_k": knn_k(len(train_set))}
    result["trained"] = probe_network(model, train_set, test_set, c, device)
    if c["baseline"]:
        torch.manual_seed(c["seed"])
        random_model = build_model(c["arch"], c["sobel"], out=0, input_size=c["input_size"])
        result["random"] = probe_network(random_model, train_set, test_set, c, device)
    path = os.path.join(c["exp_dir"], "linear_probe.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print("\n".join(summary_lines(result)) + f"\nwrote {path}")
    return result


def main(device="cpu", argv=None):
    given = set()
    c = load_cfg(argv, script="eval_linear", given=given)
    return evaluate(c, device, given)


if __name__ == "__main__":
    main("cpu")
