"""The fixed Sobel front of DeepCluster: RGB -> gray -> horizontal and vertical gradients."""
import torch
from torch import nn


def make_sobel():
    """A frozen 1x1 conv (RGB mean) followed by a frozen 3x3 conv with the two Sobel filters."""
    grayscale = nn.Conv2d(3, 1, kernel_size=1, stride=1, padding=0)
    grayscale.weight.data.fill_(1.0 / 3.0)
    grayscale.bias.data.zero_()
    sobel_filter = nn.Conv2d(1, 2, kernel_size=3, stride=1, padding=1)
    sobel_filter.weight.data[0, 0].copy_(torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]))
    sobel_filter.weight.data[1, 0].copy_(torch.tensor([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]))
    sobel_filter.bias.data.zero_()
    sobel = nn.Sequential(grayscale, sobel_filter)
    for p in sobel.parameters():
        p.requires_grad = False
    return sobel
