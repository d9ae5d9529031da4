"""Joint training: every task's data at once (the upper bound).

It keeps all training data it is shown and, at the end of the last task, trains
on the union with the run's own stream settings (one pass online, ``epochs``
offline).  Earlier rows of its accuracy matrix are therefore those of an
untrained network; only the final row is the upper bound.
"""
from __future__ import annotations

import torch

from memdistill.methods.base import Learner
from memdistill.stream import batch_indices


class Joint(Learner):
    name = "joint"

    def __init__(self, model, ctx, **options):
        super().__init__(model, ctx, **options)
        self.images: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def observe(self, images: torch.Tensor, labels: torch.Tensor, task_id: int) -> dict[str, float]:
        # The engine presents the same batches it gives every method; joint just keeps them.
        if self.ctx.epochs == 1 or self.observed_this_epoch < self.task_size:
            self.images.append(images)
            self.labels.append(labels)
            self.observed_this_epoch += len(labels)
        return {}

    def begin_task(self, task) -> None:
        super().begin_task(task)
        self.task_size = len(task.train_labels)
        self.observed_this_epoch = 0

    def end_task(self, task) -> None:
        if task.index != self.ctx.num_tasks - 1:
            return
        images, labels = torch.cat(self.images), torch.cat(self.labels)
        self.images, self.labels = [], []
        for idx in batch_indices(len(labels), self.ctx.batch_size, self.ctx.epochs, self.generator):
            loss = self.cross_entropy(self.forward(self.preprocess(images[idx], self.generator)), labels[idx])
            self.step(loss)

    @property
    def memory_nbytes(self) -> int:
        return sum(t.element_size() * t.numel() for t in self.images + self.labels)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["images"], state["labels"] = list(self.images), list(self.labels)
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.images, self.labels = list(state["images"]), list(state["labels"])
