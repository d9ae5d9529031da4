"""Backbones by name.  Each is a :class:`Backbone`: ``features(x)`` plus a ``head``."""
from __future__ import annotations

from typing import Callable

from memdistill.nets.base import Backbone
from memdistill.nets.resnet import ResNet18, ResNet32
from memdistill.nets.small import MLP, ConvNet


def _convnet(c: int, h: int, w: int, k: int) -> Backbone:
    # The DD literature adds a block for 64x64 inputs so the last map stays 4x4.
    return ConvNet(c, h, k, depth=4 if h >= 64 else 3)


BACKBONES: dict[str, Callable[[int, int, int, int], Backbone]] = {
    "resnet18": lambda c, h, w, k: ResNet18(c, k, nf=64),
    "reduced-resnet18": lambda c, h, w, k: ResNet18(c, k, nf=20),
    "resnet32": lambda c, h, w, k: ResNet32(c, k),
    "convnet": _convnet,
    "mlp": lambda c, h, w, k: MLP(c * h * w, k),
}


def build_backbone(name: str, input_shape: tuple[int, int, int], num_classes: int) -> Backbone:
    """Build backbone ``name`` for images of ``input_shape`` = (C, H, W)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    c, h, w = input_shape
    return BACKBONES[name](c, h, w, num_classes)


__all__ = ["Backbone", "BACKBONES", "build_backbone", "ResNet18", "ResNet32", "ConvNet", "MLP"]
