"""Small backbones: the dataset-distillation ConvNet and an MLP."""
from __future__ import annotations

from torch import nn

from memdistill.nets.base import Backbone


class ConvNet(Backbone):
    """ConvNet of the dataset-distillation literature (DC, DM, MTT, RTP).

    ``depth`` x [conv3x3 (width) -> instance norm -> ReLU -> avg-pool 2].  Instance
    norm is ``GroupNorm(width, width)`` as in the public code.  28x28 inputs get
    padding 3 on the first conv (-> 32x32) like the reference ``networks.py``.
    """

    def __init__(self, in_channels: int, image_size: int, num_classes: int,
                 width: int = 128, depth: int = 3):
        layers = []
        size = image_size
        channels = in_channels
        for d in range(depth):
            pad = 3 if (d == 0 and image_size == 28) else 1
            size = size + 2 * pad - 2
            layers += [nn.Conv2d(channels, width, 3, padding=pad),
                       nn.GroupNorm(width, width, affine=True),
                       nn.ReLU(inplace=True)]
            if size >= 2:
                layers.append(nn.AvgPool2d(2))
                size //= 2
            channels = width
        layers.append(nn.Flatten())
        super().__init__(nn.Sequential(*layers), width * size * size, num_classes)


class MLP(Backbone):
    """Two hidden layers of ReLU units on the flattened image (GEM's MNIST net)."""

    def __init__(self, input_dim: int, num_classes: int, hidden: int = 100):
        body = nn.Sequential(nn.Flatten(), nn.Linear(input_dim, hidden), nn.ReLU(),
                             nn.Linear(hidden, hidden), nn.ReLU())
        super().__init__(body, hidden, num_classes)
