"""Scenarios: a source's arrays cut into a sequence of tasks.

Class-incremental scenarios (``seq-*``) give each task its own classes; labels are
remapped so that task t holds the contiguous labels of its classes in the chosen
class order (so task-IL masking is a slice).  Domain-incremental scenarios
(``rot-mnist``, ``perm-mnist``, ``pacs``) keep the same classes in every task and
change the input distribution.  Rotations and permutations are applied once, at
construction, so a task is plain uint8 arrays and the training loop only indexes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from memdistill.data.sources import SourceData, load_source


@dataclass
class Task:
    index: int
    name: str
    classes: list[int]            # labels present in this task (after remapping)
    train_images: torch.Tensor    # uint8 (N, C, H, W)
    train_labels: torch.Tensor    # int64 (N,)
    test_images: torch.Tensor
    test_labels: torch.Tensor


@dataclass
class Scenario:
    name: str
    kind: str                     # "class-incremental" or "domain-incremental"
    tasks: list[Task]
    num_classes: int
    class_names: list[str]        # indexed by remapped label
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool                 # crop + flip by default for natural images
    input_shape: tuple[int, int, int] = field(init=False)

    def __post_init__(self) -> None:
        self.input_shape = tuple(self.tasks[0].train_images.shape[1:])

    @property
    def task_il(self) -> bool:
        """Task-IL evaluation (logits masked to the task's classes) applies."""
        return self.kind == "class-incremental"


@dataclass(frozen=True)
class ScenarioSpec:
    source: str
    kind: str
    default_tasks: int
    allowed_tasks: tuple[int, ...] | None = None    # None: any positive count
    default_samples_per_task: int | None = None
    augment: bool = False


SCENARIOS: dict[str, ScenarioSpec] = {
    "seq-digits": ScenarioSpec("digits", "class-incremental", 5),
    "seq-mnist": ScenarioSpec("mnist", "class-incremental", 5),
    "seq-cifar10": ScenarioSpec("cifar10", "class-incremental", 5, augment=True),
    "seq-cifar100": ScenarioSpec("cifar100", "class-incremental", 10, augment=True),
    "seq-tinyimg": ScenarioSpec("tinyimagenet", "class-incremental", 10, augment=True),
    "rot-mnist": ScenarioSpec("mnist", "domain-incremental", 20, default_samples_per_task=1000),
    "perm-mnist": ScenarioSpec("mnist", "domain-incremental", 20, default_samples_per_task=1000),
    "pacs": ScenarioSpec("pacs", "domain-incremental", 4, allowed_tasks=(4,)),
    # one task per acquisition session (s1..s11), the 50 objects in every task
    "core50": ScenarioSpec("core50", "domain-incremental", 11, allowed_tasks=(11,)),
}

# Per-channel normalisation of each source (the usual published statistics).
NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "digits": ((0.1307,), (0.3081,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2615)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tinyimagenet": ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
    "pacs": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "core50": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

PACS_DOMAIN_ORDER = ("photo", "art_painting", "cartoon", "sketch")


class ScenarioError(ValueError):
    """A scenario option that cannot work; ``option`` names the CLI flag."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


def check_task_count(name: str, n_tasks: int, num_classes: int | None = None) -> None:
    spec = SCENARIOS[name]
    if n_tasks < 1:
        raise ScenarioError("--n-tasks", f"must be a positive integer (got {n_tasks})")
    if spec.allowed_tasks is not None and n_tasks not in spec.allowed_tasks:
        allowed = ", ".join(map(str, spec.allowed_tasks))
        raise ScenarioError("--n-tasks", f"{name} has {allowed} tasks (got {n_tasks})")
    if spec.kind == "class-incremental" and num_classes is not None and num_classes % n_tasks:
        divisors = [d for d in range(1, num_classes + 1) if num_classes % d == 0]
        raise ScenarioError(
            "--n-tasks", f"{num_classes} classes of {name} do not divide into {n_tasks} tasks; "
            f"allowed: {', '.join(map(str, divisors))}")


def build_scenario(name: str, n_tasks: int | None = None, *, seed: int = 0,
                   class_order_seed: int | None = None, samples_per_task: int | None = None,
                   test_samples_per_task: int | None = None, source: SourceData | None = None,
                   data_dir=None, cache_dir=None, download: bool = False,
                   progress: bool = True) -> Scenario:
    """Build scenario ``name``.

    ``seed`` fixes the data-dependent choices (sub-sampling, permutations, the PACS
    split); ``class_order_seed`` shuffles the class order (None keeps 0..C-1).
    """
    if name not in SCENARIOS:
        raise ScenarioError("--scenario", f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    spec = SCENARIOS[name]
    n_tasks = spec.default_tasks if n_tasks is None else n_tasks
    check_task_count(name, n_tasks)
    if source is None:
        source = load_source(spec.source, data_dir=data_dir, cache_dir=cache_dir,
                             download=download, seed=seed, progress=progress)
    mean, std = NORMALISATION[spec.source]
    rng = np.random.RandomState(seed)
    if spec.kind == "class-incremental":
        tasks, class_names = _class_incremental(name, source, n_tasks, class_order_seed,
                                                samples_per_task, test_samples_per_task, rng)
    elif name in ("pacs", "core50"):
        order = PACS_DOMAIN_ORDER if name == "pacs" else ()
        tasks, class_names = _domains(name, source, samples_per_task, test_samples_per_task, rng, order)
        if len(tasks) != n_tasks:
            raise ScenarioError("--scenario", f"{name} has one task per domain and needs {n_tasks} domains; "
                                              f"the data has {len(tasks)}: {', '.join(source.domain_names)}")
    else:
        tasks, class_names = _transformed_mnist(name, source, n_tasks, samples_per_task or
                                                spec.default_samples_per_task,
                                                test_samples_per_task, rng)
    return Scenario(name, spec.kind, tasks, len(class_names), class_names, mean, std, spec.augment)


def _subsample(idx: np.ndarray, n: int | None, rng: np.random.RandomState) -> np.ndarray:
    if n is None or n >= len(idx):
        return idx
    return np.sort(rng.choice(idx, n, replace=False))


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def _class_incremental(name, source, n_tasks, class_order_seed, n_train, n_test, rng):
    num_classes = len(source.class_names)
    check_task_count(name, n_tasks, num_classes)
    order = np.arange(num_classes)
    if class_order_seed is not None:
        order = np.random.RandomState(class_order_seed).permutation(num_classes)
    remap = np.empty(num_classes, dtype=np.int64)
    remap[order] = np.arange(num_classes)
    per_task = num_classes // n_tasks
    train_y = remap[np.asarray(source.train.labels)]
    test_y = remap[np.asarray(source.test.labels)]
    tasks = []
    for t in range(n_tasks):
        classes = list(range(t * per_task, (t + 1) * per_task))
        tr = _subsample(np.flatnonzero((train_y >= classes[0]) & (train_y <= classes[-1])), n_train, rng)
        te = _subsample(np.flatnonzero((test_y >= classes[0]) & (test_y <= classes[-1])), n_test, rng)
        names = [source.class_names[order[c]] for c in classes]
        tasks.append(Task(t, "classes " + ", ".join(names), classes,
                          _tensor(source.train.images[tr]), _tensor(train_y[tr]),
                          _tensor(source.test.images[te]), _tensor(test_y[te])))
    return tasks, [source.class_names[c] for c in order]


def rotate_images(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate uint8 images (N, C, H, W) about their centre, bilinear, zero fill."""
    if degrees % 360 == 0:
        return images.clone()
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    matrix = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]]).expand(len(images), 2, 3)
    grid = F.affine_grid(matrix, list(images.shape), align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def permute_pixels(images: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """Apply one fixed permutation to the pixels of every image (per channel)."""
    n, c, h, w = images.shape
    return images.reshape(n, c, h * w)[:, :, permutation].reshape(n, c, h, w)


def _transformed_mnist(name, source, n_tasks, n_train, n_test, rng):
    tasks = []
    h, w = source.train.images.shape[2:]
    all_train = np.arange(len(source.train.labels))
    all_test = np.arange(len(source.test.labels))
    for t in range(n_tasks):
        tr = _subsample(all_train, n_train, rng)
        te = _subsample(all_test, n_test, rng)
        train_x, test_x = _tensor(source.train.images[tr]), _tensor(source.test.images[te])
        if name == "rot-mnist":
            angle = 180.0 * t / n_tasks   # fixed angles spread over [0, 180)
            train_x, test_x = rotate_images(train_x, angle), rotate_images(test_x, angle)
            task_name = f"rotation {angle:g} deg"
        else:
            perm = torch.from_numpy(rng.permutation(h * w))
            train_x, test_x = permute_pixels(train_x, perm), permute_pixels(test_x, perm)
            task_name = f"permutation {t}"
        tasks.append(Task(t, task_name, list(range(len(source.class_names))),
                          train_x, _tensor(np.asarray(source.train.labels)[tr]),
                          test_x, _tensor(np.asarray(source.test.labels)[te])))
    return tasks, list(source.class_names)


def _domains(name, source, n_train, n_test, rng, preferred_order=()):
    """One task per domain of a multi-domain source: ``preferred_order`` first, then the
    source's own (natural) order."""
    if source.domain_names is None or source.train.domains is None:
        raise ScenarioError("--scenario", f"{name} needs a source with domains")
    tasks = []
    order = [d for d in preferred_order if d in source.domain_names]
    order += [d for d in source.domain_names if d not in order]
    for t, domain in enumerate(order):
        d = source.domain_names.index(domain)
        tr = _subsample(np.flatnonzero(np.asarray(source.train.domains) == d), n_train, rng)
        te = _subsample(np.flatnonzero(np.asarray(source.test.domains) == d), n_test, rng)
        tasks.append(Task(t, f"domain {domain}", list(range(len(source.class_names))),
                          _tensor(source.train.images[tr]), _tensor(np.asarray(source.train.labels)[tr]),
                          _tensor(source.test.images[te]), _tensor(np.asarray(source.test.labels)[te])))
    return tasks, list(source.class_names)
