"""One domain-incremental distillation run: options -> domains distilled in turn -> run folder.

What ``memdistill distill --scenario rot-mnist|pacs|core50 --strategy ...`` runs.  After each
domain a fresh network is trained on the synthetic set (``distill/evaluate.py``) and
tested on every domain seen, filling the accuracy matrix R[t][j].  The folder gets::

    summary.json   A_T, F_T, A_T by segments of domains, bytes after each domain,
                   seconds per domain, the accuracy matrix, the options
    log.jsonl      one line per domain: losses, mean cos(g_S, g_P) per iteration, mean rates
    memory.pt      the final synthetic set (memdistill.distill.memories format)
    rates.json     asymmetric(-linear): ᾱ_i, β̄_i per sample and its label (Fig. 6 data)
    stability_plasticity.png   the most plasticity- and stability-leaning samples (Fig. 6)
    cosine_gs_gp.png           mean cos(g_S, g_P) per iteration (Fig. 3), when L_stable is used

A_T = mean_j R[T][j] (metrics.final_accuracy), F_T = metrics.forgetting.  ``joint``
distils the union of all domains once and is evaluated once (F_T is null).
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from memdistill.config import ConfigError
from memdistill.distill.augment import AUGMENTATIONS
from memdistill.distill.domain_incremental import (META_OPTIMIZERS, STRATEGIES, DIDDConfig,
                                                   DomainIncrementalDistiller, RealBatches,
                                                   segment_accuracies)
from memdistill.distill.evaluate import HeldOutImages, TrainSchedule, test_accuracy, train_fresh_network
from memdistill.distill.matching import DISTANCES
from memdistill.metrics import final_accuracy, forgetting
from memdistill.nets import BACKBONES, build_backbone

DOMAIN_SCENARIOS = ("rot-mnist", "pacs", "core50")


@dataclass
class DomainDistillConfig:
    scenario: str = "rot-mnist"
    strategy: str = "asymmetric"
    n_tasks: int | None = None            # domains (None: the scenario's default: 20 / 4)
    samples_per_task: int | None = None   # real training images per domain (None: scenario default)
    test_samples_per_task: int | None = 500
    ipc: int = 1
    iterations: int = 200
    real_batch: int = 64
    img_lr: float | None = None          # None: 100 for mmd, 1 for mean (DM)
    img_momentum: float = 0.5
    distance: str = "mmd"
    augment: str = "flip-rotate"
    alpha_min: float = DIDDConfig.alpha_range[0]    # the ranges' defaults and why: DIDDConfig
    alpha_max: float = DIDDConfig.alpha_range[1]
    beta_min: float = DIDDConfig.beta_range[0]
    beta_max: float = DIDDConfig.beta_range[1]
    meta_lr: float = 0.05
    meta_optimizer: str = "adam"
    lambda_alpha: float = 0.01
    lambda_beta: float = 0.01
    reg_weight: float = 0.5
    segment: int = 5                      # domains per segment of the ablation table
    backbone: str = "convnet"
    eval_networks: int = 1
    eval_epochs: int = 300
    eval_lr: float = 0.01
    eval_batch: int = 256
    seed: int = 0
    data_dir: str | None = None
    cache_dir: str | None = None

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def didd(self) -> DIDDConfig:
        return DIDDConfig(strategy=self.strategy, ipc=self.ipc, iterations=self.iterations,
                          real_batch=self.real_batch, img_lr=self.img_lr, img_momentum=self.img_momentum,
                          distance=self.distance, augment=self.augment,
                          alpha_range=(self.alpha_min, self.alpha_max), beta_range=(self.beta_min, self.beta_max),
                          meta_lr=self.meta_lr, meta_optimizer=self.meta_optimizer,
                          lambda_alpha=self.lambda_alpha, lambda_beta=self.lambda_beta,
                          reg_weight=self.reg_weight, seed=self.seed)


# The paper's 20 domains (0, 9, ..., 171 degrees) and its segments of 5 domains, with the
# main preset's per-domain reduction (IPC 1; pass --ipc 10 for the other column).
_ROT_MNIST_20 = {"scenario": "rot-mnist", "n_tasks": 20, "samples_per_task": 300, "test_samples_per_task": 200,
                 "ipc": 1, "iterations": 20, "real_batch": 16, "eval_epochs": 100, "eval_networks": 1, "segment": 5}

# PACS's 4 domains (photo, art painting, cartoon, sketch) at 64x64, IPC 10.  The evaluation
# net takes the Rotated-MNIST presets' 100 SGD steps: 50 epochs of 2 batches of 35 (70 images).
# η_x 1000: the MMD's pixel gradients are ~10x smaller on 64x64x3 images, and at the default 100
# the set hardly moved (benchmarks/didd_step_probe.py, docs/benchmarks.md).
_PACS = {"scenario": "pacs", "ipc": 10, "iterations": 20, "real_batch": 16, "test_samples_per_task": 200,
         "img_lr": 1000.0,
         "eval_epochs": 50, "eval_batch": 35, "eval_networks": 1, "segment": 2}

# Reduced CPU versions of the paper's tables (the paper: 20 R-MNIST domains, IPC 1/10/20,
# thousands of DM iterations, 3 seeds).  Each preset lists the strategies (rows) it runs.
PRESETS: dict[str, dict] = {
    # docs/benchmarks.md measured these exact settings (1 seed, 2-core CPU).
    "didd-rot-mnist-main": {
        "strategies": ["finetune", "ewc", "mas", "lwf", "joint", "stable", "asymmetric"],
        "options": {"scenario": "rot-mnist", "n_tasks": 5, "samples_per_task": 300, "test_samples_per_task": 200,
                    "ipc": 1, "iterations": 20, "real_batch": 16, "eval_epochs": 100, "eval_networks": 1},
    },
    "didd-rot-mnist-ablation": {
        "strategies": ["finetune", "stable", "asymmetric-linear", "asymmetric"],
        "options": {"scenario": "rot-mnist", "n_tasks": 6, "samples_per_task": 300, "test_samples_per_task": 200,
                    "ipc": 2, "iterations": 10, "real_batch": 16, "eval_epochs": 60, "eval_networks": 1,
                    "segment": 3},   # IPC 2, not the paper's 10: evaluating 100 images costs ~4 min/domain here
    },
    "didd-rot-mnist-20": {
        "strategies": ["finetune", "ewc", "mas", "lwf", "joint", "stable", "asymmetric"],
        "options": _ROT_MNIST_20,
    },
    "didd-rot-mnist-20-ablation": {
        "strategies": ["finetune", "stable", "asymmetric-linear", "asymmetric"],
        "options": _ROT_MNIST_20,
    },
    "didd-pacs-main": {
        "strategies": ["finetune", "ewc", "mas", "lwf", "joint", "asymmetric"],
        "options": _PACS,
    },
    "didd-pacs-ablation": {
        "strategies": ["finetune", "stable", "asymmetric-linear", "asymmetric"],
        "options": _PACS,
    },
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate(cfg: DomainDistillConfig) -> None:
    def choose(name, allowed):
        if getattr(cfg, name) not in allowed:
            raise ConfigError(_flag(name), f"unknown value {getattr(cfg, name)!r}; allowed: {', '.join(allowed)}")

    def at_least(name, low, optional=False):
        v = getattr(cfg, name)
        if optional and v is None:
            return
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ConfigError(_flag(name), f"must be an integer >= {low} (got {v!r})")

    def number(name, positive=True):
        v = getattr(cfg, name)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or \
                (positive and not v > 0) or (not positive and v < 0):
            raise ConfigError(_flag(name), f"must be a {'positive' if positive else 'non-negative'} number (got {v!r})")

    choose("scenario", DOMAIN_SCENARIOS)
    choose("strategy", STRATEGIES)
    choose("distance", DISTANCES)
    choose("augment", AUGMENTATIONS)
    choose("meta_optimizer", META_OPTIMIZERS)
    choose("backbone", tuple(BACKBONES))
    for name in ("ipc", "real_batch", "eval_networks", "eval_batch", "segment", "iterations"):
        at_least(name, 1)
    for name in ("eval_epochs", "seed"):
        at_least(name, 0)
    for name in ("n_tasks", "samples_per_task", "test_samples_per_task"):
        at_least(name, 1, optional=True)
    for name in ("meta_lr", "eval_lr"):
        number(name)
    if cfg.img_lr is not None:
        number("img_lr")
    for name in ("lambda_alpha", "lambda_beta", "reg_weight"):
        number(name, positive=False)
    if not 0 <= cfg.img_momentum < 1:
        raise ConfigError("--img-momentum", f"must be in [0, 1) (got {cfg.img_momentum!r})")
    for which in ("alpha", "beta"):
        lo, hi = getattr(cfg, f"{which}_min"), getattr(cfg, f"{which}_max")
        if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and 0 <= lo < hi):
            raise ConfigError(f"--{which}-max", f"need 0 <= {which}-min < {which}-max (got {lo}, {hi})")


class _Progress:
    """Where a run is: an in-place stderr line during distillation (with ``progress``) and one
    line per finished domain (always: evaluation dominates long runs, so a run without the bar
    still shows it is moving).  The ETA counts evaluation once a domain has finished."""

    def __init__(self, total: int, enabled: bool, label: str, n_domains: int, stages: int):
        self.total, self.enabled, self.label = max(1, total), enabled, label
        self.n_domains = n_domains
        self.stages = stages                  # distil + evaluate rounds (joint: 1)
        self.done = 0
        self.domains_done = 0
        self.width = 0                        # the longest bar line printed
        self.started = time.perf_counter()

    def _eta(self, domain_fraction: float) -> float:
        elapsed = time.perf_counter() - self.started
        if self.domains_done:      # seconds per whole domain (distillation + evaluation) so far
            return elapsed / domain_fraction * (self.stages - domain_fraction)
        return elapsed / self.done * (self.total - self.done)

    def advance(self, domain: int, it: int, n_it: int) -> None:
        self.done += 1
        if not self.enabled or (it != n_it and it % max(1, n_it // 10)):
            return
        elapsed = time.perf_counter() - self.started
        eta = self._eta(self.domains_done + it / n_it)
        line = (f"[didd {self.label}] domain {domain + 1}/{self.n_domains} it {it}/{n_it} "
                f"{elapsed:.0f}s elapsed, ETA {eta:.0f}s")
        self.width = max(self.width, len(line))
        print("\r" + line, end="", file=sys.stderr, flush=True)

    def domain_finished(self, domain: int, accuracies: list[float], distill_s: float, eval_s: float) -> None:
        self.domains_done += 1
        eta = self._eta(self.domains_done) if self.domains_done < self.stages else 0.0
        line = (f"[didd {self.label}] domain {domain + 1}/{self.n_domains}: mean accuracy on the "
                f"{len(accuracies)} domains seen {np.mean(accuracies):.2f}%, distillation {distill_s:.1f}s, "
                f"evaluation {eval_s:.1f}s, ETA {eta:.0f}s")
        # over the bar's line when there is one (padded so that none of it shows)
        print("\r" + line.ljust(self.width) if self.enabled else line, file=sys.stderr, flush=True)


def accuracy_on_domains(images: torch.Tensor, labels: torch.Tensor, make_network, tests: list[HeldOutImages],
                        schedule: TrainSchedule, n_networks: int, seed: int) -> list[float]:
    """Fresh networks trained on (images, labels), each tested on every domain's test set;
    accuracy (%) per domain, averaged over the networks."""
    per_net = []
    for i in range(n_networks):
        net = train_fresh_network(images, labels, make_network, schedule, seed=seed * 1000 + i)
        per_net.append([test_accuracy(net, test) for test in tests])
    return [float(v) for v in np.mean(np.asarray(per_net), axis=0)]


def run_domain_distillation(cfg: DomainDistillConfig, out: str | Path, progress: bool = True,
                            scenario=None) -> dict:
    """Distil ``cfg.scenario``'s domains in turn, evaluate after each, write the run folder.
    ``scenario`` may be given (tests); otherwise it is built from the data files."""
    from memdistill.data.scenarios import build_scenario
    from memdistill.results import atomic_write

    validate(cfg)
    if scenario is None:
        scenario = build_scenario(cfg.scenario, cfg.n_tasks, seed=cfg.seed, samples_per_task=cfg.samples_per_task,
                                  test_samples_per_task=cfg.test_samples_per_task, data_dir=cfg.data_dir,
                                  cache_dir=cfg.cache_dir, progress=progress)
    tasks = scenario.tasks
    T, C = len(tasks), scenario.num_classes
    shape = scenario.input_shape

    def make_network():
        return build_backbone(cfg.backbone, shape, C)

    reals = [RealBatches(t.train_images, t.train_labels, C, scenario.mean, scenario.std) for t in tasks]
    tests = [HeldOutImages(t.test_images, t.test_labels, scenario.mean, scenario.std) for t in tasks]
    schedule = TrainSchedule(epochs=cfg.eval_epochs, lr=cfg.eval_lr, batch_size=cfg.eval_batch)
    distiller = DomainIncrementalDistiller(cfg.didd(), make_network, C, scenario.mean, scenario.std)
    joint = cfg.strategy == "joint"

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    R = np.full((T, T), np.nan)
    logs, bytes_after, eval_seconds = [], [], []
    started = time.perf_counter()
    stages = [(T - 1, RealBatches.union(reals), cfg.iterations * T)] if joint else \
        [(t, reals[t], cfg.iterations) for t in range(T)]
    bar = _Progress(cfg.iterations * T, progress, cfg.strategy, T, len(stages))
    for t, real, n_it in stages:
        log = distiller.learn_domain(real, lambda it, t=t, n=n_it: bar.advance(t, it, n), iterations=n_it)
        log.domain = t
        logs.append(log.as_dict())
        bytes_after.append(int(distiller.memory.nbytes))
        e0 = time.perf_counter()
        with torch.no_grad():
            images, labels = distiller.memory.dataset()
        R[t, :t + 1] = accuracy_on_domains(images, labels, make_network, tests[:t + 1], schedule,
                                           cfg.eval_networks, cfg.seed)
        eval_seconds.append(time.perf_counter() - e0)
        logs[-1]["accuracy"] = [round(float(a), 3) for a in R[t, :t + 1]]
        bar.domain_finished(t, R[t, :t + 1].tolist(), logs[-1]["seconds"], eval_seconds[-1])
    total_s = time.perf_counter() - started

    final_row = R[-1].tolist()
    a_t = final_accuracy(R) if not joint else float(np.mean(final_row))
    f_t = None if joint else forgetting(R)
    distill_s = [l["seconds"] for l in logs]
    distiller.memory.save(out / "memory.pt")
    rates = distiller.current_rates()
    if rates is not None:
        atomic_write(out / "rates.json", json.dumps({
            "alpha": [round(float(v), 5) for v in rates[0]], "beta": [round(float(v), 5) for v in rates[1]],
            "labels": distiller.sets[0].labels.tolist()}))
    atomic_write(out / "log.jsonl", "".join(json.dumps(l) + "\n" for l in logs))
    from memdistill.distill.domain_pictures import cosine_over_time, stability_plasticity_samples
    if rates is not None:
        stability_plasticity_samples(distiller.sets[0], rates[0], rates[1], out / "stability_plasticity.png")
    if any(l["cosine_gs_gp"] for l in logs):
        cosine_over_time([l["cosine_gs_gp"] for l in logs[1:]], out / "cosine_gs_gp.png")
    summary = {
        "scenario": cfg.scenario, "strategy": cfg.strategy, "ipc": cfg.ipc, "domains": T,
        "A_T": round(a_t, 4), "F_T": None if f_t is None else round(f_t, 4),
        "segments": {k: round(v, 4) for k, v in segment_accuracies(final_row, cfg.segment).items()},
        "accuracy_matrix": [[None if math.isnan(v) else round(v, 3) for v in row] for row in R.tolist()],
        "bytes": bytes_after[-1], "bytes_after_domain": bytes_after,
        "distill_s_per_domain": [round(s, 3) for s in distill_s],
        "distill_s_mean": round(sum(distill_s) / len(distill_s), 3),   # joint: its one stage on the union
        "distill_s_total": round(sum(distill_s), 3),
        "eval_s": round(sum(eval_seconds), 3), "seconds": round(total_s, 3),
        "cosine_gs_gp_per_domain": [l["cosine_gs_gp_mean"] for l in logs],
        "input_shape": list(shape), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "config": asdict(cfg),
    }
    atomic_write(out / "summary.json", json.dumps(summary, indent=2))
    return summary


def markdown_rows(summaries: list[dict]) -> str:
    """A table of strategies: A_T, F_T, segments, bytes, seconds per domain."""
    segs = list(summaries[0]["segments"]) if summaries else []
    head = "| strategy | A_T | F_T | " + " | ".join(f"A {s}" for s in segs) + " | bytes | s/domain |"
    lines = [head, "|" + "---|" * (5 + len(segs))]
    for s in summaries:
        f_t = "–" if s["F_T"] is None else f"{s['F_T']:.1f}"
        seg = " | ".join(f"{s['segments'].get(k, float('nan')):.1f}" for k in segs)
        lines.append(f"| {s['strategy']} | {s['A_T']:.1f} | {f_t} | {seg} | {s['bytes']} | {s['distill_s_mean']:.1f} |")
    return "\n".join(lines) + "\n"


# -- command line (``memdistill distill --scenario ...``) ----------------------------------

def add_arguments(parser) -> None:
    """The flags of the domain-incremental path of ``memdistill distill`` (those shared with
    dataset distillation — --ipc, --real-batch, --augment, --backbone, --eval-*, --seed,
    --data-dir, --cache-dir, --out — are defined once by the distill parser)."""
    parser.add_argument("--scenario", help=f"domain-incremental distillation on one of: {', '.join(DOMAIN_SCENARIOS)}")
    parser.add_argument("--strategy", help=f"with --scenario: one or more (comma-separated) of: {', '.join(STRATEGIES)} "
                                           "(default asymmetric)")
    from memdistill.distill.experiment import TABLE_PRESETS
    parser.add_argument("--preset", help=f"a table: one of {', '.join(TABLE_PRESETS)} (Remember the Past's "
                                         f"Tables 1-2 at equal bytes, one folder per row), or with --scenario "
                                         f"one of {', '.join(PRESETS)} (strategies + reduced settings)")
    parser.add_argument("--n-tasks", type=int, help="with --scenario: number of domains (default 20 rot-mnist, 4 pacs, 11 core50)")
    parser.add_argument("--samples-per-task", type=int, help="with --scenario: real training images per domain")
    parser.add_argument("--test-samples-per-task", type=int, help="with --scenario: test images per domain (default 500)")
    parser.add_argument("--iterations", type=int, help="with --scenario: DM iterations per domain (default 200)")
    parser.add_argument("--img-lr", type=float, help="with --scenario: synthetic-image SGD lr η_x (default 100 for mmd, 1 for mean)")
    parser.add_argument("--img-momentum", type=float, help="with --scenario: synthetic-image momentum (default 0.5)")
    parser.add_argument("--distance", help=f"with --scenario: one of {', '.join(DISTANCES)} (default mmd)")
    for which, sym, (lo, hi) in (("alpha", "ᾱ", DIDDConfig.alpha_range), ("beta", "β̄", DIDDConfig.beta_range)):
        parser.add_argument(f"--{which}-min", type=float, help=f"with --scenario: lower end of {sym} (default {lo:g})")
        parser.add_argument(f"--{which}-max", type=float, help=f"with --scenario: upper end of {sym} (default {hi:g})")
    parser.add_argument("--meta-lr", type=float, help="with --scenario: η_α = η_β (default 0.05)")
    parser.add_argument("--meta-optimizer", help=f"with --scenario: one of {', '.join(META_OPTIMIZERS)} (default adam)")
    parser.add_argument("--lambda-alpha", type=float, help="with --scenario: λ_α (default 0.01)")
    parser.add_argument("--lambda-beta", type=float, help="with --scenario: λ_β (default 0.01)")
    parser.add_argument("--reg-weight", type=float, help="with --scenario: λ of ewc/mas/lwf (default 0.5)")
    parser.add_argument("--segment", type=int, help="with --scenario: domains per accuracy segment (default 5)")


NOT_OPTIONS = ("command", "out", "progress", "preset")


def run_from_args(args) -> int:
    """``memdistill distill --scenario ...``: one run folder per strategy."""
    given = {k: v for k, v in vars(args).items() if k not in NOT_OPTIONS}
    known = set(DomainDistillConfig.option_names())
    foreign = sorted(k for k in given if k not in known)
    if foreign:
        raise ConfigError(_flag(foreign[0]), "applies to dataset distillation (--dataset), not to --scenario")
    options, strategies = {}, None
    preset = getattr(args, "preset", None)
    if preset is not None:
        if preset not in PRESETS:
            from memdistill.distill.experiment import TABLE_PRESETS
            raise ConfigError("--preset", f"unknown preset {preset!r}; allowed: {', '.join(PRESETS)}"
                                          + (f", and without --scenario {', '.join(TABLE_PRESETS)}"
                                             if "scenario" not in vars(args) else ""))
        options.update(PRESETS[preset]["options"])
        strategies = list(PRESETS[preset]["strategies"])
    options.update(given)
    if "strategy" in given:
        strategies = [s.strip() for s in str(given["strategy"]).split(",") if s.strip()]
    strategies = strategies or [DomainDistillConfig.strategy]
    configs = [DomainDistillConfig(**{**options, "strategy": s}) for s in strategies]
    for cfg in configs:
        validate(cfg)
    base = configs[0]
    out = Path(getattr(args, "out", None) or f"runs/didd-{base.scenario}-ipc{base.ipc}")
    progress = getattr(args, "progress", True)
    summaries = []
    for cfg in configs:
        folder = out if len(configs) == 1 else out / cfg.strategy
        summaries.append(run_domain_distillation(cfg, folder, progress=progress))
        s = summaries[-1]
        f_t = "–" if s["F_T"] is None else f"{s['F_T']:.2f}"
        print(f"[didd] {cfg.strategy}: A_T {s['A_T']:.2f}, F_T {f_t}, {s['bytes']} bytes, "
              f"{s['distill_s_mean']:.1f} s/domain -> {folder}", file=sys.stderr)
    from memdistill.results import atomic_write
    table = markdown_rows(summaries)
    atomic_write(out / "table.md", table)
    print(table, end="")
    return 0
