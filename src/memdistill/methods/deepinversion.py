"""DeepInversion for class-incremental learning (Yin et al., CVPR 2020), as ABD's baseline.

The synthesis is ABD's (Sec. 4: the same generator and Eq. 7); the distillation is
Eq. 8-9: CE over all seen classes on the real batch, plus the softened KL between
theta_{n-1} (its old-class distribution padded with zeros for the new classes) and
theta_n, on the real batch and on an equally large synthetic batch.  Temperature 2
("for all softmax knowledge distillation instances", Sec. 7), weight 1.
"""
from __future__ import annotations

import torch

from memdistill.methods.distillation import SYNTHESIS_OPTIONS, DistillationLearner, check_options, softened_kl


class DeepInversion(DistillationLearner):
    name = "deepinversion"
    synthesises = True
    options = {"kd_weight": 1.0, "temperature": 2.0, **SYNTHESIS_OPTIONS}

    def __init__(self, model, ctx, **options):
        super().__init__(model, ctx, **options)
        check_options(self.name, self.opts, non_negative=("kd_weight",), positive=("temperature",))

    def observe(self, images: torch.Tensor, labels: torch.Tensor, task_id: int) -> dict[str, float]:
        x = self.preprocess(images, self.generator)
        if self.previous is None:
            return self.plain_step(x, labels)
        n = len(x)
        x_all = self.with_synthetic(x)
        previous_logits, _ = self.previous_forward(x_all)
        logits = self.forward(x_all)
        ce = self.seen_cross_entropy(logits[:n], labels)                           # Eq. 8, first term
        seen = logits[:, self.class_index(self.old_classes + self.new_classes)]
        T = self.opts["temperature"]
        kd = softened_kl(seen[:n], previous_logits[:n], T) + softened_kl(seen[n:], previous_logits[n:], T)
        loss = ce + self.opts["kd_weight"] * kd                                   # Eq. 8 with Eq. 9
        self.step(loss)
        return {"loss": loss.item(), "ce": ce.item(), "kd": kd.item()}
