"""The photo case of bench/run.py: a tree of real photographs of 1-18 megapixels (JPEG, PNG, WebP,
some with an EXIF rotation) at input_size 64, one epoch of train.py against the raw model compute
for the same number of images, and the peak memory of the run.

The photographs are made from the wallpapers of Debian's mate-backgrounds and gnome-backgrounds
packages (freely licensed; `apt-get install mate-backgrounds gnome-backgrounds`): each image of the
tree is a random crop of one of them, resized to a random size of 1-18 megapixels and saved in a
random format. Nothing of it is shipped: the tree is built on first use (bench/photos_tree/, ignored by git).
"""
import glob
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dataset import ClusterDataset  # noqa: E402
from errors import UserError  # noqa: E402
from models import build_model  # noqa: E402

SOURCES = "/usr/share/backgrounds"
FORMATS = ["JPEG"] * 7 + ["WEBP"] * 2 + ["PNG"]  # mostly camera-like JPEGs
INPUT_SIZE = 64


def build_tree(out, n=300, sources=SOURCES, seed=0):
    """n photographs in out/<source name>/; reused when it is already complete."""
    done = os.path.join(out, ".complete")
    if os.path.exists(done):
        return out
    files = sorted(f for f in glob.glob(os.path.join(sources, "**", "*"), recursive=True)
                   if f.lower().endswith((".jpg", ".jpeg", ".png", ".webp")))
    pictures = []
    for f in files:
        with Image.open(f) as img:
            if img.width * img.height >= 1e6:
                pictures.append(f)
    if not pictures:
        raise UserError(f"no photographs under {sources}; apt-get install mate-backgrounds gnome-backgrounds")
    rng = np.random.default_rng(seed)
    for i in range(n):
        src = pictures[i % len(pictures)]
        with Image.open(src) as img:
            img = img.convert("RGB")
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        fmt = FORMATS[int(rng.integers(len(FORMATS)))]
        megapixels = rng.uniform(1, 18) if fmt == "JPEG" else rng.uniform(1, 6)  # large PNG/WebP: slow to write
        scale = (megapixels * 1e6 / (cw * ch)) ** 0.5
        photo = img.crop((x, y, x + cw, y + ch)).resize((int(cw * scale), int(ch * scale)), Image.BICUBIC)
        folder = os.path.join(out, os.path.splitext(os.path.basename(src))[0])
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{i:04d}.{fmt.lower().replace('jpeg', 'jpg')}")
        if fmt == "JPEG":
            exif = Image.Exif()
            if i % 3 == 0:
                exif[0x0112] = 6  # an orientation tag the loader must apply (the decode cost is what is measured)
            photo.save(path, quality=90, exif=exif)
        else:
            photo.save(path, quality=85) if fmt == "WEBP" else photo.save(path, compress_level=1)
    open(done, "w").close()
    return out


def raw_compute_seconds(n, c, size=INPUT_SIZE):
    """Seconds the network alone needs for one epoch of n images: a forward pass of n images
    (features) and n training steps, on random tensors of the same shape and batch."""
    torch.manual_seed(0)
    model = build_model("vgg16", c["sobel"], 10, size)
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    batches = [torch.randn(min(c["batch_size"], n - i), 3, size, size) for i in range(0, n, c["batch_size"])]
    for mode in (model.eval, model.train):  # warm-up: the first batch of each mode picks oneDNN kernels
        mode()
        model(batches[0]).sum().backward()
    opt.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    model.eval()
    with torch.inference_mode():
        for x in batches:
            model(x)
    t1 = time.perf_counter()
    model.train()
    for x in batches:
        loss = torch.nn.functional.cross_entropy(model(x), torch.randint(0, 10, (len(x),)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return t1 - t0, time.perf_counter() - t1


# (name, decode_side, jpeg_decoder, check_workers): the default; the default decode_side decoded as before
# decode_jpeg and the parallel check (Pillow, main process); full size (100000), as before decode_side existed
VARIANTS = (("0", 0, "auto", -1), ("0 pil", 0, "pil", 0), ("100000", 100_000, "auto", -1))


def bench_photos(tree, c, child_run, variants=VARIANTS):
    """Per variant (see VARIANTS; decode_side 0 = the default, 4 x input_size): the first, decoding pass,
    one epoch of train.py after it (feature pass + training pass), its ratio to the raw model compute,
    and the run's peak RSS."""
    paths = [p for p in glob.glob(os.path.join(tree, "*", "*")) if not os.path.basename(p).startswith(".")]
    sizes = []
    for p in paths:
        with Image.open(p) as img:
            sizes.append(img.width * img.height / 1e6)
    n = len(paths)
    raw_features_s, raw_train_s = raw_compute_seconds(n, c)
    result = {"images": n, "megapixels_min": min(sizes), "megapixels_max": max(sizes),
              "megapixels_mean": float(np.mean(sizes)), "raw_features_s": raw_features_s, "raw_train_s": raw_train_s,
              "formats": {ext: sum(p.endswith(ext) for p in paths) for ext in (".jpg", ".png", ".webp")}, "runs": {}}
    for name, side, decoder, workers in variants:
        t0 = time.perf_counter()
        ClusterDataset(tree, check_images=True, log=lambda m: None, cache_mb=c["cache_mb"],
                       decode_side=side or 4 * INPUT_SIZE, jpeg_decoder=decoder, check_workers=workers)
        first_pass_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as exp:
            seconds, peak, _ = child_run(["train.py", "--dataset_path", tree, "--exp_dir", exp, "--num_epoch", "2",
                                          "--input_size", str(INPUT_SIZE), "--decode_side", str(side),
                                          "--jpeg_decoder", decoder, "--check_workers", str(workers),
                                          "--verbose", "false"])
            with open(os.path.join(exp, "metrics.jsonl")) as f:
                second = [json.loads(line) for line in f][1]  # epoch 1: after the decoding pass
        epoch_s = second["time_features_s"] + second["time_train_s"]
        result["runs"][name] = {
            "decode_side": side, "jpeg_decoder": decoder, "check_workers": workers,
            "first_pass_s": first_pass_s, "epoch_s": epoch_s, "features_s": second["time_features_s"],
            "train_s": second["time_train_s"], "process_s": seconds, "peak_rss_gib": peak,
            "epoch_over_raw": epoch_s / (raw_features_s + raw_train_s)}
    return result
