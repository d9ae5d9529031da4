"""Compress-then-recall (Remember the Past, Sec. 5.2): distil each task, retrain from the recalls.

The memory budget is ``--buffer`` samples counted in bytes exactly as an ER
buffer counts them (uint8 image + label + task id), so both compare at equal bytes.

* While a task streams, the network is not trained; the part of the budget not
  yet taken by earlier tasks' memories holds raw samples of the current task
  (reservoir sampling over the stream).
* At the task's end those samples are distilled (BPTT with momentum, Alg. 1) into
  an addressable memory (Eq. 2) that takes 1/T of the budget (T = number of tasks),
  sized by Eq. 4; the raw samples are dropped, so the raw part keeps shrinking.
* Then a freshly initialised network is trained on everything the stored memories
  recall, and that network answers the engine's evaluation.

Options (``--method-arg KEY=VALUE``): ``bases`` (K), ``downsample``, ``distill_steps``,
``unroll``, ``inner_lr``, ``inner_momentum``, ``outer_lr``, ``real_batch`` (per class),
``retrain_epochs``, ``retrain_lr``, ``retrain_batch``.
"""
from __future__ import annotations

import copy
import math

import torch

from memdistill.data.scenarios import Task
from memdistill.distill.bptt import BPTTConfig, BPTTDistiller
from memdistill.distill.evaluate import TrainSchedule, train_fresh_network
from memdistill.distill.memories import MEMORIES, AddressableMemory, fit_addressable
from memdistill.memory import ReservoirBuffer
from memdistill.methods.base import Learner, LearnerContext
from memdistill.nets import Backbone


class CompressRecall(Learner):
    name = "compress-recall"
    needs_buffer = True
    # Defaults picked on Rotated MNIST task 0 (MLP, buffer 200 / 20 tasks = 7,920 bytes a task):
    # 20 bases at 7x7 + 5 recalls/class gave 66% vs 57% for 8 bases at 14x14 (docs/benchmarks.md).
    options = {"bases": 20, "downsample": 4, "distill_steps": 100, "unroll": 10, "inner_lr": 0.01,
               "inner_momentum": 0.9, "outer_lr": 0.03, "real_batch": 32, "retrain_epochs": 300,
               "retrain_lr": 0.01, "retrain_batch": 256}

    def __init__(self, model: Backbone, ctx: LearnerContext, **options):
        super().__init__(model, ctx, **options)
        c, h, w = ctx.input_shape
        self.sample_bytes = c * h * w + 8 + 8          # uint8 image, int64 label, int64 task id (as Buffer.nbytes)
        self.budget_bytes = ctx.buffer * self.sample_bytes
        self.task_bytes = self.budget_bytes // ctx.num_tasks
        self.memories: list[AddressableMemory] = []
        self.memory_classes: list[list[int]] = []     # global label of each memory's local label
        self.raw = ReservoirBuffer(0, ctx.input_shape, device=ctx.device)
        # A distilled task must fit its share of the budget (checked before anything runs).
        self._fit(1)

    def _fit(self, num_classes: int):
        """K and r for one task's memory: at most ``bases`` bases, fewer if they do not fit."""
        floats = self.task_bytes // 4
        for k in range(int(self.opts["bases"]), 0, -1):
            try:
                return fit_addressable(floats, num_classes, self.ctx.input_shape, k, int(self.opts["downsample"]))
            except ValueError:
                continue
        raise ValueError(f"a 1/{self.ctx.num_tasks} share of buffer {self.ctx.buffer} ({self.task_bytes} bytes) "
                         f"cannot hold even one basis; use a larger --buffer or --method-arg downsample")

    @property
    def stored_bytes(self) -> int:
        return sum(m.nbytes for m in self.memories)

    # -- the seam ---------------------------------------------------------------
    def begin_task(self, task: Task) -> None:
        super().begin_task(task)
        free = max(0, self.budget_bytes - self.stored_bytes)
        self.raw = ReservoirBuffer(free // self.sample_bytes, self.ctx.input_shape, device=self.device)

    def observe(self, images: torch.Tensor, labels: torch.Tensor, task_id: int) -> dict[str, float]:
        # Training phase: no learning on the network, only keep raw samples for distillation.
        self.raw.add(images, labels, task_id, self.generator)
        return {}

    def end_task(self, task: Task) -> None:
        images = self.raw.images[: len(self.raw)]
        labels = self.raw.labels[: len(self.raw)]
        if len(labels):
            self.memories.append(self._distil(task, images, labels))
        self.raw = ReservoirBuffer(0, self.ctx.input_shape, device=self.device)
        self._retrain(task.index)

    # -- compress ----------------------------------------------------------------
    def _fresh_network(self):
        net = copy.deepcopy(self.model)
        for module in net.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return net

    def _distil(self, task: Task, images: torch.Tensor, labels: torch.Tensor) -> AddressableMemory:
        classes = sorted(set(labels.tolist()))
        local = torch.searchsorted(torch.tensor(classes, device=labels.device), labels)
        budget = self._fit(len(classes))
        g = torch.Generator().manual_seed(self.ctx.seed * 1_000 + task.index)
        counts = torch.bincount(local, minlength=len(classes))
        per_class = math.ceil(budget.num_bases / len(classes))
        shape = tuple(self.ctx.input_shape)
        if int(counts.min()) >= per_class:     # real-image bases where every class has enough samples
            x = self.preprocess(images, train=False).contiguous()
            memory = AddressableMemory.from_real(x, local, len(classes), budget.num_bases, budget.recalls,
                                                 budget.downsample, g, self.ctx.mean, self.ctx.std)
        else:
            memory = AddressableMemory.initialise(shape, len(classes), budget.num_bases, budget.recalls,
                                                  budget.downsample, g, self.ctx.mean, self.ctx.std)
        memory = memory.to(self.device)
        o = self.opts
        cfg = BPTTConfig(unroll=int(o["unroll"]), inner_lr=float(o["inner_lr"]),
                         inner_momentum=float(o["inner_momentum"]), real_batch_per_class=int(o["real_batch"]),
                         outer_lr=float(o["outer_lr"]), seed=self.ctx.seed * 1_000 + task.index)
        distiller = BPTTDistiller(memory, self._fresh_network, images, local, self.ctx.mean, self.ctx.std,
                                  cfg, self.device)
        distiller.run(int(o["distill_steps"]), progress=False)
        self.memory_classes.append(classes)
        return memory

    # -- recall --------------------------------------------------------------------
    def recalled_dataset(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every stored memory's recall, with global labels."""
        xs, ys = [], []
        with torch.no_grad():
            for memory, classes in zip(self.memories, self.memory_classes):
                x, local = memory.dataset()
                xs.append(x)
                ys.append(torch.tensor(classes, device=x.device)[local])
        return torch.cat(xs), torch.cat(ys)

    def _retrain(self, task_index: int) -> None:
        if not self.memories:
            return
        images, labels = self.recalled_dataset()
        o = self.opts
        schedule = TrainSchedule(epochs=int(o["retrain_epochs"]), lr=float(o["retrain_lr"]),
                                 batch_size=int(o["retrain_batch"]))
        net = train_fresh_network(images, labels, self._fresh_network, schedule,
                                  seed=self.ctx.seed * 1_000 + 500 + task_index)
        self.model.load_state_dict(net.state_dict())

    # -- bookkeeping ------------------------------------------------------------------
    @property
    def memory_nbytes(self) -> int:
        return self.stored_bytes + self.raw.nbytes

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["memories"] = [m.to_file_dict() for m in self.memories]
        state["memory_classes"] = [list(c) for c in self.memory_classes]
        state["raw_capacity"] = self.raw.capacity
        state["raw"] = self.raw.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.memories = [MEMORIES[d["kind"]].from_file_dict(d).to(self.device) for d in state["memories"]]
        self.memory_classes = [list(c) for c in state["memory_classes"]]
        self.raw = ReservoirBuffer(int(state["raw_capacity"]), self.ctx.input_shape, device=self.device)
        self.raw.load_state_dict(state["raw"])
