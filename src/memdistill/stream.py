"""How a task's training data is presented: online (one pass) or offline (epochs)."""
from __future__ import annotations

from typing import Iterator

import torch


def batch_indices(n: int, batch_size: int, epochs: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled index batches over ``n`` samples, ``epochs`` times (1 = online).

    Each epoch is a fresh permutation; the last batch of an epoch may be smaller.
    """
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        yield from order.split(batch_size)


def num_batches(n: int, batch_size: int, epochs: int) -> int:
    return epochs * -(-n // batch_size)
