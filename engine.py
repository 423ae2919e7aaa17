"""What every entry script runs a network with: devices, loaders, mixed precision, the feature
pass, the training pass, the meters and the log.

Device rules: on CUDA, images and weights are channels_last, batches come from pinned memory
with non-blocking copies and forward passes run under torch.autocast (cfg "amp"); the CPU
keeps float32 and the default memory format.
"""
import math
import os
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

import gpu_input
from dataset import seed_worker
from distributed import usable_cores
from errors import UserError, printable
from models import FEATURE_DIM, HEAD_PREFIXES
from progress import Bar

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
FEATURE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def require_cuda(cpu_script):
    """The one check of the *_cuda.py entry points: stop with one line when there is no GPU."""
    if not torch.cuda.is_available():
        raise UserError(f"CUDA is not available; use {cpu_script} to run on the CPU")
    return "cuda"


def amp_dtype(c, device):
    """Mixed precision on CUDA only (cfg amp); the CPU keeps float32."""
    return AMP_DTYPES.get(c["amp"]) if device.type == "cuda" else None


def feature_dtype(c, device):
    """The dtype the fc7 features are held in until they are whitened (cfg feature_dtype). "auto": the dtype the
    network computes them in, the amp dtype on CUDA (bf16 or fp16: held in it, nothing is lost and the memory
    is halved), float32 on the CPU."""
    if c["feature_dtype"] == "auto":
        return amp_dtype(c, device) or torch.float32
    return FEATURE_DTYPES[c["feature_dtype"]]


def compile_body(model, c, device):
    """torch.compile (cfg compile) of what stays of the network from epoch to epoch: the convolutions and the
    classifier up to fc7, compiled in place (state_dict names unchanged); the head, replaced every clustering,
    stays eager. "auto" compiles on CUDA only: on 2 CPU cores it gave 13% on the forward pass, nothing on a
    training step, for a minute of compilation. A graph that fails to compile runs eagerly (a warning, no
    crash). Returns True when compiled.

    Each part's `forward` is replaced by its torch.compile: nn.Module.compile() in place (the earlier form)
    left the network eager under torch 2.11 on CUDA, with no graph captured and the eager images/s."""
    if c["compile"] == "off" or (c["compile"] == "auto" and torch.device(device).type != "cuda"):
        return False
    from torch import _dynamo
    _dynamo.config.suppress_errors = True
    for part in (model.features, model.classifier):
        part.forward = torch.compile(part.forward)  # an instance attribute: parameters and state_dict unchanged
    return True


def memory_format(device):
    """channels_last on CUDA, where cuDNN's convolutions are fastest with it."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def to_device(images, device):
    """Copy of a batch in the device's memory format (non-blocking from pinned memory on CUDA)."""
    return images.to(device, non_blocking=device.type == "cuda", memory_format=memory_format(device))


def loader_workers(c):
    """cfg workers, or with -1 a number from the cores: none up to 2 cores (the main process keeps up with
    cached images there, and a worker would only take a core from the network), else half, at most 8."""
    if c["workers"] >= 0:
        return c["workers"]
    cores = usable_cores()
    return 0 if cores <= 2 else min(8, cores // 2)


def make_loader(dataset, c, device, sampler=None):
    """Batches of `dataset` in the order of `sampler` (a list of indices, repeats allowed; None: in order). On CUDA
    with the GPU input path (cfg decode_device, gpu_input.py) the workers read file bytes and the batches come
    decoded and transformed on the GPU (a gpu_input.DeviceBatches); otherwise a DataLoader whose workers decode
    and transform on the CPU."""
    gpu = gpu_input.gpu_decode(c, device) and gpu_input.takes(dataset)
    loader = DataLoader(gpu_input.EncodedImages(dataset) if gpu else dataset, batch_size=c["batch_size"],
                        sampler=sampler, shuffle=False, num_workers=loader_workers(c),
                        pin_memory=device.type == "cuda" and not gpu, worker_init_fn=seed_worker,
                        persistent_workers=False, collate_fn=gpu_input.collate if gpu else None)
    return gpu_input.DeviceBatches(loader, dataset, device) if gpu else loader


def iter_features(loader, model, device, verbose=True, dtype=None):
    """(image indices (numpy int64), 4096-d pre-ReLU fc7 features (float32 tensor on `device`)) batch by batch,
    eval mode, no autograd."""
    model.eval()
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        for images, index in Bar(loader, "features", verbose):
            out = model(to_device(images, device))
            yield index.numpy(), out.float()


def compute_features(loader, model, device, verbose=True, dtype=None, dim=FEATURE_DIM, keep_on=None,
                     hold=torch.float32):
    """The N x dim outputs (4096-d fc7 features by default) of every image of the loader's dataset, in its
    order: a float32 numpy array, or with keep_on a tensor of dtype `hold` (float32, or float16 / bfloat16 for
    half the memory: feature_dtype) on that device (the GPU clustering reads them there; nothing of N x dim
    crosses to the host)."""
    n = len(loader.dataset)
    if keep_on is not None:
        features = torch.empty(n, dim, dtype=hold, device=keep_on)
        for index, out in iter_features(loader, model, device, verbose, dtype):
            features[torch.from_numpy(index).to(keep_on)] = out.to(keep_on, hold)
        return features
    features = np.empty((n, dim), dtype=np.float32)
    for index, out in iter_features(loader, model, device, verbose, dtype):
        features[index] = out.cpu().numpy()
    return features


class AverageMeter:
    def __init__(self):
        self.sum, self.count = 0.0, 0

    def update(self, value, n=1):
        self.sum += value * n
        self.count += n

    @property
    def avg(self):
        return self.sum / max(self.count, 1)


def average_into(average, model, decay):
    """An exponential moving average of the weights: average <- decay * average + (1 - decay) * model, for every
    floating-point parameter and buffer of the body (BN statistics too); integer buffers are copied and the
    head, which changes with every clustering, is left out. `average` is a state_dict whose tensors are updated
    in place (the state_dict of the averaged copy of the network)."""
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if name.startswith(HEAD_PREFIXES):
                continue
            if value.is_floating_point():
                average[name].mul_(decay).add_(value, alpha=1 - decay)
            else:
                average[name].copy_(value)


def train_one_epoch(loader, model, body_optimizer, head_optimizer, device, verbose=True, dtype=None, after_step=None):
    """One pass of cross-entropy on the pseudo-labels; both optimizers step every batch
    (head_optimizer None: a head without parameters, cfg head "centroids"); after_step() follows every step.

    Returns an AverageMeter of the loss. With dtype float16 the loss is scaled (GradScaler).
    A loss that is not finite stops the pass at once with FloatingPointError (nothing is stepped)."""
    model.train()
    criterion = nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    losses = AverageMeter()
    bar = Bar(loader, "train", verbose)
    for batch, (images, target) in enumerate(bar, 1):
        images, target = to_device(images, device), target.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = pseudo_label_loss(criterion, model(images), target)
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss became {value} at batch {batch}")
        body_optimizer.zero_grad(set_to_none=True)
        if head_optimizer is not None:
            head_optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(body_optimizer)
        if head_optimizer is not None:
            scaler.step(head_optimizer)
        scaler.update()
        if after_step is not None:
            after_step()
        losses.update(value, images.size(0))
        bar.set_postfix(loss=f"{losses.avg:.4f}")
    return losses


def pseudo_label_loss(criterion, logits, target):
    """The training loss: criterion(logits, target) for one head (logits (B, k), target (B,) int64); for several
    (cfg num_classes a list: logits a list of H (B, k_h) tensors, target (B, H)) the mean over the heads of each
    head's loss on its own pseudo-labels, so that every clustering weighs the same whatever its k."""
    if not isinstance(logits, (list, tuple)):
        return criterion(logits, target)
    return sum(criterion(out, target[:, h]) for h, out in enumerate(logits)) / len(logits)


def weights_finite(model):
    """True when every floating-point parameter and buffer (BN statistics too) is finite."""
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


class Logger:
    """Prints a line (without breaking progress bars) and appends it to exp_dir/train.log.

    With hold=True the lines wait in memory until open() (which creates exp_dir): a start that fails its checks
    leaves no folder behind. quiet(msg) writes a line to train.log only."""

    def __init__(self, exp_dir, verbose=True, main_process=True, hold=False):
        self.main_process = main_process
        self.path = os.path.join(exp_dir, "train.log")
        self.verbose = verbose
        self.pending = []  # stamped lines not yet in train.log (hold=True, before open())
        if not hold:
            self.open()

    def open(self):
        """Create exp_dir and write the lines held so far; from now on every line goes to train.log at once."""
        if self.main_process:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            self._append(self.pending)
        self.pending = None

    def _append(self, lines):
        if lines:
            with open(self.path, "a", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in lines)

    def quiet(self, msg):
        """msg into train.log (or the held lines) only, not on the terminal."""
        if not self.main_process:  # under torchrun only rank 0 speaks
            return
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {printable(msg)}"  # names that are not UTF-8 as \xNN escapes
        if self.pending is not None:
            self.pending.append(line)
        else:
            self._append([line])

    def __call__(self, msg):
        if self.main_process and self.verbose:
            tqdm.write(printable(msg))
        self.quiet(msg)


def format_metric(value):
    """A metric for a log line: three decimals, or a dash when it is not known (no labels, first epoch)."""
    return "  -  " if value is None else f"{value:.3f}"
