"""ER-ACE: ER with the asymmetric cross-entropy (Caccia et al., ICLR 2022).

Incoming data should not push down the logits of old classes it does not contain
(that is what drags old-class representations toward new ones).  So:

* stream loss: CE with the logits of *seen classes absent from the stream batch*
  masked out, i.e. over the classes present in the batch (plus the classes not
  seen yet, which the reference code also keeps, so that their logits are pushed
  down and cannot win an argmax later).  During the first task nothing is old and
  nothing is masked, as in the reference code (pclucas14/AML, Mammoth ``er_ace``);
* memory loss: CE over all seen classes (targets from :meth:`memory_targets`,
  so DDN's soft labels plug in unchanged).

Difference from the reference code: "seen" is per task here (all classes of the
tasks begun so far), where the reference tracks the labels met in stream batches;
its replay CE runs over all logits, here over seen classes.  Mammoth's online
ER-ACE configuration (cosine head, no augmentation, batch 10) is a matter of run
options, not of this method.
"""
from __future__ import annotations

import torch

from memdistill.memory import MemoryBatch
from memdistill.methods.replay import ReplayLearner


def masked(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Logits with the classes not in ``keep`` (bool, per class) set to the lowest float."""
    return logits.masked_fill(~keep, torch.finfo(logits.dtype).min)


class ERACE(ReplayLearner):
    name = "er-ace"

    def stream_keep(self, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """Classes the stream loss keeps: present in the batch, or not seen yet."""
        keep = torch.ones(num_classes, dtype=torch.bool, device=labels.device)
        if self.current_task > 0:
            keep[self.seen_classes] = False
            keep[labels] = True
        return keep

    def stream_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.cross_entropy(masked(logits, self.stream_keep(labels, logits.shape[1])), labels)

    def memory_loss(self, logits: torch.Tensor, batch: MemoryBatch) -> torch.Tensor:
        return self.cross_entropy(self.seen_mask(logits), self.memory_targets(batch, logits))
