"""Fixed-capacity exemplar buffers.

A buffer stores the *non-augmented* uint8 images with their labels, task ids and
optional per-sample extras (e.g. logits for DER++, soft labels for DDN), all in
preallocated tensors, so sampling a replay batch is one indexing operation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class MemoryBatch:
    """A batch drawn from a buffer; ``indices`` are the slots it came from."""
    images: torch.Tensor
    labels: torch.Tensor
    tasks: torch.Tensor
    indices: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


class Buffer:
    """Storage and sampling shared by every policy; subclasses choose the slots."""

    def __init__(self, capacity: int, image_shape: tuple[int, ...],
                 extras: dict[str, tuple[int, ...]] | None = None,
                 device: torch.device | str = "cpu"):
        if capacity < 0:
            raise ValueError(f"buffer capacity must be >= 0 (got {capacity})")
        self.capacity = capacity
        self.device = torch.device(device)
        self.images = torch.zeros((capacity, *image_shape), dtype=torch.uint8, device=self.device)
        self.labels = torch.full((capacity,), -1, dtype=torch.long, device=self.device)
        self.tasks = torch.full((capacity,), -1, dtype=torch.long, device=self.device)
        self.extras = {k: torch.zeros((capacity, *shape), device=self.device)
                       for k, shape in (extras or {}).items()}
        self.size = 0          # filled slots
        self.seen = 0          # stream samples offered so far

    def __len__(self) -> int:
        return self.size

    @property
    def nbytes(self) -> int:
        """Bytes the stored samples take (images, labels, task ids, extras)."""
        return sum(self.nbytes_detail.values())

    @property
    def nbytes_detail(self) -> dict[str, int]:
        """``nbytes`` by part: ``samples`` (uint8 images + int64 labels + int64 task ids)
        and one entry per extra at its dtype (e.g. ``logits``), over the stored samples."""
        def used(t: torch.Tensor) -> int:
            return t.element_size() * t[: self.size].numel()
        detail = {"samples": used(self.images) + used(self.labels) + used(self.tasks)}
        detail.update({name: used(t) for name, t in self.extras.items()})
        return detail

    @staticmethod
    def sample_bytes(image_shape: tuple[int, ...], extras: dict[str, tuple[int, ...]] | None = None,
                     extra_bytes: int = 4) -> int:
        """Bytes one stored sample takes: uint8 image + int64 label + int64 task id
        + each extra (float32 by default), the rule ``nbytes`` applies."""
        size = 1
        for s in image_shape:
            size *= int(s)
        for shape in (extras or {}).values():
            n = 1
            for s in shape:
                n *= int(s)
            size += extra_bytes * n
        return size + 8 + 8

    def _write(self, slots: torch.Tensor, src: torch.Tensor, images, labels, tasks, extras) -> None:
        slots = slots.to(self.device)
        src = src.to(images.device)
        self.images[slots] = images[src].to(self.device)
        self.labels[slots] = labels[src].to(self.device)
        self.tasks[slots] = tasks[src].to(self.device)
        for k, v in (extras or {}).items():
            self.extras[k][slots] = v[src].detach().to(self.device, self.extras[k].dtype)

    def add(self, images: torch.Tensor, labels: torch.Tensor, tasks: torch.Tensor | int,
            generator: torch.Generator, extras: dict[str, torch.Tensor] | None = None) -> None:
        if isinstance(tasks, int):
            tasks = torch.full_like(labels, tasks)
        missing = set(self.extras) - set(extras or {})
        if missing:
            raise ValueError(f"buffer needs extras {sorted(missing)}")
        slots, src = self._choose_slots(labels, generator)
        self.seen += len(labels)
        if len(slots):
            # A later offer in the same batch overwrites an earlier one in the same slot.
            _, last = np.unique(slots.numpy()[::-1], return_index=True)
            pick = torch.from_numpy(len(slots) - 1 - last)
            self._write(slots[pick], src[pick], images, labels, tasks, extras)

    def _choose_slots(self, labels: torch.Tensor, generator: torch.Generator):
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator) -> MemoryBatch:
        """``n`` stored samples drawn uniformly without replacement (all if fewer)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty buffer")
        n = min(n, self.size)
        idx = torch.randperm(self.size, generator=generator)[:n].to(self.device)
        return self.gather(idx)

    def gather(self, idx: torch.Tensor) -> MemoryBatch:
        return MemoryBatch(self.images[idx], self.labels[idx], self.tasks[idx], idx,
                           {k: v[idx] for k, v in self.extras.items()})

    def state_dict(self) -> dict:
        return {"images": self.images, "labels": self.labels, "tasks": self.tasks,
                "extras": dict(self.extras), "size": self.size, "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.images.copy_(state["images"])
        self.labels.copy_(state["labels"])
        self.tasks.copy_(state["tasks"])
        for k, v in state["extras"].items():
            self.extras[k].copy_(v)
        self.size, self.seen = int(state["size"]), int(state["seen"])


class ReservoirBuffer(Buffer):
    """Reservoir sampling (Vitter's algorithm R): after n offers, each of the n
    samples is in the buffer with probability capacity / n."""

    def _choose_slots(self, labels, generator):
        n = len(labels)
        positions = self.seen + np.arange(n)               # 0-based stream positions
        free = max(0, min(self.capacity - self.seen, n))  # still filling up
        # Offer number i (0-based) replaces slot j ~ U{0..i} when j < capacity.
        draws = (torch.rand(n, generator=generator, dtype=torch.float64).numpy()
                 * (positions + 1)).astype(np.int64)
        slots = np.where(np.arange(n) < free, positions, draws)
        keep = slots < self.capacity
        self.size = min(self.capacity, self.seen + n)
        return torch.from_numpy(slots[keep]), torch.from_numpy(np.flatnonzero(keep))


class ClassBalancedBuffer(Buffer):
    """Keeps classes equally represented: when full, a new sample replaces a random
    stored sample of the currently largest class (unless its own class is largest)."""

    def _choose_slots(self, labels, generator):
        stored = self.labels[: self.size].cpu().numpy()
        counts: dict[int, int] = {}
        for c in stored:
            counts[int(c)] = counts.get(int(c), 0) + 1
        slots, src = [], []
        labels_np = labels.cpu().numpy()
        for i, y in enumerate(labels_np):   # bookkeeping only: a batch is tens of samples
            y = int(y)
            if self.size < self.capacity:
                slot = self.size
                self.size += 1
                stored = np.append(stored, y)
            else:
                if self.capacity == 0:
                    continue
                largest = max(counts.values())
                if counts.get(y, 0) >= largest:
                    continue
                big = [c for c, k in counts.items() if k == largest]
                victim = big[int(torch.randint(len(big), (1,), generator=generator))]
                candidates = np.flatnonzero(stored == victim)
                slot = int(candidates[int(torch.randint(len(candidates), (1,), generator=generator))])
                counts[victim] -= 1
                stored[slot] = y
            counts[y] = counts.get(y, 0) + 1
            slots.append(slot)
            src.append(i)
        return torch.tensor(slots, dtype=torch.long), torch.tensor(src, dtype=torch.long)


BUFFERS = {"reservoir": ReservoirBuffer, "class-balanced": ClassBalancedBuffer}
