"""AlexNet with batch norm (no LRN), the paper's main model."""
from torch import nn

from .common import FEATURE_DIM, assemble

# (filters, kernel, stride, padding) or "M" for a 3x3 max-pool of stride 2
CONFIG = [(96, 11, 4, 2), "M", (256, 5, 1, 2), "M", (384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1), "M"]


def block_ends(features):
    """Each of the five convs is a block: it ends after its ReLU, or after the max-pool that follows it."""
    layers, ends = list(features), []
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.ReLU):
            follows = layers[i + 1] if i + 1 < len(layers) else None
            ends.append(i + 2 if isinstance(follows, nn.MaxPool2d) else i + 1)
    return ends


def classifier(flat):
    """Dropout, fc6 (ReLU), dropout, fc7, which ends before its ReLU."""
    return nn.Sequential(nn.Dropout(0.5), nn.Linear(flat, FEATURE_DIM), nn.ReLU(inplace=True), nn.Dropout(0.5),
                         nn.Linear(FEATURE_DIM, FEATURE_DIM))


def alexnet(sobel=False, out=1000, input_size=224):
    """AlexNet-BN; the flattened size is computed for any input_size >= 64."""
    if input_size < 64:
        raise ValueError(f"alexnet needs input_size >= 64 (three 3x3/2 max-pools after a stride-4 conv), got {input_size}")
    return assemble(CONFIG, 3, classifier, block_ends, sobel, out, input_size)
