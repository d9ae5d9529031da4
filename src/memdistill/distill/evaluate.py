"""How good is a distilled memory: train fresh networks on what it recalls, test them.

The protocol of the dataset-distillation literature (DC/DSA/RTP): N randomly
initialised networks, each trained E epochs on the recalled set with SGD (lr 0.01,
momentum 0.9, weight decay 5e-4, lr × 0.1 at half the epochs, batch 256), then
tested on real test images; the report is the mean ± std of their accuracies.
The paper uses N = 20, E = 300.  DC's public code also augments the training batches
of its MNIST evaluation networks (``TrainSchedule.augment = "crop-scale-rotate"``);
the default here is no augmentation.  Works for any (images, labels) set, so every kind
of memory (and a random-real baseline) is measured by the same code.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from memdistill.distill.augment import EVAL_AUGMENTATIONS, random_crop_scale_rotate
from memdistill.distill.memories import DistilledMemory


@dataclass
class TrainSchedule:
    epochs: int = 300
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    decay_at_half: bool = True
    augment: str = "none"          # or "crop-scale-rotate": DC's MNIST evaluation augmentation


@dataclass
class HeldOutImages:
    """Real test images, uint8 (N, C, H, W), turned into input space batch by batch."""
    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None   # after normalising (ZCA)

    def batches(self, batch_size: int, device: torch.device):
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, device=device).reshape(shape)
        std = torch.tensor(self.std, device=device).reshape(shape)
        for start in range(0, len(self.labels), batch_size):
            x = (self.images[start:start + batch_size].to(device).float() / 255.0 - mean) / std
            yield (x if self.transform is None else self.transform(x)), self.labels[start:start + batch_size].to(device)


def train_fresh_network(images: torch.Tensor, labels: torch.Tensor, make_network: Callable[[], nn.Module],
                        schedule: TrainSchedule, seed: int) -> nn.Module:
    """A network initialised under ``seed`` and trained on (images, labels) (input space)."""
    if schedule.augment not in EVAL_AUGMENTATIONS:
        raise ValueError(f"unknown evaluation augmentation {schedule.augment!r}; "
                         f"choose one of {', '.join(EVAL_AUGMENTATIONS)}")
    images, labels = images.detach(), labels.detach()
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = make_network().to(images.device)
    opt = torch.optim.SGD(net.parameters(), lr=schedule.lr, momentum=schedule.momentum,
                          weight_decay=schedule.weight_decay)
    n = len(labels)
    net.train()
    for epoch in range(schedule.epochs):
        if schedule.decay_at_half and epoch == schedule.epochs // 2 and schedule.epochs > 1:
            for group in opt.param_groups:
                group["lr"] = schedule.lr * 0.1
        order = torch.randperm(n, generator=g).to(images.device)
        for start in range(0, n, schedule.batch_size):
            idx = order[start:start + schedule.batch_size]
            x = images[idx]
            if schedule.augment == "crop-scale-rotate":
                x = random_crop_scale_rotate(x, g)
            loss = F.cross_entropy(net(x), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net


@torch.no_grad()
def test_accuracy(net: nn.Module, test: HeldOutImages, batch_size: int = 256) -> float:
    """Accuracy (%) on the test set (batches of 256 keep peak memory low: a ConvNet-3
    activation of 1,000 MNIST images is 0.5 GB)."""
    device = next(net.parameters()).device
    net.eval()
    correct = 0
    for x, y in test.batches(batch_size, device):
        correct += (net(x).argmax(1) == y).sum().item()
    net.train()
    return 100.0 * correct / max(1, len(test.labels))


def evaluate_dataset(images: torch.Tensor, labels: torch.Tensor, make_network: Callable[[], nn.Module],
                     test: HeldOutImages, n_networks: int = 5, schedule: TrainSchedule | None = None,
                     seed: int = 0, progress: bool = False) -> dict:
    """Train ``n_networks`` fresh networks on (images, labels); accuracy mean ± std over them."""
    if n_networks < 1:
        raise ValueError(f"n_networks must be >= 1 (got {n_networks})")
    schedule = schedule or TrainSchedule()
    started = time.perf_counter()
    accuracies = []
    for i in range(n_networks):
        net = train_fresh_network(images, labels, make_network, schedule, seed=seed * 1000 + i)
        accuracies.append(test_accuracy(net, test))
        if progress:
            print(f"  evaluation network {i + 1}/{n_networks}: {accuracies[-1]:.2f}%", file=sys.stderr)
    return {"mean": float(np.mean(accuracies)), "std": float(np.std(accuracies)),
            "accuracies": [round(a, 4) for a in accuracies], "n_networks": n_networks,
            "train_samples": int(len(labels)), "test_samples": int(len(test.labels)),
            "schedule": asdict(schedule), "seconds": round(time.perf_counter() - started, 3)}


def evaluate_memory(memory: DistilledMemory, make_network: Callable[[], nn.Module], test: HeldOutImages,
                    n_networks: int = 5, schedule: TrainSchedule | None = None, seed: int = 0,
                    progress: bool = False) -> dict:
    """:func:`evaluate_dataset` on everything the memory recalls."""
    with torch.no_grad():
        images, labels = memory.dataset()
    result = evaluate_dataset(images, labels, make_network, test, n_networks, schedule, seed, progress)
    result["memory_bytes"] = int(memory.nbytes)
    return result
