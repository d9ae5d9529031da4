"""Learning without Forgetting (Li & Hoiem, 2016), class-incremental, and LwF.MC (iCaRL's loss).

* ``lwf``: CE over all seen classes on the new task's data, plus the softened KL
  (temperature 2, weight 1) between theta_{n-1}'s and theta_n's distributions over
  the old classes (each a softmax over the old-class logits) on the same data
  (ABD Table 1's LwF).
* ``lwf-mc``: the multi-class variant of Rebuffi et al. (iCaRL without exemplars):
  a sigmoid binary cross-entropy over all seen classes whose targets are the
  one-hot labels for the new classes and theta_{n-1}'s sigmoid outputs for the old
  ones (summed over classes, mean over the batch).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from memdistill.methods.distillation import DistillationLearner, check_options, softened_kl


class LwF(DistillationLearner):
    name = "lwf"
    options = {"kd_weight": 1.0, "temperature": 2.0}

    def __init__(self, model, ctx, **options):
        super().__init__(model, ctx, **options)
        check_options(self.name, self.opts, non_negative=("kd_weight",), positive=("temperature",))

    def observe(self, images: torch.Tensor, labels: torch.Tensor, task_id: int) -> dict[str, float]:
        return self.lwf_step(self.preprocess(images, self.generator), labels)

    def lwf_step(self, x: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """One step of LwF's loss on the (preprocessed) batch ``x``."""
        logits = self.forward(x)
        ce = self.seen_cross_entropy(logits, labels)
        if self.previous is None:
            self.step(ce)
            return {"loss": ce.item()}
        previous_logits, _ = self.previous_forward(x)
        # softmax over the old classes only (unlike DeepInversion's zero padding, Eq. 9)
        kd = softened_kl(logits[:, self.class_index(self.old_classes)], previous_logits, self.opts["temperature"])
        loss = ce + self.opts["kd_weight"] * kd
        self.step(loss)
        return {"loss": loss.item(), "ce": ce.item(), "kd": kd.item()}


class LwFMultiClass(DistillationLearner):
    name = "lwf-mc"

    def observe(self, images: torch.Tensor, labels: torch.Tensor, task_id: int) -> dict[str, float]:
        x = self.preprocess(images, self.generator)
        seen = self.class_index(self.seen_classes)
        logits = self.forward(x)[:, seen]
        position = torch.full((self.ctx.num_classes,), -1, dtype=torch.long, device=self.device)
        position[seen] = torch.arange(len(seen), device=self.device)
        targets = F.one_hot(position[labels], len(seen)).float()
        if self.previous is not None:
            previous_logits, _ = self.previous_forward(x)
            targets[:, position[self.class_index(self.old_classes)]] = previous_logits.sigmoid()
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1).mean()
        self.step(loss)
        return {"loss": loss.item()}
