"""DeepCluster training: `python train.py [--config FILE] [--key value ...]`.

Each epoch: a fresh head for the current clusters -> one training pass over a cluster-balanced
sample of the images, each with its own pseudo-label -> a metrics.jsonl line -> features of
every image with the head removed, PCA-whitening + k-means: the next epoch's clusters -> an
atomic checkpoint. Epoch 0 trains on the clusters of the random network. Re-running the same
command resumes. After every epoch exp_dir/curves.png shows the run so far (and, with cfg tensorboard, the
metrics go to TensorBoard too).
"""
if __name__ == "__main__":
    import cfg
    cfg.answer_help("train")  # before torch and faiss load: --help answers at once

import contextlib
import copy
import functools
import os
import random
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import clustering
import curves
import distributed
import gpu_input
import metrics
from cfg import cluster_ks, load_cfg, save_cfg
from checkpoint import (CHECKPOINT, EARLIER_LAYOUT, METRICS, MODEL_KEYS, SELECTED, TRAINING_KEYS, append_metrics,
                        earlier_layout, hold_lock, keep_as_selected, keep_selected_apart, load_checkpoint,
                        read_metrics, remove_stale_temporaries, restore_training, save_checkpoint, training_state,
                        truncate_metrics)
from clustering import PIC, Kmeans, UnifLabelSampler, epoch_seed
from dataset import PseudoLabelDataset, eval_transform, file_fingerprint, open_split, train_transform
from engine import Logger, amp_dtype, average_into, compile_body, compute_features, feature_dtype, format_metric
from engine import iter_features, loader_workers, make_loader, memory_format, train_one_epoch, weights_finite
from errors import BusyError, CheckpointError, ConfigError, DataError, TrainingError, UserError, counted
from models import FEATURE_DIM, HEAD_PREFIXES, build_model
from models.pretrained import load_pretrained, read_state_dict

CPU = torch.device("cpu")


def make_optimizer(model, c):
    params = model.body_parameters()  # Sobel is frozen and the head has its own optimizer
    if c["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=c["lr"], weight_decay=c["weight_decay"])
    return torch.optim.SGD(params, lr=c["lr"], momentum=c["momentum"], weight_decay=c["weight_decay"])


def make_scheduler(optimizer, c):
    if c["lr_scheduler"] == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=c["lr_step_size"], gamma=c["lr_gamma"])
    if c["lr_scheduler"] == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=c["lr_gamma"],
                                                          patience=c["lr_patience"])
    return None


def make_clusterer(c, device=None):
    """PIC or k-means (+ equal_size) with the config's settings; device: where it runs (clustering.resolve_device)."""
    if c["clustering"] == "pic":  # PIC's cluster sizes are its outcome: equal_size applies to k-means only
        return PIC(c["pca_dim"], c["pic_nnn"], c["pic_sigma"], c["pic_alpha"], c["pic_iterations"], c["pca_method"],
                   device)
    ks = cluster_ks(c)  # one k-means per k on the same whitened features, the first is the run's clustering
    return Kmeans(ks[0], c["pca_dim"], c["kmeans_niter"], c["pca_method"], c["kmeans_nredo"],
                  c["equal_size"], c["equal_size_eps"], device, other_ks=ks[1:], space=c["clustering_space"])


def check_processes(c, device, world):
    """Settings that several processes do not support, refused before any work."""
    if world > 1 and c["sync_bn"] and device.type != "cuda":
        raise ConfigError("sync_bn needs CUDA (torch's SyncBatchNorm runs on GPUs only); "
                          "use train_cuda.py under torchrun or --sync_bn false")
    if world > 1 and c["shard_clustering"] and c["clustering_space"] == "umap":  # UMAP's graph needs every row
        raise ConfigError("clustering_space umap embeds all features in one process; under torchrun set "
                          "--shard_clustering false (rank 0 then gathers the features and clusters them)")


class Run:
    """One training run: its data, network, optimizers, clustering and files.

    The methods are the steps of an epoch, called in order by `train` below.
    """

    def __init__(self, c, device):
        self.c = c
        self.device = torch.device(device)
        self.rank, self.world, local_rank = distributed.setup(self.device.type)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", local_rank)
            torch.backends.cudnn.benchmark = True
        self.device_ids = [local_rank] if self.device.type == "cuda" else None
        self.main_process = self.rank == 0
        self.comm_device = self.device if self.device.type == "cuda" else torch.device("cpu")  # NCCL: GPU, gloo: CPU
        self.clustering_device = clustering.resolve_device(c["clustering_device"], self.device)  # None: faiss
        self.feature_dtype = feature_dtype(c, self.device)  # how the features are held until whitened
        # under torchrun every rank whitens its own features (cluster_sharded), and k-means runs sharded too
        self.shard_whitening = self.world > 1 and (c["shard_clustering"] or c["pca_fit_samples"] > 0)
        self.shard_kmeans = self.shard_whitening and c["shard_clustering"] and c["clustering"] == "kmeans"
        self.log = Logger(c["exp_dir"], c["verbose"], self.main_process, hold=True)  # no folder before claim_folder
        self.verbose = c["verbose"] and self.main_process
        self.dtype = amp_dtype(c, self.device)
        self.ckpt_path = os.path.join(c["exp_dir"], CHECKPOINT)
        self.selected_path = os.path.join(c["exp_dir"], SELECTED)
        self.metrics_path = os.path.join(c["exp_dir"], METRICS)
        check_processes(c, self.device, self.world)
        self.input_line = gpu_input.describe(c, self.device, loader_workers(c))  # decode_device's one-line errors first
        self.tensorboard = None
        if c["tensorboard"] and self.main_process:  # one line when the package is missing, before any work
            curves.tensorboard_writer()
        torch.manual_seed(c["seed"])
        np.random.seed(c["seed"])
        random.seed(c["seed"])
        self.open_data()
        self.ckpt = self.previous_checkpoint()
        self.choose_k()
        self.build_network()
        self.start_epoch, self.clustering_row, self.selected = 0, None, None
        self.clustering_weights = None  # reassign > 1: the weights that made the current clustering

    def claim_folder(self):
        """With exp_dir held by this run (exp_dir_lock), after every check passed: only now is anything written
        (the folder, the lines logged so far, config.json, TensorBoard's folder)."""
        if not self.main_process:
            return
        self.log.open()
        if self.ckpt_stat != checkpoint_stat(self.ckpt_path):
            raise BusyError(f"'{self.ckpt_path}' changed while this run was starting (another run wrote it); run the "
                            "same command again")
        for tmp in remove_stale_temporaries(self.ckpt_path) + remove_stale_temporaries(self.selected_path):
            self.log(f"removed '{tmp}', left by a save that was interrupted")
        save_cfg(self.c, self.c["exp_dir"])
        if self.c["tensorboard"]:
            self.tensorboard = curves.open_tensorboard(os.path.join(self.c["exp_dir"], "tensorboard"))

    # ------------------------------------------------------------ set-up

    def open_data(self):
        """Every check that can fail on the data happens here, before any heavy work."""
        c = self.c
        self.dataset = open_split(c, "train", eval_transform(c["input_size"]), log=self.log)
        self.n = n = len(self.dataset)
        self.fingerprint = file_fingerprint(self.dataset.paths, c["dataset_path"])
        held_out = "" if c["test_path"] or not c["val_split"] else f" (val_split {c['val_split']} held out)"
        self.where = f"{counted(n, 'image')} in '{c['dataset_path']}'" + (
            f" left after val_split {c['val_split']} was held out" if held_out else "")
        if n < 2:  # k-means' k is at least 2 and PIC needs two: before this check, 1 image was a PCA traceback
            raise DataError(f"training clusters the images: it needs at least 2, there is {self.where}")
        fit = c["pca_fit_samples"]
        if fit >= n:
            self.log(f"pca_fit_samples {fit}: the PCA is fitted on all {counted(n, 'image')} (there are no more)")
        elif fit:
            self.log(f"pca_fit_samples {fit}: the PCA is fitted on a random {fit} of the {n} images every epoch"
                     + clustering.fit_sample_note(c["pca_dim"], fit, n, FEATURE_DIM))
        note = clustering.clamp_note(c["pca_dim"], min(n, fit or n), FEATURE_DIM)
        if note:
            self.log(note)
        labels = (f"{len(self.dataset.classes)} classes" if self.dataset.has_labels
                  else "no class folders (no label metrics)")
        skipped = f", {len(self.dataset.skipped)} unreadable files skipped" if self.dataset.skipped else ""
        self.log(f"data: {n} images in '{c['dataset_path']}'{held_out}, {labels}{skipped}")

    def choose_k(self):
        """k-means' k: num_classes (one k or a list: one clustering per k), or with num_classes 0 the resumed run's
        k or clustering.auto_k of the images (written back into the config, so that config.json and the checkpoint
        keep the number)."""
        c = self.c
        if c["clustering"] != "kmeans":
            return
        refusal = clustering.umap_refusal(self.n) if c["clustering_space"] == "umap" else None
        if refusal:
            raise ConfigError(refusal)
        given = cluster_ks(c)[0] > 0
        if not given:
            c["num_classes"] = self.ckpt["num_classes"] if self.ckpt is not None else clustering.auto_k(self.n)
        ks = cluster_ks(c)
        for k in ks:
            if k > self.n:
                raise DataError(f"num_classes (k) = {k}{'' if given else ' (automatic)'} is larger than the "
                                f"{self.where}")
        if c["equal_size"]:  # sharded: each rank's rows, in torch
            clustering.check_equal_size_fits(-(-self.n // self.world) if self.shard_kmeans else self.n, max(ks),
                                             self.clustering_device or (CPU if self.shard_kmeans else None))
        for k in ks:
            note = clustering.k_note(k, self.n, given or self.ckpt is not None)
            if note:
                self.log(note)

    def previous_checkpoint(self):
        """The checkpoint to resume from, checked against the config and the data; None to start anew."""
        self.ckpt_stat = checkpoint_stat(self.ckpt_path)  # claim_folder checks that nobody wrote it since
        if not os.path.exists(self.ckpt_path):
            return None
        if not self.c["resume"]:
            self.log(f"--resume false: starting over, {self.ckpt_path} and {METRICS} will be replaced")
            return None
        keys = TRAINING_KEYS if self.c["num_classes"] else MODEL_KEYS  # num_classes 0: the run's own k (choose_k)
        ckpt = load_checkpoint(self.ckpt_path, self.c, keys)
        missing = earlier_layout(ckpt)
        if missing:
            self.log(f"'{self.ckpt_path}' was written by an earlier train.py and lacks "
                     + "; ".join(f"{key} ({EARLIER_LAYOUT[key]})" for key in missing))
        trained_on = (ckpt.get("cfg") or {}).get("dataset_path", "?")
        if int(ckpt["assignment"].numel()) != self.n:
            raise CheckpointError(f"'{self.ckpt_path}' was trained on {ckpt['assignment'].numel()} images (of "
                                  f"'{trained_on}'), '{self.c['dataset_path']}' has {self.n}; use another exp_dir or "
                                  "--resume false")
        if ckpt.get("data_fingerprint") not in (None, self.fingerprint):
            raise CheckpointError(f"'{self.ckpt_path}' was trained on other images: {self.n} files of '{trained_on}', "
                                  f"not the {self.n} of '{self.c['dataset_path']}' (the sorted file names differ); a "
                                  "run continues only on its own images: use another exp_dir or --resume false")
        chosen, rule = ckpt.get("selected"), self.c["select_epoch"]
        if (chosen and chosen["rule"] != rule and int(chosen["epoch"]) != int(ckpt["epoch"])
                and os.path.exists(self.selected_path)):  # a new rule would replace the only copy of that network
            raise CheckpointError(
                f"'{self.selected_path}' holds the network of epoch {chosen['epoch']}, chosen by select_epoch "
                f"{chosen['rule']} ({chosen['rule']} {chosen['score']:.4f}); with select_epoch {rule} the run would "
                f"drop it: resume with --select_epoch {chosen['rule']}, or move {SELECTED} out of the folder to let "
                f"{rule} choose from the next epochs, or use another exp_dir")
        return ckpt

    def build_network(self):
        """The model, the body's optimizer (created once, head and Sobel excluded), schedule and clusterer."""
        c = self.c
        model = build_model(c["arch"], c["sobel"], out=0, input_size=c["input_size"])
        if c["init"] and self.ckpt is None:  # a resumed run has its own weights
            load_pretrained(model, read_state_dict(c["init"]), self.log)
        if c["sync_bn"] and self.world > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model.to(self.device, memory_format=memory_format(self.device))
        self.ema_model = copy.deepcopy(self.model) if c["ema"] else None  # the weight average (cfg ema)
        compiled = [compile_body(net, c, self.device) for net in (self.model, self.ema_model) if net is not None]
        self.body_optimizer = make_optimizer(self.model, c)
        self.scheduler = make_scheduler(self.body_optimizer, c)
        self.clusterer = make_clusterer(c, self.clustering_device)
        self.clusterer.say = self.log  # notes that hold for the run (copies_pca_dim) reach the log once
        self.my_share = distributed.shard(self.n, self.rank, self.world)  # the images whose features this rank computes
        self.eval_loader = make_loader(self.dataset if self.world == 1 else self.dataset.subset(self.my_share), c,
                                       self.device)
        where = clustering.describe(self.clustering_device)
        if self.clustering_device is None and clustering.faiss_device() == "GPU":
            where = "faiss on the GPU (a faiss GPU build)"
        if self.shard_whitening:
            where = (f"each process its own share ({clustering.describe(self.clustering_device or CPU)}, "
                     f"{'all-reduced sums' if self.shard_kmeans else 'rank 0 clusters the whitened rows'})")
        self.log(f"{self.world} process{'es' if self.world > 1 else ''}, clustering with {where}"
                 + (f", mixed precision {c['amp']}" if self.dtype is not None else "")
                 + (", torch.compile of the body" if any(compiled) else ""))
        self.log(self.input_line)

    def resume_or_start(self):
        """Resume from the checkpoint, or cluster the random network (epoch 0). False when nothing is left to do."""
        c = self.c
        if self.ckpt is not None:
            restore_training(self.ckpt, self.model, self.body_optimizer, self.scheduler, self.clusterer,
                             self.ema_model, c["seed"])
            self.clustering_row = self.ckpt["clustering_metrics"] or self.stored_clustering_metrics()
            self.start_epoch = int(self.ckpt["epoch"])
            self.keep_clustering_weights(self.ckpt.get("clustering_state_dict") or self.ckpt.get("ema_state_dict")
                                         or self.ckpt["state_dict"])
            if self.main_process:
                truncate_metrics(self.metrics_path, self.start_epoch)
            self.resume_selection()
            if self.start_epoch >= c["num_epoch"]:
                self.log(f"{self.ckpt_path} has already finished {counted(self.start_epoch, 'epoch')} (num_epoch = "
                         f"{c['num_epoch']}); raise --num_epoch to continue or pass --resume false to start over")
                return False
            self.log(f"resuming from {self.ckpt_path}: {counted(self.start_epoch, 'epoch')} done, continuing to "
                     f"{c['num_epoch']}")
        elif self.main_process:
            for stale in (self.metrics_path, self.selected_path):
                if os.path.exists(stale):
                    os.remove(stale)
        self.log(f"model: {c['arch']}{' + sobel' if c['sobel'] else ''} at {c['input_size']} px, "
                 + (f"k-means with k = {describe_ks(cluster_ks(c))}" if c["clustering"] == "kmeans"
                    else "PIC clustering")
                 + " in the UMAP space of the whitened features" * (c["clustering_space"] == "umap")
                 + f", {c['views']} augmented views of each image per epoch" * (c["views"] > 1)
                 + f", device {self.device}")
        if self.ckpt is None:
            self.clustering_row = self.cluster(0, None)  # epoch 0 trains on the clusters of the random network
            self.log(f"clustering of the random network: nmi {format_metric(self.clustering_row['nmi'])}  "
                     f"ari {format_metric(self.clustering_row['ari'])}")
            self.save(0, None)  # --num_epoch 0 gives a checkpoint of the random network
        return True

    def resume_selection(self):
        """The epoch chosen so far (when the rule is still the same); a kill between the checkpoint and its
        selected.pth.tar link is mended here."""
        chosen, rule = self.ckpt.get("selected"), self.c["select_epoch"]
        if chosen and chosen["rule"] != rule:  # previous_checkpoint refused a change that would drop a kept network
            self.selected = self.rechoose(chosen)
            chosen = self.selected
        if not chosen or chosen["rule"] != rule:
            return
        self.selected = chosen
        if self.main_process and int(chosen["epoch"]) == self.start_epoch:
            keep_as_selected(self.ckpt_path, self.selected_path)

    def rechoose(self, chosen):
        """select_epoch changed on resume: the new rule chooses among the networks the folder still holds (the last
        epoch's; the one of the old rule when that was the last too), with one line naming the epochs it could
        not consider. Returns the new `selected` (None for the rule "last" or without a score)."""
        rule, last = self.c["select_epoch"], self.start_epoch
        score = self.clustering_row.get(rule) if rule != "last" and last > 0 else None
        new = {"rule": rule, "epoch": last, "score": float(score)} if score is not None else None
        lost = (f"epochs 1-{last - 1} (their networks are not kept" if last > 2 else
                "epoch 1 (its network is not kept" if last == 2 else "")
        if int(chosen["epoch"]) != last:
            lost += f"{'; ' if lost else ''}epoch {chosen['epoch']}, the old rule's choice, is no longer in the folder"
        self.log(f"select_epoch changed from {chosen['rule']} (it had chosen epoch {chosen['epoch']}, "
                 f"{chosen['rule']} {chosen['score']:.4f}) to {rule}: "
                 + ("it takes the last epoch" if rule == "last" else
                    f"it starts from epoch {last} ({rule} {score:.4f})" if new else "it has no score yet")
                 + (f"; it cannot consider {lost})" if lost else ""))
        if new is None and self.main_process and os.path.exists(self.selected_path):
            os.remove(self.selected_path)  # the old rule's link to the last checkpoint: nothing chosen now
        return new

    # ------------------------------------------------------------ steps 1-4: cluster the features

    def cluster(self, epoch, previous):
        """Head off, features of every image, PCA-whitening + k-means (a fresh seed every epoch); every
        rank ends with the same clustering. Returns the clustering's half of the metrics row."""
        t0 = time.time()
        self.model.remove_head()
        t1 = self.whiten_and_cluster_features(epoch_seed(self.c["seed"], epoch))
        self.keep_clustering_weights(self.feature_net().state_dict())
        return self.clustering_metrics(previous, t0, t1)

    def whiten_and_cluster_features(self, seed):
        """Every image's features, PCA-whitened and clustered by self.clusterer, by the route the processes and
        settings call for: sharded (under torchrun with shard_clustering or pca_fit_samples: each rank whitens
        its own share), streamed (pca_fit_samples in one process: N x 4096 is never held) or gathered (rank 0
        holds every feature). Sets self.silhouette of the first clustering in the whitened space where one process
        holds every row (else None). Returns time.time() at the end of the feature pass (and of the whitening,
        where it is streamed or sharded)."""
        self.silhouette = None
        if self.shard_whitening:
            return self.cluster_sharded(seed)
        if self.c["pca_fit_samples"]:
            return self.cluster_streamed(seed)
        return self.cluster_gathered(seed)

    def share_clustering(self):
        """Rank 0's clusterings on every rank, where rank 0 clustered alone."""
        if self.world > 1:
            every = self.clusterer.clusterings()
            shared = distributed.broadcast([(cl.assignment, cl.k, cl.loss, cl.pca, cl.centroids, cl.offsets)
                                            for cl in every] if self.main_process else None)
            for cl, state in zip(every, shared):
                cl.assignment, cl.k, cl.loss, cl.pca, cl.centroids, cl.offsets = state

    def keep_clustering_weights(self, state):
        """reassign > 1: a copy of the weights that made the current clustering, stored with the checkpoints of
        the epochs that do not re-cluster, so that pred.py assigns with the network the clustering belongs to."""
        if self.c["reassign"] > 1 and self.main_process:
            self.clustering_weights = {k: v.detach().to("cpu", copy=True) for k, v in state.items()
                                       if not k.startswith(HEAD_PREFIXES)}

    def cluster_gathered(self, seed):
        """Each rank computes its share of the features; rank 0 gathers all of them and clusters once (the
        features are let go once whitened)."""
        keep_on = self.clustering_device or (CPU if self.feature_dtype != torch.float32 else None)
        features = compute_features(self.eval_loader, self.feature_net(), self.device, self.verbose, self.dtype,
                                    keep_on=keep_on, hold=self.feature_dtype)  # on the GPU that clusters: no host copy
        features = distributed.gather_rows(self.my_share, features, self.n, self.comm_device)
        t1 = time.time()
        if self.main_process:
            log = self.log if self.verbose else None
            xb, pca = self.clusterer.whiten(features, seed, log)
            del features
            self.clusterer.cluster_whitened(xb, pca, seed, log)
            self.silhouette = metrics.silhouette(xb, self.clusterer.assignment, seed)
        self.share_clustering()
        return t1

    def cluster_sharded(self, seed):
        """Under torchrun: every rank keeps the features of its own share and whitens them with the PCA of all
        (all-reduced statistics); k-means and the equal-size step run on every rank at once with all-reduced
        sums, and only the n cluster ids are gathered. PIC (and shard_clustering false) clusters the gathered
        whitened rows (n x pca_dim) on rank 0."""
        shards = distributed.Shards(len(self.my_share), self.comm_device)
        log = self.log if self.verbose else None
        xb, pca = self.whiten_share(seed, shards, log)
        t1 = time.time()
        if self.shard_kmeans:
            self.clusterer.cluster_whitened(xb, pca, seed, log, shards)
            return t1
        xb = distributed.gather_rows(self.my_share, xb, self.n, self.comm_device)
        if self.main_process:
            self.clusterer.cluster_whitened(xb, pca, seed, log)
            self.silhouette = metrics.silhouette(xb, self.clusterer.assignment, seed)
        self.share_clustering()
        return t1

    def whiten_share(self, seed, shards, log):
        """This rank's whitened rows (its share, in order) and the PCA of every rank's features; with
        pca_fit_samples the PCA is fitted on the same random sample as one process draws, each rank
        contributing the images of it in its share (computed first), and every later batch is projected as it
        is computed."""
        c, where = self.c, self.clustering_device or CPU
        if not c["pca_fit_samples"]:
            features = compute_features(self.eval_loader, self.feature_net(), self.device, self.verbose, self.dtype,
                                        keep_on=where, hold=self.feature_dtype)
            return self.clusterer.whiten(features, seed, log, shards)
        sample = np.random.default_rng(seed).permutation(self.n)[:c["pca_fit_samples"]]
        order, fit = distributed.sample_first(self.my_share, sample)
        batches = iter_features(make_loader(self.dataset, c, self.device, order.tolist()), self.feature_net(),
                                self.device, self.verbose, self.dtype)
        batches = ((i - shards.offset, rows.to(where)) for i, rows in batches)
        if not len(order):  # no images here: the PCA's collectives still need this rank
            batches = [(np.arange(0), torch.empty(0, FEATURE_DIM, device=where))]
        return clustering.streamed_whitening(batches, len(order), c["pca_dim"], fit, log, c["pca_method"], seed,
                                             shards)

    def cluster_streamed(self, seed):
        """pca_fit_samples > 0: the PCA is fitted on the first pca_fit_samples images of a random order and
        every later batch is projected as it is computed, so that N x 4096 is never held."""
        c, n = self.c, self.n
        order = np.random.default_rng(seed).permutation(n).tolist() if c["pca_fit_samples"] < n else None
        batches = iter_features(make_loader(self.dataset, c, self.device, order), self.feature_net(), self.device,
                                self.verbose, self.dtype)
        where = self.clustering_device
        batches = ((i, rows.cpu().numpy() if where is None else rows.to(where)) for i, rows in batches)
        xb, pca = clustering.streamed_whitening(batches, n, c["pca_dim"], c["pca_fit_samples"], self.log,
                                                c["pca_method"], seed)
        t1 = time.time()
        self.clusterer.cluster_whitened(xb, pca, seed, log=self.log if self.verbose else None)
        self.silhouette = metrics.silhouette(xb, self.clusterer.assignment, seed)
        return t1

    def feature_net(self):
        """The network whose features are clustered: the weight average when cfg ema is on, else the network."""
        return self.ema_model if self.ema_model is not None else self.model

    def stored_clustering_metrics(self):
        """The clustering half of a metrics row for the checkpoint's clustering, when an earlier layout did not
        store it: the label scores from the stored assignment; its k-means loss, nmi_prev and times are unknown."""
        row = self.clustering_metrics(None, 0.0, 0.0)
        return {**row, "kmeans_loss": None, "time_features_s": 0.0, "time_clustering_s": 0.0}

    def clustering_metrics(self, previous, t0, t1):
        """The clustering half of a metrics row; previous: the assignments of the clusterings before (one per
        clustering, as clusterer.clusterings()) or None. The further clusterings' scores carry their k in the name
        (nmi_k50, nmi_prev_k50, ari_k50, kmeans_loss_k50, clusters_nonempty_k50)."""
        labels, row = self.dataset.labels, {}
        for j, cl in enumerate(self.clusterer.clusterings()):
            scores = {
                "nmi_prev": metrics.nmi(previous[j], cl.assignment) if previous is not None else None,
                "nmi": metrics.nmi(labels, cl.assignment) if self.dataset.has_labels else None,
                "ari": metrics.ari(labels, cl.assignment) if self.dataset.has_labels else None,
                "clusters_found": cl.k,
                "clusters_nonempty": int(len(np.unique(cl.assignment))),
                "kmeans_loss": cl.loss,
            }
            if j == 0:
                row.update(scores, silhouette=getattr(self, "silhouette", None), reclustered=True)
            else:
                row.update({f"{key}_k{cl.k}": value for key, value in scores.items() if key != "clusters_found"})
        row["time_features_s"] = round(t1 - t0, 3)
        row["time_clustering_s"] = round(time.time() - t1, 3)
        return row

    # ------------------------------------------------------------ steps 5-8: head, sample, train

    def new_head(self, epoch):
        """The classifier this epoch trains, and a fresh SGD for it (None when it has no parameters)."""
        c, every = self.c, self.clusterer.clusterings()  # one head per clustering of the epoch
        if c["head"] == "centroids":  # DeepCluster-v2: the head is the clustering, rebuilt every epoch
            self.model.set_centroid_heads(self.clusterer.pca, [cl.centroids for cl in every], c["head_temperature"])
        elif epoch % c["reassign"] == 0 and not (c["head"] == "match" and self.model.top_layer is not None):
            self.model.add_heads([cl.k for cl in every])  # a new Linear(4096, k) each ("match": the first epoch only)
        params = [p for head in self.model.heads() for p in head.parameters()]
        lr = self.body_optimizer.param_groups[0]["lr"]
        return torch.optim.SGD(params, lr=lr, weight_decay=c["weight_decay"]) if params else None

    def sample(self, epoch):
        """Each original image with its own cluster (with several clusterings: its pseudo-label in each), drawn
        uniformly over the first clustering's clusters; a disjoint share per rank."""
        assignment = self.clusterer.assignment
        train_set = PseudoLabelDataset(self.dataset, self.clusterer.pseudo_labels(),
                                       train_transform(self.c["input_size"], self.c["rrc_scale_min"]))
        order = UnifLabelSampler(assignment, seed=epoch_seed(self.c["seed"], epoch)).indexes
        if self.c["views"] > 1:  # each drawn image views times in a row: its augmented crops share a batch and a label
            order = np.repeat(order, self.c["views"])
        order = order.tolist()
        if self.world > 1:
            order = distributed.share_of(np.asarray(order), self.rank, self.world).tolist()
            torch.manual_seed(epoch_seed(self.c["seed"], epoch) + self.rank)  # each rank its own augmentations
        return make_loader(train_set, self.c, self.device, order)

    def train_pass(self, epoch, loader, head_optimizer):
        """One pass of cross-entropy on the pseudo-labels; the schedule steps once. Returns (loss, seconds).

        A non-finite loss or weights stop the run with one line; the checkpoint of the last good epoch stays."""
        net = self.model
        if self.world > 1:
            net = DistributedDataParallel(self.model, device_ids=self.device_ids)
        t0 = time.time()
        average = None
        if self.ema_model is not None:
            average = functools.partial(average_into, self.ema_model.state_dict(), self.model, self.c["ema"])
        try:
            meter = train_one_epoch(loader, net, self.body_optimizer, head_optimizer, self.device, self.verbose,
                                    self.dtype, after_step=average)
        except FloatingPointError as e:
            self.diverged(epoch, str(e))
        if not weights_finite(self.model):
            self.diverged(epoch, "the weights are no longer finite")
        loss = distributed.all_mean(meter.sum, meter.count, self.comm_device)
        seconds = time.time() - t0
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(loss)
        elif self.scheduler is not None:
            self.scheduler.step()
        return loss, seconds

    def diverged(self, epoch, what):
        lr = self.body_optimizer.param_groups[0]["lr"]
        raise TrainingError(f"epoch {epoch + 1} diverged: {what} (lr {lr:g}); the last good checkpoint "
                            f"({counted(epoch, 'epoch')} done) stays in '{self.c['exp_dir']}'; start again with a lower --lr "
                            "and --resume false (or another exp_dir)")

    # ------------------------------------------------------------ step 9: log, recluster, save

    def log_epoch(self, epoch, lr, loss, seconds, n_sampled, t_start):
        """This epoch's metrics.jsonl line: the clustering it trained on and its training pass."""
        clus = self.clustering_row
        row = {"epoch": epoch, "loss": loss, **clus, "lr": lr, "time_train_s": round(seconds, 3),
               "images_per_s": round(n_sampled * self.world / max(seconds, 1e-9), 2)}
        if self.world > 1:
            row["ranks_in_sync"] = distributed.in_sync(self.model, self.comm_device)
        if self.main_process:
            append_metrics(self.metrics_path, row)
        total = time.time() - t_start + clus["time_features_s"] + clus["time_clustering_s"]
        others = "".join(f"nmi_k{cl.k} {format_metric(row.get(f'nmi_k{cl.k}'))}  "
                         for cl in self.clusterer.others)
        self.log(f"epoch {epoch + 1}/{self.c['num_epoch']}  loss {loss:.4f}  nmi {format_metric(row['nmi'])}  "
                 f"ari {format_metric(row['ari'])}  nmi_prev {format_metric(row['nmi_prev'])}  {others}"
                 f"clusters {row['clusters_nonempty']}/{row['clusters_found']}  time {total:.0f}s "
                 f"(features {clus['time_features_s']:.0f}s, clustering {clus['time_clustering_s']:.0f}s, "
                 f"train {seconds:.0f}s at {row['images_per_s']:.0f} img/s)")
        return row

    def recluster(self, epoch):
        """The clusters of the next epoch (`epoch`), from the weights just trained, every `reassign` epochs."""
        if epoch % self.c["reassign"] != 0:
            unknown = {key: None for key in self.clustering_row if key.startswith(("nmi_prev", "kmeans_loss"))}
            self.clustering_row = {**self.clustering_row, **unknown, "reclustered": False, "time_features_s": 0.0,
                                   "time_clustering_s": 0.0}
            return
        heads, every = self.model.heads(), self.clusterer.clusterings()
        previous = [cl.assignment for cl in every]
        self.clustering_row = self.cluster(epoch, previous)
        if self.c["head"] == "match":  # the trained rows follow their clusters into the new clustering
            self.model.set_heads(heads)
            self.model.carry_heads([clustering.match_clusters(old, cl.assignment, head.out_features, cl.k)
                                    for old, cl, head in zip(previous, every, heads)])

    def choose(self, epochs_done):
        """select_epoch: does the network after `epochs_done` epochs become the chosen one? Only trained
        networks whose features were just clustered compete; ties keep the earlier epoch."""
        rule = self.c["select_epoch"]
        score = self.clustering_row.get(rule) if rule != "last" and epochs_done > 0 else None
        if score is None:
            return False
        best = self.selected["score"] if self.selected else None
        if best is not None and (score <= best if rule == "nmi_prev" else score >= best):
            return False
        self.selected = {"rule": rule, "epoch": epochs_done, "score": float(score)}
        return True

    def save(self, epochs_done, row):
        """The checkpoint: weights and the clustering of those weights (pred.py's assign mode relies on it);
        selected.pth.tar follows it while it is the chosen epoch."""
        if self.main_process:
            chosen = self.choose(epochs_done)
            earlier = None if self.clustering_row["reclustered"] else self.clustering_weights
            if not chosen and self.ckpt is not None:  # the chosen checkpoint is about to be replaced: keep it apart
                keep_selected_apart(self.ckpt_path, self.selected_path)
            self.ckpt = training_state(epochs_done, self.c, self.model, self.body_optimizer, self.scheduler,
                                       self.clusterer, self.dataset.classes, row, self.clustering_row, self.selected,
                                       self.ema_model, earlier, self.fingerprint)
            save_checkpoint(self.ckpt_path, self.ckpt)
            if chosen:
                keep_as_selected(self.ckpt_path, self.selected_path)
        distributed.barrier()

    def show(self, row):
        """exp_dir/curves.png of the epochs so far (written atomically) and, with cfg tensorboard, the row's scalars.
        A failure here is one log line: it never ends a run."""
        if not self.main_process:
            return
        chosen = curves.chosen_epoch(self.selected, self.c["select_epoch"], row["epoch"] + 1)
        try:
            if self.tensorboard is not None:
                curves.log_scalars(self.tensorboard, row)
            curves.plot_curves([curves.Curves(read_metrics(self.metrics_path), self.clustering_row, chosen)],
                               os.path.join(self.c["exp_dir"], "curves.png"))
        except Exception as e:  # matplotlib, a full disk, ...: the run goes on
            self.log(f"warning: curves.png not written: {type(e).__name__}: {e}")


def describe_ks(ks):
    """The k of a run for its log: "10", or "10 (and 50, 100: one head each)"."""
    return str(ks[0]) + (f" (and {', '.join(map(str, ks[1:]))}: one head each)" if len(ks) > 1 else "")


def exp_dir_lock(c):
    """One run per exp_dir: rank 0 (the only process that writes) holds exp_dir/.train.lock."""
    if int(os.environ.get("RANK", "0")) != 0:
        return contextlib.nullcontext()
    return hold_lock(os.path.join(c["exp_dir"], ".train.lock"), c["exp_dir"], "exp_dir")


def checkpoint_stat(path):
    """(size, modification time in ns) of the file at path, or None when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def train(c, device="cpu"):
    """The DeepCluster loop: every check first (data, settings, checkpoint, starting weights), then exp_dir is held
    for this run and written; returns the last checkpoint's contents (on rank 0)."""
    run = Run(c, device)
    with exp_dir_lock(c):
        run.claim_folder()
        try:
            return train_epochs(run)
        except KeyboardInterrupt:
            run.log.quiet(interrupted_line(c))  # main() prints it; train.log keeps every line
            raise
        except UserError as e:  # the one line the run ends with (a diverged loss, a full disk ...)
            run.log.quiet(str(e.code))
            raise


def interrupted_line(c):
    return (f"interrupted: run the same command again to resume from the last completed epoch (checkpoint in "
            f"{c['exp_dir']})")


def train_epochs(run):
    c = run.c
    if not run.resume_or_start():
        return run.ckpt
    for epoch in range(run.start_epoch, c["num_epoch"]):
        t_start = time.time()
        lr = run.body_optimizer.param_groups[0]["lr"]
        head_optimizer = run.new_head(epoch)               # a fresh head for the current clusters
        loader = run.sample(epoch)                         # each image with its own cluster, uniform over clusters
        loss, seconds = run.train_pass(epoch, loader, head_optimizer)  # one pass of cross-entropy
        row = run.log_epoch(epoch, lr, loss, seconds, len(loader.sampler), t_start)
        run.recluster(epoch + 1)                           # features, PCA-whitening, k-means with the new weights
        run.save(epoch + 1, row)
        run.show(row)                                      # curves.png (and TensorBoard) of the epochs so far
    clus = run.clustering_row
    if c["num_epoch"] > run.start_epoch and clus["reclustered"]:
        run.log(f"clustering of the network after {counted(c['num_epoch'], 'epoch')}: nmi {format_metric(clus['nmi'])}  "
                f"ari {format_metric(clus['ari'])}  nmi_prev {format_metric(clus['nmi_prev'])}")
    if run.selected and run.selected["epoch"] != c["num_epoch"]:
        run.log(f"select_epoch {c['select_epoch']} chose the network after epoch {run.selected['epoch']}: "
                f"{run.selected_path} (pred.py and eval_linear.py use it)")
    # rank 0 alone writes metrics.jsonl and holds the checkpoint; the other ranks have nothing to compare
    gain = curves.training_gain(read_metrics(run.metrics_path), run.ckpt) if run.main_process else None
    if gain is not None and c["num_epoch"] > run.start_epoch:
        run.log(curves.training_gain_line(gain))
    return run.ckpt


def main(device="cpu", argv=None):
    c = load_cfg(argv, script="train")
    try:
        return train(c, device)
    except KeyboardInterrupt:
        print(f"\n{interrupted_line(c)}", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    main("cpu")
