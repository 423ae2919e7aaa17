"""torch.distributed for DeepCluster, as torchrun launches it: one process per GPU (NCCL) or per CPU share (gloo).

Every rank computes the features of its own share of the images (a contiguous block: no image
twice, none dropped) and keeps them: the clustering runs on every rank at once on its own rows
(Shards: all-reduced sums, no rank holds all features), and only the n int64 cluster ids are
gathered. With shard_clustering false, or for PIC's whitened rows, rank 0 gathers the rows into
one buffer (on its GPU when it clusters there), clusters once and broadcasts the clustering. Every
rank trains on a disjoint share of the same cluster-balanced epoch sample under
DistributedDataParallel. Only rank 0 logs and writes files. Without torchrun (WORLD_SIZE
unset or 1) every function here is a no-op for a single process.
"""
import os

import numpy as np
import torch
import torch.distributed as dist

from errors import ConfigError


def usable_cores():
    """The CPU cores this process may run on (its affinity where the platform tells it, else all of them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def setup(device_type):
    """(rank, world_size, local_rank); starts the process group when torchrun asked for several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        check_gpu_count(int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1)))
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), local_rank


def check_gpu_count(processes):
    """torchrun started `processes` per machine, one per GPU: more than the machine has is one line on every
    rank, before any process group starts (else a rank dies with CUDA's 'invalid device ordinal')."""
    gpus = torch.cuda.device_count()
    if processes > gpus:
        raise ConfigError(f"torchrun started {processes} processes on this machine but it has {gpus} GPU"
                          f"{'' if gpus == 1 else 's'}: one process per GPU, so use --nproc_per_node={gpus} or fewer")


def active():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def cleanup():
    if active():
        dist.destroy_process_group()


def shard(n, rank, world):
    """This rank's images: a contiguous block of ceil(n / world) (the last blocks shorter or empty); the blocks
    are disjoint and cover all n, and rank 0 receives each one straight into its place (gather_rows)."""
    size = -(-n // world)
    return np.arange(min(n, rank * size), min(n, (rank + 1) * size))


def sample_first(share, sample):
    """This rank's images in the order its features are computed when a PCA is fitted on `sample` (image
    indices, in the order one process would draw them): those of the sample in its share first, in that
    order, then the rest of the share. Returns (order (numpy int64), how many of them are in the sample)."""
    mine = sample[(sample >= share[0]) & (sample <= share[-1])] if len(share) else sample[:0]
    rest = np.setdiff1d(share, mine, assume_unique=True)
    return np.concatenate([mine, rest]).astype(np.int64), len(mine)


def gather_rows(index, rows, n, device):
    """Rank 0 gets the n x d matrix with every rank's rows in place; other ranks get None.

    rows: this rank's (len(index), d) rows, a float32 numpy array (rank 0 gets numpy) or a tensor of any float
    dtype, kept (rank 0 gets a tensor on `device`, e.g. its GPU for the torch clustering). Under torchrun every
    rank's block of
    shard() is received straight into its place in one buffer on `device`: rank 0 never holds a second
    n x d copy. One process whose rows are already all n in order gets them back as they are (no copy)."""
    tensor = isinstance(rows, torch.Tensor)
    if not active():
        if len(index) == n and np.array_equal(index, np.arange(n)):
            return rows
        if tensor:
            out = torch.empty(n, rows.shape[1], dtype=rows.dtype, device=rows.device)
            out[torch.as_tensor(np.asarray(index), device=rows.device)] = rows
            return out
        out = np.empty((n, rows.shape[1]), dtype=rows.dtype)
        out[index] = rows
        return out
    world, rank = dist.get_world_size(), dist.get_rank()
    size = -(-n // world)
    dtype = rows.dtype if tensor else torch.float32
    send = torch.zeros(size, rows.shape[1], dtype=dtype, device=device)
    send[:len(index)] = rows.to(device) if tensor else torch.from_numpy(rows).to(device)
    out = torch.empty(world * size, rows.shape[1], dtype=dtype, device=device) if rank == 0 else None
    dist.gather(send, list(out.split(size)) if rank == 0 else None, dst=0)
    if rank != 0:
        return None
    return out[:n] if tensor else out[:n].cpu().numpy()


class Shards:
    """The rows of one matrix split over the processes in contiguous blocks, in rank order: this process holds
    rows offset .. offset + held - 1 of n. The clustering's torch form takes it as `shards` and calls the
    methods of clustering.common.OneProcess (the one-process case, where each is the identity); here each is a
    collective that every process calls in the same order. Tensors travel through `device` (the process
    group's: the GPU for NCCL, the CPU for gloo) and come back on their own device."""

    def __init__(self, held, device):
        self.device = torch.device(device)
        self.world, rank = dist.get_world_size(), dist.get_rank()
        counts = [torch.zeros(1, dtype=torch.int64, device=self.device) for _ in range(self.world)]
        dist.all_gather(counts, torch.tensor([int(held)], dtype=torch.int64, device=self.device))
        self.counts = [int(c) for c in counts]
        self.n, self.held, self.offset = sum(self.counts), self.counts[rank], sum(self.counts[:rank])

    def sum(self, *tensors):
        """The tensors summed over the processes, in one all-reduce (several are packed into one float64
        buffer: int64 counts stay exact up to 2^53)."""
        if len(tensors) == 1:
            out = tensors[0].to(self.device, copy=True)
            dist.all_reduce(out)
            return out.to(tensors[0].device)
        packed = torch.cat([t.reshape(-1).to(self.device, torch.float64) for t in tensors])
        dist.all_reduce(packed)
        parts = packed.split([t.numel() for t in tensors])
        return tuple(p.reshape(t.shape).to(t.device, t.dtype) for p, t in zip(parts, tensors))

    def max(self, value):
        """The largest of a number over the processes."""
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t)

    def rows(self, x, index):
        """Rows `index` (int64, of all n) of the whole matrix on every process: each process puts the ones it
        holds in place, zeros elsewhere, and one all-reduce adds them up (exactly: one term is not zero)."""
        local = index.to(x.device) - self.offset
        mine = (local >= 0) & (local < len(x))
        out = torch.zeros(len(index), x.shape[1], dtype=x.dtype, device=x.device)
        out[mine] = x[local[mine]]
        return self.sum(out)

    def cat(self, t):
        """Every process' rows of t (this process: `held` of them) in rank order: the whole (n, ...) tensor."""
        size = max(self.counts)
        send = torch.zeros(size, *t.shape[1:], dtype=t.dtype, device=self.device)
        send[:len(t)] = t.to(self.device)
        parts = [torch.empty_like(send) for _ in range(self.world)]
        dist.all_gather(parts, send)
        return torch.cat([p[:c] for p, c in zip(parts, self.counts)]).to(t.device)

    def same(self, t):
        """Rank 0's value of t (a tensor or numpy array of the same shape on every process)."""
        out = torch.as_tensor(t).to(self.device, copy=True)
        dist.broadcast(out, src=0)
        return out.to(t.device) if isinstance(t, torch.Tensor) else out.cpu().numpy()

    def part(self, held):
        """The split of another matrix, of which this process holds `held` rows (a sample of the features)."""
        return Shards(held, self.device)


def broadcast(obj):
    """Rank 0's python object on every rank (small things: the assignment, a metrics row)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def share_of(indices, rank, world):
    """This rank's part of the epoch sample: padded by wrap-around to a multiple of world so that
    every rank runs the same number of batches, then strided."""
    total = -(-len(indices) // world) * world
    return np.resize(indices, total)[rank::world]


def all_mean(total, count, device):
    """Sum of `total` over ranks divided by the sum of `count` (the epoch loss of all ranks)."""
    if not active():
        return total / max(count, 1)
    t = torch.tensor([total, count], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t[0] / t[1].clamp(min=1)).item()


def in_sync(model, device):
    """True when every rank holds exactly rank 0's parameters (checked after each epoch)."""
    if not active():
        return None
    flat = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()]).to(device)
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    same = torch.tensor([float(torch.equal(flat, reference))], device=device)
    dist.all_reduce(same, op=dist.ReduceOp.MIN)
    return bool(same.item())


def barrier():
    if active():
        dist.barrier()
