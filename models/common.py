"""What VGG16 and AlexNet share: the head that DeepCluster removes and re-creates, and the init."""
import math

import torch
from torch import nn

from .sobel import make_sobel

FEATURE_DIM = 4096


class DeepClusterNet(nn.Module):
    """sobel (optional) -> features (convs) -> flatten -> classifier (ends at fc7, pre-ReLU) -> [ReLU -> top_layer].

    With `top_layer = None` the output is the pre-ReLU fc7 activation, the feature that
    DeepCluster clusters. `add_head(k)` appends the ReLU and a fresh Linear(4096, k).
    """

    def __init__(self, features, classifier, sobel, out):
        super().__init__()
        self.sobel = make_sobel() if sobel else None
        self.features = features
        self.classifier = classifier
        self.top_layer = None
        self.init_weights()
        if out:
            self.add_head(out)

    def forward(self, x):
        if self.sobel is not None:
            x = self.sobel(x)
        x = self.features(x)
        x = torch.flatten(x, 1)
        x = self.classifier(x)
        if self.top_layer is not None:
            x = self.top_layer(torch.relu(x))
        return x

    def remove_head(self):
        """Features mode: the network outputs the 4096-d pre-ReLU fc7 activation."""
        self.top_layer = None

    def add_head(self, k):
        """A new Linear(4096, k) with N(0, 0.01) weights and zero bias, after the fc7 ReLU."""
        head = nn.Linear(FEATURE_DIM, k)
        head.weight.data.normal_(0, 0.01)
        head.bias.data.zero_()
        param = next(self.features.parameters())
        self.top_layer = head.to(device=param.device)
        return self.top_layer

    def body_parameters(self):
        """Trainable parameters without the head and without the frozen Sobel filters."""
        return [p for name, p in self.named_parameters() if p.requires_grad and not name.startswith("top_layer.")]

    def init_weights(self):
        for m in self.modules():
            if self.sobel is not None and any(m is s for s in self.sobel.modules()):
                continue
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / n))
                if m.bias is not None:
                    m.bias.data.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.weight.data.normal_(0, 0.01)
                m.bias.data.zero_()


def flat_size(features, in_channels, input_size):
    """Number of values the conv stack gives for one input of input_size x input_size."""
    with torch.no_grad():
        out = features(torch.zeros(1, in_channels, input_size, input_size))
    return out.numel()
