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


EVAL_AUGMENTATIONS = ("none", "crop-scale-rotate")


def random_crop_scale_rotate(images: torch.Tensor, generator: torch.Generator, crop: int = 4,
                             scale: float = 0.2, max_degrees: float = 45.0) -> torch.Tensor:
    """Per image, one of: a shift of up to ``crop`` pixels, a rescale of each side by a factor
    in [1 − scale, 1 + scale], or a rotation in [−max_degrees, max_degrees].

    The augmentation DC's public code trains its MNIST *evaluation* networks with (its
    ``crop_scale_rotate`` strategy, same magnitudes); here one batched affine warp instead of
    a Python loop.  Uncovered pixels are 0, the dataset mean in normalised input space.
    """
    n, _, h, w = images.shape
    choice = torch.randint(0, 3, (n,), generator=generator)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    # crop: an integer shift in [-crop, crop) pixels; 2/w per pixel in grid coordinates
    shift = torch.randint(-crop, max(crop, 1 - crop), (n, 2), generator=generator).float()
    is_crop = choice == 0
    theta[is_crop, 0, 2] = shift[is_crop, 0] * 2.0 / w
    theta[is_crop, 1, 2] = shift[is_crop, 1] * 2.0 / h
    # scale: the grid samples 1/factor of the image to enlarge it by factor
    factor = 1.0 + (torch.rand(n, 2, generator=generator) * 2 - 1) * scale
    is_scale = choice == 1
    theta[is_scale, 0, 0] = 1.0 / factor[is_scale, 0]
    theta[is_scale, 1, 1] = 1.0 / factor[is_scale, 1]
    # rotate
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_degrees)
    is_rotate = choice == 2
    cos, sin = angle.cos(), angle.sin()
    theta[is_rotate, 0, 0] = cos[is_rotate]
    theta[is_rotate, 0, 1] = -sin[is_rotate]
    theta[is_rotate, 1, 0] = sin[is_rotate]
    theta[is_rotate, 1, 1] = cos[is_rotate]
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
