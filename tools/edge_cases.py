"""Edge-case sweep: every entry script with empty, tiny, huge and wrong-kind values, each run as a
user would run it (a fresh process), printed as the table of docs/reliability.md, "Edge cases".

    python tools/edge_cases.py [--out table.md]

An outcome is "ok" (exit 0) or the one line the program ended with; a traceback or a run past
the time limit is reported as such, so that the table shows every case that still goes wrong.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from models import build_model  # noqa: E402

FAST = ["--input_size", "32", "--batch_size", "8", "--pca_dim", "8", "--kmeans_niter", "5", "--verbose", "false"]


def images(folder, n, seed=0):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(os.path.join(folder, f"{i:03d}.png"))
    return folder


def trees(base):
    """The data the cases point at, all below base."""
    t = {"base": base, "empty": os.path.join(base, "empty"), "file": os.path.join(base, "a_file.txt")}
    os.makedirs(t["empty"])
    open(t["file"], "w").write("x")
    t["one"] = os.path.dirname(images(os.path.join(base, "one", "only_class"), 1))
    t["one_class"] = os.path.dirname(images(os.path.join(base, "one_class", "c"), 6))
    t["flat"] = images(os.path.join(base, "flat"), 6)
    t["tree"] = base + "/tree"
    for c in range(3):
        images(os.path.join(t["tree"], f"class_{c}"), 6, seed=c)
    bad = os.path.join(base, "bad", "c")
    os.makedirs(bad)
    for i in range(3):
        open(os.path.join(bad, f"{i}.png"), "wb").write(b"not a png")
    t["bad"] = os.path.dirname(bad)
    foreign = os.path.join(base, "foreign")
    os.makedirs(foreign)
    open(os.path.join(foreign, "thesis.tex"), "w").write("x")
    t["foreign"] = foreign
    t["state_dict"] = os.path.join(base, "weights.pth")
    torch.save({"features.0.weight": torch.zeros(1)}, t["state_dict"])
    t["other_tree"] = base + "/other_tree"  # as many images as tree, other files
    for c in range(3):
        images(os.path.join(t["other_tree"], f"kind_{c}"), 6, seed=10 + c)
    t["empty_class"] = base + "/empty_class"
    for c in range(2):
        images(os.path.join(t["empty_class"], f"class_{c}"), 6, seed=c)
    os.makedirs(os.path.join(t["empty_class"], "class_2_empty"))
    t["latin1"] = os.path.join(base, "latin1.json")
    open(t["latin1"], "wb").write('{"dataset_path": "donn\u00e9es"}'.encode("latin-1"))
    t["alexnet"] = os.path.join(base, "deepcluster_alexnet.pth.tar")
    torch.save({"epoch": 500, "arch": "alexnet", "state_dict": deepcluster_alexnet_state()}, t["alexnet"])
    t.update(awkward_images(base))
    return t


def awkward_images(base):
    """Trees of the kinds public bug reports describe: copies of one picture (12 beside 3 others, 20 beside 3), float TIFFs with nodata pixels, a
    damaged JPEG that still decodes, and one image file on its own."""
    t = {"copies": images(os.path.join(base, "copies"), 3, seed=7)}
    rng = np.random.default_rng(8)
    burst = rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)
    for i in range(12):
        Image.fromarray(burst).save(os.path.join(t["copies"], f"burst_{i:02d}.png"))
    t["copies20"] = images(os.path.join(base, "copies20"), 3, seed=10)
    for i in range(20):
        Image.fromarray(burst).save(os.path.join(t["copies20"], f"burst_{i:02d}.png"))
    t["nodata"] = os.path.join(base, "nodata")
    os.makedirs(t["nodata"])
    for i in range(6):
        arr = rng.normal(size=(36, 36)).astype(np.float32) * (i + 1)
        arr[:4, :4] = np.nan
        arr[-1, -1] = np.inf
        Image.fromarray(arr, mode="F").save(os.path.join(t["nodata"], f"band_{i}.tif"))
    t["damaged"] = images(os.path.join(base, "damaged"), 5, seed=9)
    jpeg = os.path.join(t["damaged"], "cut.jpg")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(jpeg, quality=90)
    data = open(jpeg, "rb").read()
    open(jpeg, "wb").write(data[:-2] + b"\x00\x00\x00" + data[-2:])  # bytes before the end marker: libjpeg warns
    t["one_file"] = os.path.join(images(os.path.join(base, "single"), 1), "000.png")
    return t


def strip_layout(ok_exp, old_exp):
    """A copy of the run ok_exp whose checkpoint lacks the keys added to the layout since the first version."""
    import shutil
    shutil.rmtree(old_exp, ignore_errors=True)
    shutil.copytree(ok_exp, old_exp)
    path = os.path.join(old_exp, "checkpoint.pth.tar")
    ckpt = torch.load(path, weights_only=True)
    for key in ("cfg", "optimizer", "rng", "cluster_offsets", "data_fingerprint", "clustering_metrics", "selected",
                "ema_state_dict", "clustering_state_dict", "metrics", "classes"):
        ckpt.pop(key, None)
    torch.save(ckpt, path)


def deepcluster_alexnet_state():
    """Tensors with the names and shapes of DeepCluster's published AlexNet + Sobel file (224 px, 10,000 clusters)."""
    state = build_model("alexnet", True, 10000, 224).state_dict()
    return {(k.replace("features.", "features.module.", 1) if k.startswith("features.") else k): v
            for k, v in state.items() if not k.endswith("num_batches_tracked")}


def cases(t):
    """(script, case, arguments) in the order they run: the train.py cases prepare the runs of the others."""
    exp, ok_exp = os.path.join(t["base"], "exp_new"), os.path.join(t["base"], "exp_ok")
    run = ["--dataset_path", t["tree"], "--exp_dir", ok_exp, "--num_classes", "3", *FAST]
    pred = [*run, "--test_path", t["tree"], "--pred_dir", os.path.join(t["base"], "pred")]
    return train_cases(t, exp, run) + resume_and_data_cases(t, exp, run) + pred_cases(t, exp, ok_exp, pred) + [
        ("eval_linear.py", "test images = the training images (the probe holds out val_split)",
         [*run, "--test_path", t["tree"], "--probe_epochs", "2"]),
        ("eval_linear.py", "test images = the training images, val_split 0",
         [*run, "--test_path", t["tree"], "--val_split", "0"]),
        ("eval_linear.py", "probe_layer 9", [*run, "--test_path", t["tree"], "--probe_layer", "9"]),
        ("eval_linear.py", "test images without classes", [*run, "--test_path", t["flat"]]),
        ("eval_linear.py", "probe_epochs 0", [*run, "--test_path", t["tree"], "--probe_epochs", "0"]),
        ("train_cuda.py", "no GPU on the machine", run),
    ]


def train_cases(t, exp, run):
    return [
        ("train.py", "no flags beyond a tree (prepares the runs below)", [*run, "--num_epoch", "1"]),
        ("train.py", "dataset_path empty", ["--dataset_path", "", *FAST]),
        ("train.py", "dataset_path missing", ["--dataset_path", t["base"] + "/nope", "--exp_dir", exp, *FAST]),
        ("train.py", "dataset_path is a file", ["--dataset_path", t["file"], "--exp_dir", exp, *FAST]),
        ("train.py", "dataset_path an empty folder", ["--dataset_path", t["empty"], "--exp_dir", exp, *FAST]),
        ("train.py", "one image, one class", ["--dataset_path", t["one"], "--exp_dir", exp, *FAST]),
        ("train.py", "one class of 6 images, k = 2", ["--dataset_path", t["one_class"], "--exp_dir", exp + "1",
                                                      "--num_classes", "2", "--num_epoch", "1", *FAST]),
        ("train.py", "flat folder (no classes), k = 2", ["--dataset_path", t["flat"], "--exp_dir", exp + "2",
                                                         "--num_classes", "2", "--num_epoch", "1", *FAST]),
        ("train.py", "only unreadable image files", ["--dataset_path", t["bad"], "--exp_dir", exp, *FAST]),
        ("train.py", "num_classes huge (10^6)", [*run, "--exp_dir", exp, "--num_classes", "1000000"]),
        ("train.py", "num_classes 1", [*run, "--exp_dir", exp, "--num_classes", "1"]),
        ("train.py", "num_classes list with 0", [*run, "--exp_dir", exp, "--num_classes", "10,0"]),
        ("train.py", "num_classes list with a k twice", [*run, "--exp_dir", exp, "--num_classes", "3,3"]),
        ("train.py", "num_classes list not integers", [*run, "--exp_dir", exp, "--num_classes", "3,x"]),
        ("train.py", "num_classes list empty", [*run, "--exp_dir", exp, "--num_classes", ","]),
        ("train.py", "num_classes list with PIC", [*run, "--exp_dir", exp, "--num_classes", "2,3",
                                                    "--clustering", "pic"]),
        ("train.py", "num_classes list above the images", [*run, "--exp_dir", exp, "--num_classes", "3,50"]),
        ("train.py", "pca_fit_samples 1", [*run, "--exp_dir", exp, "--pca_fit_samples", "1"]),
        ("train.py", "pca_fit_samples 2 (a fit sample of 2 images, with a log line)",
         [*run, "--exp_dir", exp + "_fit", "--pca_fit_samples", "2", "--num_epoch", "0"]),
        ("train.py", "clustering_space tsne", [*run, "--exp_dir", exp, "--clustering_space", "tsne"]),
        ("train.py", "clustering_space umap with PIC", [*run, "--exp_dir", exp, "--clustering_space", "umap",
                                                         "--clustering", "pic"]),
        ("train.py", "views 0", [*run, "--exp_dir", exp, "--views", "0"]),
        ("train.py", "batch_size huge (10^5)", [*run, "--exp_dir", exp + "3", "--batch_size", "100000",
                                                "--num_epoch", "1"]),
        ("train.py", "pca_dim huge (10^5)", [*run, "--exp_dir", exp + "4", "--pca_dim", "100000", "--num_epoch", "1"]),
        ("train.py", "input_size 31", [*run, "--exp_dir", exp, "--input_size", "31"]),
        ("train.py", "input_size 100000", [*run, "--exp_dir", exp, "--input_size", "100000"]),
        ("train.py", "input_size abc", [*run, "--exp_dir", exp, "--input_size", "abc"]),
        ("train.py", "lr nan", [*run, "--exp_dir", exp, "--lr", "nan"]),
        ("train.py", "lr -1", [*run, "--exp_dir", exp, "--lr", "-1"]),
        ("train.py", "lr 1e12 (diverges)", [*run, "--exp_dir", exp + "5", "--lr", "1e12", "--num_epoch", "2"]),
        ("train.py", "workers 1000", [*run, "--exp_dir", exp, "--workers", "1000"]),
        ("train.py", "exp_dir empty", [*run, "--exp_dir", ""]),
        ("train.py", "exp_dir is a file", [*run, "--exp_dir", t["file"]]),
        ("train.py", "arch resnet", [*run, "--exp_dir", exp, "--arch", "resnet"]),
        ("train.py", "unknown key --epochs", [*run, "--exp_dir", exp, "--epochs", "3"]),
        ("train.py", "--config missing file", [*run, "--config", t["base"] + "/none.json"]),
        ("train.py", "--config file that is not JSON", [*run, "--config", t["file"]]),
        ("train.py", "num_epoch 0", [*run, "--exp_dir", exp + "6", "--num_epoch", "0"]),
        ("train.py", "val_split 0.99, test_path empty", [*run, "--exp_dir", exp + "7", "--test_path", "",
                                                         "--val_split", "0.99", "--num_epoch", "1"]),
    ]


def resume_and_data_cases(t, exp, run):
    return [
        ("train.py", "same run again (finished)", [*run, "--num_epoch", "1"]),
        ("train.py", "resume with another select_epoch, nothing else kept (re-chosen, with a log line)",
         [*run, "--num_epoch", "1", "--select_epoch", "kmeans_loss"]),
        ("train.py", "resume with another input_size", [*run, "--num_epoch", "2", "--input_size", "64"]),
        ("train.py", "resume on other images (same count)", [*run, "--num_epoch", "2", "--dataset_path",
                                                              t["other_tree"]]),
        ("train.py", "a class folder without images (2 classes counted)", [*run, "--exp_dir", exp + "8",
                                                                           "--dataset_path", t["empty_class"],
                                                                           "--num_epoch", "0"]),
        ("train.py", "--config file that is not UTF-8", [*run, "--config", t["latin1"]]),
        ("train.py", "num_classes above the images left after val_split", [*run, "--exp_dir", exp, "--test_path", "",
                                                                           "--val_split", "0.5", "--num_classes", "10"]),
        ("train.py", "PIC with num_classes above the images", [*run, "--exp_dir", exp + "9", "--clustering", "pic",
                                                               "--num_classes", "50", "--num_epoch", "0"]),
        ("train.py", "--init a file in DeepCluster's AlexNet layout at input_size 64", [*run, "--exp_dir", exp + "10",
                                                                            "--arch", "alexnet", "--input_size", "64",
                                                                            "--init", t["alexnet"], "--num_epoch", "0"]),
        ("train.py", "20 copies of one picture and 3 others, k = 6, pca_dim 0 (3 dimensions, with a log line)",
         [*run, "--exp_dir", exp + "_copies", "--dataset_path", t["copies20"], "--num_classes", "6", "--pca_dim", "0",
          "--num_epoch", "0"]),
        ("train.py", "12 copies of one picture and 3 others, k = 5 (faiss k-means)",
         [*run, "--exp_dir", exp + "11", "--dataset_path", t["copies"], "--num_classes", "5", "--num_epoch", "0"]),
        ("train.py", "float TIFFs with NaN and inf pixels (nodata)", [*run, "--exp_dir", exp + "12", "--dataset_path",
                                                                      t["nodata"], "--num_classes", "2",
                                                                      "--num_epoch", "0"]),
        ("train.py", "a damaged JPEG that still decodes", [*run, "--exp_dir", exp + "13", "--dataset_path",
                                                           t["damaged"], "--num_classes", "2", "--num_epoch", "1"]),
        ("train.py", "num_classes 0 (automatic) on 6 images", [*run, "--exp_dir", exp + "14", "--dataset_path",
                                                               t["one_class"], "--num_classes", "0",
                                                               "--num_epoch", "0"]),
        ("train.py", "pca_dim 4 on 18 images (kept, with a log line)", [*run, "--exp_dir", exp + "15", "--pca_dim",
                                                                       "4", "--num_epoch", "0"]),
        ("train.py", "resume a checkpoint of an earlier layout (cfg, optimizer, rng, clustering_metrics ... missing)",
         [*run, "--exp_dir", exp + "_old", "--num_epoch", "2"], lambda: strip_layout(run[run.index("--exp_dir") + 1],
                                                                                      exp + "_old")),
        ("train.py", "the default paths, run from outside the repository root", ["--verbose", "false"], None,
         t["base"]),
    ]


def pred_cases(t, exp, ok_exp, pred):
    return [
        ("pred.py", "the run above", pred),
        ("pred.py", "only --exp_dir (settings from the checkpoint)", ["--exp_dir", ok_exp, "--verbose", "false"]),
        ("pred.py", "--images a flat folder, only --exp_dir", ["--exp_dir", ok_exp, "--images", t["flat"],
                                                              "--pred_dir", os.path.join(t["base"], "pred_flat")]),
        ("pred.py", "no checkpoint", [*pred, "--exp_dir", exp + "_none"]),
        ("pred.py", "pred_dir empty", [*pred, "--pred_dir", ""]),
        ("pred.py", "pred_dir a foreign folder", [*pred, "--pred_dir", t["foreign"]]),
        ("pred.py", "pred_dir inside the test tree", [*pred, "--pred_dir", t["tree"] + "/out"]),
        ("pred.py", "pred_k huge, recluster", [*pred, "--pred_mode", "recluster", "--pred_k", "100000"]),
        ("pred.py", "test_path empty and val_split 0", [*pred, "--test_path", "", "--val_split", "0"]),
        ("pred.py", "ckpt_path a folder", [*pred, "--ckpt_path", t["empty"]]),
        ("pred.py", "ckpt_path a text file", [*pred, "--ckpt_path", t["file"]]),
        ("pred.py", "another sobel than the run", [*pred, "--sobel", "false"]),
        ("pred.py", "a checkpoint that is a bare state_dict", [*pred, "--ckpt_path", t["state_dict"]]),
        ("pred.py", "test_path a flat folder", [*pred, "--test_path", t["flat"]]),
        ("pred.py", "recluster a folder of one image", [*pred, "--test_path", t["one"], "--pred_mode", "recluster"]),
        ("pred.py", "--images one image file, only --exp_dir", ["--exp_dir", ok_exp, "--images", t["one_file"],
                                                               "--pred_dir", os.path.join(t["base"], "pred_one")]),
        ("pred.py", "--images a text file", ["--exp_dir", ok_exp, "--images", t["file"]]),
    ]


def outcome(script, args, cwd=ROOT, timeout=300):
    try:
        r = subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd, capture_output=True,
                           text=True, timeout=timeout, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    except subprocess.TimeoutExpired:
        return f"TIMEOUT after {timeout} s"
    if "Traceback" in r.stderr:
        return "TRACEBACK: " + r.stderr.strip().splitlines()[-1]
    if r.returncode == 0:
        return "ok"
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    return f"exit {r.returncode}: {lines[-1] if lines else '(no message)'}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="also write the table to this file")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as base:
        t = trees(base)
        rows = ["| script | case | outcome |", "|---|---|---|"]
        for script, case, args, *how in cases(t):
            prepare, cwd = (how[0] if how else None), (how[1] if len(how) > 1 else ROOT)  # a step before, a folder
            if prepare is not None:
                prepare()
            text = outcome(script, args, cwd).replace(base, "<tmp>").replace("|", "\\|")
            rows.append(f"| `{script}` | {case} | {text} |")
            print(rows[-1], flush=True)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
