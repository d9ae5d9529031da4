"""Elastic Weight Consolidation, EWC (Kirkpatrick et al., PNAS 2017), in its online form.

After each task the diagonal of the Fisher information F is estimated at the task's
final weights theta*, and later tasks pay the quadratic penalty of the paper's Eq. 3,

    loss = CE + (lambda / 2) * sum_i F_i (theta_i - theta*_i)^2.

One penalty is kept, not one per task: F accumulates as F <- gamma F + F_task and
theta* moves to the newest weights (online EWC, Schwarz et al. 2018; gamma = 1 sums
every task's Fisher).  So the memory is two copies of the weights whatever the
number of tasks, counted in ``memory_nbytes``.

F is estimated on up to ``fisher_samples`` samples of the task kept from its stream
while it is learned (the first ones seen, as GEM's EWC baseline keeps ``n_memories``)
and dropped at its end, so an online run still sees each sample once.  ``fisher``
chooses the label each sample's gradient of log p(y|x) is taken at: ``sampled`` draws
y from the model's own prediction (an unbiased estimate of the true Fisher the paper
uses), ``empirical`` takes the true label.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from memdistill.methods.base import Learner

FISHERS = ("sampled", "empirical")


class EWC(Learner):
    name = "ewc"
    supports_glances = True
    options = {"ewc_lambda": 1.0, "gamma": 1.0, "fisher_samples": 200, "fisher": "sampled"}

    def __init__(self, model, ctx, **options):
        super().__init__(model, ctx, **options)
        o = self.opts
        for key in ("ewc_lambda", "gamma"):
            if isinstance(o[key], bool) or not isinstance(o[key], (int, float)) or o[key] < 0:
                raise ValueError(f"ewc: {key} must be a number >= 0 (got {o[key]!r})")
        if isinstance(o["fisher_samples"], bool) or not isinstance(o["fisher_samples"], int) \
                or o["fisher_samples"] < 1:
            raise ValueError(f"ewc: fisher_samples must be an integer >= 1 (got {o['fisher_samples']!r})")
        if o["fisher"] not in FISHERS:
            raise ValueError(f"ewc: fisher must be one of {', '.join(FISHERS)} (got {o['fisher']!r})")
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.kept_images: list[torch.Tensor] = []    # this task's samples for its Fisher
        self.kept_labels: list[torch.Tensor] = []

    def begin_task(self, task) -> None:
        super().begin_task(task)
        self.kept_images, self.kept_labels = [], []

    def penalty(self) -> torch.Tensor:
        """(lambda / 2) sum_i F_i (theta_i - theta*_i)^2; zero before the first task ends."""
        total = torch.zeros((), device=self.device)
        for name, p in self.model.named_parameters():
            if name in self.fisher:
                total = total + (self.fisher[name] * (p - self.anchor[name]) ** 2).sum()
        return 0.5 * self.opts["ewc_lambda"] * total

    def observe(self, images: torch.Tensor, labels: torch.Tensor, task_id: int) -> dict[str, float]:
        kept = sum(len(y) for y in self.kept_labels)
        if kept < self.opts["fisher_samples"]:
            room = self.opts["fisher_samples"] - kept
            self.kept_images.append(images[:room].clone())
            self.kept_labels.append(labels[:room].clone())
        for _ in range(self.ctx.glances):
            out = self.penalised_step(images, labels)
        return out

    def penalised_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        logits = self.forward(self.preprocess(images, self.generator))
        ce = self.cross_entropy(logits, labels)
        if not self.fisher:
            self.step(ce)
            return {"loss": ce.item()}
        penalty = self.penalty()
        loss = ce + penalty
        if not torch.isfinite(loss):
            stiffness = self.stiffness()
            raise FloatingPointError(
                f"ewc: the loss is not finite (penalty {penalty.item():.3g}). SGD on the penalty is stable while "
                f"lr x ewc_lambda x max Fisher < 2, and here it is {stiffness:.3g}: lower ewc_lambda, --lr or gamma")
        self.step(loss)
        return {"loss": loss.item(), "ce": ce.item(), "penalty": penalty.item()}

    def stiffness(self) -> float:
        """lr x lambda x the largest Fisher entry: plain SGD on the penalty diverges above 2."""
        largest = max((float(f.max()) for f in self.fisher.values()), default=0.0)
        return max(g["lr"] for g in self.optimizer.param_groups) * self.opts["ewc_lambda"] * largest

    def estimate_fisher(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Diagonal Fisher: the mean over samples of (d log p(y|x) / d theta)^2, with y as
        ``fisher`` says, from per-sample gradients (vmap) at the current weights.  The
        network is in eval mode, so batch norm uses its running statistics and a sample's
        gradient does not depend on the others."""
        was_training = self.model.training
        self.model.eval()
        params = {k: v.detach() for k, v in self.model.named_parameters()}
        buffers = {k: v.detach() for k, v in self.model.named_buffers()}

        def log_likelihood(p, x, y):    # in fp32 whatever --precision: once per task, and exact
            out = functional_call(self.model, (p, buffers), (x.unsqueeze(0),))
            return F.log_softmax(out.float(), dim=1)[0].gather(0, y.unsqueeze(0)).squeeze(0)

        per_sample = vmap(grad(log_likelihood), in_dims=(None, 0, 0))
        fisher = {k: torch.zeros_like(v) for k, v in params.items()}
        for start in range(0, len(labels), 64):
            x = self.preprocess(images[start: start + 64], train=False)
            y = labels[start: start + 64].to(self.device)
            if self.opts["fisher"] == "sampled":
                with torch.no_grad():
                    probs = F.softmax(self.model(x).float(), dim=1)
                y = torch.multinomial(probs.cpu(), 1, generator=self.generator).flatten().to(self.device)
            for k, g in per_sample(params, x, y).items():
                fisher[k] += (g ** 2).sum(0)
        self.model.train(was_training)
        return {k: v / len(labels) for k, v in fisher.items()}

    def end_task(self, task) -> None:
        if not self.kept_labels:
            return
        task_fisher = self.estimate_fisher(torch.cat(self.kept_images), torch.cat(self.kept_labels))
        gamma = self.opts["gamma"]
        self.fisher = {k: gamma * self.fisher[k] + f if k in self.fisher else f for k, f in task_fisher.items()}
        self.anchor = {k: v.detach().clone() for k, v in self.model.named_parameters()}
        self.kept_images, self.kept_labels = [], []

    @property
    def memory_nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for d in (self.fisher, self.anchor) for t in d.values())

    @property
    def memory_detail(self) -> dict[str, int]:
        if not self.fisher:
            return {}
        return {"fisher": sum(t.numel() * t.element_size() for t in self.fisher.values()),
                "anchor weights": sum(t.numel() * t.element_size() for t in self.anchor.values())}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "fisher": dict(self.fisher), "anchor": dict(self.anchor),
                "kept_images": list(self.kept_images), "kept_labels": list(self.kept_labels)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.fisher = {k: v.to(self.device) for k, v in state["fisher"].items()}
        self.anchor = {k: v.to(self.device) for k, v in state["anchor"].items()}
        self.kept_images, self.kept_labels = list(state["kept_images"]), list(state["kept_labels"])
