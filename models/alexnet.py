"""AlexNet with batch norm (no LRN), the paper's main model."""
from torch import nn

from .common import FEATURE_DIM, DeepClusterNet, flat_size

# (filters, kernel, stride, padding) or "M" for a 3x3 max-pool of stride 2
CONFIG = [(96, 11, 4, 2), "M", (256, 5, 1, 2), "M", (384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1), "M"]


def make_layers(in_channels, config=CONFIG):
    layers = []
    for v in config:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
        else:
            filters, kernel, stride, pad = v
            layers += [nn.Conv2d(in_channels, filters, kernel, stride=stride, padding=pad),
                       nn.BatchNorm2d(filters), nn.ReLU(inplace=True)]
            in_channels = filters
    return nn.Sequential(*layers)


def alexnet(sobel=False, out=1000, input_size=224):
    """AlexNet-BN; the flattened size is computed for any input_size >= 64."""
    if input_size < 64:
        raise ValueError(f"alexnet needs input_size >= 64 (three 3x3/2 max-pools after a stride-4 conv), got {input_size}")
    in_channels = 2 if sobel else 3
    features = make_layers(in_channels)
    flat = flat_size(features, in_channels, input_size)
    classifier = nn.Sequential(
        nn.Dropout(0.5),
        nn.Linear(flat, FEATURE_DIM),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(FEATURE_DIM, FEATURE_DIM),
    )
    return DeepClusterNet(features, classifier, sobel, out)
