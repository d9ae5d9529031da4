"""Memory kinds at a byte budget: which run holds which memory, and how many bytes it will take.

One accounting for every kind (docs/memory-budget.md):

* an exemplar is its uint8 image + int64 label + int64 task id, plus each stored
  extra at its dtype (``Buffer.sample_bytes``);
* learned parameters (networks, synthetic images, bases, addressing matrices, rates)
  count 4 bytes per float32 value; stored labels of synthetic images 8 (int64);
* a byte budget B is met when the run's ``memory_bytes`` at the end is <= B.

Each :class:`MemoryKind` turns a budget into the options of one run (method, buffer,
method/plug-in arguments) and computes, without building a run, the bytes that run
will hold at its end (``Plan.planned_bytes``); the tests check both against
hand computation and against what the learners report.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from memdistill.config import ConfigError
from memdistill.memory.buffer import Buffer

CLASS_IL, DOMAIN_IL = "class-incremental", "domain-incremental"


@dataclass(frozen=True)
class ScenarioShape:
    """What planning needs to know about a scenario (no data)."""
    name: str
    kind: str
    num_classes: int
    input_shape: tuple[int, int, int]
    classes_per_task: tuple[int, ...]      # classes each task holds
    train_samples: int | None = None       # stream samples over all tasks (None: unlimited)

    @property
    def num_tasks(self) -> int:
        return len(self.classes_per_task)

    @classmethod
    def of(cls, scenario) -> "ScenarioShape":
        return cls(scenario.name, scenario.kind, scenario.num_classes, tuple(scenario.input_shape),
                   tuple(len(t.classes) for t in scenario.tasks), sum(len(t.train_labels) for t in scenario.tasks))

    @property
    def exemplar_bytes(self) -> int:
        """One stored real sample: uint8 image + int64 label + int64 task id."""
        return Buffer.sample_bytes(self.input_shape)


@dataclass
class Plan:
    """One run of a memory kind at a budget."""
    kind: str
    budget: int | None                 # bytes; None for a kind whose size does not depend on it
    method: str
    planned_bytes: int
    detail: dict[str, int]
    buffer: int | None = None
    method_args: dict[str, Any] = field(default_factory=dict)
    plugin: str | None = None
    plugin_args: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def run_options(self) -> dict[str, Any]:
        options = {"method": self.method, "method_args": dict(self.method_args), "memory_kind": self.kind}
        if self.budget is not None:
            options["memory_budget_bytes"] = int(self.budget)
        if self.buffer is not None:
            options["buffer"] = int(self.buffer)
        if self.plugin is not None:
            options.update(plugin=self.plugin, plugin_args=dict(self.plugin_args))
        return options


class BudgetError(ConfigError):
    """A budget too small for a kind to hold anything."""

    def __init__(self, kind: str, budget: int, message: str):
        super().__init__("--budget", f"{budget} bytes is too small for kind {kind}: {message}")


def _parameter_bytes(build: Callable[[], torch.nn.Module]) -> int:
    """Bytes of a module's parameters and buffers, built on the meta device (nothing allocated)."""
    with torch.device("meta"):
        module = build()
    return sum(t.element_size() * t.numel() for t in (*module.parameters(), *module.buffers()))


def soft_label_net_bytes(num_classes: int, hidden: int = 200) -> int:
    """DDN's G_w: C -> hidden -> hidden -> C with biases, float32 parameters:
    4 (C h + h + h h + h + h C + C) bytes."""
    from memdistill.methods.ddn import label_net
    with torch.device("meta"):
        net = label_net(num_classes, hidden)
    return sum(p.element_size() * p.numel() for p in net.parameters())


def generator_bytes(input_shape, noise_dim: int = 1000, width: int = 64) -> int:
    """ABD's ImageGenerator: its parameters and batch-norm statistics (``ImageGenerator.nbytes``)."""
    from memdistill.distill.inversion import ImageGenerator
    return _parameter_bytes(lambda: ImageGenerator(tuple(input_shape), noise_dim, width))


# -- the kinds ----------------------------------------------------------------------------

class MemoryKind:
    name = "kind"
    method = "er"
    scenario_kinds: tuple[str, ...] = (CLASS_IL, DOMAIN_IL)
    description = ""

    def fixed_size(self, args: dict[str, Any]) -> bool:
        """True: with these options the memory's size does not depend on the budget (one point)."""
        return False

    def plan(self, budget: int, shape: ScenarioShape, args: dict[str, Any]) -> Plan:
        raise NotImplementedError


class Exemplars(MemoryKind):
    name, method = "exemplars", "er"
    description = "ER, reservoir buffer of real samples: floor(B / sample bytes)"

    def extras(self, shape: ScenarioShape) -> dict[str, tuple[int, ...]]:
        return {}

    def fixed_bytes(self, shape: ScenarioShape, args: dict[str, Any]) -> dict[str, int]:
        return {}

    def plan(self, budget, shape, args):
        per_sample = Buffer.sample_bytes(shape.input_shape, self.extras(shape))
        fixed = self.fixed_bytes(shape, args)
        buffer = (budget - sum(fixed.values())) // per_sample
        if buffer < 1:
            raise BudgetError(self.name, budget, f"it needs at least {sum(fixed.values()) + per_sample} bytes "
                                                 f"({per_sample} per sample"
                                                 + (f" + {sum(fixed.values())} fixed)" if fixed else ")"))
        image = Buffer.sample_bytes(shape.input_shape)
        # A reservoir holds min(capacity, samples seen): a short stream leaves the buffer part-empty.
        stored = buffer if shape.train_samples is None else min(buffer, shape.train_samples)
        detail = {"samples": stored * image}
        for name, dims in self.extras(shape).items():
            n = 1
            for d in dims:
                n *= d
            detail[name] = stored * 4 * n
        detail.update(fixed)
        return self._plan(budget, buffer, detail, args, f"{stored} samples")

    def _plan(self, budget, buffer, detail, args, note) -> Plan:
        return Plan(self.name, budget, self.method, sum(detail.values()), detail, buffer=buffer,
                    method_args=dict(args), note=note)


class ExemplarsDDN(Exemplars):
    """ER + DDN: the buffer gets what G_w and G_old leave.

    G_old (G_w's copy from the previous task, Eq. 8) is stored between tasks as much as
    G_w is, so both count once a second task exists; with one task only G_w does."""
    name, method = "exemplars+ddn", "er"
    description = "ER + DDN soft labels: floor((B - bytes(G_w) - bytes(G_old)) / sample bytes)"

    def fixed_bytes(self, shape, args):
        g = soft_label_net_bytes(shape.num_classes, int(args.get("hidden", 200)))
        return {"soft_label_net": g, **({"soft_label_net_old": g} if shape.num_tasks > 1 else {})}

    def _plan(self, budget, buffer, detail, args, note):
        nets = " + G_w, G_old" if "soft_label_net_old" in detail else " + G_w"
        return Plan(self.name, budget, self.method, sum(detail.values()), detail, buffer=buffer,
                    plugin="ddn", plugin_args=dict(args), note=note + nets)


class ExemplarsLogits(Exemplars):
    name, method = "exemplars+logits", "derpp"
    description = "DER++: each sample also keeps its float32 logits (C values)"

    def extras(self, shape):
        return {"logits": (shape.num_classes,)}


class DistilledImages(MemoryKind):
    """compress-recall: each task distilled into per-class synthetic images within B/T bytes."""
    name, method = "distilled-images", "compress-recall"
    memory, quantize = "images", None
    description = "compress-recall, per-class float32 synthetic images in B/T bytes per task"

    def plan(self, budget, shape, args):
        from memdistill.methods.compress_recall import CompressRecall, fit_task_memory, task_memory_bytes
        opts = {**CompressRecall.options, **args}
        # a kind argument quantize=uint8 (e.g. addressable:quantize=uint8) is planned as it will run
        quantize = self.quantize or (args.get("quantize") if args.get("quantize") != "none" else None)
        task_bytes = budget // shape.num_tasks
        total, holds = 0, []
        for n in shape.classes_per_task:
            try:
                fitted = fit_task_memory(task_bytes, n, shape.input_shape, self.memory, quantize,
                                         int(opts["bases"]), int(opts["downsample"]),
                                         f"a 1/{shape.num_tasks} share")
            except ValueError as e:
                raise BudgetError(self.name, budget, str(e)) from None
            total += task_memory_bytes(fitted, n, shape.input_shape, quantize)
            if isinstance(fitted, int):
                holds.append(f"{fitted} img/class/task")
            else:
                side = shape.input_shape[1] // fitted.downsample
                holds.append(f"{fitted.num_bases} bases at {side}x{side}, {fitted.recalls} recalls/class/task")
        method_args = {**args, "memory": self.memory, "budget_bytes": int(budget)}
        if quantize:
            method_args["quantize"] = quantize
        # --buffer only has to pass validation: compress-recall reads budget_bytes.
        buffer = max(1, budget // shape.exemplar_bytes)
        key = f"{self.memory}-{quantize}" if quantize else self.memory
        return Plan(self.name, budget, self.method, total, {key: total}, buffer=buffer, method_args=method_args,
                    note="; ".join(dict.fromkeys(holds)))


class DistilledImagesUint8(DistilledImages):
    name, quantize = "distilled-images-uint8", "uint8"
    description = "as distilled-images, stored as uint8 codes + one scale/offset per task memory"


class Addressable(DistilledImages):
    name, memory = "addressable", "addressable"
    description = "compress-recall, addressable memories (bases + addressing, Eq. 4) in B/T bytes per task"


class Generator(MemoryKind):
    """ABD's generator. With ``generator_width`` given, that generator at every budget (one
    point); otherwise the widest generator within B, up to the paper's width (64)."""
    name, method = "generator", "abd"
    scenario_kinds = (CLASS_IL,)
    description = ("ABD: a model-inversion generator, no stored data; the widest within B "
                   "(up to width 64), or one fixed size with generator_width")

    def fixed_size(self, args):
        return "generator_width" in args

    def plan(self, budget, shape, args):
        from memdistill.methods.abd import AlwaysBeDreaming
        opts = {**AlwaysBeDreaming.options, **args}
        noise = int(opts["noise_dim"])
        if self.fixed_size(args):
            size = generator_bytes(shape.input_shape, noise, int(opts["generator_width"]))
            return Plan(self.name, None, self.method, size, {"generator": size}, method_args=dict(args),
                        note=f"width {int(opts['generator_width'])}, fixed size")
        # bytes grow with the width, so the first fit from the widest down is the widest
        for width in range(int(AlwaysBeDreaming.options["generator_width"]), 0, -1):
            size = generator_bytes(shape.input_shape, noise, width)
            if size <= budget:
                return Plan(self.name, budget, self.method, size, {"generator": size},
                            method_args={**args, "generator_width": width}, note=f"width {width}")
        raise BudgetError(self.name, budget, f"a generator of width 1 with noise_dim {noise} takes "
                                             f"{size} bytes; pass a smaller generator:noise_dim")


class SyntheticSet(MemoryKind):
    """didd: one set of ipc x C synthetic images shared by every domain."""
    name, method = "synthetic-set", "didd"
    scenario_kinds = (DOMAIN_IL,)
    description = "DIDD: one ipc x C float32 synthetic set (+ per-image rates for asymmetric)"

    def plan(self, budget, shape, args):
        from memdistill.methods.didd import DomainIncrementalDistillation, didd_memory_bytes
        strategy = {**DomainIncrementalDistillation.options, **args}["strategy"]
        one = didd_memory_bytes(1, shape.num_classes, shape.input_shape, strategy)
        ipc = budget // one
        if ipc < 1:
            raise BudgetError(self.name, budget, f"one image per class takes {one} bytes")
        c, h, w = shape.input_shape
        n = ipc * shape.num_classes
        detail = {"synthetic_images": n * 4 * c * h * w, "labels": n * 8}
        if strategy == "asymmetric":
            detail["update_rates"] = n * 8
        return Plan(self.name, budget, self.method, sum(detail.values()), detail,
                    method_args={**args, "ipc": int(ipc)}, note=f"ipc {ipc} ({n} images)")


KINDS: dict[str, MemoryKind] = {k.name: k for k in (Exemplars(), ExemplarsDDN(), ExemplarsLogits(),
                                                   DistilledImages(), DistilledImagesUint8(), Addressable(),
                                                   Generator(), SyntheticSet())}


def applicable_kinds(scenario_kind: str) -> list[str]:
    return [name for name, k in KINDS.items() if scenario_kind in k.scenario_kinds]


def plan(kind: str, budget: int, shape: ScenarioShape, args: dict[str, Any] | None = None) -> Plan:
    """The run of ``kind`` at ``budget`` bytes on ``shape`` (``args``: the kind's method/plug-in options)."""
    if kind not in KINDS:
        raise ConfigError("--kinds", f"unknown memory kind {kind!r}; allowed: {', '.join(KINDS)}")
    if shape.kind not in KINDS[kind].scenario_kinds:
        raise ConfigError("--kinds", f"kind {kind} does not apply to {shape.kind} scenario {shape.name}; "
                                     f"allowed: {', '.join(applicable_kinds(shape.kind))}")
    return KINDS[kind].plan(int(budget), shape, dict(args or {}))


# -- budgets as text -------------------------------------------------------------------------

_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3, "KIB": 1024, "MIB": 1024 ** 2,
          "GIB": 1024 ** 3}
BUDGET_FORMS = "bytes as an integer or with a unit: 51200, 50KB, 50KiB, 1.5MB (KB = 1000 B, KiB = 1024 B)"


def parse_budget(text: str) -> int:
    """``50KB`` -> 50000, ``50KiB`` -> 51200, ``1.5MB`` -> 1500000, ``4096`` -> 4096."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).upper() if m else None
    if m is None or unit not in _UNITS:
        raise ConfigError("--budget", f"cannot read {text!r}; allowed: {BUDGET_FORMS}")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value < 1:
        raise ConfigError("--budget", f"must be at least 1 byte (got {text!r})")
    return value


def ipc_budget(ipc: int, shape: ScenarioShape) -> int:
    """"ipc real images per class" in bytes: ipc x C exemplars (uint8 image + label + task id)."""
    if not isinstance(ipc, int) or isinstance(ipc, bool) or ipc < 1:
        raise ConfigError("--budget-ipc", f"must be integers >= 1 (got {ipc!r})")
    return ipc * shape.num_classes * shape.exemplar_bytes


def budget_label(nbytes: int) -> str:
    """A short folder-safe name for a byte count: 50000 -> 50KB, 51200 -> 50KiB, 1234 -> 1234B."""
    for unit, size in (("MB", 1000 ** 2), ("MiB", 1024 ** 2), ("KB", 1000), ("KiB", 1024)):
        if nbytes >= size and nbytes % size == 0:
            return f"{nbytes // size}{unit}"
    return f"{nbytes}B"
