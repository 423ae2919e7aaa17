"""VGG16 with batch norm, as DeepCluster uses it."""
from torch import nn

from .common import FEATURE_DIM, DeepClusterNet, flat_size

CONFIG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def make_layers(in_channels, config=CONFIG):
    layers = []
    for v in config:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            in_channels = v
    return nn.Sequential(*layers)


def vgg16(sobel=False, bn=True, out=1000, input_size=224):
    """VGG16-BN. `flat` (512*7*7 at 224 px) is computed for any input_size >= 32.

    The classifier ends at the pre-ReLU fc7; `out` > 0 adds the head Linear(4096, out).
    """
    if not bn:
        raise ValueError("only the batch-norm VGG16 of DeepCluster is implemented (bn=True)")
    if input_size < 32:
        raise ValueError(f"vgg16 needs input_size >= 32 (five 2x2 max-pools), got {input_size}")
    in_channels = 2 if sobel else 3
    features = make_layers(in_channels)
    flat = flat_size(features, in_channels, input_size)
    classifier = nn.Sequential(
        nn.Linear(flat, FEATURE_DIM),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(FEATURE_DIM, FEATURE_DIM),
    )
    return DeepClusterNet(features, classifier, sobel, out)
