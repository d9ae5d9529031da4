"""Run configuration: one dataclass, scenario defaults, YAML presets, validation.

Options left at ``None`` take the scenario's default (see ``SCENARIO_DEFAULTS``),
so ``memdistill run --scenario seq-cifar10`` does something sensible without flags.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from memdistill.data.scenarios import SCENARIOS, ScenarioError, check_task_count
from memdistill.memory import BUFFERS
from memdistill.nets import BACKBONES

SETTINGS = ("online", "offline")
PRECISIONS = ("fp32", "bf16")


class ConfigError(ValueError):
    """Bad user input.  ``option`` is the CLI flag (or YAML key) it concerns."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option = option


@dataclass
class RunConfig:
    scenario: str = "seq-digits"
    method: str = "er"
    backbone: str | None = None
    buffer: int | None = None
    buffer_policy: str = "reservoir"
    seed: int = 0
    setting: str | None = None            # online | offline
    epochs: int | None = None             # offline only; online is one pass
    batch_size: int | None = None         # stream batch
    replay_batch_size: int | None = None  # samples drawn from memory per step
    glances: int = 1                      # optimiser steps on each stream batch (La-MAML's --glances)
    lr: float | None = None
    # Step decay within each task (MultiStepLR restarted per task, as ABD's public code):
    # the lr is multiplied by lr_gamma at the start of each epoch listed (0-based count of
    # epochs done), e.g. [100, 150, 200] with 250 epochs.
    lr_milestones: list[int] = field(default_factory=list)
    lr_gamma: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    n_tasks: int | None = None
    samples_per_task: int | None = None
    test_samples_per_task: int | None = None
    class_order_seed: int | str | None = None   # "seed": the run's own seed (one order per seed in a grid)
    augment: bool | None = None
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = True
    eval_batch_size: int = 512
    log_every: int = 10
    tensorboard: bool = False             # scalars to <run folder>/tb (logging_backends.py)
    wandb: str | None = None              # a Weights & Biases project name
    method_args: dict[str, Any] = field(default_factory=dict)   # method-specific options
    plugin: str | None = None             # a replay plug-in, e.g. ddn
    plugin_args: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    cache_dir: str | None = None
    download: bool = False
    figures: bool = True                  # a finished run's probability/confusion/per-task figures
    # Set by ``memdistill compare``: which memory kind this run measures and the byte budget
    # it was planned for (recorded in summary.json; the run itself reads neither).
    memory_kind: str | None = None
    memory_budget_bytes: int | None = None

    def resolved(self) -> "RunConfig":
        """A copy with every scenario default filled in."""
        out = dataclasses.replace(self, method_args=dict(self.method_args),
                                  plugin_args=dict(self.plugin_args))
        for key, value in SCENARIO_DEFAULTS.get(self.scenario, {}).items():
            if getattr(out, key) is None:
                setattr(out, key, value)
        if out.buffer is None:
            out.buffer = 0 if self.method in ("finetune", "joint") else 200
        if out.replay_batch_size is None:
            out.replay_batch_size = out.batch_size
        if out.setting == "online":
            out.epochs = 1
        if out.n_tasks is None:
            out.n_tasks = SCENARIOS[self.scenario].default_tasks if self.scenario in SCENARIOS else None
        if out.class_order_seed == "seed":
            out.class_order_seed = out.seed
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def changed_options(self, stored: dict[str, Any], ignore=frozenset()) -> list[str]:
        """Options whose value differs from ``stored`` (a run folder's config).  A key the
        stored config lacks was written before the option existed: it had the default."""
        defaults = {f.name: (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
                    for f in dataclasses.fields(self)}
        return sorted(k for k, v in self.to_dict().items()
                      if k not in ignore and stored.get(k, defaults[k]) != v)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(unknown[0], f"unknown option in {source}; allowed: {', '.join(sorted(names))}")
        return cls(**data)


# What each scenario does when an option is not given.  Online CIFAR follows the
# DDN paper's appendix C.2 (stream 32 + 32 replayed, lr 0.03).
SCENARIO_DEFAULTS: dict[str, dict[str, Any]] = {
    "seq-digits": dict(backbone="mlp", setting="offline", epochs=5, batch_size=16, lr=0.1),
    "seq-mnist": dict(backbone="mlp", setting="online", epochs=1, batch_size=10, lr=0.1),
    "seq-cifar10": dict(backbone="reduced-resnet18", setting="online", epochs=1, batch_size=32, lr=0.03),
    "seq-cifar100": dict(backbone="reduced-resnet18", setting="online", epochs=1, batch_size=32, lr=0.03),
    "seq-tinyimg": dict(backbone="resnet18", setting="online", epochs=1, batch_size=32, lr=0.03),
    "rot-mnist": dict(backbone="mlp", setting="online", epochs=1, batch_size=10, lr=0.1),
    "perm-mnist": dict(backbone="mlp", setting="online", epochs=1, batch_size=10, lr=0.1),
    "pacs": dict(backbone="convnet", setting="offline", epochs=5, batch_size=32, lr=0.01),
    "core50": dict(backbone="convnet", setting="offline", epochs=5, batch_size=32, lr=0.01),
}


def validate(cfg: RunConfig, methods: dict[str, Any], plugins: dict[str, Any]) -> None:
    """Raise ConfigError for the first option that cannot work."""
    def choose(option: str, value, allowed) -> None:
        if value not in allowed:
            raise ConfigError(option, f"unknown value {value!r}; allowed: {', '.join(allowed)}")

    choose("--scenario", cfg.scenario, list(SCENARIOS))
    choose("--method", cfg.method, list(methods))
    choose("--backbone", cfg.backbone, list(BACKBONES))
    choose("--buffer-policy", cfg.buffer_policy, list(BUFFERS))
    choose("--setting", cfg.setting, SETTINGS)
    choose("--precision", cfg.precision, PRECISIONS)
    for option, value, low in [("--buffer", cfg.buffer, 0), ("--epochs", cfg.epochs, 1),
                               ("--batch-size", cfg.batch_size, 1),
                               ("--replay-batch-size", cfg.replay_batch_size, 1),
                               ("--glances", cfg.glances, 1),
                               ("--samples-per-task", cfg.samples_per_task, 1),
                               ("--test-samples-per-task", cfg.test_samples_per_task, 1),
                               ("--eval-batch-size", cfg.eval_batch_size, 1),
                               ("--log-every", cfg.log_every, 1), ("--seed", cfg.seed, 0)]:
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise ConfigError(option, f"must be an integer >= {low} (got {value!r})")
    order = cfg.class_order_seed
    if order is not None and order != "seed" and (not isinstance(order, int) or isinstance(order, bool) or order < 0):
        raise ConfigError("--class-order-seed", f"must be an integer >= 0 or 'seed' (got {order!r})")
    for option, value in [("--lr", cfg.lr), ("--momentum", cfg.momentum),
                          ("--weight-decay", cfg.weight_decay)]:
        if not isinstance(value, (int, float)) or value < 0 or (option == "--lr" and value == 0):
            raise ConfigError(option, f"must be a {'positive' if option == '--lr' else 'non-negative'} "
                                      f"number (got {value!r})")
    milestones = cfg.lr_milestones
    if not isinstance(milestones, list) or not all(
            isinstance(m, int) and not isinstance(m, bool) and m >= 1 for m in milestones) \
            or any(a >= b for a, b in zip(milestones, milestones[1:])):
        raise ConfigError("--lr-milestones", f"must be increasing epoch counts >= 1 (got {milestones!r})")
    if isinstance(cfg.lr_gamma, bool) or not isinstance(cfg.lr_gamma, (int, float)) or not cfg.lr_gamma > 0:
        raise ConfigError("--lr-gamma", f"must be a positive number (got {cfg.lr_gamma!r})")
    if cfg.device not in ("auto", "cpu") and not cfg.device.startswith(("cuda", "mps")):
        raise ConfigError("--device", f"unknown device {cfg.device!r}; allowed: auto, cpu, cuda, cuda:N, mps")
    kind = SCENARIOS[cfg.scenario].kind
    if kind not in getattr(methods[cfg.method], "scenario_kinds", (kind,)):
        allowed = [n for n, m in methods.items() if kind in getattr(m, "scenario_kinds", (kind,))]
        raise ConfigError("--method", f"method {cfg.method} does not apply to {kind} scenario {cfg.scenario}; "
                                      f"allowed: {', '.join(allowed)}")
    if cfg.plugin is not None:
        choose("--plugin", cfg.plugin, list(plugins))
        if not getattr(methods[cfg.method], "accepts_plugins", False):
            raise ConfigError("--plugin", f"plugin {cfg.plugin} needs a replay method that takes plug-ins; "
                              "allowed: " + ", ".join(k for k, v in methods.items()
                                                      if getattr(v, "accepts_plugins", False)))
    elif cfg.plugin_args:
        raise ConfigError("--plugin-arg", "given without --plugin")
    if cfg.glances != 1 and not getattr(methods[cfg.method], "supports_glances", False):
        raise ConfigError("--glances", f"method {cfg.method} takes one step per stream batch; allowed with "
                                       "--glances: " + ", ".join(k for k, v in methods.items()
                                                                 if getattr(v, "supports_glances", False)))
    if methods[cfg.method].needs_buffer and cfg.buffer == 0:
        raise ConfigError("--buffer", f"method {cfg.method} replays from memory; give a size >= 1")
    try:
        check_task_count(cfg.scenario, cfg.n_tasks, KNOWN_CLASS_COUNTS.get(cfg.scenario))
    except ScenarioError as e:
        raise ConfigError(e.option, str(e)) from None


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, value), the value read as YAML (numbers, true/false, lists)."""
    if "=" not in text:
        raise ConfigError("--method-arg", f"expected KEY=VALUE (got {text!r})")
    key, value = text.split("=", 1)
    parsed = yaml.safe_load(value)
    if isinstance(parsed, str):       # YAML reads 1e-3 as a string
        try:
            parsed = float(parsed)
        except ValueError:
            pass
    return key.strip().replace("-", "_"), parsed


def parse_method_spec(spec: str) -> tuple[str, dict[str, Any], str | None, dict[str, Any]]:
    """``METHOD[:k=v,...][+PLUGIN[:k=v,...]]`` -> (method, method args, plugin, plugin args).

    ``er+ddn`` | ``er+label-smoothing:eps=0.5`` | ``clser:plastic_prob=0.9+ddn``: one grid can
    give each method its own options (CLS-ER's best plastic rate differs with the buffer).
    A ``+`` followed by a letter starts the plug-in, so values such as ``1e+3`` stay whole.
    """
    method_part, *rest = re.split(r"\+(?=[A-Za-z])", spec, maxsplit=1)
    method, _, method_args = method_part.partition(":")
    plugin, plugin_args = None, ""
    if rest:
        plugin, _, plugin_args = rest[0].partition(":")
    return (method, _parse_option_list(method_args), plugin, _parse_option_list(plugin_args))


def _parse_option_list(text: str) -> dict[str, Any]:
    return dict(parse_option(a) for a in text.split(",") if a.strip())


# Class counts known before loading data, so task counts are checked up front.
KNOWN_CLASS_COUNTS = {"seq-digits": 10, "seq-mnist": 10, "seq-cifar10": 10,
                      "seq-cifar100": 100, "seq-tinyimg": 200}


def preset_names() -> list[str]:
    folder = resources.files("memdistill") / "presets"
    names = []
    for entry in folder.iterdir():    # one level of sub-folders: "ddn/table1-..."
        children = entry.iterdir() if entry.is_dir() else [entry]
        prefix = f"{entry.name}/" if entry.is_dir() else ""
        names += [prefix + p.name[:-5] for p in children if p.name.endswith(".yaml")]
    return sorted(names)


def load_preset(name_or_path: str) -> dict[str, Any]:
    """A preset by name (``memdistill list`` shows them) or a YAML file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        text = path.read_text()
    else:
        candidate = resources.files("memdistill") / "presets"
        for part in f"{name_or_path}.yaml".split("/"):
            candidate = candidate / part
        if ".." in name_or_path.split("/") or not candidate.is_file():
            raise ConfigError("--preset", f"no preset {name_or_path!r}; allowed: "
                                          f"{', '.join(preset_names())} or a path to a .yaml file")
        text = candidate.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError("--preset", f"{name_or_path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError("--preset", f"{name_or_path} must be a mapping of option: value")
    return data
