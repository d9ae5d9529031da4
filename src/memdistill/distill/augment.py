"""Differentiable flip + rotate, one draw applied identically to real and synthetic batches.

Dataset distillation augments the synthetic set *and* the real batch with the same
random transform (the public code's ``flip_rotate`` intervention, seeded alike for
both).  Here one draw (flip or not, one angle) is made per seed and applied to a
whole batch, so "same randomness" means the identical transform; everything is
differentiable with respect to the images (``grid_sample``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "flip-rotate")


def flip_rotate(images: torch.Tensor, seed: int, max_degrees: float = 15.0,
                flip: bool = True) -> torch.Tensor:
    """Horizontal flip with probability 0.5 and a rotation in [-max_degrees, max_degrees],
    drawn once from ``seed`` for the whole batch."""
    g = torch.Generator().manual_seed(int(seed))
    do_flip = flip and bool(torch.rand((), generator=g) < 0.5)
    angle = math.radians(float((torch.rand((), generator=g) * 2 - 1) * max_degrees))
    if do_flip:
        images = images.flip(-1)
    cos, sin = math.cos(angle), math.sin(angle)
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=images.dtype, device=images.device)
    grid = F.affine_grid(theta.expand(images.shape[0], 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
