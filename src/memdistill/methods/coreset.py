"""Coreset rehearsal, the baselines with stored data in ABD's Tables 1-2.

``naive-rehearsal`` (fine-tuning on the task's data plus a coreset of old images) and
``lwf-coreset`` (LwF with the same coreset).  The public code ABD builds on (Hsu et al.'s
continual-learning benchmark) appends a class-balanced coreset of the old tasks' images
to each task's training data and, once the task is learned, rebuilds the coreset with
``memory_size / seen classes`` random images per class.  Here:

* while a task trains, its stream samples are offered (in the stream's random order) to
  a class-balanced staging buffer of the coreset's capacity, so it keeps a uniform random
  subset of each new class; at ``end_task`` the staged samples are offered to the coreset,
  a class-balanced buffer of ``--buffer`` images, which gives up random samples of the
  old classes to make room.  During a task the coreset holds only earlier tasks' images,
  as in the reference; the staging buffer is the current task's data (the stream, not
  memory, docs/memory-budget.md rule 5) and is emptied at the task's end;
* each stream batch of b images is trained together with round(b · |coreset| / |task|)
  coreset images (at least one), so an epoch over the task also passes over the coreset
  about once, as appending it to the task's data does;
* the loss is the cross-entropy over the classes seen so far on both; ``lwf-coreset``
  adds LwF's distillation over the old classes on both.
"""
from __future__ import annotations

import torch

from memdistill.memory import ClassBalancedBuffer, MemoryBatch
from memdistill.methods.base import Learner
from memdistill.methods.lwf import LwF


class Coreset:
    """A class-balanced coreset of earlier tasks and the staging of the current one."""

    def __init__(self, capacity: int, input_shape, device):
        self.store = ClassBalancedBuffer(capacity, input_shape, device=device)
        self.staging = ClassBalancedBuffer(capacity, input_shape, device=device)
        self.task_size = 1
        self.epoch_seen = 0

    def begin_task(self, task) -> None:
        self.task_size = max(1, len(task.train_labels))
        self.epoch_seen = 0

    def observe(self, images, labels, task_id: int, generator: torch.Generator) -> None:
        # The first pass over the task is enough: a later epoch offers the same samples again.
        if self.epoch_seen < self.task_size:
            self.staging.add(images, labels, task_id, generator)
            self.epoch_seen += len(labels)

    def end_task(self, generator: torch.Generator) -> None:
        n = len(self.staging)
        if n:
            order = torch.randperm(n, generator=generator).to(self.staging.device)
            staged = self.staging.gather(order)
            self.store.add(staged.images, staged.labels, staged.tasks, generator)
        self.staging = ClassBalancedBuffer(self.store.capacity, tuple(self.store.images.shape[1:]),
                                           device=self.store.device)

    def batch(self, stream_size: int, generator: torch.Generator) -> MemoryBatch | None:
        if len(self.store) == 0:
            return None
        k = max(1, round(stream_size * len(self.store) / self.task_size))
        return self.store.sample(k, generator)

    def state_dict(self) -> dict:
        return {"store": self.store.state_dict(), "staging": self.staging.state_dict(),
                "task_size": self.task_size, "epoch_seen": self.epoch_seen}

    def load_state_dict(self, state: dict) -> None:
        self.store.load_state_dict(state["store"])
        self.staging.load_state_dict(state["staging"])
        self.task_size, self.epoch_seen = int(state["task_size"]), int(state["epoch_seen"])


class _CoresetMixin:
    """What both coreset methods share: the coreset, its bytes, its task hooks and its state."""

    def __init__(self, model, ctx, **options):
        super().__init__(model, ctx, **options)
        self.coreset = Coreset(ctx.buffer, ctx.input_shape, self.device)

    def begin_task(self, task) -> None:
        super().begin_task(task)
        self.coreset.begin_task(task)

    def end_task(self, task) -> None:
        super().end_task(task)
        self.coreset.end_task(self.generator)

    def _stream_and_coreset(self, images, labels, task_id):
        """Preprocessed stream + coreset images and their labels; the stream goes to staging."""
        batch = self.coreset.batch(len(labels), self.generator)
        self.coreset.observe(images, labels, task_id, self.generator)
        if batch is not None:
            images, labels = torch.cat([images, batch.images]), torch.cat([labels, batch.labels])
        return self.preprocess(images, self.generator), labels

    @property
    def memory_nbytes(self) -> int:
        return self.coreset.store.nbytes

    @property
    def memory_detail(self) -> dict[str, int]:
        return dict(self.coreset.store.nbytes_detail)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "coreset": self.coreset.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.coreset.load_state_dict(state["coreset"])


class NaiveRehearsal(_CoresetMixin, Learner):
    """Naive rehearsal (ABD Tables 1-2): fine-tuning on each task's data plus a class-balanced coreset."""
    name = "naive-rehearsal"
    needs_buffer = True

    def begin_task(self, task) -> None:
        super().begin_task(task)
        self.optimizer = self.make_optimizer()      # reset each task, as the reference does

    def observe(self, images, labels, task_id):
        x, y = self._stream_and_coreset(images, labels, task_id)
        loss = torch.nn.functional.cross_entropy(self.seen_mask(self.forward(x)), y)
        self.step(loss)
        return {"loss": loss.item()}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, task_id: int | None = None) -> torch.Tensor:
        return self.seen_mask(super().predict(images, task_id))


class LwFCoreset(_CoresetMixin, LwF):
    """LwF + coreset (ABD Tables 1-2): LwF's loss on each task's data plus a class-balanced coreset."""
    name = "lwf-coreset"
    needs_buffer = True

    def observe(self, images, labels, task_id):
        return self.lwf_step(*self._stream_and_coreset(images, labels, task_id))
