"""Finetune: plain SGD on the stream, no memory (the lower bound)."""
from __future__ import annotations

import torch

from memdistill.methods.base import Learner


class Finetune(Learner):
    name = "finetune"
    supports_glances = True

    def observe(self, images: torch.Tensor, labels: torch.Tensor, task_id: int) -> dict[str, float]:
        for _ in range(self.ctx.glances):
            logits = self.forward(self.preprocess(images, self.generator))
            loss = self.cross_entropy(logits, labels)
            self.step(loss)
        return {"loss": loss.item()}
