"""Model factory: `build_model(arch, sobel, out, input_size)`."""
from .alexnet import alexnet
from .common import FEATURE_DIM, DeepClusterNet
from .sobel import make_sobel
from .vgg16 import vgg16

ARCHS = {"vgg16": vgg16, "alexnet": alexnet}


def build_model(arch, sobel, out, input_size):
    if arch not in ARCHS:
        raise ValueError(f"unknown arch '{arch}', choose one of {', '.join(ARCHS)}")
    return ARCHS[arch](sobel=sobel, out=out, input_size=input_size)


__all__ = ["alexnet", "vgg16", "build_model", "make_sobel", "DeepClusterNet", "FEATURE_DIM", "ARCHS"]
