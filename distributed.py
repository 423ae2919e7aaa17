"""torch.distributed for DeepCluster, as torchrun launches it: one process per GPU (NCCL) or per CPU share (gloo).

Every rank computes the features of its own share of the images (a contiguous block: no image
twice, none dropped), rank 0 gathers them into one buffer (on its GPU when it clusters there),
clusters once and broadcasts the assignment, and every
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


def gather_rows(index, rows, n, device):
    """Rank 0 gets the n x d matrix with every rank's rows in place; other ranks get None.

    rows: this rank's (len(index), d) float32 rows, a numpy array (rank 0 gets numpy) or a tensor (rank 0 gets
    a tensor on `device`, e.g. its GPU for the torch clustering). Under torchrun every rank's block of
    shard() is received straight into its place in one buffer on `device`: rank 0 never holds a second
    n x d copy. One process whose rows are already all n in order gets them back as they are (no copy)."""
    tensor = isinstance(rows, torch.Tensor)
    if not active():
        if len(index) == n and np.array_equal(index, np.arange(n)):
            return rows
        if tensor:
            out = torch.empty(n, rows.shape[1], dtype=torch.float32, device=rows.device)
            out[torch.as_tensor(np.asarray(index), device=rows.device)] = rows.float()
            return out
        out = np.empty((n, rows.shape[1]), dtype=rows.dtype)
        out[index] = rows
        return out
    world, rank = dist.get_world_size(), dist.get_rank()
    size = -(-n // world)
    send = torch.zeros(size, rows.shape[1], dtype=torch.float32, device=device)
    send[:len(index)] = rows.to(device) if tensor else torch.from_numpy(rows).to(device)
    out = torch.empty(world * size, rows.shape[1], dtype=torch.float32, device=device) if rank == 0 else None
    dist.gather(send, list(out.split(size)) if rank == 0 else None, dst=0)
    if rank != 0:
        return None
    return out[:n] if tensor else out[:n].cpu().numpy()


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
