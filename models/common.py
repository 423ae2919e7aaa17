"""What VGG16 and AlexNet share: the head that DeepCluster removes and re-creates, and the init."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .sobel import make_sobel

FEATURE_DIM = 4096
HEAD_PREFIXES = ("top_layer.", "extra_heads.")  # state_dict names of the heads (replaced every clustering)


class DeepClusterNet(nn.Module):
    """sobel (optional) -> features (convs) -> flatten -> classifier (ends at fc7, pre-ReLU) -> [ReLU -> top_layer].

    With `top_layer = None` the output is the pre-ReLU fc7 activation, the feature that
    DeepCluster clusters. `add_head(k)` appends the ReLU and a fresh Linear(4096, k).
    Several clusterings per epoch (cfg num_classes a list) train one head each: `top_layer` is the
    first clustering's, `extra_heads` the others', and the output is then the list of their logits.
    `block_ends[b - 1]` is the index in `features` where conv block b ends (the linear probe's layers).
    """

    def __init__(self, features, classifier, sobel, out, block_ends):
        super().__init__()
        self.block_ends = list(block_ends)
        self.sobel = make_sobel() if sobel else None
        self.features = features
        self.classifier = classifier
        self.top_layer = None
        self.extra_heads = nn.ModuleList()  # empty: no parameters, no state_dict entries
        self.init_weights()
        if out:
            self.add_head(out)

    def forward(self, x):
        if self.sobel is not None:
            x = self.sobel(x)
        x = self.features(x)
        x = torch.flatten(x, 1)
        x = self.classifier(x)
        if self.top_layer is None:
            return x
        logits = [head(x if isinstance(head, CentroidHead) else torch.relu(x))  # a CentroidHead reads pre-ReLU fc7
                  for head in self.heads()]
        return logits if self.extra_heads else logits[0]

    def heads(self):
        """The heads, the first clustering's first ([] in features mode)."""
        return [] if self.top_layer is None else [self.top_layer, *self.extra_heads]

    def set_heads(self, heads):
        """Put back heads taken by heads() (the first becomes top_layer)."""
        self.top_layer = heads[0] if heads else None
        self.extra_heads = nn.ModuleList(heads[1:])

    def remove_head(self):
        """Features mode: the network outputs the 4096-d pre-ReLU fc7 activation (every head removed)."""
        self.set_heads([])

    def new_linear(self, k):
        """A Linear(4096, k) with N(0, 0.01) weights and zero bias, on the network's device."""
        head = nn.Linear(FEATURE_DIM, k)
        head.weight.data.normal_(0, 0.01)
        head.bias.data.zero_()
        return head.to(device=next(self.features.parameters()).device)

    def add_head(self, k):
        """A new Linear(4096, k) (new_linear) after the fc7 ReLU: the only head."""
        self.set_heads([self.new_linear(k)])
        return self.top_layer

    def add_heads(self, ks):
        """One new head per clustering, Linear(4096, k) for each k of ks, drawn in that order."""
        self.set_heads([self.new_linear(k) for k in ks])
        return self.heads()

    def carry_head(self, source):
        """A head for a new clustering that keeps the trained rows: row j <- old row source[j]
        (source from clustering.match_clusters), fresh N(0, 0.01) rows where source[j] = -1."""
        return self.carry_heads([source])[0]

    def carry_heads(self, sources):
        """carry_head for every head: head h keeps its trained rows by sources[h] (one per head, in order)."""
        old = self.heads()
        if len(old) != len(sources):
            raise ValueError(f"{len(sources)} row matchings for {len(old)} heads")
        new = [self.new_linear(len(source)) for source in sources]
        with torch.no_grad():
            for head, previous, source in zip(new, old, sources):
                idx = torch.as_tensor(source, dtype=torch.long, device=head.weight.device)
                kept = idx >= 0
                head.weight[kept] = previous.weight[idx[kept]]
                head.bias[kept] = previous.bias[idx[kept]]
        self.set_heads(new)
        return new

    def set_centroid_head(self, pca, centroids, temperature):
        """DeepCluster-v2's head: the clustering itself (whitening, L2, cosine to the centroids) / temperature.

        Fixed for the epoch (no trainable parameters, not saved: it is rebuilt from the checkpoint's
        PCA and centroids), so the loss pulls each image's feature towards its own centroid.
        """
        return self.set_centroid_heads(pca, [centroids], temperature)[0]

    def set_centroid_heads(self, pca, centroids, temperature):
        """set_centroid_head for every clustering of the epoch: one CentroidHead per (k, pca_dim) centroid array
        of the list `centroids`, all on the same PCA-whitening."""
        device = next(self.features.parameters()).device
        self.set_heads([CentroidHead(pca["A"], pca["b"], c, temperature).to(device=device) for c in centroids])
        return self.heads()

    def body_parameters(self):
        """Trainable parameters without the heads and without the frozen Sobel filters."""
        return [p for name, p in self.named_parameters() if p.requires_grad and not name.startswith(HEAD_PREFIXES)]

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


def conv_stack(in_channels, config, pool_kernel):
    """Conv-BN-ReLU layers from a config: "M" is a max-pool (pool_kernel, stride 2), an int v a 3x3 conv
    with v filters and padding 1, a tuple (filters, kernel, stride, padding) any other conv."""
    layers = []
    for v in config:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=pool_kernel, stride=2))
            continue
        filters, kernel, stride, pad = (v, 3, 1, 1) if isinstance(v, int) else v
        layers += [nn.Conv2d(in_channels, filters, kernel, stride=stride, padding=pad), nn.BatchNorm2d(filters),
                   nn.ReLU(inplace=True)]
        in_channels = filters
    return nn.Sequential(*layers)


def assemble(config, pool_kernel, make_classifier, block_ends, sobel, out, input_size):
    """A DeepClusterNet: conv_stack(config) on 2 (Sobel) or 3 input channels, then the classifier
    built for the flattened size at input_size, and `block_ends(features)` for the probe."""
    in_channels = 2 if sobel else 3
    features = conv_stack(in_channels, config, pool_kernel)
    classifier = make_classifier(flat_size(features, in_channels, input_size))
    return DeepClusterNet(features, classifier, sobel, out, block_ends(features))


def flat_size(features, in_channels, input_size):
    """Number of values the conv stack gives for one input of input_size x input_size."""
    with torch.no_grad():
        out = features(torch.zeros(1, in_channels, input_size, input_size))
    return out.numel()


class CentroidHead(nn.Module):
    """logits = normalize(A x + b) . normalize(c_j) / temperature for the k centroids c_j.

    A, b: the PCA-whitening of the last clustering (pca_dim x 4096, pca_dim); centroids: k x pca_dim.
    Buffers are not persistent: the checkpoint already holds A, b and the centroids.
    """

    def __init__(self, A, b, centroids, temperature):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.register_buffer("A", torch.as_tensor(A, dtype=torch.float32), persistent=False)
        self.register_buffer("b", torch.as_tensor(b, dtype=torch.float32), persistent=False)
        centres = torch.as_tensor(centroids, dtype=torch.float32)
        self.register_buffer("centroids", F.normalize(centres, dim=1), persistent=False)
        self.temperature = float(temperature)

    def forward(self, x):
        z = F.normalize(x.float() @ self.A.T + self.b, dim=1)
        return z @ self.centroids.T / self.temperature
