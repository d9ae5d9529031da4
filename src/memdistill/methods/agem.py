"""Averaged Gradient Episodic Memory, A-GEM (Chaudhry et al., ICLR 2019).

The step on the stream batch is allowed only if it does not increase the average
loss on the episodic memory, to first order: with g the stream gradient and g_ref
the gradient of the loss on a batch drawn from memory, A-GEM's Eq. 11 replaces g by

    g~ = g - (g . g_ref / g_ref . g_ref) g_ref     when g . g_ref < 0,

and keeps g otherwise.  The memory is the engine's buffer (reservoir over the stream
by default, so it holds the same samples, and bytes, as ER's).  ``reference="past"``
draws g_ref's batch from earlier tasks' samples only, as the paper's episodic memory
holds; ``"all"`` draws from the whole buffer (Mammoth's A-GEM-R).  g_ref's batch has
``reference_batch`` samples (256, the public code's ``EPS_MEM_BATCH_SIZE`` for MNIST;
a buffer of 200 is then used whole).
"""
from __future__ import annotations

import torch

from memdistill.memory import MemoryBatch
from memdistill.methods.replay import ReplayLearner

REFERENCES = ("past", "all")


def project_gradient(g: torch.Tensor, g_ref: torch.Tensor) -> torch.Tensor:
    """A-GEM's Eq. 11: ``g`` with its component against ``g_ref`` removed when they conflict."""
    dot = torch.dot(g, g_ref)
    if dot >= 0:
        return g
    return g - (dot / torch.dot(g_ref, g_ref).clamp_min(torch.finfo(g.dtype).tiny)) * g_ref


class AGEM(ReplayLearner):
    name = "agem"
    accepts_plugins = False    # its memory constrains the gradient; it has no replay targets
    supports_glances = True
    options = {"reference": "past", "reference_batch": 256}

    def __init__(self, model, ctx, **options):
        super().__init__(model, ctx, **options)
        if self.opts["reference"] not in REFERENCES:
            raise ValueError(f"agem: reference must be one of {', '.join(REFERENCES)} "
                             f"(got {self.opts['reference']!r})")
        n = self.opts["reference_batch"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"agem: reference_batch must be an integer >= 1 (got {n!r})")
        self.projections = 0      # steps whose gradient was projected, for the summary
        self.steps = 0

    def reference_batch(self) -> MemoryBatch | None:
        """The batch g_ref is computed on: stored samples of earlier tasks (or all stored)."""
        if len(self.buffer) == 0:
            return None
        if self.opts["reference"] == "all":
            return self.buffer.sample(self.opts["reference_batch"], self.generator)
        past = torch.nonzero(self.buffer.tasks[: len(self.buffer)] < self.current_task).flatten()
        if len(past) == 0:
            return None
        pick = torch.randperm(len(past), generator=self.generator)[: self.opts["reference_batch"]]
        return self.buffer.gather(past[pick.to(past.device)])

    def flat_gradient(self, loss: torch.Tensor) -> torch.Tensor:
        params = [p for p in self.model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)])

    def observe(self, images: torch.Tensor, labels: torch.Tensor, task_id: int) -> dict[str, float]:
        for _ in range(self.ctx.glances):
            out, logits = self.projected_step(images, labels)
        self.update_memory(images, labels, task_id, logits.detach())
        return out

    def projected_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
        logits = self.forward(self.preprocess(images, self.generator))
        loss = self.stream_loss(logits, labels)
        g = self.flat_gradient(loss)
        out = {"loss": loss.item()}
        batch = self.reference_batch()
        if batch is not None:
            reference_loss = self.memory_loss(self.forward(self.preprocess(batch.images, self.generator)), batch)
            g_ref = self.flat_gradient(reference_loss)
            projected = project_gradient(g, g_ref)
            self.projections += int(projected is not g)
            g = projected
            out["reference"] = reference_loss.item()
        self.steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        offset = 0
        for p in self.model.parameters():
            if p.requires_grad:
                p.grad = g[offset: offset + p.numel()].view_as(p).clone()
                offset += p.numel()
        self.optimizer.step()
        return out, logits

    def extra_summary(self) -> dict:
        return {"agem_projected_fraction": self.projections / max(1, self.steps)}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "agem_counts": [self.projections, self.steps]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.projections, self.steps = state.get("agem_counts", [0, 0])
