"""ResNets used in continual learning.

* ``resnet18``: the CIFAR variant of Mammoth / GEM (3x3 stem, stride 1, no max-pool,
  BasicBlock [2, 2, 2, 2], nf=64), global average pooling over the last map.
* ``reduced-resnet18``: the same with nf=20 (160-d features), as in GEM, MIR, ER-ACE.
* ``resnet32``: the CIFAR ResNet-32 of He et al. (3 stages x 5 BasicBlocks, 16/32/64
  channels, 64-d features), used by Always Be Dreaming.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from memdistill.nets.base import Backbone
from memdistill.nets.batchnorm import BatchNorm2d


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
    layers = []
    for s in [stride] + [1] * (blocks - 1):
        layers.append(BasicBlock(in_planes, planes, s))
        in_planes = planes
    return nn.Sequential(*layers), in_planes


class ResNet18(Backbone):
    """Continual-learning ResNet-18 for small images (no max-pool, 3x3 stem)."""

    def __init__(self, in_channels: int, num_classes: int, nf: int = 64):
        body = nn.Sequential()
        body.add_module("conv1", nn.Conv2d(in_channels, nf, 3, 1, 1, bias=False))
        body.add_module("bn1", BatchNorm2d(nf))
        body.add_module("relu", nn.ReLU())
        planes = nf
        for i, (mult, stride) in enumerate([(1, 1), (2, 2), (4, 2), (8, 2)]):
            stage, planes = _stage(planes, nf * mult, 2, stride)
            body.add_module(f"layer{i + 1}", stage)
        body.add_module("pool", nn.AdaptiveAvgPool2d(1))
        body.add_module("flatten", nn.Flatten())
        super().__init__(body, nf * 8, num_classes)


class ResNet32(Backbone):
    """CIFAR ResNet-32: 3 stages of 5 BasicBlocks with 16/32/64 channels."""

    def __init__(self, in_channels: int, num_classes: int):
        body = nn.Sequential()
        body.add_module("conv1", nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False))
        body.add_module("bn1", BatchNorm2d(16))
        body.add_module("relu", nn.ReLU())
        planes = 16
        for i, (width, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
            stage, planes = _stage(planes, width, 5, stride)
            body.add_module(f"stage{i + 1}", stage)
        body.add_module("pool", nn.AdaptiveAvgPool2d(1))
        body.add_module("flatten", nn.Flatten())
        super().__init__(body, 64, num_classes)
