"""Batched, on-device preprocessing: uint8 -> normalised float, plus augmentation.

Everything works on whole batches with tensor indexing, so there is no per-sample
Python work in the training loop.
"""
from __future__ import annotations

import torch


def random_crop_flip(images: torch.Tensor, pad: int, generator: torch.Generator,
                     flip: bool = True) -> torch.Tensor:
    """Random crop with zero padding ``pad`` and random horizontal flip, per sample.

    Same distribution as torchvision's ``RandomCrop(size, padding=pad)`` followed by
    ``RandomHorizontalFlip()``, done for the whole batch with one gather.
    """
    n, c, h, w = images.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(images.device)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    rows = offsets[0, :, None] + torch.arange(h, device=images.device)      # (n, h)
    cols = offsets[1, :, None] + torch.arange(w, device=images.device)      # (n, w)
    if flip:
        flips = (torch.rand(n, generator=generator) < 0.5).to(images.device)
        cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=images.device)[:, None, None]
    # (n, h, w, c) -> (n, c, h, w)
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


class Preprocess:
    """Turns uint8 batches into the network's float input.

    ``augment`` applies crop (pad 4) + flip to training batches only.  With
    ``channels_last`` the result is in NHWC memory layout, which makes convolutions
    on the CPU about 1.4x faster (measured, see docs/benchmarks.md).
    """

    def __init__(self, mean, std, augment: bool, device: torch.device,
                 channels_last: bool = False, pad: int = 4):
        shape = (1, len(mean), 1, 1)
        self.scale = (1.0 / (255.0 * torch.tensor(std, device=device))).reshape(shape)
        self.shift = (-torch.tensor(mean, device=device) / torch.tensor(std, device=device)).reshape(shape)
        self.augment = augment
        self.pad = pad
        self.channels_last = channels_last

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None,
                 train: bool = True) -> torch.Tensor:
        if train and self.augment:
            if generator is None:
                raise ValueError("augmentation needs a generator")
            images = random_crop_flip(images, self.pad, generator)
        x = images.float() * self.scale + self.shift
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
