"""Replay: the three parts of a replay step kept apart.

``observe`` = loss on the stream batch (:meth:`stream_loss`) + loss on a batch
drawn from memory (:meth:`memory_loss`, whose targets come from
:meth:`memory_targets`) -> optimiser step -> plug-in steps -> memory update
(:meth:`update_memory`).  Methods override the part they change; plug-ins supply
memory targets, so one plug-in works for every replay method.
"""
from __future__ import annotations

import torch

from memdistill.memory import BUFFERS, MemoryBatch
from memdistill.methods.base import Learner, LearnerContext
from memdistill.methods.plugin import Plugin
from memdistill.nets import Backbone


class ReplayLearner(Learner):
    needs_buffer = True
    accepts_plugins = True
    supports_glances = True

    def __init__(self, model: Backbone, ctx: LearnerContext, plugins: list[Plugin] | None = None, **options):
        super().__init__(model, ctx, **options)
        self.buffer = BUFFERS[ctx.buffer_policy](ctx.buffer, ctx.input_shape, self.buffer_extras(), ctx.device)
        self.plugins = list(plugins or [])
        for plugin in self.plugins:
            plugin.attach(self)

    def buffer_extras(self) -> dict[str, tuple[int, ...]]:
        """Per-sample extras stored with each image (e.g. logits)."""
        return {}

    # -- the three parts ----------------------------------------------------------
    def stream_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.cross_entropy(logits, labels)

    def memory_targets(self, batch: MemoryBatch, logits: torch.Tensor) -> torch.Tensor:
        """Hard labels unless a plug-in supplies (soft) targets."""
        for plugin in self.plugins:
            targets = plugin.memory_targets(batch, logits)
            if targets is not None:
                return targets
        return batch.labels

    def memory_loss(self, logits: torch.Tensor, batch: MemoryBatch) -> torch.Tensor:
        return self.cross_entropy(logits, self.memory_targets(batch, logits))

    def update_memory(self, images: torch.Tensor, labels: torch.Tensor, task_id: int,
                      logits: torch.Tensor) -> None:
        self.buffer.add(images, labels, task_id, self.generator)

    def sample_memory(self) -> MemoryBatch | None:
        if len(self.buffer) == 0:
            return None
        return self.buffer.sample(self.ctx.replay_batch_size, self.generator)

    # -- the step -----------------------------------------------------------------
    def observe(self, images: torch.Tensor, labels: torch.Tensor, task_id: int) -> dict[str, torch.Tensor]:
        n = len(labels)
        for _ in range(self.ctx.glances):     # each glance draws its own memory batch
            batch = self.sample_memory()
            inputs = images if batch is None else torch.cat([images, batch.images])
            # One forward over stream + memory, as Mammoth does: a batch of 64 runs
            # faster than two of 32, and batch norm sees both.
            logits = self.forward(self.preprocess(inputs, self.generator))
            losses = {"stream": self.stream_loss(logits[:n], labels)}
            if batch is not None:
                losses["memory"] = self.memory_loss(logits[n:], batch)
            loss = sum(losses.values())
            self.step(loss)
            for plugin in self.plugins:
                losses.update(plugin.after_step((images, labels), batch))
        self.update_memory(images, labels, task_id, logits[:n].detach())
        losses["loss"] = loss
        return {k: v.detach() if torch.is_tensor(v) else v for k, v in losses.items()}

    def end_task(self, task) -> None:
        for plugin in self.plugins:
            plugin.end_task(task)

    @property
    def memory_nbytes(self) -> int:
        return self.buffer.nbytes + sum(p.nbytes for p in self.plugins)

    @property
    def memory_detail(self) -> dict[str, int]:
        detail = dict(self.buffer.nbytes_detail)
        for plugin in self.plugins:
            detail.update(plugin.nbytes_detail)
        return detail

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["buffer"] = self.buffer.state_dict()
        state["plugins"] = [p.state_dict() for p in self.plugins]
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.buffer.load_state_dict(state["buffer"])
        for plugin, s in zip(self.plugins, state["plugins"]):
            plugin.load_state_dict(s)
