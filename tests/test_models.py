import math

import pytest
import torch
from torch import nn

from models import FEATURE_DIM, alexnet, build_model, vgg16


@pytest.mark.parametrize("size", [32, 64, 72])
def test_vgg16_any_input_size(size):
    model = vgg16(sobel=False, out=7, input_size=size).eval()
    assert model(torch.randn(2, 3, size, size)).shape == (2, 7)
    assert model.classifier[0].in_features == 512 * (size // 32) ** 2


def test_vgg16_structure_matches_the_paper():
    model = vgg16(sobel=False, out=10, input_size=32)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.features) == 13
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 5
    assert model.top_layer.in_features == FEATURE_DIM and model.top_layer.out_features == 10


def test_alexnet_sizes():
    model = alexnet(sobel=True, out=5, input_size=64).eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == \
        [(96, 11, 4, 2), (256, 5, 1, 2), (384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1)]
    assert alexnet(out=0, input_size=224).classifier[1].in_features == 256 * 6 * 6
    with pytest.raises(ValueError, match="64"):
        alexnet(input_size=32)


def test_vgg16_rejects_tiny_inputs():
    with pytest.raises(ValueError, match="32"):
        vgg16(input_size=16)


def test_sobel_front_is_fixed_and_not_optimized():
    model = build_model("vgg16", sobel=True, out=4, input_size=32)
    assert model.features[0].in_channels == 2
    gray, edges = model.sobel[0], model.sobel[1]
    assert torch.allclose(gray.weight, torch.full((1, 3, 1, 1), 1 / 3))
    assert edges.weight[0, 0].tolist() == [[1, 0, -1], [2, 0, -2], [1, 0, -1]]
    assert edges.weight[1, 0].tolist() == [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]
    assert (gray.bias == 0).all() and (edges.bias == 0).all()
    assert not any(p.requires_grad for p in model.sobel.parameters())
    body = {id(p) for p in model.body_parameters()}
    assert not any(id(p) in body for p in model.sobel.parameters())
    assert not any(id(p) in body for p in model.top_layer.parameters())
    # a vertical edge gives a horizontal gradient only
    x = torch.zeros(1, 3, 8, 8)
    x[..., 4:] = 1.0
    out = model.sobel(x)
    assert out[0, 0].abs().sum() > 0 and out[0, 1, 1:-1].abs().sum() == 0


def test_initialisation_follows_the_reference():
    torch.manual_seed(0)
    model = vgg16(sobel=True, out=10, input_size=32)
    conv = model.features[-4]  # last 512 -> 512 conv
    assert isinstance(conv, nn.Conv2d)
    expected = math.sqrt(2.0 / (3 * 3 * 512))
    assert abs(conv.weight.std().item() / expected - 1) < 0.02
    assert abs(conv.weight.mean().item()) < expected * 0.01
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not any(m is s for s in model.sobel.modules()):
            assert (m.bias == 0).all()
        if isinstance(m, nn.BatchNorm2d):
            assert (m.weight == 1).all() and (m.bias == 0).all()
    for lin in (model.classifier[0], model.classifier[3], model.top_layer):
        assert abs(lin.weight.std().item() - 0.01) < 0.0005


def test_head_removal_gives_pre_relu_fc7_and_new_head_is_fresh():
    torch.manual_seed(0)
    model = vgg16(sobel=False, out=6, input_size=32).eval()
    x = torch.randn(4, 3, 32, 32)
    logits = model(x)
    old_head = model.top_layer
    model.remove_head()
    feats = model(x)
    assert feats.shape == (4, FEATURE_DIM) and (feats < 0).any()  # pre-ReLU
    assert torch.allclose(logits, old_head(torch.relu(feats)), atol=1e-6)
    head = model.add_head(9)
    assert head is model.top_layer and head is not old_head and head.out_features == 9
    assert (head.bias == 0).all() and abs(head.weight.std().item() - 0.01) < 0.001
    assert model(x).shape == (4, 9)


def test_build_model_rejects_unknown_arch():
    with pytest.raises(ValueError, match="resnet"):
        build_model("resnet", False, 10, 32)


class _Body(nn.Module):
    """The two parts compile_body compiles, tiny: a conv block and a linear classifier, called from a parent."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(16, 5))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


@pytest.mark.slow
def test_compile_body_runs_the_compiled_graphs_from_the_parent_and_keeps_the_weights_names():
    from torch._dynamo.utils import counters

    from cfg import DEFAULTS
    from engine import compile_body

    torch.manual_seed(0)
    model, x = _Body(), torch.randn(3, 3, 8, 8)
    eager, names = model(x).detach(), list(model.state_dict())
    assert not compile_body(model, {**DEFAULTS, "compile": "auto"}, torch.device("cpu"))  # auto: CUDA only
    assert not compile_body(model, {**DEFAULTS, "compile": "off"}, torch.device("cuda"))
    torch._dynamo.reset()
    counters.clear()
    assert compile_body(model, {**DEFAULTS, "compile": "on"}, torch.device("cpu"))
    out = model(x)
    assert counters["stats"]["unique_graphs"] == 2  # both parts traced, called through the parent's forward
    assert torch.allclose(out, eager, atol=1e-5)
    out.sum().backward()  # the training step goes through the compiled graphs too
    assert model.features[0].weight.grad is not None and list(model.state_dict()) == names
