"""The task loop: train each task through the learner seam, evaluate, checkpoint.

The engine knows nothing of a method's internals; it calls ``begin_task``,
``observe`` (per stream batch), ``end_task`` and ``predict``.  After every task it
writes the accuracy matrices, the log and a checkpoint, so an interrupted run
resumes from its last finished task and ends with the same results.
"""
from __future__ import annotations

import math
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from memdistill import metrics
from memdistill.config import ConfigError, RunConfig, validate
from memdistill.data.scenarios import Scenario, Task, build_scenario
from memdistill.figures import write_run_figures
from memdistill.logging_backends import ScalarLog, check_backends
from memdistill.methods import METHODS, PLUGINS, Learner, LearnerContext
from memdistill.nets import build_backbone
from memdistill.results import RunFolder
from memdistill.stream import batch_indices, num_batches

# Options that may change between an interrupted run and its resumption.
RESUME_FREE = {"device", "data_dir", "cache_dir", "download", "eval_batch_size", "figures",
               "tensorboard", "wandb"}


class Interrupted(Exception):
    """Raised by ``stop_after_task`` (tests use it to simulate a crash)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", "cuda was asked for but torch sees no CUDA device; allowed here: cpu, auto")
    return device


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux: the process's peak resident memory.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def evaluate(learner: Learner, scenario: Scenario, upto: int, batch_size: int,
             device: torch.device, keep: list | None = None) -> tuple[list[float], list[float] | None]:
    """Class-IL (and task-IL) accuracy (%) on the test sets of tasks 0..upto.

    ``keep``, if given, receives (probabilities, labels) of every test batch."""
    class_il, task_il = [], []
    for task in scenario.tasks[: upto + 1]:
        correct = correct_task = 0
        classes = torch.tensor(task.classes, device=device)
        for start in range(0, len(task.test_labels), batch_size):
            x = task.test_images[start:start + batch_size].to(device, non_blocking=True)
            y = task.test_labels[start:start + batch_size].to(device, non_blocking=True)
            logits = learner.predict(x, task_id=task.index)
            correct += (logits.argmax(1) == y).sum().item()
            if keep is not None:
                keep.append((logits.softmax(1).cpu(), y.cpu()))
            if scenario.task_il:
                correct_task += (classes[logits[:, classes].argmax(1)] == y).sum().item()
        n = max(1, len(task.test_labels))
        class_il.append(100.0 * correct / n)
        task_il.append(100.0 * correct_task / n)
    return class_il, (task_il if scenario.task_il else None)


def _padded(rows: list[list[float]], size: int) -> list[list[float | None]]:
    return [row + [None] * (size - len(row)) for row in rows]


def _no_nan(R: list[list[float | None]]) -> list[list[float]]:
    return [[math.nan if v is None else v for v in row] for row in R]


def build_learner(cfg: RunConfig, scenario: Scenario, device: torch.device) -> Learner:
    torch.manual_seed(cfg.seed)   # network initialisation
    model = build_backbone(cfg.backbone, scenario.input_shape, scenario.num_classes)
    use_channels_last = cfg.channels_last and cfg.backbone != "mlp"
    ctx = LearnerContext(
        num_classes=scenario.num_classes, num_tasks=len(scenario.tasks),
        input_shape=scenario.input_shape, mean=scenario.mean, std=scenario.std,
        augment=scenario.augment if cfg.augment is None else cfg.augment, device=device,
        precision=cfg.precision, channels_last=use_channels_last, lr=cfg.lr,
        momentum=cfg.momentum, weight_decay=cfg.weight_decay, batch_size=cfg.batch_size,
        replay_batch_size=cfg.replay_batch_size, glances=cfg.glances, epochs=cfg.epochs, buffer=cfg.buffer,
        buffer_policy=cfg.buffer_policy, seed=cfg.seed)
    kwargs = dict(cfg.method_args)
    if cfg.plugin is not None:
        try:
            kwargs["plugins"] = [PLUGINS[cfg.plugin](**cfg.plugin_args)]
        except (ValueError, TypeError) as e:
            raise ConfigError("--plugin-arg", str(e)) from None
    try:
        return METHODS[cfg.method](model, ctx, **kwargs)
    except ValueError as e:
        raise ConfigError("--method-arg", str(e)) from None


@dataclass
class RunState:
    next_task: int = 0
    class_il: list = None
    task_il: list = None
    log: list = None
    train_s: float = 0.0
    eval_s: float = 0.0
    wall_s: float = 0.0
    samples: int = 0
    steps: int = 0


def check(cfg: RunConfig) -> RunConfig:
    """``cfg`` resolved and validated without loading any data (a sweep checks every
    run this way before starting one).  Option values a method or plug-in checks
    against the data (e.g. a class count) are checked when the learner is built."""
    cfg = cfg.resolved()
    if cfg.method in METHODS and not METHODS[cfg.method].needs_buffer:
        cfg.buffer = 0    # the option means nothing to a method without memory
    validate(cfg, METHODS, PLUGINS)
    resolve_device(cfg.device)
    learner_options = METHODS[cfg.method].options
    unknown = sorted(set(cfg.method_args) - set(learner_options))
    if unknown:
        raise ConfigError("--method-arg", f"method {cfg.method} has no option {unknown[0]!r}; "
                                          f"allowed: {', '.join(learner_options) or 'none'}")
    if cfg.plugin is not None:
        try:
            PLUGINS[cfg.plugin](**cfg.plugin_args)   # plug-ins check their options on construction
        except (ValueError, TypeError) as e:
            raise ConfigError("--plugin-arg", str(e)) from None
    check_backends(cfg)
    return cfg


def prepare(cfg: RunConfig, scenario: Scenario | None = None, progress: bool = True):
    """Resolve and validate ``cfg``, and build its scenario (loading data).

    Everything that can fail on bad input happens here, before anything is written.
    """
    cfg = check(cfg)
    device = resolve_device(cfg.device)
    if scenario is None:
        scenario = build_scenario(
            cfg.scenario, cfg.n_tasks, seed=cfg.seed, class_order_seed=cfg.class_order_seed,
            samples_per_task=cfg.samples_per_task, test_samples_per_task=cfg.test_samples_per_task,
            data_dir=cfg.data_dir, cache_dir=cfg.cache_dir, download=cfg.download, progress=progress)
    return cfg, scenario, device


def run(cfg: RunConfig, out: str | Path | None = None, scenario: Scenario | None = None,
        progress: bool = True, resume: bool = True, stop_after_task: int | None = None,
        task_lines: bool | None = None) -> dict:
    """Run one experiment and return its summary (also written to ``out``).

    ``progress`` shows progress bars; ``task_lines`` prints one line per finished task
    on stderr (accuracy and elapsed seconds; default: with ``progress``), which is
    what a log of a run in the background needs."""
    cfg, scenario, device = prepare(cfg, scenario, progress)
    learner = build_learner(cfg, scenario, device)
    stream_gen = torch.Generator().manual_seed(cfg.seed + 1)
    folder = RunFolder(out) if out is not None else None
    state = RunState(class_il=[], task_il=[], log=[])
    config_dict = cfg.to_dict()

    if folder is not None and resume:
        ckpt = folder.load_checkpoint()
        if ckpt is not None:
            changed = cfg.changed_options(ckpt["config"], RESUME_FREE)
            if changed:
                raise ConfigError("--out", f"{folder.path} holds a run with different options "
                                           f"({', '.join(changed)}); choose another --out or pass --no-resume")
            learner.load_state_dict(ckpt["learner"])
            stream_gen.set_state(ckpt["stream_generator"])
            torch.set_rng_state(ckpt["torch_rng"])
            state = RunState(**ckpt["state"])
            if state.next_task >= len(scenario.tasks) and folder.read_summary() is not None:
                return folder.read_summary()
    if folder is not None:
        folder.write_config(config_dict)

    scalars = ScalarLog(cfg, folder.path if folder is not None else None, start_step=state.steps)
    try:
        summary, final = _run_tasks(cfg, scenario, learner, stream_gen, state, device, folder, config_dict,
                                    scalars, progress, progress if task_lines is None else task_lines,
                                    stop_after_task)
    finally:
        scalars.close()
    if folder is not None:
        if final:
            T = len(scenario.tasks)
            probs, labels = (torch.cat(parts).numpy() for parts in zip(*final))
            label = cfg.method + (f"+{cfg.plugin}" if cfg.plugin else "")
            write_run_figures(folder.path, probs, labels, _no_nan(_padded(state.class_il, T)), title=label)
        folder.write_summary(summary)
    return summary


def _run_tasks(cfg: RunConfig, scenario: Scenario, learner: Learner, stream_gen: torch.Generator,
               state: RunState, device: torch.device, folder: RunFolder | None, config_dict: dict,
               scalars: ScalarLog, progress: bool, task_lines: bool, stop_after_task: int | None):
    """Train and evaluate each task not finished yet; checkpoint after each."""
    T = len(scenario.tasks)
    final = None
    for task in scenario.tasks[state.next_task:]:
        started = time.perf_counter()
        samples_before = state.samples
        train_s = _train_task(learner, task, cfg, stream_gen, state, device, progress, T, scalars)
        t0 = time.perf_counter()
        final = [] if folder is not None and cfg.figures and task.index == T - 1 else None
        class_il, task_il = evaluate(learner, scenario, task.index, cfg.eval_batch_size, device, keep=final)
        state.eval_s += time.perf_counter() - t0
        state.train_s += train_s
        state.class_il.append(class_il)
        state.task_il.append(task_il)
        state.next_task = task.index + 1
        state.wall_s += time.perf_counter() - started
        scalars.log_scalars(state.steps, {
            **{f"class_il/task_{j}": v for j, v in enumerate(class_il)},
            "class_il/mean": float(np.mean(class_il)),
            **({f"task_il/task_{j}": v for j, v in enumerate(task_il)} if task_il else {}),
            **({"task_il/mean": float(np.mean(task_il))} if task_il else {}),
            "speed/samples_per_s": (state.samples - samples_before) / max(train_s, 1e-9)})
        if task_lines:
            til = f", task-IL {np.mean(task_il):.1f}" if task_il else ""
            label = "domain-IL" if scenario.kind == "domain-incremental" else "class-IL"
            print(f"  after task {task.index + 1}/{T}: {label} {np.mean(class_il):.1f}{til} "
                  f"({state.wall_s:.0f} s)", file=sys.stderr, flush=True)
        if folder is not None:
            folder.write_matrices(_padded(state.class_il, T),
                                  _padded(state.task_il, T) if scenario.task_il else None)
            folder.write_log(state.log)
            folder.save_checkpoint({"version": 1, "config": config_dict, "learner": learner.state_dict(),
                                    "stream_generator": stream_gen.get_state(),
                                    "torch_rng": torch.get_rng_state(), "state": vars(state)},
                                   task.index, learner.model.state_dict())
        if stop_after_task is not None and task.index == stop_after_task and state.next_task < T:
            raise Interrupted(f"stopped after task {task.index}")
    return _summary(cfg, scenario, learner, state, device), final


def _train_task(learner: Learner, task: Task, cfg: RunConfig, stream_gen: torch.Generator,
                state: RunState, device: torch.device, progress: bool, T: int,
                scalars: ScalarLog) -> float:
    started = time.perf_counter()
    learner.begin_task(task)
    images = task.train_images.to(device)
    labels = task.train_labels.to(device)
    total = num_batches(len(labels), cfg.batch_size, cfg.epochs)
    bar = tqdm(total=total, desc=f"task {task.index + 1}/{T}", disable=not progress,
               leave=False, dynamic_ncols=True, file=sys.stderr)
    steps_per_epoch = num_batches(len(labels), cfg.batch_size, 1)
    for step, idx in enumerate(batch_indices(len(labels), cfg.batch_size, cfg.epochs, stream_gen)):
        if cfg.lr_milestones and step % steps_per_epoch == 0:
            epoch = step // steps_per_epoch
            learner.scale_lr(cfg.lr_gamma ** sum(m <= epoch for m in cfg.lr_milestones))
        idx = idx.to(device)
        losses = learner.observe(images[idx], labels[idx], task.index)
        state.samples += len(idx)
        state.steps += 1
        if step % cfg.log_every == 0 and losses:
            entry = {"task": task.index, "step": step,
                     **{k: round(float(v), 6) for k, v in losses.items()}}
            state.log.append(entry)
            scalars.log_scalars(state.steps, {f"loss/{k}": float(v) for k, v in losses.items()})
            bar.set_postfix(loss=f"{entry.get('loss', math.nan):.3f}", refresh=False)
        bar.update(1)
    bar.close()
    learner.end_task(task)
    return time.perf_counter() - started


def _memory_detail(learner: Learner) -> dict[str, int]:
    """The learner's bytes by part; they must add up to ``memory_nbytes`` (one accounting)."""
    detail = {k: int(v) for k, v in learner.memory_detail.items()}
    total = int(learner.memory_nbytes)
    if sum(detail.values()) != total:
        raise RuntimeError(f"{type(learner).__name__}.memory_detail sums to {sum(detail.values())} bytes, "
                           f"memory_nbytes is {total}")
    return detail


def _summary(cfg: RunConfig, scenario: Scenario, learner: Learner, state: RunState,
             device: torch.device) -> dict:
    T = len(scenario.tasks)
    class_il = _no_nan(_padded(state.class_il, T))
    summary = {
        "scenario": cfg.scenario, "method": cfg.method, "plugin": cfg.plugin,
        "plugin_args": dict(cfg.plugin_args), "backbone": cfg.backbone,
        "buffer": cfg.buffer, "seed": cfg.seed, "setting": cfg.setting,
        "precision": cfg.precision, "num_tasks": T, "device": str(device),
        "class_il": metrics.summarise(class_il),
        "train_s": round(state.train_s, 3), "eval_s": round(state.eval_s, 3),
        "wall_s": round(state.wall_s, 3), "steps": state.steps,
        "samples_per_s": round(state.samples / max(state.train_s, 1e-9), 2),
        "peak_mem_mb": round(peak_memory_mb(device), 1),
        "memory_bytes": int(learner.memory_nbytes),
        "memory_bytes_detail": _memory_detail(learner),
        **({"memory_kind": cfg.memory_kind} if cfg.memory_kind else {}),
        **({"memory_budget_bytes": cfg.memory_budget_bytes} if cfg.memory_budget_bytes is not None else {}),
        "params": sum(p.numel() for p in learner.model.parameters()),
        **learner.extra_summary(),
    }
    if scenario.task_il:
        summary["task_il"] = metrics.summarise(_no_nan(_padded(state.task_il, T)))
    return summary
