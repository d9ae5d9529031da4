"""Always Be Dreaming (ABD): data-free class-incremental learning (Smith et al., ICCV 2021).

Task 1 is plain cross-entropy.  From task 2 on, each step takes a real batch x of
the new task and an equally large synthetic batch x_hat of the old classes drawn
from the generator inverted from theta_{n-1} (``DistillationLearner``), and
minimises Eq. 15:

    L_CE^{T_n}(x)                                   local CE, Eq. 11: real data, new-class logits only
  + lambda_kd * L_KD^{wfeat}({x, x_hat})            Eq. 13: features compared through theta_{n-1}'s old-class head
  + lambda_ft * L_FT^{T_1:n}({x, x_hat}, {y, y_hat})  Eq. 14: CE over all seen classes, head only

with lambda_kd = 0.1 (Sec. 7, Table F) and lambda_ft = 1 (Sec. 7's text; Table F
lists 1e-1).  The head fine-tuning weights each sample by its class group so that
old and new classes weigh the same per class (the public code: w = n_old / n_seen
for old-class samples, 1 - that for new-class samples; here a per-class vector, so
any batch size works).

Ablations of Table 3 as options: ``balance=false`` (no task-balancing weights),
``local_ce=false`` (the standard CE of Eq. 8 over all seen classes on real data),
``kd_real=false`` / ``kd_synthetic=false`` (Eq. 13 without x or without x_hat),
``finetune_head=false`` (no Eq. 14).  Differences from the public code: the head
fine-tuning reuses the step's features, detached, instead of a second forward
under ``no_grad`` (the same gradient, without a second batch-norm update).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from memdistill.methods.distillation import SYNTHESIS_OPTIONS, DistillationLearner, check_options


class AlwaysBeDreaming(DistillationLearner):
    name = "abd"
    synthesises = True
    options = {"lambda_kd": 0.1, "lambda_ft": 1.0, "local_ce": True, "kd_real": True, "kd_synthetic": True,
               "finetune_head": True, "balance": True, **SYNTHESIS_OPTIONS}

    def __init__(self, model, ctx, **options):
        super().__init__(model, ctx, **options)
        check_options(self.name, self.opts, non_negative=("lambda_kd", "lambda_ft"),
                      flags=("local_ce", "kd_real", "kd_synthetic", "finetune_head", "balance"))

    # -- the three terms of Eq. 15 ------------------------------------------------------------
    def local_cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Eq. 11: CE over the new task's logits only, on real data of the new task."""
        new = self.class_index(self.new_classes)
        position = torch.full((self.ctx.num_classes,), -1, dtype=torch.long, device=self.device)
        position[new] = torch.arange(len(new), device=self.device)
        return F.cross_entropy(logits[:, new], position[labels])

    def feature_distillation(self, feats: torch.Tensor, previous_feats: torch.Tensor) -> torch.Tensor:
        """Eq. 13: || W f_n(x) - W f_{n-1}(x) ||^2 with W = theta_{n-1}'s head rows of the old classes.

        Mean over the old classes and the batch (the public code: summed over classes,
        divided by their number).  The bias cancels in the difference."""
        W = self.previous.head.weight[self.class_index(self.old_classes)].float()
        return ((feats - previous_feats) @ W.t()).pow(2).mean()

    def class_weights(self) -> torch.Tensor:
        """Task-balancing weights of Eq. 14 per class (all 1 with ``balance=false``)."""
        if self.opts["balance"]:
            return self.balancing_weights()
        return torch.ones(self.ctx.num_classes, device=self.device)

    def head_finetune_loss(self, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Eq. 14: CE over all seen classes through the head alone (features detached)."""
        with self.autocast():
            logits = self.model.head(feats.detach()).float()
        per_sample = F.cross_entropy(self.seen_mask(logits), labels, reduction="none")
        return (per_sample * self.class_weights()[labels]).mean()

    # -- one step -----------------------------------------------------------------------------
    def observe(self, images: torch.Tensor, labels: torch.Tensor, task_id: int) -> dict[str, float]:
        x = self.preprocess(images, self.generator)
        if self.previous is None:
            return self.plain_step(x, labels)
        n = len(x)
        x_all = self.with_synthetic(x)
        previous_logits, previous_feats = self.previous_forward(x_all)
        y_all = torch.cat([labels, self.pseudo_labels(previous_logits[n:])])
        with self.autocast():
            logits, feats = self.model.forward_with_features(x_all)
        logits, feats = logits.float(), feats.float()

        o = self.opts
        if o["local_ce"]:
            ce = self.local_cross_entropy(logits[:n], labels)
        else:
            ce = self.seen_cross_entropy(logits[:n], labels)
        use = torch.zeros(len(x_all), dtype=torch.bool, device=self.device)
        use[:n] = o["kd_real"]
        use[n:] = o["kd_synthetic"]
        kd = self.feature_distillation(feats[use], previous_feats[use]) if use.any() else ce.new_zeros(())
        ft = self.head_finetune_loss(feats, y_all) if o["finetune_head"] else ce.new_zeros(())
        loss = ce + o["lambda_kd"] * kd + o["lambda_ft"] * ft
        self.step(loss)
        return {"loss": loss.item(), "ce": ce.item(), "kd": kd.item(), "ft": ft.item()}
