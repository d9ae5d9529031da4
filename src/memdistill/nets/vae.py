"""A convolutional variational autoencoder: the generator of Deep Generative Replay.

The shape follows the VAE of the public ABD code's DGR baseline (after van de Ven &
Tolias): three 4x4 stride-2 convolutions (width w, 2w, 8w; w = 64 there) with ReLU,
linear maps to the mean and log-variance of z, a linear projection back, three 4x4
stride-2 transposed convolutions (8w -> 4w -> w -> C) and a sigmoid, so images live in
[0, 1].  Loss: binary cross-entropy per pixel (mean over pixels) plus the Gaussian KL
of Kingma & Welling (App. B) divided by the number of pixels, so both terms are on
the same per-pixel scale.  Sizes that are not a multiple of 8 are decoded at 8x the
encoder's map (24 for MNIST's 28) and resized bilinearly.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _down(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1)


def _up(c_in: int, c_out: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1)


class ReplayVAE(nn.Module):
    def __init__(self, input_shape: tuple[int, int, int], width: int = 64, z_dim: int = 1024):
        super().__init__()
        c, h, w = input_shape
        if h < 8 or w < 8:
            raise ValueError(f"the VAE needs images of at least 8x8 (got {h}x{w})")
        self.input_shape = (c, h, w)
        self.z_dim = z_dim
        self.encoder = nn.Sequential(_down(c, width), nn.ReLU(), _down(width, 2 * width), nn.ReLU(),
                                     _down(2 * width, 8 * width), nn.ReLU())
        with torch.no_grad():
            self.feature_shape = tuple(self.encoder(torch.zeros(1, c, h, w)).shape[1:])
        n = math.prod(self.feature_shape)
        self.q_mean = nn.Linear(n, z_dim)
        self.q_logvar = nn.Linear(n, z_dim)
        self.project = nn.Linear(z_dim, n)
        self.decoder = nn.Sequential(_up(8 * width, 4 * width), nn.ReLU(), _up(4 * width, width), nn.ReLU(),
                                     _up(width, c))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images in [0, 1] -> mean and log-variance of q(z | x)."""
        h = self.encoder(x).flatten(1)
        return self.q_mean(h), self.q_logvar(h)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """z -> pixel logits at the input size (the sigmoid of these is the image)."""
        out = self.decoder(self.project(z).view(-1, *self.feature_shape))
        if out.shape[-2:] != self.input_shape[1:]:
            out = F.interpolate(out, size=self.input_shape[1:], mode="bilinear", align_corners=False)
        return out

    def loss(self, x: torch.Tensor, weights: torch.Tensor, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction (per-sample BCE, mean over pixels, weighted by ``weights``, batch
        mean) and the KL term (batch mean, divided by the number of pixels)."""
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=generator).to(mu.device)
        z = mu + eps * (0.5 * logvar).exp()                   # the reparametrisation trick
        logits = self.decode_logits(z)
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).mean(1)
        recon = (bce * weights).mean()
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1).mean() / x[0].numel()
        return recon, kl

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """``n`` images in [0, 1] decoded from z ~ N(0, I)."""
        z = torch.randn(n, self.z_dim, generator=generator).to(device)
        return self.decode_logits(z).sigmoid()

    @property
    def nbytes(self) -> int:
        return sum(p.element_size() * p.numel() for p in self.parameters())
