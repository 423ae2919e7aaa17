"""VGG16 with batch norm, as DeepCluster uses it."""
from torch import nn

from .common import FEATURE_DIM, assemble

CONFIG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def block_ends(features):
    """The five stages end at a max-pool: the index after each one."""
    return [i + 1 for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)]


def classifier(flat):
    """fc6 (ReLU, dropout) and fc7, which ends before its ReLU."""
    return nn.Sequential(nn.Linear(flat, FEATURE_DIM), nn.ReLU(inplace=True), nn.Dropout(0.5),
                         nn.Linear(FEATURE_DIM, FEATURE_DIM))


def vgg16(sobel=False, out=1000, input_size=224):
    """VGG16-BN. `flat` (512*7*7 at 224 px) is computed for any input_size >= 32.

    The classifier ends at the pre-ReLU fc7; `out` > 0 adds the head Linear(4096, out).
    """
    if input_size < 32:
        raise ValueError(f"vgg16 needs input_size >= 32 (five 2x2 max-pools), got {input_size}")
    return assemble(CONFIG, 2, classifier, block_ends, sobel, out, input_size)
