"""Benchmarks of the three phases of a DeepCluster epoch, as ratios measured in one run.

    python bench/run.py            # everything (it prints its own duration at the end)
    python bench/run.py --quick    # a reduced version of everything
    python bench/run.py --parts features,train --sizes 32

Prints a table and writes bench/results.json (see docs/performance.md):
  feature_pass_efficiency / train_pass_efficiency  real pipeline (images on disk -> DataLoader ->
      model) images/s divided by the raw model on pre-made tensors of the same shape and batch
  clustering_speedup_vs_sklearn  our PCA-whitening + faiss k-means vs scikit-learn's PCA(whiten)
      + KMeans(lloyd, n_init 1, same iterations) on the same features
  pca_speedup_vs_faiss           our PCA-whitening vs faiss PCAMatrix.train at d = 4096
  epoch_seconds, peak_rss_gib    one training epoch of train.py on a Fashion-MNIST tree, per phase
  scale_run                      synthetic ImageNet-sized features streamed through the same
      code path as pca_fit_samples > 0 into k-means; time and peak memory
  decode, decode_crossover       500 x 375 JPEGs decoded and transformed per core, Pillow against
      decode_jpeg + tensor transforms; Pillow's reduced decode against decode_jpeg per photo size
  startup                        a tree of 100,000 small JPEGs scanned and checked, before and now
      (bench/decoding.py; the trees are built in a temporary folder and removed)
  heads                          several clusterings per epoch: the clustering step and the training pass with
      num_classes 10 and with 10,30,100 on the sample, alternated; seconds per phase and the ratio of an epoch
  sharded                        the clustering step sharded over 1, 2 and 4 gloo processes on the same
      synthetic features: peak memory per rank and time of each phase, agreement with one process, and the
      projection of memory and traffic to ImageNet and 100M images on 8, 64, 512 GPUs (bench/sharded.py)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import clustering  # noqa: E402
import metrics  # noqa: E402
from cfg import DEFAULTS  # noqa: E402
from dataset import ClusterDataset, PseudoLabelDataset, eval_transform, train_transform  # noqa: E402
from models import build_model  # noqa: E402
from engine import compute_features, loader_workers, make_loader, train_one_epoch  # noqa: E402
from synthetic import SyntheticFeatures  # noqa: E402

SAMPLE = os.path.join(ROOT, "data", "fashion_mnist_small", "train")
FULL = {"images": {32: 640, 128: 96}, "train_images": {32: 384, 128: 48}, "cluster_n": 60_000, "pca_n": 6000,
        "scale_n": 1_281_167, "scale_k": 1000, "scale_fit": 50_000, "reps": 2, "photos": 300,
        "decode_images": 200, "decode_reps": 3, "crossover_pixels": 12e6, "startup_images": 100_000, "startup_reps": 3,
        "sharded_n": 100_000, "sharded_k": 1000, "heads_n": 2000, "heads_train": 256, "heads_reps": 5}
QUICK = {"images": {32: 256, 128: 24}, "train_images": {32: 128, 128: 16}, "cluster_n": 10_000, "pca_n": 2000,
         "scale_n": 100_000, "scale_k": 100, "scale_fit": 10_000, "reps": 1, "photos": 60,
         "decode_images": 40, "decode_reps": 1, "crossover_pixels": 2e6, "startup_images": 10_000, "startup_reps": 1,
         "sharded_n": 20_000, "sharded_k": 100, "heads_n": 500, "heads_train": 128, "heads_reps": 2}
HEADS = ("10", "10,30,100")  # the default k against three clusterings per epoch
CPU = torch.device("cpu")


def best_rate(fn, n_images, reps):
    """Images per second of the fastest of `reps` runs (after one warm-up call inside fn's first batch)."""
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        rates.append(n_images / (time.perf_counter() - t0))
    return max(rates)


def model_flops(model, size):
    """Multiply-adds x 2 of convs and linears for one image (the Sobel front included)."""
    total = []

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            total.append(2 * out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1])
        elif isinstance(m, nn.Linear):
            total.append(2 * m.in_features * m.out_features)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return sum(total)


def matmul_gflops():
    a = torch.randn(2048, 2048)
    a @ a
    t0 = time.perf_counter()
    for _ in range(3):
        a @ a
    return 3 * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9


def sample_dataset(n, size, c):
    full = ClusterDataset(SAMPLE, eval_transform(size), cache_mb=c["cache_mb"], log=lambda m: None)
    idx = np.linspace(0, len(full) - 1, n).astype(int)  # spread over the classes
    return full.subset(idx)


def bench_features(size, n, reps, c):
    torch.manual_seed(0)
    model = build_model("vgg16", c["sobel"], 0, size).eval()
    ds = sample_dataset(n, size, c)
    loader = make_loader(ds, c, CPU)
    batches = [torch.randn(min(c["batch_size"], n - i), 3, size, size) for i in range(0, n, c["batch_size"])]

    def raw():
        with torch.inference_mode():
            for x in batches:
                model(x)

    def real():
        compute_features(loader, model, CPU, verbose=False)

    raw()  # warm-up: allocator, oneDNN kernels
    raw_rate, real_rate = best_rate(raw, n, reps), best_rate(real, n, reps)
    return {"size": size, "images": n, "raw_img_s": raw_rate, "real_img_s": real_rate,
            "efficiency": real_rate / raw_rate, "gflop_per_image": model_flops(model, size) / 1e9}


def bench_train(size, n, reps, c):
    torch.manual_seed(0)
    k = 10
    model = build_model("vgg16", c["sobel"], k, size)
    body = torch.optim.SGD(model.body_parameters(), lr=c["lr"], momentum=c["momentum"], weight_decay=c["weight_decay"])
    head = torch.optim.SGD(model.top_layer.parameters(), lr=c["lr"], weight_decay=c["weight_decay"])
    ds = sample_dataset(n, size, c)
    assignment = np.arange(n) % k
    sampler = clustering.UnifLabelSampler(assignment, seed=0)
    loader = make_loader(PseudoLabelDataset(ds, assignment, train_transform(size, c["rrc_scale_min"])), c, CPU, sampler)
    batches = [(torch.randn(min(c["batch_size"], n - i), 3, size, size),
                torch.randint(0, k, (min(c["batch_size"], n - i),))) for i in range(0, n, c["batch_size"])]
    criterion = nn.CrossEntropyLoss()

    def raw():
        model.train()
        for x, y in batches:
            loss = criterion(model(x), y)
            body.zero_grad(set_to_none=True)
            head.zero_grad(set_to_none=True)
            loss.backward()
            body.step()
            head.step()
            loss.item()

    def real():
        train_one_epoch(loader, model, body, head, CPU, verbose=False)

    raw()
    raw_rate, real_rate = best_rate(raw, n, reps), best_rate(real, n, reps)
    return {"size": size, "images": n, "raw_img_s": raw_rate, "real_img_s": real_rate,
            "efficiency": real_rate / raw_rate}


def synthetic_features(n, seed=0):
    return SyntheticFeatures(seed=seed).rows(n, seed + 1)


def bench_clustering(n, c):
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import normalize
    x, labels = synthetic_features(n)
    k, niter, dim = 100, c["kmeans_niter"], clustering.clamp_pca_dim(c["pca_dim"], n, x.shape[1])
    t0 = time.perf_counter()
    xb, _ = clustering.preprocess_features(x, dim)
    t1 = time.perf_counter()
    ours_ids = clustering.run_kmeans(xb, k, niter, seed=1)[0]
    t2 = time.perf_counter()
    xs = normalize(PCA(dim, whiten=True, random_state=0).fit_transform(x))
    t3 = time.perf_counter()
    sk_ids = KMeans(k, algorithm="lloyd", n_init=1, max_iter=niter, tol=0, random_state=0).fit_predict(xs)
    t4 = time.perf_counter()
    ours, sk = t2 - t0, t4 - t2
    return {"n": n, "d": x.shape[1], "k": k, "ours_s": ours, "sklearn_s": sk, "speedup": sk / ours,
            "ours_pca_s": t1 - t0, "ours_kmeans_s": t2 - t1, "sklearn_pca_s": t3 - t2, "sklearn_kmeans_s": t4 - t3,
            "nmi_ours_vs_truth": metrics.nmi(labels, ours_ids), "nmi_sklearn_vs_truth": metrics.nmi(labels, sk_ids)}


def bench_pca(n, c):
    x, _ = synthetic_features(n, seed=1)
    dim = clustering.clamp_pca_dim(c["pca_dim"], n, x.shape[1])
    t0 = time.perf_counter()
    p_faiss = clustering.fit_pca_whitening(x, dim, method="faiss")
    t_faiss = time.perf_counter() - t0
    t0 = time.perf_counter()
    p_torch = clustering.fit_pca_whitening(x, dim, method="torch")
    t_torch = time.perf_counter() - t0
    a = clustering.run_kmeans(clustering.apply_pca(x, p_faiss), 100, c["kmeans_niter"], seed=3)[0]
    b = clustering.run_kmeans(clustering.apply_pca(x, p_torch), 100, c["kmeans_niter"], seed=3)[0]
    return {"n": n, "d": x.shape[1], "faiss_s": t_faiss, "torch_s": t_torch, "speedup": t_faiss / t_torch,
            "kmeans_nmi_faiss_vs_torch": metrics.nmi(a, b)}


PEAK_TAG = "BENCH_PEAK_RSS_KIB="


def child_run(args):
    """Run `python args...` in a fresh process; return (seconds, that process's own peak RSS in GiB, stdout)."""
    # VmHWM, not ru_maxrss: Linux carries the parent's peak into ru_maxrss across fork + exec
    wrapper = ("import runpy, sys; sys.argv = sys.argv[1:]; sys.path.insert(0, '.');\n"
               "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
               "finally:\n    print('" + PEAK_TAG + "' + next(line.split()[1] for line in open('/proc/self/status')"
               " if line.startswith('VmHWM')))")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", wrapper, *args], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"bench: {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    peak_kib = int(r.stdout.rsplit(PEAK_TAG, 1)[1].split()[0])
    return seconds, peak_kib / 2**20, r.stdout


def bench_epoch(tree):
    with tempfile.TemporaryDirectory() as exp:
        seconds, peak, _ = child_run(["train.py", "--dataset_path", tree, "--exp_dir", exp, "--num_epoch", "1",
                                      "--verbose", "false"])
        with open(os.path.join(exp, "metrics.jsonl")) as f:
            row = json.loads(f.readline())
    return {"tree": os.path.relpath(tree, ROOT), "process_s": seconds, "features": row["time_features_s"],
            "clustering": row["time_clustering_s"], "train": row["time_train_s"],
            "train_img_s": row["images_per_s"], "peak_rss_gib": peak}


def bench_heads(n, train_images, reps, c, heads=HEADS):
    """What several clusterings per epoch add, in one process on `n` images of the sample (32 px): the clustering
    step (PCA-whitening, k-means with kmeans_nredo starts and the equal-size step per k) and the training pass
    (train_images images, one head per k) of each setting of `heads`, alternated rep by rep so that a load that
    changes during the run weighs on both alike; the fastest rep of each. The feature pass is the same for both
    (the heads are off), measured once. Returns the seconds of each phase per setting, scaled to one epoch of n
    images, and the ratios (several / one) of each phase and of the whole epoch."""
    torch.manual_seed(0)
    ds = sample_dataset(n, 32, c)
    model = build_model("vgg16", c["sobel"], 0, 32)
    t0 = time.perf_counter()
    features = compute_features(make_loader(ds, c, CPU), model, CPU, verbose=False)
    out = {"features": time.perf_counter() - t0}
    body = torch.optim.SGD(model.body_parameters(), lr=c["lr"], momentum=c["momentum"])
    best = {ks: {"clustering": float("inf"), "train": float("inf")} for ks in heads}
    sub = ds.subset(np.arange(train_images))
    for rep in range(reps):
        for ks in heads:
            k = [int(x) for x in ks.split(",")]
            km = clustering.Kmeans(k[0], 16, c["kmeans_niter"], c["pca_method"], c["kmeans_nredo"], c["equal_size"],
                                   c["equal_size_eps"], other_ks=k[1:])
            t0 = time.perf_counter()
            km.cluster(features, seed=rep)
            best[ks]["clustering"] = min(best[ks]["clustering"], time.perf_counter() - t0)
            labels = km.pseudo_labels()[:train_images]
            loader = make_loader(PseudoLabelDataset(sub, labels, train_transform(32, c["rrc_scale_min"])), c, CPU,
                                 clustering.UnifLabelSampler(km.assignment[:train_images], seed=rep))
            model.add_heads(k)
            head = torch.optim.SGD([p for h in model.heads() for p in h.parameters()], lr=c["lr"])
            t0 = time.perf_counter()
            train_one_epoch(loader, model, body, head, CPU, verbose=False)
            best[ks]["train"] = min(best[ks]["train"], (time.perf_counter() - t0) * n / train_images)
            model.remove_head()
    for ks in heads:
        out[ks] = {**best[ks], "epoch": out["features"] + best[ks]["clustering"] + best[ks]["train"]}
    one, several = (out[ks] for ks in heads)
    out["ratio"] = {phase: several[phase] / one[phase] for phase in ("clustering", "train", "epoch")}
    out.update(images=n, train_images=train_images, reps=reps)
    return out


def scale_child(n, k, fit, batch=8192):
    """In a child process: stream n synthetic 4096-d features through streamed_whitening into k-means."""
    t0 = time.perf_counter()
    source = SyntheticFeatures(k=k)

    def batches():
        for i in range(0, n, batch):
            rows = min(batch, n - i)
            yield np.arange(i, i + rows), source.rows(rows, seed=i + 1)[0]

    xb, pca = clustering.streamed_whitening(batches(), n, 256, fit)
    t1 = time.perf_counter()
    ids, _, _ = clustering.run_kmeans(xb, k, 20, seed=1)
    t2 = time.perf_counter()
    print(json.dumps({"n": n, "k": k, "pca_fit_samples": fit, "stream_s": t1 - t0, "kmeans_s": t2 - t1,
                      "clusters_nonempty": int(len(np.unique(ids)))}))


def bench_scale(n, k, fit):
    seconds, peak, out = child_run([os.path.join("bench", "run.py"), "--_scale", str(n), str(k), str(fit)])
    result = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    result.update({"seconds": seconds, "peak_rss_gib": peak})
    return result


def measure_passes(res, parts, sizes, plan, c):
    """Feature pass and training pass: real pipeline against the raw model, per input size."""
    if "features" in parts:
        res["features"] = {s: bench_features(s, plan["images"][s] if s in plan["images"] else 64, plan["reps"], c)
                           for s in sizes}
        res["feature_pass_efficiency"] = {str(s): r["efficiency"] for s, r in res["features"].items()}
        for s, r in res["features"].items():
            print(f"feature pass {s:>3} px: real {r['real_img_s']:7.1f} img/s, raw model {r['raw_img_s']:7.1f} img/s, "
                  f"efficiency {r['efficiency']:.1%}  ({r['gflop_per_image']:.2f} GFLOP/img, raw model at "
                  f"{r['raw_img_s'] * r['gflop_per_image']:.0f} GFLOP/s)")
    if "train" in parts:
        res["train"] = {s: bench_train(s, plan["train_images"][s] if s in plan["train_images"] else 32,
                                       plan["reps"], c) for s in sizes}
        res["train_pass_efficiency"] = {str(s): r["efficiency"] for s, r in res["train"].items()}
        for s, r in res["train"].items():
            print(f"train pass   {s:>3} px: real {r['real_img_s']:7.1f} img/s, raw step  {r['raw_img_s']:7.1f} img/s, "
                  f"efficiency {r['efficiency']:.1%}")


def measure_clustering(res, parts, plan, c):
    """PCA-whitening + k-means against scikit-learn, and our PCA against faiss'."""
    if "clustering" in parts:
        r = res["clustering"] = bench_clustering(plan["cluster_n"], c)
        res["clustering_speedup_vs_sklearn"] = r["speedup"]
        print(f"clustering {r['n']} x {r['d']}, k {r['k']}: ours {r['ours_s']:.1f} s (PCA {r['ours_pca_s']:.1f} + k-means "
              f"{r['ours_kmeans_s']:.1f}), scikit-learn {r['sklearn_s']:.1f} s (PCA {r['sklearn_pca_s']:.1f} + k-means "
              f"{r['sklearn_kmeans_s']:.1f}), speedup {r['speedup']:.1f}x (NMI vs truth: ours "
              f"{r['nmi_ours_vs_truth']:.3f}, sklearn {r['nmi_sklearn_vs_truth']:.3f})")
    if "pca" in parts:
        r = res["pca"] = bench_pca(plan["pca_n"], c)
        res["pca_speedup_vs_faiss"] = r["speedup"]
        print(f"PCA-whitening {r['n']} x {r['d']}: torch {r['torch_s']:.1f} s, faiss {r['faiss_s']:.1f} s, "
              f"speedup {r['speedup']:.1f}x (k-means NMI between the two {r['kmeans_nmi_faiss_vs_torch']:.3f})")


def measure_runs(res, parts, plan, epoch_tree):
    """One epoch of train.py on a real tree, what several clusterings per epoch add, and the streamed
    ImageNet-sized clustering."""
    if "epoch" in parts:
        r = res["epoch"] = bench_epoch(epoch_tree)
        res["epoch_seconds"] = {k: r[k] for k in ("features", "clustering", "train", "process_s")}
        res["peak_rss_gib"] = r["peak_rss_gib"]
        print(f"epoch on {r['tree']}: features {r['features']:.1f} s, clustering {r['clustering']:.1f} s, "
              f"train {r['train']:.1f} s ({r['train_img_s']:.0f} img/s), whole process {r['process_s']:.1f} s, "
              f"peak RSS {r['peak_rss_gib']:.2f} GiB")
    if "heads" in parts:
        r = res["heads"] = bench_heads(plan["heads_n"], plan["heads_train"], plan["heads_reps"], dict(DEFAULTS))
        for ks in HEADS:
            print(f"num_classes {ks}: an epoch of {r['images']} images: features {r['features']:.1f} s, clustering "
                  f"{r[ks]['clustering']:.2f} s, train {r[ks]['train']:.1f} s (from {r['train_images']} images)")
        print(f"{HEADS[1]} / {HEADS[0]}: epoch {r['ratio']['epoch']:.3f}x, clustering {r['ratio']['clustering']:.2f}x, "
              f"train {r['ratio']['train']:.3f}x (the fastest of {r['reps']} alternated repetitions)")
    if "scale" in parts:
        r = res["scale_run"] = bench_scale(plan["scale_n"], plan["scale_k"], plan["scale_fit"])
        print(f"scale run {r['n']} x 4096 streamed (PCA fitted on {r['pca_fit_samples']}), k-means k = {r['k']}: "
              f"{r['seconds']:.0f} s (stream + PCA {r['stream_s']:.0f} s, k-means {r['kmeans_s']:.0f} s), "
              f"peak RSS {r['peak_rss_gib']:.2f} GiB")


def measure_decoding(res, parts, plan, c):
    """JPEG decoding per core (old Pillow path against decode_file), the decoder crossover, the start-up check."""
    if "decode" not in parts and "startup" not in parts:
        return
    import importlib.util  # bench/decoding.py, not the repository's decoding.py that ROOT on sys.path would give
    spec = importlib.util.spec_from_file_location("bench_decoding", os.path.join(ROOT, "bench", "decoding.py"))
    decoding = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(decoding)
    with decoding.temporary_folder() as tmp:
        if "decode" in parts:
            r = res["decode"] = decoding.bench_decode(plan["decode_images"], plan["decode_reps"],
                                                      c["rrc_scale_min"], tmp)
            res["decode_speedup"] = {s: {k: row[f"{k}_speedup"] for k in ("eval", "train")}
                                     for s, row in r["by_input_size"].items()}
            decoding.print_decode(r)
            r = res["decode_crossover"] = decoding.bench_crossover(plan["crossover_pixels"], plan["decode_reps"], tmp)
            decoding.print_crossover(r)
        if "startup" in parts:
            r = res["startup"] = decoding.bench_startup(plan["startup_images"], plan["startup_reps"],
                                                        c["cache_mb"], tmp)
            res["startup_speedup"] = r["speedup"]
            decoding.print_startup(r)


def measure_photos(res, plan, c, tree):
    """Real photographs of 1-18 megapixels at 64 px: epoch time against the raw model, memory."""
    import photos
    build = time.perf_counter()
    tree = photos.build_tree(f"{tree}_{plan['photos']}", n=plan["photos"])
    r = res["photos"] = photos.bench_photos(tree, c, child_run)
    r["build_tree_s"] = time.perf_counter() - build
    print(f"photos: {r['images']} images of {r['megapixels_min']:.1f}-{r['megapixels_max']:.1f} MP "
          f"(mean {r['megapixels_mean']:.1f}; {r['formats']}), raw model {r['raw_features_s']:.1f} s features + "
          f"{r['raw_train_s']:.1f} s training at {photos.INPUT_SIZE} px")
    for name, run in r["runs"].items():
        print(f"  decode_side {name}: first (decoding) pass {run['first_pass_s']:.1f} s, epoch {run['epoch_s']:.1f} s "
              f"(features {run['features_s']:.1f} + train {run['train_s']:.1f}) = {run['epoch_over_raw']:.2f}x the raw "
              f"model, peak RSS {run['peak_rss_gib']:.2f} GiB")


def measure_sharded(res, plan):
    """The clustering step under torchrun (gloo): per-rank memory and time for 1, 2, 4 processes, and projections."""
    import sharded
    results = sharded.bench_sharded(plan["sharded_n"], plan["sharded_k"], 10)
    projected = sharded.projection()
    res["sharded"] = {"runs": results, "projected": projected}
    sharded.print_sharded(results, projected)


def main(argv=None):
    p = argparse.ArgumentParser(description="DeepCluster benchmarks (ratios measured in one run)")
    p.add_argument("--quick", action="store_true", help="a reduced version of everything (smaller sets, one repetition)")
    p.add_argument("--parts", default="features,train,clustering,pca,epoch,heads,scale,photos,decode,startup,sharded",
                   help="comma-separated subset of features,train,clustering,pca,epoch,heads,scale,photos,decode,"
                        "startup,sharded")
    p.add_argument("--photo_tree", default=os.path.join(ROOT, "bench", "photos_tree"),
                   help="where the photo tree is built (once) from Debian's wallpaper packages")
    p.add_argument("--sizes", default="32,128", help="input sizes for the feature and training passes")
    p.add_argument("--epoch_tree", default=SAMPLE, help="Fashion-MNIST tree for the full-epoch measurement")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results.json"))
    p.add_argument("--_scale", nargs=3, type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a._scale:
        return scale_child(*a._scale)
    plan = QUICK if a.quick else FULL
    parts = a.parts.split(",")
    c = dict(DEFAULTS)
    sizes = [int(s) for s in a.sizes.split(",")]
    t_start = time.perf_counter()
    res = {"quick": a.quick, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "workers": loader_workers(c), "batch_size": c["batch_size"], "matmul_gflops": matmul_gflops()}
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, {res['torch_threads']} threads, "
          f"fp32 matmul {res['matmul_gflops']:.0f} GFLOP/s, workers {res['workers']}, batch {c['batch_size']}")
    measure_passes(res, parts, sizes, plan, c)
    measure_clustering(res, parts, plan, c)
    measure_runs(res, parts, plan, a.epoch_tree)
    measure_decoding(res, parts, plan, c)
    if "photos" in parts:
        measure_photos(res, plan, c, a.photo_tree)
    if "sharded" in parts:
        measure_sharded(res, plan)
    res["bench_seconds"] = time.perf_counter() - t_start
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2, default=float)
    print(f"total {res['bench_seconds']:.0f} s; wrote {a.out}")


if __name__ == "__main__":
    main()
