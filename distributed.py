"""torch.distributed for DeepCluster, as torchrun launches it: one process per GPU (NCCL) or per CPU share (gloo).

Every rank computes the features of its own share of the images (strided: no image twice,
none dropped), rank 0 gathers them, clusters once and broadcasts the assignment, and every
rank trains on a disjoint share of the same cluster-balanced epoch sample under
DistributedDataParallel. Only rank 0 logs and writes files. Without torchrun (WORLD_SIZE
unset or 1) every function here is a no-op for a single process.
"""
import os

import numpy as np
import torch
import torch.distributed as dist


def setup(device_type):
    """(rank, world_size, local_rank); starts the process group when torchrun asked for several processes."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), local_rank


def active():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def cleanup():
    if active():
        dist.destroy_process_group()


def shard(n, rank, world):
    """This rank's images: rank, rank + world, ... (disjoint shares that cover all n)."""
    return np.arange(rank, n, world)


def gather_rows(index, rows, n, device):
    """Rank 0 gets the n x d matrix with every rank's rows in place; other ranks get None."""
    if not active():
        out = np.empty((n, rows.shape[1]), dtype=rows.dtype)
        out[index] = rows
        return out
    world, rank = dist.get_world_size(), dist.get_rank()
    size = -(-n // world)  # every share padded to the largest
    pad_rows = torch.zeros(size, rows.shape[1], dtype=torch.float32, device=device)
    pad_index = torch.full((size,), -1, dtype=torch.int64, device=device)
    pad_rows[:len(index)] = torch.from_numpy(rows).to(device)
    pad_index[:len(index)] = torch.from_numpy(np.asarray(index, dtype=np.int64)).to(device)
    rows_list = [torch.empty_like(pad_rows) for _ in range(world)] if rank == 0 else None
    index_list = [torch.empty_like(pad_index) for _ in range(world)] if rank == 0 else None
    dist.gather(pad_rows, rows_list, dst=0)
    dist.gather(pad_index, index_list, dst=0)
    if rank != 0:
        return None
    out = np.empty((n, rows.shape[1]), dtype=np.float32)
    for r, i in zip(rows_list, index_list):
        keep = i >= 0
        out[i[keep].cpu().numpy()] = r[keep].cpu().numpy()
    return out


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
