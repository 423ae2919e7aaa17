"""Model factory: `build_model(arch, sobel, out, input_size)`; `vgg16(...)` and `alexnet(...)` build one directly."""
from .alexnet import alexnet
from .common import FEATURE_DIM, HEAD_PREFIXES, DeepClusterNet
from .vgg16 import vgg16

ARCHS = {"vgg16": vgg16, "alexnet": alexnet}


def build_model(arch, sobel, out, input_size):
    if arch not in ARCHS:
        raise ValueError(f"unknown arch '{arch}', choose one of {', '.join(ARCHS)}")
    return ARCHS[arch](sobel=sobel, out=out, input_size=input_size)


__all__ = ["alexnet", "vgg16", "build_model", "DeepClusterNet", "FEATURE_DIM", "HEAD_PREFIXES"]
