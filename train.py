"""DeepCluster training: `python train.py [--config FILE] [--key value ...]`.

Each epoch: features of every image with the head removed -> PCA-whitening + k-means ->
pseudo-labels -> a fresh head -> one training pass over a cluster-balanced sample ->
metrics.jsonl line and an atomic checkpoint. Re-running the same command resumes.
"""
import json
import os
import random
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

import clustering
import distributed
import metrics
from cfg import load_cfg, save_cfg
from clustering import PIC, Kmeans, UnifLabelSampler, epoch_seed
from dataset import DataError, PseudoLabelDataset, eval_transform, open_split, seed_worker, train_transform
from models import FEATURE_DIM, build_model

CHECKPOINT = "checkpoint.pth.tar"
METRICS = "metrics.jsonl"


class Logger:
    """Prints a line (without breaking progress bars) and appends it to exp_dir/train.log."""

    def __init__(self, exp_dir, verbose=True, main_process=True):
        self.main_process = main_process
        if main_process:
            os.makedirs(exp_dir, exist_ok=True)
        self.path = os.path.join(exp_dir, "train.log")
        self.verbose = verbose

    def __call__(self, msg):
        if not self.main_process:  # under torchrun only rank 0 speaks
            return
        if self.verbose:
            tqdm.write(msg)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")


class AverageMeter:
    def __init__(self):
        self.sum, self.count = 0.0, 0

    def update(self, value, n=1):
        self.sum += value * n
        self.count += n

    @property
    def avg(self):
        return self.sum / max(self.count, 1)


# ---------------------------------------------------------------- pieces of an epoch

def make_loader(dataset, c, device, sampler=None):
    return DataLoader(dataset, batch_size=c["batch_size"], sampler=sampler, shuffle=False,
                      num_workers=c["workers"], pin_memory=device.type == "cuda",
                      worker_init_fn=seed_worker, persistent_workers=False)


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(c, device):
    """Mixed precision on CUDA only (cfg amp); the CPU keeps float32."""
    return AMP_DTYPES.get(c["amp"]) if device.type == "cuda" else None


def to_device(images, device):
    """Non-blocking copy; channels_last on CUDA, where cuDNN's convolutions are fastest with it."""
    if device.type == "cuda":
        return images.to(device, non_blocking=True, memory_format=torch.channels_last)
    return images.to(device)


def iter_features(loader, model, device, verbose=True, dtype=None):
    """(image indices, 4096-d pre-ReLU fc7 features as float32) batch by batch, eval mode, no autograd."""
    model.eval()
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        for images, index in tqdm(loader, desc="features", leave=False, disable=not verbose or None):
            out = model(to_device(images, device))
            yield index.numpy(), out.float().cpu().numpy()


def compute_features(loader, model, device, verbose=True, dtype=None, dim=FEATURE_DIM):
    """The N x dim outputs (4096-d fc7 features by default) of every image of the loader's dataset, in its order."""
    features = np.empty((len(loader.dataset), dim), dtype=np.float32)
    for index, out in iter_features(loader, model, device, verbose, dtype):
        features[index] = out
    return features


def train_one_epoch(loader, model, body_optimizer, head_optimizer, device, verbose=True, dtype=None):
    """One pass of cross-entropy on the pseudo-labels; both optimizers step every batch
    (head_optimizer None: a head without parameters, cfg head "centroids").

    Returns an AverageMeter of the loss. With dtype float16 the loss is scaled (GradScaler)."""
    model.train()
    criterion = nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    losses = AverageMeter()
    bar = tqdm(loader, desc="train", leave=False, disable=not verbose or None)
    for images, target in bar:
        images, target = to_device(images, device), target.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = criterion(model(images), target)
        body_optimizer.zero_grad(set_to_none=True)
        if head_optimizer is not None:
            head_optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(body_optimizer)
        if head_optimizer is not None:
            scaler.step(head_optimizer)
        scaler.update()
        losses.update(loss.item(), images.size(0))
        bar.set_postfix(loss=f"{losses.avg:.4f}")
    return losses


def make_optimizer(model, c):
    params = model.body_parameters()  # Sobel is frozen and the head has its own optimizer
    if c["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=c["lr"], weight_decay=c["weight_decay"])
    return torch.optim.SGD(params, lr=c["lr"], momentum=c["momentum"], weight_decay=c["weight_decay"])


def make_clusterer(c):
    if c["clustering"] == "pic":
        return PIC(c["pca_dim"], c["pic_nnn"], c["pic_sigma"], c["pic_alpha"], c["pic_iterations"], c["pca_method"])
    return Kmeans(c["num_classes"], c["pca_dim"], c["kmeans_niter"], c["pca_method"], c["kmeans_nredo"])


def make_scheduler(optimizer, c):
    if c["lr_scheduler"] == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=c["lr_step_size"], gamma=c["lr_gamma"])
    if c["lr_scheduler"] == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=c["lr_gamma"],
                                                          patience=c["lr_patience"])
    return None


# ---------------------------------------------------------------- checkpoint

def rng_state():
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {"torch": torch.get_rng_state(),
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
            "python": {"version": py_state[0], "state": list(py_state[1])}}


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    s = state["numpy"]
    np.random.set_state(("MT19937", s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"],
                         s["cached_gaussian"]))
    random.setstate((state["python"]["version"], tuple(state["python"]["state"]), None))


def save_checkpoint(path, state):
    """Write to a temporary file in the same folder, then rename: a kill never leaves half a checkpoint."""
    tmp = f"{path}.tmp.{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, c, keys=("arch", "sobel", "input_size", "num_classes")):
    """Load a checkpoint with weights_only=True and check it was made with the same model settings."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SystemExit(f"checkpoint error: cannot read '{path}' ({type(e).__name__}: {e}); "
                         "use --resume false or another exp_dir") from None
    # weights saved from a wrapped model (DistributedDataParallel) carry a "module." prefix
    ckpt["state_dict"] = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
    for key in keys:
        if ckpt.get(key) != c[key]:
            raise SystemExit(f"checkpoint error: '{path}' was trained with {key}={ckpt.get(key)!r} but the config "
                             f"says {key}={c[key]!r}; use another exp_dir, or --resume false to start over")
    return ckpt


def truncate_metrics(path, epochs_done):
    """Keep the metrics lines of completed epochs only (a kill can leave one line past the checkpoint)."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        rows = [line for line in f if line.strip()]
    kept = [line for line in rows if json.loads(line)["epoch"] < epochs_done]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(kept)


# ---------------------------------------------------------------- the run

def main(device="cpu", argv=None):
    c = load_cfg(argv)
    try:
        return train(c, device)
    except KeyboardInterrupt:
        print(f"\ninterrupted: run the same command again to resume from the last completed epoch "
              f"(checkpoint in {c['exp_dir']})", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        distributed.cleanup()


def train(c, device="cpu"):
    device = torch.device(device)
    rank, world, local_rank = distributed.setup(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.backends.cudnn.benchmark = True
    main_process = rank == 0
    comm_device = device if device.type == "cuda" else torch.device("cpu")  # NCCL talks GPU, gloo CPU
    log = Logger(c["exp_dir"], c["verbose"], main_process)
    verbose = c["verbose"] and main_process
    if world > 1 and c["sync_bn"] and device.type != "cuda":
        raise SystemExit("config error: sync_bn needs CUDA (torch's SyncBatchNorm runs on GPUs only); "
                         "use train_cuda.py under torchrun or --sync_bn false")
    if world > 1 and c["pca_fit_samples"]:
        raise SystemExit("config error: pca_fit_samples > 0 is not supported with several processes yet; "
                         "set it to 0 under torchrun")
    dtype = amp_dtype(c, device)
    torch.manual_seed(c["seed"])
    np.random.seed(c["seed"])
    random.seed(c["seed"])

    # --- data: every check that can fail happens before any heavy work
    dataset = open_split(c, "train", eval_transform(c["input_size"]), log=log)
    n = len(dataset)
    if c["num_classes"] > n:
        raise DataError(f"num_classes (k) = {c['num_classes']} is larger than the {n} images in "
                        f"'{c['dataset_path']}'")
    held_out = "" if c["test_path"] or not c["val_split"] else f" (val_split {c['val_split']} held out)"
    log(f"data: {n} images in '{c['dataset_path']}'{held_out}, "
        + (f"{len(dataset.classes)} classes" if dataset.has_labels else "no class folders (no label metrics)")
        + (f", {len(dataset.skipped)} unreadable files skipped" if dataset.skipped else ""))

    ckpt_path = os.path.join(c["exp_dir"], CHECKPOINT)
    metrics_path = os.path.join(c["exp_dir"], METRICS)
    ckpt = None
    if os.path.exists(ckpt_path):
        if c["resume"]:
            ckpt = load_checkpoint(ckpt_path, c)
            if int(ckpt["assignment"].numel()) != n:
                raise SystemExit(f"checkpoint error: '{ckpt_path}' was trained on {ckpt['assignment'].numel()} "
                                 f"images, '{c['dataset_path']}' has {n}; use another exp_dir or --resume false")
        else:
            log(f"--resume false: starting over, {ckpt_path} and {METRICS} will be replaced")
    if main_process:
        save_cfg(c, c["exp_dir"])

    # --- model and the body's optimizer (created once, head excluded, Sobel excluded)
    model = build_model(c["arch"], c["sobel"], out=0, input_size=c["input_size"])
    if c["sync_bn"] and world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.contiguous_format)
    body_optimizer = make_optimizer(model, c)
    scheduler = make_scheduler(body_optimizer, c)
    clusterer = make_clusterer(c)
    my_share = distributed.shard(n, rank, world)  # the images whose features this process computes
    eval_loader = make_loader(dataset if world == 1 else dataset.subset(my_share), c, device)
    log(f"{world} process{'es' if world > 1 else ''}, clustering with faiss on {clustering.faiss_device()}"
        + (f", mixed precision {c['amp']}" if dtype is not None else ""))

    def cluster(epoch, previous):
        """Steps 1-4 with the current weights: head off, features, PCA-whitening + k-means.

        Returns the clustering's half of a metrics row. The seed is fresh for every epoch.
        """
        t0 = time.time()
        model.remove_head()
        seed = epoch_seed(c["seed"], epoch)
        if c["pca_fit_samples"]:
            # streaming: fit the PCA on the first pca_fit_samples images of a random order, then
            # project every batch as it is computed; N x 4096 is never held
            order = np.random.default_rng(seed).permutation(n).tolist() if c["pca_fit_samples"] < n else None
            batches = iter_features(make_loader(dataset, c, device, order), model, device, verbose, dtype)
            xb, pca = clustering.streamed_whitening(batches, n, c["pca_dim"], c["pca_fit_samples"],
                                                    log, c["pca_method"], seed)
            t1 = time.time()
            clusterer.cluster_whitened(xb, pca, seed, log=log if verbose else None)
        else:
            # each process computes its share; rank 0 gathers all features and clusters once
            features = compute_features(eval_loader, model, device, verbose, dtype)
            features = distributed.gather_rows(my_share, features, n, comm_device)
            t1 = time.time()
            if main_process:
                clusterer.cluster(features, seed=seed, log=log if verbose else None)
            del features
        row = clustering_row(clusterer.assignment, previous, t0, t1) if main_process else None
        if main_process and c["head"] == "centroids" and world > 1:
            row["head"] = (clusterer.pca, clusterer.centroids)  # every rank builds the same head
        row = distributed.broadcast(row)  # rank 0's assignment to every rank
        clusterer.assignment, clusterer.k = np.asarray(row.pop("assignment")), row["clusters_found"]
        if "head" in row:
            clusterer.pca, clusterer.centroids = row.pop("head")
        return row

    def clustering_row(assignment, previous, t0, t1):
        return {
            "assignment": assignment,
            "nmi_prev": metrics.nmi(previous, assignment) if previous is not None else None,
            "nmi": metrics.nmi(dataset.labels, assignment) if dataset.has_labels else None,
            "ari": metrics.ari(dataset.labels, assignment) if dataset.has_labels else None,
            "clusters_found": clusterer.k,
            "clusters_nonempty": int(len(np.unique(assignment))),
            "kmeans_loss": clusterer.loss,
            "reclustered": True,
            "time_features_s": round(t1 - t0, 3),
            "time_clustering_s": round(time.time() - t1, 3),
        }

    if ckpt is not None:
        state = ckpt["state_dict"]
        if "top_layer.weight" in state:
            model.add_head(state["top_layer.weight"].shape[0])
        model.load_state_dict(state)
        body_optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None and ckpt.get("scheduler"):
            scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        clusterer.assignment = ckpt["assignment"].numpy()
        clusterer.pca = {"A": ckpt["pca_A"].numpy(), "b": ckpt["pca_b"].numpy()}
        clusterer.centroids = ckpt["centroids"].numpy()
        clusterer.k = int(clusterer.centroids.shape[0])
        clus_row = ckpt["clustering_metrics"]
        start_epoch = int(ckpt["epoch"])
        if main_process:
            truncate_metrics(metrics_path, start_epoch)
        if start_epoch >= c["num_epoch"]:
            log(f"{ckpt_path} has already finished {start_epoch} epochs (num_epoch = {c['num_epoch']}); "
                "raise --num_epoch to continue or pass --resume false to start over")
            return ckpt
        log(f"resuming from {ckpt_path}: {start_epoch} epochs done, continuing to {c['num_epoch']}")
    else:
        if main_process and os.path.exists(metrics_path):
            os.remove(metrics_path)
        start_epoch = 0
    log(f"model: {c['arch']}{' + sobel' if c['sobel'] else ''} at {c['input_size']} px, "
        + (f"k-means with k = {c['num_classes']}" if c["clustering"] == "kmeans" else "PIC clustering")
        + f", device {device}")

    def save(epochs_done, row, clus_row):
        """Everything a resume or pred.py needs; the clustering is the one of the saved weights."""
        if not main_process:
            return None
        state = {
            "epoch": epochs_done,
            "arch": c["arch"], "sobel": c["sobel"], "input_size": c["input_size"], "num_classes": c["num_classes"],
            "cfg": dict(c),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": body_optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng_state(),
            "assignment": torch.from_numpy(np.asarray(clusterer.assignment, dtype=np.int64)),
            "classes": list(dataset.classes),
            "metrics": row,
            "clustering_metrics": clus_row,
            **clustering.to_tensor_dict(clusterer.pca, clusterer.centroids),
        }
        save_checkpoint(ckpt_path, state)
        return state

    if ckpt is None:
        clus_row = cluster(0, None)  # epoch 0 clusters the features of the random network
        log(f"clustering of the random network: nmi {fmt(clus_row['nmi'])}  ari {fmt(clus_row['ari'])}")
        ckpt = save(0, None, clus_row)  # --num_epoch 0 gives a checkpoint of the random network

    aug = train_transform(c["input_size"], c["rrc_scale_min"])
    for epoch in range(start_epoch, c["num_epoch"]):
        t_start = time.time()
        assignment = clusterer.assignment
        if c["head"] == "centroids":  # DeepCluster-v2: the head is the clustering, rebuilt every epoch
            model.set_centroid_head(clusterer.pca, clusterer.centroids, c["head_temperature"])
        elif epoch % c["reassign"] == 0 and not (c["head"] == "match" and model.top_layer is not None):
            model.add_head(clusterer.k)  # 7. a fresh head for the new clusters ("match": first epoch only)
        # 5-6. each original image with its own cluster, sampled uniformly over clusters
        train_set = PseudoLabelDataset(dataset, assignment, aug)
        sampler = UnifLabelSampler(n, assignment, seed=epoch_seed(c["seed"], epoch))
        net = model
        if world > 1:
            sampler = distributed.share_of(sampler.indexes, rank, world).tolist()  # a disjoint share per rank
            torch.manual_seed(epoch_seed(c["seed"], epoch) + rank)  # each rank its own augmentations
            net = DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
        lr = body_optimizer.param_groups[0]["lr"]
        head_params = list(model.top_layer.parameters())
        head_optimizer = torch.optim.SGD(head_params, lr=lr, weight_decay=c["weight_decay"]) if head_params else None
        # 8. one training pass
        t0 = time.time()
        meter = train_one_epoch(make_loader(train_set, c, device, sampler), net, body_optimizer, head_optimizer,
                                device, verbose, dtype)
        loss = distributed.all_mean(meter.sum, meter.count, comm_device)
        t_train = time.time() - t0
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(loss)
        elif scheduler is not None:
            scheduler.step()

        # 9. log this epoch: the clustering it trained on, and its training pass
        row = {"epoch": epoch, "loss": loss, **clus_row, "lr": lr, "time_train_s": round(t_train, 3),
               "images_per_s": round(len(sampler) * world / max(t_train, 1e-9), 2)}
        if world > 1:
            row["ranks_in_sync"] = distributed.in_sync(model, comm_device)
        if main_process:
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        log(f"epoch {epoch + 1}/{c['num_epoch']}  loss {loss:.4f}  nmi {fmt(row['nmi'])}  ari {fmt(row['ari'])}  "
            f"nmi_prev {fmt(row['nmi_prev'])}  clusters {row['clusters_nonempty']}/{row['clusters_found']}  "
            f"time {time.time() - t_start + row['time_features_s'] + row['time_clustering_s']:.0f}s "
            f"(features {row['time_features_s']:.0f}s, clustering {row['time_clustering_s']:.0f}s, "
            f"train {t_train:.0f}s at {row['images_per_s']:.0f} img/s)")

        # the next epoch's clustering comes before the checkpoint, so that every checkpoint holds
        # the clustering of its own weights (pred.py's assign mode relies on it)
        if (epoch + 1) % c["reassign"] == 0:
            head = model.top_layer
            clus_row = cluster(epoch + 1, assignment)
            if c["head"] == "match":  # the trained rows follow their clusters into the new clustering
                model.top_layer = head
                model.carry_head(clustering.match_clusters(assignment, clusterer.assignment, head.out_features,
                                                           clusterer.k))
        else:
            clus_row = {**clus_row, "nmi_prev": None, "kmeans_loss": None, "reclustered": False,
                        "time_features_s": 0.0, "time_clustering_s": 0.0}
        ckpt = save(epoch + 1, row, clus_row)
        distributed.barrier()
    if c["num_epoch"] > start_epoch and clus_row["reclustered"]:
        log(f"clustering of the network after {c['num_epoch']} epochs: nmi {fmt(clus_row['nmi'])}  "
            f"ari {fmt(clus_row['ari'])}  nmi_prev {fmt(clus_row['nmi_prev'])}")
    return ckpt


def require_cuda(cpu_script):
    """The one check of the *_cuda.py entry points: stop with one line when there is no GPU."""
    if not torch.cuda.is_available():
        raise SystemExit(f"error: CUDA is not available; use {cpu_script} to run on the CPU")
    return "cuda"


def fmt(value):
    return "  -  " if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main("cpu")
