"""DER++: Dark Experience Replay++ (Buzzega et al., NeurIPS 2020).

Each stored sample keeps the logits the network gave it when it arrived.  Loss =

    CE(stream) + alpha * MSE(f(x'), z')  +  beta * CE(f(x''), y'')

where (x', z') and (x'', y'') are two batches drawn independently from memory
(Eq. 6 of the DER paper).  Defaults alpha = 0.1, beta = 0.5 are Mammoth's best
arguments for seq-cifar10 with 200 samples (also the best online DER++ arguments
reported in Mammoth issue #6).

Differences from Mammoth: the stream and both memory batches go through the
network in one forward (as ER does here), so batch norm sees all of them at once.
The CE term's targets come from :meth:`memory_targets`, so a soft-label plug-in
(DDN) replaces the hard labels y'' (the logit term is untouched).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from memdistill.memory import MemoryBatch
from memdistill.methods.replay import ReplayLearner


def take(batch: MemoryBatch, part: slice) -> MemoryBatch:
    """The samples ``part`` of a memory batch."""
    return MemoryBatch(batch.images[part], batch.labels[part], batch.tasks[part], batch.indices[part],
                       {k: v[part] for k, v in batch.extras.items()})


class DERpp(ReplayLearner):
    name = "derpp"
    options = {"alpha": 0.1, "beta": 0.5}

    def buffer_extras(self) -> dict[str, tuple[int, ...]]:
        return {"logits": (self.ctx.num_classes,)}

    def sample_memory(self) -> MemoryBatch | None:
        """Two independent draws, one after the other: the logit batch, then the label batch."""
        if len(self.buffer) == 0:
            return None
        first = self.buffer.sample(self.ctx.replay_batch_size, self.generator)
        second = self.buffer.sample(self.ctx.replay_batch_size, self.generator)
        return MemoryBatch(torch.cat([first.images, second.images]), torch.cat([first.labels, second.labels]),
                           torch.cat([first.tasks, second.tasks]), torch.cat([first.indices, second.indices]),
                           {k: torch.cat([first.extras[k], second.extras[k]]) for k in first.extras})

    def memory_loss(self, logits: torch.Tensor, batch: MemoryBatch) -> torch.Tensor:
        half = len(batch) // 2          # both draws have the same size
        logit_part, label_part = take(batch, slice(0, half)), take(batch, slice(half, None))
        mse = F.mse_loss(logits[:half], logit_part.extras["logits"])
        ce = self.cross_entropy(logits[half:], self.memory_targets(label_part, logits[half:]))
        return self.opts["alpha"] * mse + self.opts["beta"] * ce

    def update_memory(self, images, labels, task_id, logits) -> None:
        # The logits of the forward before the optimiser step, as Mammoth stores them.
        self.buffer.add(images, labels, task_id, self.generator, extras={"logits": logits})
