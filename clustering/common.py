"""What every step of the clustering shares: the per-epoch seed, the device a step runs on, and the
helpers that let one function take numpy arrays (the faiss form) or torch tensors (the torch form).

A step's `device` is None for the faiss / numpy form on the CPU (the reference's path) and a
torch.device for the torch form, which runs on that device (CUDA, or the CPU where the tests run it).

The torch form of every k-means step also takes `shards`: where the rows of the matrix it works on are. None
(OneProcess) is one process holding every row; under torchrun distributed.Shards splits them over the processes
in contiguous blocks, and the same functions then add up their per-process sums with all-reduces. One process
is the special case of the same code, not a copy of it.
"""
import contextlib

import numpy as np
import torch

GPU_CHUNK_BYTES = 2 * 2**30  # the largest n x k (or n x n) block a torch step holds at once on a GPU
CPU_CHUNK_BYTES = 256 * 2**20  # ... and on the CPU


def epoch_seed(seed, epoch):
    """A fresh 31-bit seed per epoch, derived from the run's seed (same run -> same seeds)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] & 0x7FFFFFFF)


def resolve_device(setting, network_device):
    """Where the clustering runs, from cfg clustering_device: None for faiss on the CPU, or a torch.device.

    "auto": the torch implementation on the network's device when that is a GPU, faiss on a CPU;
    "cpu": faiss on the CPU whatever the network's device (the reference's path);
    "torch": the torch implementation on the network's device, a CPU included (how the tests run it).
    """
    device = torch.device(network_device)
    if setting == "cpu" or (setting == "auto" and device.type == "cpu"):
        return None
    return device


def describe(device):
    """The clustering device for a log line."""
    return "faiss on the CPU" if device is None else f"torch on {device}"


def is_tensor(x):
    return isinstance(x, torch.Tensor)


def to_numpy(x, dtype=None):
    """A numpy array of x (a tensor anywhere, or an array), without a copy where none is needed."""
    if is_tensor(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def to_tensor(x, device, dtype=torch.float32):
    """x as a tensor on device (numpy arrays are shared, not copied, on the CPU)."""
    if not is_tensor(x):
        x = torch.from_numpy(np.ascontiguousarray(x))
    return x.to(device=device, dtype=dtype)


def rows_per_chunk(columns, device, itemsize=4):
    """How many rows of an (n x columns) block fit the chunk budget of the device (at least 1)."""
    budget = GPU_CHUNK_BYTES if torch.device(device).type == "cuda" else CPU_CHUNK_BYTES
    return max(1, budget // (columns * itemsize))


def finite(x):
    """x as float32 with NaN and inf replaced by 0; no copy when there is nothing to replace."""
    if is_tensor(x):
        x = x.float()
        return x if bool(torch.isfinite(x).all()) else torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    x = np.asarray(x, dtype=np.float32)
    return x if np.isfinite(x).all() else np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


@contextlib.contextmanager
def deterministic(device):
    """On CUDA, torch's deterministic algorithms for the block (index_add_ then sums in a fixed order, so that a
    seed gives the same clustering twice); the previous setting is restored after it. The CPU's index_add_ is
    deterministic already (and switching costs tens of milliseconds)."""
    if torch.device(device).type != "cuda":
        yield
        return
    before, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


class OneProcess:
    """Every row of the matrix in this process: the one-process case of distributed.Shards, whose methods it
    shares (each is the identity here). n: the number of rows; offset: the first row held here."""
    world, offset = 1, 0

    def __init__(self, n):
        self.n = self.held = int(n)

    def sum(self, *tensors):
        """The tensors summed over the processes (one all-reduce for all of them)."""
        return tensors if len(tensors) > 1 else tensors[0]

    def max(self, value):
        """The largest value (a number) over the processes."""
        return value

    def rows(self, x, index):
        """Rows `index` (int64 tensor, 0..n-1) of the whole matrix, given this process' rows x, on every process."""
        return x[index.to(x.device)]

    def cat(self, t):
        """This process' rows of t followed by the other processes' in order: the whole (n, ...) tensor."""
        return t

    def same(self, t):
        """Rank 0's value of t (a tensor or numpy array) on every process."""
        return t

    def part(self, held):
        """The split of another matrix, of which this process holds `held` rows."""
        return OneProcess(held)


def one_process(shards, n):
    """shards, or OneProcess(n) for None."""
    return OneProcess(n) if shards is None else shards


def cluster_sums(x, assignment, k):
    """(sums (k, d) float64, counts (k,) int64) of the rows of x (a tensor) per cluster, in a fixed order."""
    with deterministic(x.device):
        sums = torch.zeros(k, x.shape[1], dtype=torch.float64, device=x.device)
        sums.index_add_(0, assignment, x.double())
    counts = torch.bincount(assignment, minlength=k)
    return sums, counts


def cluster_means(xb, assignment, fallback, shards=None):
    """Mean of each cluster's rows; a cluster without rows keeps its row of fallback. numpy in, numpy out;
    tensors in, a float32 tensor out (with shards: the rows of every process, see OneProcess)."""
    if is_tensor(xb):
        fallback = to_tensor(fallback, xb.device)
        sums, counts = cluster_sums(xb, to_tensor(assignment, xb.device, torch.int64), fallback.shape[0])
        sums, counts = one_process(shards, len(xb)).sum(sums, counts)
        means = fallback.double().clone()
        full = counts > 0
        means[full] = sums[full] / counts[full, None]
        return means.float()
    k = fallback.shape[0]
    sums = np.zeros_like(fallback, dtype=np.float64)
    np.add.at(sums, assignment, xb)
    counts = np.bincount(assignment, minlength=k)
    means = np.array(fallback, dtype=np.float64)
    means[counts > 0] = sums[counts > 0] / counts[counts > 0, None]
    return means.astype(np.float32)


def partition_loss(xb, assignment, fallback, shards=None):
    """k-means' objective of a partition: the sum of squared distances of the rows to their cluster's mean
    (with shards: assignment is this process' part, the loss that of every process' rows)."""
    means = cluster_means(xb, assignment, fallback, shards)
    if is_tensor(xb):
        idx = to_tensor(assignment, xb.device, torch.int64)
        return float(one_process(shards, len(xb)).sum(((xb.double() - means.double()[idx]) ** 2).sum()))
    return float(((xb - means[assignment]).astype(np.float64) ** 2).sum())
