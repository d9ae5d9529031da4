"""The learner seam: ``begin_task / observe / end_task / predict``.

The engine drives a learner only through these four calls (plus state_dict for
checkpoints); a learner never reaches into the engine.  :class:`Learner` holds
what every method shares: the network, its optimiser, preprocessing, precision
and the random generator whose state is checkpointed so resumed runs repeat.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from memdistill.data.augment import Preprocess
from memdistill.data.scenarios import Task
from memdistill.nets import Backbone


@dataclass
class LearnerContext:
    """What a learner may know about the run it is part of."""
    num_classes: int
    num_tasks: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool
    device: torch.device
    precision: str = "fp32"
    channels_last: bool = False
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 32
    replay_batch_size: int = 32
    glances: int = 1              # optimiser steps per stream batch (learners with supports_glances)
    epochs: int = 1
    buffer: int = 0
    buffer_policy: str = "reservoir"
    seed: int = 0


class Learner:
    name = "learner"
    needs_buffer = False
    accepts_plugins = False    # replay learners whose memory targets a plug-in may supply
    supports_glances = False   # observe takes ctx.glances steps on its batch (memory updated once)
    scenario_kinds = ("class-incremental", "domain-incremental")   # where the method applies
    options: dict[str, object] = {}      # method-specific options and their defaults

    def __init__(self, model: Backbone, ctx: LearnerContext, **options):
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            allowed = ", ".join(self.options) or "none"
            raise ValueError(f"method {self.name} has no option {unknown[0]!r}; allowed: {allowed}")
        self.opts = {**self.options, **options}
        self.ctx = ctx
        self.device = ctx.device
        self.model = model.to(ctx.device)
        if ctx.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = self.make_optimizer()
        self.preprocess = Preprocess(ctx.mean, ctx.std, ctx.augment, ctx.device, ctx.channels_last)
        self.generator = torch.Generator().manual_seed(ctx.seed)
        self.current_task = -1
        self.seen_classes: list[int] = []

    # -- the seam ---------------------------------------------------------------
    def begin_task(self, task: Task) -> None:
        self.current_task = task.index
        self.seen_classes = sorted(set(self.seen_classes) | set(task.classes))

    def observe(self, images: torch.Tensor, labels: torch.Tensor, task_id: int) -> dict[str, float]:
        """One training step on a stream batch (uint8 images). Returns losses to log."""
        raise NotImplementedError

    def end_task(self, task: Task) -> None:
        pass

    @torch.no_grad()
    def predict(self, images: torch.Tensor, task_id: int | None = None) -> torch.Tensor:
        """Logits for uint8 images (no augmentation).  ``task_id``, the task the images come
        from, is given by the engine's evaluation; only learners that evaluate with the task's
        identity use it (compress-recall's ``recall=per-task``), the others ignore it."""
        self.model.eval()
        with self.autocast():
            logits = self.model(self.preprocess(images, train=False))
        self.model.train()
        return logits.float()

    # -- shared machinery -------------------------------------------------------
    def make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.model.parameters(), lr=self.ctx.lr, momentum=self.ctx.momentum,
                               weight_decay=self.ctx.weight_decay)

    def scale_lr(self, factor: float) -> None:
        """The classifier's learning rate set to ``factor`` times the one its optimiser was
        made with (the engine's per-task step schedule, ``--lr-milestones``)."""
        for group in self.optimizer.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * factor

    def autocast(self):
        if self.ctx.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits in fp32 whatever the compute precision (losses stay in fp32)."""
        with self.autocast():
            return self.model(x).float()

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def seen_mask(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits of classes not seen yet set to the lowest float (class-IL convention).

        Finite rather than -inf, so a soft target that is 0 there contributes 0 to a
        cross-entropy instead of nan (0 * -inf)."""
        keep = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
        keep[self.seen_classes] = True
        return logits.masked_fill(~keep, torch.finfo(logits.dtype).min)

    def cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """CE with hard labels (int) or a distribution over classes (float)."""
        return F.cross_entropy(logits, targets)

    @property
    def memory_nbytes(self) -> int:
        """Bytes of memory the method keeps between tasks besides the network."""
        return 0

    @property
    def memory_detail(self) -> dict[str, int]:
        """``memory_nbytes`` by part (docs/memory-budget.md); the values sum to it.
        Learners that keep more than one kind of thing override this."""
        total = int(self.memory_nbytes)
        return {"memory": total} if total else {}

    def extra_summary(self) -> dict:
        """Method-specific entries for summary.json (e.g. seconds spent on synthesis)."""
        return {}

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "current_task": self.current_task,
                "seen_classes": list(self.seen_classes)}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.current_task = int(state["current_task"])
        self.seen_classes = list(state["seen_classes"])
