"""Synthetic fc7-like features for the benchmarks (bench/run.py, bench/imagenet.py, bench/sharded.py): the same rows
for the same seed, whatever script or process makes them."""
import torch


class SyntheticFeatures:
    """fc7-like features with cluster structure: k centres in a latent space, lifted to d dims, plus noise."""

    def __init__(self, d=4096, k=100, latent=512, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.lift = torch.randn(latent, d, generator=gen) / latent**0.5
        self.centres = torch.randn(k, latent, generator=gen) * 2
        self.k = k

    def rows(self, n, seed):
        gen = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, self.k, (n,), generator=gen)
        z = self.centres[labels] + torch.randn(n, self.centres.shape[1], generator=gen)
        x = z @ self.lift + 0.05 * torch.randn(n, self.lift.shape[1], generator=gen)
        return x.numpy(), labels.numpy()
