"""Images/s of VGG16-BN at 224 px on synthetic images, feature pass and training step, amp off / bf16 / fp16.

    python tools/gpu_throughput.py [--batch 128] [--steps 20]

Uses the same helpers as train.py (engine.to_device, the autocast of the feature pass and training step).
"""
import argparse
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models import build_model  # noqa: E402
from engine import AMP_DTYPES, to_device  # noqa: E402


def rate(fn, images, steps):
    fn()  # warm-up (cudnn.benchmark picks its algorithms here)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return images * steps / (time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", type=int, default=224)
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("error: CUDA is not available")
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda")
    model = build_model("vgg16", True, 1000, a.size).to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = to_device(torch.randn(a.batch, 3, a.size, a.size), device)
    y = torch.randint(0, 1000, (a.batch,), device=device)
    rows = []
    for amp in ("off", "bf16", "fp16"):
        dtype = AMP_DTYPES.get(amp)
        scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)

        def forward():
            model.eval()
            with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                model(x)

        def step():
            model.train()
            with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        rows.append((amp, rate(forward, a.batch, a.steps), rate(step, a.batch, a.steps)))
    print(f"\nVGG16-BN + Sobel, {a.size} px, batch {a.batch}, {torch.cuda.get_device_name(0)}")
    print(f"{'amp':>5} | {'features img/s':>14} | {'training img/s':>14}")
    for amp, f, t in rows:
        print(f"{amp:>5} | {f:14.0f} | {t:14.0f}")


if __name__ == "__main__":
    main()
