"""Compress-then-recall (Remember the Past, Sec. 5.2): distil each task, retrain from the recalls.

The memory budget is ``--buffer`` samples counted in bytes exactly as an ER
buffer counts them (uint8 image + label + task id), so both compare at equal bytes.
It counts what is kept from one minibatch to the next as data: stored memories and raw
samples.  The memory being distilled while its task streams (float32, with its
optimiser's state) is working state, as a network and its optimiser are for every
method, and is not counted until it is stored at the task's end.

* While a task streams, the network is not trained; the part of the budget not
  yet taken by earlier tasks' memories holds raw samples of the current task
  (reservoir sampling over the stream).
* With ``stream_steps=k > 0`` the task's memory is distilled while the task streams, as
  the paper does it ("distillation with both buffer samples and streamed samples"): k
  outer steps (BPTT with momentum, Alg. 1) per streamed minibatch, whose outer loss draws
  from that minibatch and the raw samples held, so the memory sees every sample of the
  task, not only the few the shrinking raw part keeps (11 of 1,000 on Rotated MNIST's
  last task at buffer 200).
* At the task's end the raw samples held are distilled for ``distill_steps`` more steps
  into an addressable memory (Eq. 2) that takes 1/T of the budget (T = number of tasks),
  sized by Eq. 4; the raw samples are dropped, so the raw part keeps shrinking.  Late
  tasks hold few (11 samples at Rotated MNIST's task 19), and steps on those few fit them:
  ``stream_steps=4, distill_steps=0`` (no end steps) gave the better late memories there
  (docs/benchmarks.md).  ``balance_steps=true`` keeps the end steps where the raw part holds the
  whole task and moves them into the stream where it cannot: a task whose raw part holds a
  fraction f of its samples takes round(f x distill_steps) steps at its end and the rest spread
  over its streamed minibatches, so its outer steps stay as many and fewer of them fit the few.
* Then a network is trained from scratch on what the memories recall (``recall``):

  - ``joint`` (default): one network on everything the stored memories recall; it answers
    for every task without knowing which task a test image comes from.
  - ``per-task``: one network per task, on that task's recalls alone, and the test images
    of task t are answered by task t's network, so the evaluation uses the task's identity.
    This is how we read the paper's protocol ("we simply fetch the corresponding memories
    and addressing matrices for each task, and train a new model from scratch", Sec. 5.2):
    its Table 3 reports no BTI for this method, and per-task networks forget nothing by
    construction (a task's memory never changes once stored).  The baselines it is
    compared with (ER, A-GEM, EWC, finetune) answer without the task's identity.
    Each task's network is trained once, when its task ends, from a seed of its own, and
    kept: that equals retraining it at test time from the stored memory, which is what
    the budget counts (the networks are rebuilt from the memories after a resume).

What a task's memory is (``memory``):

* ``addressable`` (default): bases + addressing matrices, sized by Eq. 4 within the
  task's share;
* ``images``: per-class synthetic images (the dataset-distillation baseline), as many
  per class as the share holds at float32 (``image_memory_bytes``), learned by the
  same BPTT; ``quantize=uint8`` stores them, once distilled, as uint8 codes with one
  scale and offset per memory (``QuantizedImages``), so 4x as many fit, and the
  retraining recalls the dequantised images.

``quantize=uint8`` with ``memory=addressable`` likewise stores the bases and the
addressing matrices as uint8 codes (``QuantizedAddressable``, one scale and offset
each): Eq. 4 is then solved in one-byte values, so the share holds four times the
values of the float32 memory (more recalls for the same ``bases``, or more bases).

``budget_bytes`` sets the budget in bytes directly (``memdistill compare`` does);
by default it is ``--buffer`` samples at the exemplar rule above.

Options (``--method-arg KEY=VALUE``): ``memory``, ``quantize``, ``budget_bytes``, ``bases`` (K), ``downsample``, ``distill_steps``,
``stream_steps``, ``unroll``, ``inner_lr``, ``inner_momentum``, ``inner_batch``, ``inner_sampling`` (``per-class``, the
default, or ``uniform``: how ``inner_batch`` draws, ``distill/bptt.py``), ``outer_lr``, ``real_batch`` (per class),
``checkpoint_every`` (BPTT checkpoint interval; 1: keep every step, which skips the recomputation at
the cost of 2 x unroll parameter sets; None: keep every step when those sets take at most
``KEEP_EVERY_STEP_BYTES``, as the MNIST streams' MLP does, else every ceil(sqrt(unroll)) steps),
``retrain_epochs``, ``retrain_lr``, ``retrain_batch``, ``recall`` (``joint`` or ``per-task``),
``outer_lr_decay`` (``none`` or ``cosine``: the outer rate decays to 0 over each task's outer steps),
``balance_steps`` (``true``: move the end steps of a task whose raw part cannot hold it into its stream, above),
``collapse_guard`` (``true``: roll a memory whose outer loss came back at chance to its last healthy state and
halve its outer rate, ``distill/bptt.py``; one memory in twenty broke so at T = 30, docs/benchmarks.md).
"""
from __future__ import annotations

import copy
import math

import torch

from memdistill.data.scenarios import Task
from memdistill.distill.bptt import (INNER_SAMPLINGS, OUTER_LR_DECAYS, BPTTConfig, BPTTDistiller, cosine_outer_lr,
                                     set_outer_lr)
from memdistill.distill.evaluate import TrainSchedule, train_fresh_network
from memdistill.distill.memories import (STORED_KINDS, AddressableMemory, DistilledMemory, QuantizedAddressable,
                                         QuantizedImages, SyntheticImages, fit_addressable, fit_images,
                                         image_memory_bytes)
from memdistill.memory import ReservoirBuffer
from memdistill.methods.base import Learner, LearnerContext
from memdistill.nets import Backbone


def fit_task_memory(task_bytes: int, num_classes: int, input_shape, memory: str = "addressable",
                    quantize: str | None = None, bases: int = 20, downsample: int = 4, what: str | None = None):
    """What one task's memory holds within ``task_bytes``: images per class (``memory=images``)
    or the addressable budget with at most ``bases`` bases, fewer if they do not fit (Eq. 4
    with the byte share as size(images))."""
    what = what or f"{task_bytes} bytes"
    if memory == "images":
        ipc = fit_images(task_bytes, num_classes, input_shape, quantize)
        if ipc < 1:
            raise ValueError(f"{what} ({task_bytes} bytes) cannot hold one {'uint8' if quantize else 'float32'} "
                             f"image per class; use a larger --buffer")
        return ipc
    # float32: 4 bytes a value; uint8: one byte a value and 16 for the two (scale, offset) pairs
    values = task_bytes - 16 if quantize == "uint8" else task_bytes // 4
    for k in range(int(bases), 0, -1):
        try:
            return fit_addressable(values, num_classes, input_shape, k, int(downsample), quantize=quantize)
        except ValueError:
            continue
    raise ValueError(f"{what} ({task_bytes} bytes) cannot hold even one basis; "
                     f"use a larger --buffer or --method-arg downsample")


def task_memory_bytes(fitted, num_classes: int, input_shape, quantize: str | None = None) -> int:
    """Bytes of a memory sized by ``fit_task_memory`` (what its ``nbytes`` will be)."""
    if isinstance(fitted, int):
        return image_memory_bytes(fitted, num_classes, input_shape, quantize)
    return fitted.nbytes


def fresh_network(model: Backbone) -> Backbone:
    """A copy of ``model``'s architecture with freshly initialised parameters (global RNG)."""
    net = copy.deepcopy(model)
    for module in net.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return net


# Keeping every unrolled step costs 2 x unroll parameter sets and saves the recomputation (the same
# hypergradient, about a fifth of an outer step's time for the MLP at T = 10 and 30; docs/benchmarks.md).
# The MNIST streams' MLP (0.36 MB a set) keeps every step up to T = 93 under this bound.
KEEP_EVERY_STEP_BYTES = 64 * 2**20


def checkpoint_interval(model: torch.nn.Module, unroll: int, asked: int | None) -> int | None:
    """The BPTT checkpoint interval: ``asked`` if given, else 1 when 2 x ``unroll`` parameter sets
    of ``model`` fit ``KEEP_EVERY_STEP_BYTES``, else None (every ceil(sqrt(unroll)) steps)."""
    if asked is not None:
        return asked
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return 1 if 2 * unroll * param_bytes <= KEEP_EVERY_STEP_BYTES else None


class CompressRecall(Learner):
    name = "compress-recall"
    needs_buffer = True
    # Defaults picked on Rotated MNIST task 0 (MLP, buffer 200 / 20 tasks = 7,920 bytes a task):
    # 20 bases at 7x7 + 5 recalls/class gave 66% vs 57% for 8 bases at 14x14 (docs/benchmarks.md).
    options = {"memory": "addressable", "quantize": None, "budget_bytes": None, "bases": 20, "downsample": 4, "distill_steps": 100, "stream_steps": 0, "unroll": 10, "inner_lr": 0.01,
               "inner_momentum": 0.9, "inner_batch": None, "inner_sampling": "per-class", "outer_lr": 0.03, "real_batch": 32, "checkpoint_every": None,
               "retrain_epochs": 300,
               "retrain_lr": 0.01, "retrain_batch": 256, "recall": "joint", "outer_lr_decay": "none",
               "balance_steps": False, "collapse_guard": False}
    RECALLS = ("joint", "per-task")
    OUTER_LR_DECAYS = OUTER_LR_DECAYS

    def __init__(self, model: Backbone, ctx: LearnerContext, **options):
        super().__init__(model, ctx, **options)
        o = self.opts
        if o["memory"] not in ("addressable", "images"):
            raise ValueError(f"method compress-recall: option memory must be one of: addressable, images "
                             f"(got {o['memory']!r})")
        if o["quantize"] not in (None, "none", "uint8"):
            raise ValueError(f"method compress-recall: option quantize must be one of: none, uint8 "
                             f"(got {o['quantize']!r})")
        if o["outer_lr_decay"] not in self.OUTER_LR_DECAYS:
            raise ValueError(f"method compress-recall: option outer_lr_decay must be one of: "
                             f"{', '.join(self.OUTER_LR_DECAYS)} (got {o['outer_lr_decay']!r})")
        if o["recall"] not in self.RECALLS:
            raise ValueError(f"method compress-recall: option recall must be one of: {', '.join(self.RECALLS)} "
                             f"(got {o['recall']!r})")
        self.quantize = o["quantize"] if o["quantize"] != "none" else None
        self.sample_bytes = ReservoirBuffer.sample_bytes(ctx.input_shape)   # the exemplar rule
        if o["budget_bytes"] is None:
            self.budget_bytes = ctx.buffer * self.sample_bytes
        elif isinstance(o["budget_bytes"], int) and not isinstance(o["budget_bytes"], bool) and o["budget_bytes"] > 0:
            self.budget_bytes = int(o["budget_bytes"])
        else:
            raise ValueError(f"method compress-recall: option budget_bytes must be a positive integer "
                             f"(got {o['budget_bytes']!r})")
        # inner_batch: recalled samples per inner BPTT step (Alg. 1 line 9); None: the task's whole
        # recalled set. The public code samples 32 per class, which bounds a step's cost on large sets.
        for name in ("inner_batch", "checkpoint_every"):
            value = o[name]
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise ValueError(f"method compress-recall: option {name} must be a positive integer "
                                 f"(got {value!r})")
        for name in ("stream_steps", "distill_steps"):
            value = o[name]
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                raise ValueError(f"method compress-recall: option {name} must be a non-negative integer "
                                 f"(got {value!r})")
        for name in ("balance_steps", "collapse_guard"):
            if not isinstance(o[name], bool):
                raise ValueError(f"method compress-recall: option {name} must be true or false (got {o[name]!r})")
        if o["inner_sampling"] not in INNER_SAMPLINGS:
            raise ValueError(f"method compress-recall: option inner_sampling must be one of: "
                             f"{', '.join(INNER_SAMPLINGS)} (got {o['inner_sampling']!r})")
        self.task_bytes = self.budget_bytes // ctx.num_tasks
        self.memories: list[DistilledMemory] = []
        self.memory_classes: list[list[int]] = []     # global label of each memory's local label
        self.memory_tasks: list[int] = []             # the task each memory holds
        self.task_networks: dict[int, Backbone] = {}  # recall=per-task: task index -> its network
        self.raw = ReservoirBuffer(0, ctx.input_shape, device=ctx.device)
        self.task: Task | None = None
        self.stream_distiller: BPTTDistiller | None = None   # the task's memory while it streams
        self.rollbacks: dict[int, int] = {}           # collapse_guard: task index -> rollbacks taken
        # A distilled task must fit its share of the budget (checked before anything runs).
        self._fit(1)

    def _fit(self, num_classes: int):
        """A task's memory within its share (``fit_task_memory``)."""
        return fit_task_memory(self.task_bytes, num_classes, self.ctx.input_shape, self.opts["memory"],
                               self.quantize, int(self.opts["bases"]), int(self.opts["downsample"]),
                               f"a 1/{self.ctx.num_tasks} share of the budget")

    @property
    def stored_bytes(self) -> int:
        return sum(m.nbytes for m in self.memories)

    # -- the seam ---------------------------------------------------------------
    def begin_task(self, task: Task) -> None:
        super().begin_task(task)
        free = max(0, self.budget_bytes - self.stored_bytes)
        self.raw = ReservoirBuffer(free // self.sample_bytes, self.ctx.input_shape, device=self.device)
        self.task = task
        self.stream_distiller = None
        # outer steps this task will take (stream_steps per streamed minibatch, then end_steps)
        samples = len(task.train_labels)
        self.task_batches = math.ceil(samples / max(1, self.ctx.batch_size))
        self.end_steps = int(self.opts["distill_steps"])
        if self.opts["balance_steps"] and self.raw.capacity < samples:
            self.end_steps = round(self.end_steps * self.raw.capacity / samples)
        self.moved_steps = int(self.opts["distill_steps"]) - self.end_steps
        self.task_outer_steps = self.task_batches * int(self.opts["stream_steps"]) + self.moved_steps + self.end_steps
        self.outer_steps_taken = 0
        self.batches_seen = 0

    def observe(self, images: torch.Tensor, labels: torch.Tensor, task_id: int) -> dict[str, float]:
        # Training phase: no learning on the network; the task's memory is distilled from the
        # stream's minibatches and the raw samples held (Sec. 5.2), which are kept for the end.
        steps = self._stream_steps_now()
        logs = self._stream_distil(images, labels, steps) if steps > 0 else {}
        self.raw.add(images, labels, task_id, self.generator)
        return logs

    def _stream_steps_now(self) -> int:
        """Outer steps on this streamed minibatch: ``stream_steps`` and this minibatch's even
        share of the end steps ``balance_steps`` moved into the stream."""
        i, n = self.batches_seen, max(1, self.task_batches)
        self.batches_seen += 1
        moved = (min(i + 1, n) * self.moved_steps) // n - (min(i, n) * self.moved_steps) // n
        return int(self.opts["stream_steps"]) + moved

    def end_task(self, task: Task) -> None:
        images = self.raw.images[: len(self.raw)]
        labels = self.raw.labels[: len(self.raw)]
        if self.stream_distiller is not None:
            distiller = self.stream_distiller
            if len(labels):                   # then end_steps more on the raw samples held
                distiller.set_real(images, self._local_labels(labels, self.task_classes))
                self._outer_steps(distiller, self.end_steps)
            self._store(distiller.memory, self.task_classes, task.index)
        elif len(labels):
            self._store(self._distil(task, images, labels), sorted(set(labels.tolist())), task.index)
        self.raw = ReservoirBuffer(0, self.ctx.input_shape, device=self.device)
        self.stream_distiller = None
        self._retrain(task.index)

    # -- compress ----------------------------------------------------------------
    def _fresh_network(self):
        return fresh_network(self.model)

    def _initial_images(self, images, local, num_classes, ipc, g) -> SyntheticImages:
        """``ipc`` real images per class as the starting synthetic images; a class with fewer
        stored samples repeats them, with a little noise so that copies can move apart."""
        x = self.preprocess(images, train=False).contiguous()
        picked, ys = [], []
        for c in range(num_classes):
            idx = torch.nonzero(local == c).flatten()
            order = idx[torch.randperm(len(idx), generator=g).to(idx.device)]
            take = order[torch.arange(ipc, device=order.device) % len(order)]
            chosen = x[take].clone()
            if len(order) < ipc:
                chosen[len(order):] += 0.05 * torch.randn(chosen[len(order):].shape, generator=g).to(chosen.device)
            picked.append(chosen)
            ys.append(torch.full((ipc,), c, dtype=torch.long))
        return SyntheticImages(torch.cat(picked), torch.cat(ys), num_classes, self.ctx.mean, self.ctx.std)

    @property
    def task_classes(self) -> list[int]:
        return sorted(self.task.classes)

    @staticmethod
    def _local_labels(labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
        known = torch.tensor(classes, device=labels.device)
        if not bool(torch.isin(labels, known).all()):
            raise ValueError(f"method compress-recall: the stream holds labels outside the task's classes {classes}")
        return torch.searchsorted(known, labels)

    def _stream_distil(self, images: torch.Tensor, labels: torch.Tensor, steps: int) -> dict[str, float]:
        """``steps`` outer steps on this minibatch and the raw samples held.  The memory
        starts once they hold every class of the task (real images as bases, repeated where a
        class has fewer samples than bases, as late tasks do when the raw part has shrunk)."""
        held = len(self.raw)
        x = torch.cat([self.raw.images[:held], images])
        local = self._local_labels(torch.cat([self.raw.labels[:held], labels]), self.task_classes)
        if self.stream_distiller is None:
            num_classes = len(self.task_classes)
            if len(torch.unique(local)) < num_classes:
                return {}
            g = torch.Generator().manual_seed(self.ctx.seed * 1_000 + self.task.index)
            budget = self._fit(num_classes)
            if self.opts["memory"] == "images":
                memory = self._initial_images(x, local, num_classes, budget, g)
            else:
                start = self._initial_images(x, local, num_classes, math.ceil(budget.num_bases / num_classes), g)
                memory = AddressableMemory.from_real(start.images.detach(), start.labels, num_classes,
                                                     budget.num_bases, budget.recalls, budget.downsample, g,
                                                     self.ctx.mean, self.ctx.std)
            self.stream_distiller = self._distiller(memory.to(self.device), x, local, self.task.index)
        else:
            self.stream_distiller.set_real(x, local)
        losses = self._outer_steps(self.stream_distiller, steps)
        logs = {"distill_loss": sum(losses) / len(losses)}
        if self.opts["collapse_guard"]:
            logs["distill_rollbacks"] = self.stream_distiller.rollbacks
        return logs

    def _outer_steps(self, distiller: BPTTDistiller, n: int) -> list[float]:
        """``n`` outer steps; with ``outer_lr_decay=cosine`` the outer rate follows a cosine from
        ``outer_lr`` to 0 over the task's outer steps, so that its last steps, taken on the few
        samples a late task holds, move the memory little.  On Rotated MNIST it changed the RA by
        +0.24 over 3 seeds at T = 10 (within their spread); at T = 30 it kept the last task's memory
        from diverging (8.8 -> 74.0 % on seed 0), and the presets use it (docs/benchmarks.md)."""
        losses = []
        for _ in range(n):
            if self.opts["outer_lr_decay"] == "cosine":
                progress = self.outer_steps_taken / max(1, self.task_outer_steps)
                set_outer_lr(distiller.optimizer, cosine_outer_lr(float(self.opts["outer_lr"]), progress))
            losses.append(distiller.outer_step()["outer_loss"])
            self.outer_steps_taken += 1
        if distiller.rollbacks:
            self.rollbacks[self.task.index] = distiller.rollbacks
        return losses

    def _distiller(self, memory: DistilledMemory, images: torch.Tensor, local: torch.Tensor,
                   task_index: int) -> BPTTDistiller:
        o = self.opts
        cfg = BPTTConfig(unroll=int(o["unroll"]), inner_lr=float(o["inner_lr"]),
                         inner_momentum=float(o["inner_momentum"]), inner_batch=o["inner_batch"],
                         inner_sampling=o["inner_sampling"], real_batch_per_class=int(o["real_batch"]),
                         checkpoint_every=checkpoint_interval(self.model, int(o["unroll"]), o["checkpoint_every"]),
                         outer_lr=float(o["outer_lr"]), collapse_guard=o["collapse_guard"],
                         seed=self.ctx.seed * 1_000 + task_index)
        return BPTTDistiller(memory, self._fresh_network, images, local, self.ctx.mean, self.ctx.std,
                             cfg, self.device)

    def _store(self, memory: DistilledMemory, classes: list[int], task_index: int) -> None:
        """Keep a distilled task memory (as uint8 codes with ``quantize=uint8``)."""
        if self.quantize == "uint8":
            quantised = QuantizedImages if self.opts["memory"] == "images" else QuantizedAddressable
            memory = quantised.quantise(memory).to(self.device)
        self.memories.append(memory)
        self.memory_classes.append(classes)
        self.memory_tasks.append(task_index)

    def _distil(self, task: Task, images: torch.Tensor, labels: torch.Tensor) -> DistilledMemory:
        """The task's memory from the raw samples held at its end alone (``stream_steps=0``)."""
        classes = sorted(set(labels.tolist()))
        local = torch.searchsorted(torch.tensor(classes, device=labels.device), labels)
        budget = self._fit(len(classes))
        g = torch.Generator().manual_seed(self.ctx.seed * 1_000 + task.index)
        counts = torch.bincount(local, minlength=len(classes))
        shape = tuple(self.ctx.input_shape)
        if self.opts["memory"] == "images":
            memory = self._initial_images(images, local, len(classes), budget, g)
        elif int(counts.min()) >= math.ceil(budget.num_bases / len(classes)):
            # real-image bases where every class has enough samples
            x = self.preprocess(images, train=False).contiguous()
            memory = AddressableMemory.from_real(x, local, len(classes), budget.num_bases, budget.recalls,
                                                 budget.downsample, g, self.ctx.mean, self.ctx.std)
        else:
            memory = AddressableMemory.initialise(shape, len(classes), budget.num_bases, budget.recalls,
                                                  budget.downsample, g, self.ctx.mean, self.ctx.std)
        distiller = self._distiller(memory.to(self.device), images, local, task.index)
        self._outer_steps(distiller, int(self.opts["distill_steps"]))
        return distiller.memory

    # -- recall --------------------------------------------------------------------
    def recalled_dataset(self, task_index: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every stored memory's recall (or only task ``task_index``'s), with global labels."""
        xs, ys = [], []
        with torch.no_grad():
            for memory, classes, task in zip(self.memories, self.memory_classes, self.memory_tasks):
                if task_index is not None and task != task_index:
                    continue
                x, local = memory.dataset()
                xs.append(x)
                ys.append(torch.tensor(classes, device=x.device)[local])
        return torch.cat(xs), torch.cat(ys)

    def _train_on_recalls(self, task_index: int, only_task: int | None = None) -> Backbone:
        o = self.opts
        schedule = TrainSchedule(epochs=int(o["retrain_epochs"]), lr=float(o["retrain_lr"]),
                                 batch_size=int(o["retrain_batch"]))
        images, labels = self.recalled_dataset(only_task)
        return train_fresh_network(images, labels, self._fresh_network, schedule,
                                   seed=self.ctx.seed * 1_000 + 500 + task_index)

    def _retrain(self, task_index: int) -> None:
        if self.opts["recall"] == "per-task":
            if task_index in self.memory_tasks:
                self._task_network(task_index)
        elif self.memories:
            self.model.load_state_dict(self._train_on_recalls(task_index).state_dict())

    def _task_network(self, task_index: int) -> Backbone:
        """Task ``task_index``'s network, trained on its memory's recalls alone (kept once made)."""
        if task_index not in self.task_networks:
            with torch.enable_grad():        # also when first asked for inside predict (no_grad)
                net = self._train_on_recalls(task_index, only_task=task_index)
            net.eval()
            self.task_networks[task_index] = net
        return self.task_networks[task_index]

    @torch.no_grad()
    def predict(self, images: torch.Tensor, task_id: int | None = None) -> torch.Tensor:
        if self.opts["recall"] != "per-task":
            return super().predict(images, task_id)
        if task_id is None:
            raise ValueError("compress-recall with recall=per-task answers with the network of the "
                             "images' task: pass task_id")
        if task_id not in self.memory_tasks:          # a task not learned yet (or without samples)
            return super().predict(images, task_id)   # the untrained network: chance
        with self.autocast():
            logits = self._task_network(task_id)(self.preprocess(images, train=False))
        return logits.float()

    def extra_summary(self) -> dict:
        # recall=per-task evaluates with each test image's task identity (see the module's doc)
        extra = {"recall": self.opts["recall"], "uses_task_identity": self.opts["recall"] == "per-task"}
        if self.opts["collapse_guard"]:
            extra["collapse_rollbacks"] = {str(t): n for t, n in sorted(self.rollbacks.items())}
        return extra

    # -- bookkeeping ------------------------------------------------------------------
    @property
    def memory_nbytes(self) -> int:
        return self.stored_bytes + self.raw.nbytes

    @property
    def memory_detail(self) -> dict[str, int]:
        """Distilled memories by kind (``addressable``, ``addressable-uint8``, ``images``, ``images-uint8``) and the
        raw samples still held for the task in progress (none once a task has ended)."""
        detail: dict[str, int] = {}
        for m in self.memories:
            detail[m.kind] = detail.get(m.kind, 0) + m.nbytes
        if self.raw.nbytes:
            detail["raw_samples"] = self.raw.nbytes
        return detail

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["memories"] = [m.to_file_dict() for m in self.memories]
        state["memory_classes"] = [list(c) for c in self.memory_classes]
        state["memory_tasks"] = list(self.memory_tasks)
        state["raw_capacity"] = self.raw.capacity
        state["raw"] = self.raw.state_dict()
        state["rollbacks"] = dict(self.rollbacks)
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.memories = [STORED_KINDS[d["kind"]].from_file_dict(d).to(self.device) for d in state["memories"]]
        self.memory_classes = [list(c) for c in state["memory_classes"]]
        # checkpoints written before memory_tasks was kept: one memory per task, in order
        self.memory_tasks = [int(t) for t in state.get("memory_tasks", range(len(self.memories)))]
        self.task_networks = {}   # per-task networks are rebuilt from the memories when asked for
        self.raw = ReservoirBuffer(int(state["raw_capacity"]), self.ctx.input_shape, device=self.device)
        self.raw.load_state_dict(state["raw"])
        self.rollbacks = {int(t): int(n) for t, n in state.get("rollbacks", {}).items()}
