"""The ImageNet-scale part of the benchmarks, on any device: where the time of a DeepCluster epoch goes when
the data are photographs and the clustering is the paper's (k = 10,000 on 1.28M images), and what an ImageNet
epoch would take at the rates measured.

    python bench/imagenet.py                       # on a GPU: 12,800 photos at 224 px, clustering at full size
    python bench/imagenet.py --n 1000 --size 64    # on a CPU (clustering at a reduced N, scaled linearly)

1. A synthetic ImageNet-like tree: N JPEGs of 500x375 (smooth colour fields with texture, 100 class folders),
   built once under bench/imagenet_tree_<N>/ (ignored by git) with one process per core.
2. Two epochs of train.py on it (VGG16-BN + Sobel, amp and compile as the defaults, k = N / 100), timed per
   phase: start-up (until the first feature pass), feature pass, clustering and training pass of the second
   epoch (no compilation inside), each in images/s against the network alone (the same model, amp and
   compile on synthetic tensors of the same batch). Start-up is split in two: the part that does not grow
   with the images (a fresh process importing train.py and opening the device, then building the network)
   and the scan and image check, which does. On CUDA the run takes the default input path: JPEGs decoded on
   the GPU (decode_device auto).
3. The clustering of 1,281,167 x 4096 synthetic fc7-like features to k = 10,000 (20 iterations, 256 dims) on
   the clustering device: PCA-whitening, k-means, the equal-size step; on a CPU at --cluster_n rows, the time
   scaled by 1,281,167 / n (every step is linear in n at fixed k). Beside it both forms (faiss, torch) on the
   same rows at a size both can do: loss ratio and NMI between their partitions.
4. The projected ImageNet epoch (1,281,167 images) from those rates, and what a run of 500 epochs (the paper's)
   costs: the start-up once, then 500 epochs.
5. The input paths side by side on the first --input_n photos (in this process): decoding and transforming
   alone, the feature pass and the training pass in images/s, for the CPU path (loader workers decode) and on
   CUDA the GPU path (nvJPEG), with compile off and on.

Prints one table; writes bench/results_imagenet.json.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from multiprocessing import Pool

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # before bench/ (a script's own folder): bench/decoding.py and bench/report.py
# would shadow the repository's decoding.py and report.py

import clustering  # noqa: E402
import metrics  # noqa: E402
from cfg import DEFAULTS  # noqa: E402
from dataset import ClusterDataset, PseudoLabelDataset, eval_transform, train_transform  # noqa: E402
from engine import amp_dtype, compile_body, compute_features, loader_workers, make_loader, memory_format  # noqa: E402
from engine import to_device, train_one_epoch  # noqa: E402
from models import build_model  # noqa: E402
from run import child_run  # noqa: E402
from synthetic import SyntheticFeatures  # noqa: E402

IMAGENET = 1_281_167
CLASSES = 100
PHOTO = (500, 375)


def photo(args):
    """One synthetic photo: a smooth random colour field (a class tint) with fine texture, saved as JPEG."""
    path, label, seed = args
    rng = np.random.default_rng(seed)
    tint = np.random.default_rng(label).uniform(40, 215, 3)
    coarse = rng.normal(0, 40, (6, 8, 3)) + tint
    field = np.asarray(Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8)).resize(PHOTO, Image.BICUBIC))
    texture = rng.normal(0, 12, (PHOTO[1], PHOTO[0], 1))
    Image.fromarray(np.clip(field + texture, 0, 255).astype(np.uint8)).save(path, quality=90)


def build_tree(root, n):
    """N photos in root/class_XXX/ (made once: a second call with the same n reuses them)."""
    done = os.path.join(root, f".complete_{n}")
    if os.path.exists(done):
        return root
    jobs = []
    for i in range(n):
        folder = os.path.join(root, f"class_{i % CLASSES:03d}")
        os.makedirs(folder, exist_ok=True)
        jobs.append((os.path.join(folder, f"{i:07d}.jpg"), i % CLASSES, i))
    with Pool(os.cpu_count()) as pool:
        pool.map(photo, jobs, chunksize=64)
    open(done, "w").close()
    return root


def rate(fn, images, steps, device):
    """Images/s of `steps` calls of fn after one warm-up call (compilation, cuDNN's algorithm search)."""
    fn()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return images * steps / (time.perf_counter() - t0)


def network_alone(c, device, steps):
    """Feature-pass and training-step images/s of the network on synthetic tensors: the run's model, batch, amp
    and compile setting, nothing else."""
    torch.manual_seed(0)
    model = build_model("vgg16", c["sobel"], 0, c["input_size"]).to(device, memory_format=memory_format(device))
    compile_body(model, c, device)
    model.add_head(c["num_classes"])
    dtype = amp_dtype(c, device)
    x = to_device(torch.randn(c["batch_size"], 3, c["input_size"], c["input_size"]), device)
    y = torch.randint(0, c["num_classes"], (c["batch_size"],), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    autocast = lambda: torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)  # noqa

    def forward():
        model.eval()
        with torch.inference_mode(), autocast():
            model(x)

    def step():
        model.train()
        with autocast():
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return rate(forward, c["batch_size"], steps, device), rate(step, c["batch_size"], steps, device)


def input_paths(tree, c, device, compiles=("off", "on"), n=None):
    """The input paths against each other on the tree's photos (the first n): images/s of decoding and transforming
    alone (the batches on the device, no network), of the feature pass and of the training pass (the run's model,
    batch and amp), for the CPU path (cfg decode_device cpu: loader workers decode) and on CUDA the GPU path
    (decode_device cuda: nvJPEG), with the body compiled or not (one model per compile setting, compiled and warmed
    on two batches first, so that no row holds a compilation). Returns one row per path and compile setting."""
    images = ClusterDataset(tree, eval_transform(c["input_size"]), log=lambda msg: None, check_images=False,
                            cache_mb=0, decode_side=4 * c["input_size"])
    images = images.subset(np.arange(min(n or len(images), len(images))))
    labels = np.arange(len(images)) % c["num_classes"]
    train_set = PseudoLabelDataset(images, labels, train_transform(c["input_size"], c["rrc_scale_min"]))
    warm = np.arange(min(2 * c["batch_size"], len(images)))
    paths = ["cpu"] + (["cuda"] if device.type == "cuda" else [])
    dtype, rows, decode = amp_dtype(c, device), [], {}
    for compiled in compiles:
        torch.manual_seed(0)
        model = build_model("vgg16", c["sobel"], 0, c["input_size"]).to(device, memory_format=memory_format(device))
        compile_body(model, {**c, "compile": compiled}, device)
        model.add_head(c["num_classes"])
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        for path in paths:
            cp = {**c, "decode_device": path}

            def features(ds):
                heads = model.heads()
                model.remove_head()  # the fc7 features, as a run's feature pass
                compute_features(make_loader(ds, cp, device), model, device, False, dtype, keep_on=device)
                model.set_heads(heads)

            def training(ds):
                train_one_epoch(make_loader(ds, cp, device), model, optimizer, None, device, False, dtype)

            def decoding(ds):
                for batch, _ in make_loader(ds, cp, device):
                    to_device(batch, device)
            if path not in decode:
                decode[path] = pass_rate(decoding, images, warm, device)
            rows.append({"path": path, "compile": compiled, "images": len(images), "decode": decode[path],
                         "features": pass_rate(features, images, warm, device),
                         "training": pass_rate(training, train_set, warm, device)})
    return rows


def pass_rate(fn, dataset, warm, device):
    """Images/s of fn(dataset), after fn on the `warm` images of it (compilation, cuDNN's search, workers' start)."""
    fn(dataset.subset(warm) if isinstance(dataset, ClusterDataset) else
       PseudoLabelDataset(dataset.base.subset(warm), dataset.assignment[warm], dataset.transform))
    return len(dataset) / timed(lambda: fn(dataset), device)[1]


def input_table(rows, c, workers):
    """The input rows as lines of the benchmark's output."""
    name = {"cpu": f"CPU decode, {workers} workers", "cuda": "GPU decode (nvJPEG)"}
    lines = [f"{'input path (' + str(rows[0]['images']) + ' photos)':<36} | {'compile':>7} | {'decode alone':>12} | "
             f"{'feature pass':>12} | {'training pass':>13}"]
    for r in rows:
        lines.append(f"{name[r['path']]:<36} | {r['compile']:>7} | {r['decode']:10.0f}/s | {r['features']:10.0f}/s | "
                     f"{r['training']:11.0f}/s")
    return lines


def log_seconds(line):
    return time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))


IMPORTS = "import torch, train\nif torch.cuda.is_available():\n    torch.zeros(1, device='cuda')\n"


def import_seconds():
    """Seconds for a fresh process to import train.py (torch, torchvision, faiss...) and open the CUDA context
    where there is one: the part of start-up before the data that does not grow with the images."""
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "imports.py")
        with open(script, "w") as f:
            f.write(IMPORTS)
        return child_run([script])[0]


def epoch_phases(tree, n, c, script):
    """Two epochs of train.py (or train_cuda.py) on the tree; seconds of each phase, from metrics.jsonl, the
    checkpoint and train.log (start-up: the process start to the line that precedes the first feature pass;
    of it, check_s is the process start to the data line, less the imports, and fixed_s the rest)."""
    flags = ["--dataset_path", tree, "--input_size", str(c["input_size"]), "--num_classes", str(c["num_classes"]),
             "--batch_size", str(c["batch_size"]), "--num_epoch", "2", "--verbose", "false", "--test_path", ""]
    with tempfile.TemporaryDirectory() as exp:
        started = time.time()
        seconds, peak, _ = child_run([script, "--exp_dir", exp, *flags])
        with open(os.path.join(exp, "metrics.jsonl")) as f:
            second = [json.loads(line) for line in f][1]
        with open(os.path.join(exp, "train.log")) as f:
            lines = f.readlines()
    model_line = next(line for line in lines if " model: " in line)
    data_line = next(line for line in lines if " data: " in line)
    images = second["images_per_s"] * second["time_train_s"]
    startup = max(log_seconds(model_line) - int(started), 1.0)
    imports = import_seconds()
    check = min(max(log_seconds(data_line) - int(started) - imports, 0.0), startup)  # the log's clock has 1 s steps
    return {"images": n, "training_images": images, "process_s": seconds, "peak_rss_gib": peak,
            "startup_s": startup, "check_s": check, "fixed_s": startup - check, "imports_s": imports,
            "features_s": second["time_features_s"], "clustering_s": second["time_clustering_s"],
            "train_s": second["time_train_s"]}


def synthetic_rows(n, device, k=1000, seed=0, batch=65536):
    """n x 4096 fc7-like float32 rows with k latent clusters, made on `device` in batches."""
    source = SyntheticFeatures(k=k, seed=seed)
    lift, centres = source.lift.to(device), source.centres.to(device)
    out = torch.empty(n, lift.shape[1], device=device)
    gen = torch.Generator(device=device).manual_seed(seed + 1)
    for i in range(0, n, batch):
        m = min(batch, n - i)
        labels = torch.randint(0, k, (m,), device=device, generator=gen)
        z = centres[labels] + torch.randn(m, centres.shape[1], device=device, generator=gen)
        out[i:i + m] = z @ lift + 0.05 * torch.randn(m, lift.shape[1], device=device, generator=gen)
    return out


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def cluster_at_scale(n, k, where, network_device):
    """PCA-whitening to 256, k-means (20 iterations) and the equal-size step of n synthetic rows on the clustering
    device `where` (None: faiss); seconds of each, and the GPU memory it took."""
    device = torch.device("cpu") if where is None else where
    x = synthetic_rows(n, device)
    if where is None:
        x = x.numpy()
    if network_device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    (xb, _), pca_s = timed(lambda: clustering.preprocess_features(x, 256, seed=1), device)
    (_, centroids, _), kmeans_s = timed(lambda: clustering.run_kmeans(xb, k, 20, seed=1, device=where), device)
    equal_s = None
    if where is not None:
        (offsets, _), equal_s = timed(lambda: clustering.equal_size_offsets(xb, centroids, device=where), device)
        _, assign_s = timed(lambda: clustering.nearest_centroid(xb, centroids, offsets, where), device)
        equal_s += assign_s
    peak = torch.cuda.max_memory_allocated() / 2**30 if network_device.type == "cuda" else None
    return {"n": n, "k": k, "device": clustering.describe(where), "pca_s": pca_s, "kmeans_s": kmeans_s,
            "equal_size_s": equal_s, "gpu_peak_gib": peak}


def both_forms(n, k, network_device):
    """faiss and torch on the same whitened rows: time, loss ratio, NMI between the two partitions."""
    x = synthetic_rows(n, torch.device("cpu"), seed=3).numpy()
    xb, _ = clustering.preprocess_features(x, 256, seed=1)
    faiss_ids, _, faiss_loss = clustering.run_kmeans(xb, k, 20, seed=2)
    t0 = time.perf_counter()
    faiss_ids, _, faiss_loss = clustering.run_kmeans(xb, k, 20, seed=2)
    faiss_s = time.perf_counter() - t0
    device = network_device if network_device.type == "cuda" else torch.device("cpu")
    (torch_ids, _, torch_loss), torch_s = timed(lambda: clustering.run_kmeans(xb, k, 20, seed=2, device=device), device)
    return {"n": n, "k": k, "faiss_s": faiss_s, "torch_s": torch_s, "torch_device": str(device),
            "loss_torch_over_faiss": torch_loss / faiss_loss, "nmi_between": metrics.nmi(faiss_ids, torch_ids)}


def project(run, alone, scale, n_cluster):
    """Seconds of one ImageNet epoch's phases from the measured rates: the passes linear in the images, the
    clustering scaled from n_cluster rows (1 when measured at full size); and of the run's start-up (once per
    run): its fixed part as measured, the scan and image check linear in the images."""
    startup = run["fixed_s"] + run["check_s"] / run["images"] * IMAGENET
    per = {"features": run["features_s"] / run["images"] * IMAGENET,
           "clustering": (scale["pca_s"] + scale["kmeans_s"] + (scale["equal_size_s"] or 0)) * IMAGENET / n_cluster,
           "training": run["train_s"] / run["training_images"] * IMAGENET}
    network = {"features": IMAGENET / alone[0], "training": IMAGENET / alone[1]}
    return startup, per, network


def table(run, alone, scale, n_cluster, forms):
    """The one table of the run, and the projection (an epoch: features, clustering, training; a run of 500
    epochs: the start-up once, then 500 epochs)."""
    startup, per, network = project(run, alone, scale, n_cluster)
    lines = [f"{'phase':<38} | {'this run':>18} | {'network alone':>13} | {'share':>5} | {'ImageNet':>14}"]

    def row(name, seconds, images, net, projected, note="min"):
        here = f"{seconds:6.1f} s " + (f"{images / seconds:7.0f}/s" if images else " " * 9)
        share = f"{images / seconds / net:5.0%}" if net else "  -  "
        lines.append(f"{name:<38} | {here:>18} | {f'{net:.0f}/s' if net else '-':>13} | {share:>5} | "
                     f"{projected / 60:10.1f} {note}")

    row("start-up: imports, device, network", run["fixed_s"], None, None, run["fixed_s"], "min, once")
    row("start-up: scan + image check", run["check_s"], run["images"] if run["check_s"] else None, None,
        startup - run["fixed_s"], "min, once")
    row("feature pass", run["features_s"], run["images"], alone[0], per["features"])
    row("clustering (PCA, k-means, equal size)", run["clustering_s"], run["images"], None, per["clustering"])
    row("training pass", run["train_s"], run["training_images"], alone[1], per["training"])
    epoch = sum(per.values())
    days = (startup + 500 * epoch) / 86400
    lines.append(f"{'epoch':<38} | {run['process_s']:6.1f} s (2 epochs) | {'':>13} | {'':>5} | {epoch / 60:10.1f} min")
    lines.append(f"clustering {n_cluster:,} x 4096 -> 256, k = {scale['k']:,}, {scale['device']}: PCA {scale['pca_s']:.2f} s,"
                 f" k-means (20 it.) {scale['kmeans_s']:.2f} s, equal size "
                 + (f"{scale['equal_size_s']:.2f} s" if scale["equal_size_s"] is not None else "not run (CPU form)")
                 + (f", GPU peak {scale['gpu_peak_gib']:.1f} GiB" if scale["gpu_peak_gib"] else "")
                 + ("" if n_cluster == IMAGENET else f"; x {IMAGENET / n_cluster:.1f} for 1,281,167 rows"))
    lines.append(f"k-means {forms['n']:,} x 256, k = {forms['k']:,}: faiss (CPU) {forms['faiss_s']:.2f} s, torch "
                 f"({forms['torch_device']}) {forms['torch_s']:.2f} s; loss torch / faiss "
                 f"{forms['loss_torch_over_faiss']:.4f}, NMI between the partitions {forms['nmi_between']:.3f}")
    lines.append(f"projected ImageNet epoch {epoch / 60:.1f} min (the network alone: {network['features'] / 60:.1f} + "
                 f"{network['training'] / 60:.1f} min); start-up {startup / 60:.1f} min once; 500 epochs "
                 f"{days:.1f} days")
    return lines, {"phases_min": {k: v / 60 for k, v in per.items()}, "startup_min": startup / 60,
                   "epoch_min": epoch / 60, "epochs_500_days": days}


def main(argv=None):
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=12800 if gpu else 1000, help="photos in the synthetic tree")
    p.add_argument("--size", type=int, default=224 if gpu else 64, help="input_size of the run")
    p.add_argument("--batch", type=int, default=256 if gpu else 64)
    p.add_argument("--cluster_n", type=int, default=IMAGENET if gpu else 50_000, help="rows of the clustering")
    p.add_argument("--cluster_k", type=int, default=10_000)
    p.add_argument("--compare_n", type=int, default=100_000 if gpu else 20_000, help="rows of the faiss/torch check")
    p.add_argument("--steps", type=int, default=20 if gpu else 3, help="batches of the network-alone measurement")
    p.add_argument("--input_n", type=int, default=6400 if gpu else 128,
                   help="photos of the input-path rows (0: none of those rows)")
    p.add_argument("--tree", default=os.path.join(ROOT, "bench", "imagenet_tree"))
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results_imagenet.json"))
    a = p.parse_args(argv)
    device = torch.device("cuda" if gpu else "cpu")
    c = {**DEFAULTS, "input_size": a.size, "batch_size": a.batch, "num_classes": max(2, a.n // CLASSES)}
    t0 = time.perf_counter()
    tree = build_tree(f"{a.tree}_{a.n}", a.n)
    built = time.perf_counter() - t0
    run = epoch_phases(tree, a.n, c, "train_cuda.py" if gpu else "train.py")
    alone = network_alone(c, device, a.steps)
    where = clustering.resolve_device(c["clustering_device"], device)
    scale = cluster_at_scale(a.cluster_n, a.cluster_k, where, device)
    forms = both_forms(a.compare_n, 1000, device)
    lines, projection = table(run, alone, scale, a.cluster_n, forms)
    inputs = input_paths(tree, c, device, n=a.input_n) if a.input_n else []
    if inputs:
        lines += input_table(inputs, c, loader_workers(c))
    name = torch.cuda.get_device_name(0) if gpu else f"{os.cpu_count()} CPU cores"
    print(f"\nDeepCluster at ImageNet scale: {name}, torch {torch.__version__}; {a.n:,} synthetic 500x375 JPEGs "
          f"(built in {built:.0f} s) at {a.size} px, batch {a.batch}, "
          f"{str(amp_dtype(c, device) or torch.float32).replace('torch.', '')}, compile {c['compile']}")
    print("\n".join(lines))
    result = {"device": name, "torch": torch.__version__, "n": a.n, "size": a.size, "batch": a.batch, "run": run,
              "network_alone_img_s": {"features": alone[0], "training": alone[1]}, "clustering": scale,
              "faiss_vs_torch": forms, "input_paths": inputs, **projection, "bench_seconds": time.perf_counter() - t0}
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2, default=float)
    print(f"wrote {a.out} ({result['bench_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
