"""Plug-ins change what a replay method replays without subclassing it.

A replay step (see :class:`memdistill.methods.replay.ReplayLearner`) asks its
plug-ins, in order, for the targets of the memory loss; the first that answers
wins (hard labels otherwise).  After the optimiser step each plug-in may take a
step of its own (e.g. DDN updates its label generator there).
"""
from __future__ import annotations

import torch

from memdistill.memory import MemoryBatch


class Plugin:
    name = "plugin"

    def attach(self, learner) -> None:
        """Called once when the learner is built."""
        self.learner = learner

    def memory_targets(self, batch: MemoryBatch, logits: torch.Tensor) -> torch.Tensor | None:
        """Targets for the memory loss: a distribution per sample, or None."""
        return None

    def after_step(self, stream: tuple[torch.Tensor, torch.Tensor], batch: MemoryBatch | None) -> dict[str, float]:
        return {}

    def end_task(self, task) -> None:
        pass

    @property
    def nbytes(self) -> int:
        """Bytes the plug-in keeps between tasks (counted in the learner's memory)."""
        return 0

    @property
    def nbytes_detail(self) -> dict[str, int]:
        """``nbytes`` by part (summary.json's ``memory_bytes_detail``); one entry by default."""
        return {self.name: self.nbytes} if self.nbytes else {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
