"""One distillation experiment: options -> memory learned on a dataset -> evaluated -> run folder.

What ``memdistill distill`` runs.  The folder gets::

    memory.pt       the memory (format: memdistill.distill.memories), weights_only-loadable;
                    also written at every logged step while distilling
    summary.json    accuracy mean/std, bytes, seconds, peak memory, the options; written
                    last, so a folder without it holds a run that has not finished
    log.jsonl       outer loss / gradient norm / seconds every ``log_every`` outer steps,
                    appended as the run goes
    recalled.png    the recalled images, one row per class
    similarity.png  (addressable) class similarity of the addressing coefficients (Fig. 2)

Options are checked (``ConfigError`` naming the flag) before data is read or
anything is written.  ``method`` names how the memory is learned: ``bptt`` (Alg. 1,
back-propagation through T momentum-SGD steps) or ``dc`` (single-step gradient
matching, the DC baseline of Tables 1-2; ``distill/gradient_matching.py``).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from memdistill.config import ConfigError
from memdistill.distill.augment import AUGMENTATIONS, EVAL_AUGMENTATIONS
from memdistill.distill.bptt import INNER_SAMPLINGS, OUTER_LR_DECAYS, OUTER_OPTIMIZERS, BPTTConfig, BPTTDistiller
from memdistill.distill.gradient_matching import GradientMatchingConfig, GradientMatchingDistiller, dc_loops
from memdistill.distill.evaluate import HeldOutImages, TrainSchedule, evaluate_memory
from memdistill.distill.memories import (MEMORIES, AddressableMemory, DistilledMemory, MemoryFileError,
                                         SyntheticImages, addressable_budget)
from memdistill.nets import BACKBONES, build_backbone

DATASETS = ("digits", "mnist", "cifar10", "cifar100", "tinyimagenet")
# (C, H, W) and classes of each dataset, so the budget is checked before data is read.
DATASET_SHAPES = {"digits": ((1, 8, 8), 10), "mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10),
                  "cifar100": ((3, 32, 32), 100), "tinyimagenet": ((3, 64, 64), 200)}
DISTILL_METHODS = ("bptt", "dc")
INITS = ("real", "noise", "mean")


@dataclass
class DistillConfig:
    dataset: str = "mnist"
    memory: str = "addressable"          # images | addressable
    method: str = "bptt"
    ipc: int = 1                         # budget: images per class (Eq. 4)
    bases: int = 16                      # K (addressable)
    downsample: int = 2                  # ds (addressable)
    init: str = "real"                   # real | mean | noise (addressable noise = Xavier, as the public code) | a memory.pt
    steps: int = 300                     # outer steps
    unroll: int = 10                     # T
    inner_lr: float = 0.01
    inner_momentum: float = 0.9
    learn_inner_lr: bool = False         # ours: learn α_θ (from inner_lr) with the memory
    inner_batch: int | None = None
    inner_sampling: str = "per-class"    # per-class (the public code's) | uniform
    real_batch: int = 32                 # real samples per class in the outer loss
    classes_per_step: int | None = None
    outer_optimizer: str = "adam"
    outer_lr: float = 0.01
    outer_momentum: float = 0.5
    outer_lr_decay: str = "none"         # none | cosine (ours: to 0 over the run's steps)
    clip: float | None = 2.0
    augment: str = "none"
    checkpoint_every: int | None = None
    match_loops: int | None = None       # dc: matchings per outer step (None: DC's for the ipc)
    net_steps: int | None = None         # dc: network steps between matchings (None: DC's for the ipc)
    net_lr: float = 0.01                 # dc: the network's SGD lr between matchings
    zca: bool = False                    # whiten the input space (distill/zca.py)
    zca_eps: float = 0.1
    backbone: str = "convnet"
    eval_networks: int = 5
    eval_epochs: int = 300
    eval_lr: float = 0.01
    eval_batch: int = 256
    eval_augment: str = "none"           # crop-scale-rotate: DC's MNIST evaluation augmentation
    eval_test_samples: int | None = None  # None: the whole test split
    validation_fraction: float = 0.0     # > 0: hold out this share of train and evaluate there (choosing K)
    seed: int = 0
    device: str = "cpu"
    data_dir: str | None = None
    cache_dir: str | None = None
    log_every: int = 10

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate(cfg: DistillConfig) -> None:
    def choose(name, allowed):
        value = getattr(cfg, name)
        if value not in allowed:
            raise ConfigError(_flag(name), f"unknown value {value!r}; allowed: {', '.join(allowed)}")

    def at_least(name, low, optional=False):
        value = getattr(cfg, name)
        if optional and value is None:
            return
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(_flag(name), f"must be an integer >= {low} (got {value!r})")

    def positive(name, optional=False):
        value = getattr(cfg, name)
        if optional and value is None:
            return
        if not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(_flag(name), f"must be a positive number (got {value!r})")

    def fraction(name):
        value = getattr(cfg, name)
        if not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ConfigError(_flag(name), f"must be in [0, 1) (got {value!r})")

    choose("dataset", DATASETS)
    choose("memory", tuple(MEMORIES))
    choose("method", DISTILL_METHODS)
    if cfg.init not in INITS:
        if not Path(cfg.init).is_file():
            raise ConfigError("--init", f"{cfg.init!r} is none of {', '.join(INITS)} and not a memory file")
        if cfg.dataset in DATASET_SHAPES:
            _saved_memory(cfg, *DATASET_SHAPES[cfg.dataset])     # refused before anything is written
    choose("outer_optimizer", OUTER_OPTIMIZERS)
    choose("outer_lr_decay", OUTER_LR_DECAYS)
    choose("augment", AUGMENTATIONS)
    choose("inner_sampling", INNER_SAMPLINGS)
    choose("eval_augment", EVAL_AUGMENTATIONS)
    choose("backbone", tuple(BACKBONES))
    for name in ("ipc", "bases", "downsample", "unroll", "real_batch", "eval_networks", "eval_batch",
                 "log_every"):
        at_least(name, 1)
    for name in ("steps", "eval_epochs", "seed"):
        at_least(name, 0)
    for name in ("inner_batch", "classes_per_step", "checkpoint_every", "eval_test_samples", "match_loops"):
        at_least(name, 1, optional=True)
    at_least("net_steps", 0, optional=True)
    for name in ("inner_lr", "outer_lr", "eval_lr", "net_lr", "zca_eps"):
        positive(name)
    positive("clip", optional=True)
    fraction("inner_momentum")
    fraction("validation_fraction")
    fraction("outer_momentum")
    if not isinstance(cfg.learn_inner_lr, bool):
        raise ConfigError("--learn-inner-lr", f"must be true or false (got {cfg.learn_inner_lr!r})")
    if cfg.learn_inner_lr and cfg.method != "bptt":
        raise ConfigError("--learn-inner-lr", f"needs --method bptt (method {cfg.method} has no inner trajectory "
                                              "to differentiate)")
    if cfg.memory == "addressable":
        shape, classes = DATASET_SHAPES[cfg.dataset]
        try:
            addressable_budget(cfg.ipc, classes, shape, cfg.bases, cfg.downsample)
        except ValueError as e:
            raise ConfigError("--bases", str(e)) from None
    if cfg.device not in ("cpu", "auto") and not cfg.device.startswith("cuda"):
        raise ConfigError("--device", f"unknown value {cfg.device!r}; allowed: cpu, auto, cuda, cuda:N")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device", "cuda was asked for but torch sees no CUDA device; allowed here: cpu, auto")
    return torch.device(name)


def build_memory(cfg: DistillConfig, train_images: torch.Tensor, train_labels: torch.Tensor,
                 num_classes: int, mean, std, transform=None) -> DistilledMemory:
    """The starting memory at the budget of ``cfg.ipc`` images per class (real images
    pass through ``transform`` after normalising, e.g. ZCA)."""
    transform = transform or (lambda x: x)
    g = torch.Generator().manual_seed(cfg.seed)
    image_shape = tuple(train_images.shape[1:])
    if cfg.init not in INITS:
        return _saved_memory(cfg, image_shape, num_classes)
    if cfg.memory == "images":
        if cfg.init == "noise":
            return SyntheticImages.random(image_shape, cfg.ipc, num_classes, g, mean, std)
        x, y = _starting_images(cfg.init, train_images, train_labels, cfg.ipc, num_classes, g, mean, std)
        return SyntheticImages(transform(x), y, num_classes, mean, std)
    try:
        budget = addressable_budget(cfg.ipc, num_classes, image_shape, cfg.bases, cfg.downsample)
    except ValueError as e:
        raise ConfigError("--bases", str(e)) from None
    if cfg.init == "noise":
        return AddressableMemory.initialise(image_shape, num_classes, budget.num_bases, budget.recalls,
                                            cfg.downsample, g, mean, std)
    per_class = -(-budget.num_bases // num_classes)
    x, y = _starting_images(cfg.init, train_images, train_labels, per_class, num_classes, g, mean, std)
    return AddressableMemory.from_real(transform(x), y, num_classes, budget.num_bases, budget.recalls,
                                       cfg.downsample, g, mean, std)


def _starting_images(init: str, train_images: torch.Tensor, train_labels: torch.Tensor, n: int,
                     num_classes: int, g: torch.Generator, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` normalised starting images per class: random real images (``real``), or the
    means of ``n`` random disjoint groups of the class's images (``mean``; with n = 1 the
    class mean, the input a nearest-class-mean classifier would keep)."""
    m = torch.tensor(mean).reshape(1, -1, 1, 1)
    s = torch.tensor(std).reshape(1, -1, 1, 1)
    images, labels = [], []
    for c in range(num_classes):
        of_class = torch.nonzero(train_labels == c).flatten()
        order = of_class[torch.randperm(len(of_class), generator=g)]
        if init == "real":
            images.append(train_images[order[:n]].float())
        else:
            images.append(torch.stack([train_images[group].float().mean(0) for group in order.chunk(n)]))
        labels.append(torch.full((len(images[-1]),), c, dtype=torch.long))
    return (torch.cat(images) / 255.0 - m) / s, torch.cat(labels)


def _saved_memory(cfg: DistillConfig, image_shape: tuple, num_classes: int) -> DistilledMemory:
    """``--init FILE``: go on distilling a memory a run saved (e.g. a longer unroll after a
    shorter one).  Kind, image shape, classes and size must be what the run's flags
    (``--memory``, ``--dataset``, ``--ipc``, ``--bases``, ``--downsample``) would build."""
    from memdistill.distill.memories import load_memory
    try:
        memory = load_memory(cfg.init)
    except MemoryFileError as e:
        raise ConfigError("--init", str(e)) from None
    if memory.kind != cfg.memory:
        raise ConfigError("--init", f"{cfg.init} holds a memory of kind {memory.kind!r}; this run distils "
                                    f"--memory {cfg.memory}")
    if tuple(memory.image_shape) != image_shape or memory.num_classes != num_classes:
        raise ConfigError("--init", f"{cfg.init} holds {memory.num_classes} classes of shape "
                                    f"{list(memory.image_shape)}; {cfg.dataset} has {num_classes} of shape "
                                    f"{list(image_shape)}")
    if isinstance(memory, AddressableMemory):
        budget = addressable_budget(cfg.ipc, num_classes, image_shape, cfg.bases, cfg.downsample)
        held = (memory.num_bases, memory.recalls_per_query, memory.downsample)
        wanted = (budget.num_bases, budget.recalls, budget.downsample)
        if held != wanted:
            raise ConfigError("--init", f"{cfg.init} holds {held[0]} bases, {held[1]} recalls per class at "
                                        f"downsample {held[2]}; --ipc {cfg.ipc} --bases {cfg.bases} --downsample "
                                        f"{cfg.downsample} make {wanted[0]}, {wanted[1]} and {wanted[2]}")
    elif len(memory.labels) != cfg.ipc * num_classes:
        raise ConfigError("--init", f"{cfg.init} holds {len(memory.labels)} images; --ipc {cfg.ipc} makes "
                                    f"{cfg.ipc * num_classes}")
    return memory


# Remember the Past's Tables 1-2 at equal bytes, one run folder per row.  The shared options
# are the reduced CPU protocol of docs/benchmarks.md (80 outer steps, 16 real images per
# class, 3 evaluation networks x 300 epochs on 2,000 test images); flags given with the
# preset replace them (e.g. --steps 50000 --eval-networks 20 --eval-test-samples none for
# the paper's protocol on a GPU).  Row options define the row and are not replaced.
TABLE_ROWS: dict[str, dict] = {
    "random-real": {"memory": "images", "steps": 0},
    "dc": {"memory": "images", "method": "dc", "outer_optimizer": "sgd", "outer_lr": 0.1, "outer_momentum": 0.5},
    "bptt-images": {"memory": "images"},
    "bptt-no-momentum": {"memory": "images", "inner_momentum": 0.0},
    "bptt-short-unroll": {"memory": "images", "unroll": 2},
    "addressable": {"memory": "addressable"},
}
# (bases and downsample apply to the addressable row only: 32 bases at 1/2 size; its inner
# steps take minibatches of as many recalls as the images rows hold, so its inner loop
# costs what theirs does.)
_TABLE_COMMON = {"steps": 80, "unroll": 10, "real_batch": 16, "checkpoint_every": 1, "outer_optimizer": "adam",
                 "outer_lr": 0.01, "clip": 2.0, "eval_networks": 3, "eval_epochs": 300, "eval_test_samples": 2000,
                 "bases": 32, "downsample": 2}
TABLE_PRESETS: dict[str, dict] = {
    f"rtp-table1-{dataset}-ipc{ipc}": {
        "options": {**_TABLE_COMMON, "dataset": dataset, "ipc": ipc},
        # uniform draws: what docs/benchmarks.md's rows of these tables were measured with
        # (per-class draws, the default since, scored 6.4 points more at MNIST IPC 1, T = 30)
        "rows": {**TABLE_ROWS, "addressable": {"memory": "addressable", "inner_batch": ipc * 10,
                                               "inner_sampling": "uniform"}}}
    for dataset in ("mnist", "cifar10") for ipc in (1, 10)
}


def run_table(preset: str, given: dict, out: str | Path, progress: bool = True) -> list[dict]:
    """Every row of a table preset into ``out/<row>/`` (a row already finished under the same
    options is read back, not run again), then ``out/table.md``; returns the summaries."""
    from memdistill.results import atomic_write
    if preset not in TABLE_PRESETS:
        raise ConfigError("--preset", f"unknown preset {preset!r}; allowed: {', '.join(TABLE_PRESETS)}")
    spec = TABLE_PRESETS[preset]
    configs = {label: DistillConfig(**{**spec["options"], **given, **row}) for label, row in spec["rows"].items()}
    for cfg in configs.values():
        validate(cfg)          # every row checked before any runs
    out = Path(out)
    summaries = []
    for label, cfg in configs.items():
        folder = out / label
        done = folder / "summary.json"
        if done.exists() and json.loads(done.read_text()).get("config") == asdict(cfg):
            summaries.append(json.loads(done.read_text()))
        else:
            summaries.append(run_distillation(cfg, folder, progress=progress))
        s = summaries[-1]
        print(f"[distill] {label}: {s['accuracy']['mean']:.2f} ± {s['accuracy']['std']:.2f} %, "
              f"{s['memory_bytes']} bytes -> {folder}", file=sys.stderr)
    lines = [f"# {preset}", "", "| row | memory | method | bytes | recalled samples | test accuracy (%) | "
             "distill s | s / outer step |", "|---|---|---|---|---|---|---|---|"]
    for label, s in zip(configs, summaries):
        step = "–" if s["outer_step_s"] is None else f"{s['outer_step_s']:.2f}"
        lines.append(f"| {label} | {s['memory']} | {s['method'] if s['config']['steps'] else '–'} | "
                     f"{s['memory_bytes']} | {s['recalled_samples']} | {s['accuracy']['mean']:.2f} ± "
                     f"{s['accuracy']['std']:.2f} | {s['distill_s']:.0f} | {step} |")
    atomic_write(out / "table.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return summaries


def _validation_split(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int):
    """(train x, train y, validation x, validation y): ``fraction`` of every class held out."""
    g = torch.Generator().manual_seed(10_007 + seed)
    held = []
    for c in torch.unique(y).tolist():
        members = torch.nonzero(y == c).flatten()
        n = max(1, round(fraction * len(members)))
        if n >= len(members):
            raise ConfigError("--validation-fraction", f"{fraction} leaves no training image of class {c}")
        held.append(members[torch.randperm(len(members), generator=g)[:n]])
    held = torch.cat(held).sort().values
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[held] = False
    return x[keep], y[keep], x[held], y[held]


def _peak_rss_mb() -> float:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_distillation(cfg: DistillConfig, out: str | Path, progress: bool = True) -> dict:
    """Learn a memory as ``cfg`` says, evaluate it, write the run folder; returns the summary."""
    from memdistill.data.scenarios import NORMALISATION
    from memdistill.data.sources import load_source
    from memdistill.results import atomic_write

    validate(cfg)
    device = resolve_device(cfg.device)
    source = load_source(cfg.dataset, data_dir=cfg.data_dir, cache_dir=cfg.cache_dir,
                         seed=cfg.seed, progress=progress)
    mean, std = NORMALISATION[cfg.dataset]
    train_x = torch.from_numpy(source.train.images.copy())
    train_y = torch.from_numpy(source.train.labels.copy())
    num_classes = len(source.class_names)
    image_shape = tuple(train_x.shape[1:])
    test_x = torch.from_numpy(source.test.images.copy())
    test_y = torch.from_numpy(source.test.labels.copy())
    evaluated_on = "test"
    if cfg.validation_fraction > 0:
        # Sec. 5.1 chooses K on a held-out 10 % of the training set; the split depends on the
        # seed only, so runs that differ in K are scored on the same images.
        train_x, train_y, test_x, test_y = _validation_split(train_x, train_y, cfg.validation_fraction, cfg.seed)
        evaluated_on = "validation"
    if cfg.eval_test_samples is not None and cfg.eval_test_samples < len(test_y):
        keep = torch.randperm(len(test_y), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.eval_test_samples]
        test_x, test_y = test_x[keep.sort().values], test_y[keep.sort().values]

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    zca = None
    if cfg.zca:
        from memdistill.distill.zca import ZCA
        m, s = torch.tensor(mean).reshape(1, -1, 1, 1), torch.tensor(std).reshape(1, -1, 1, 1)
        zca = ZCA.fit(train_x, cfg.zca_eps, to_input=lambda u8: (u8.float() / 255.0 - m) / s)
        zca.save(out / "zca.pt")
    memory = build_memory(cfg, train_x, train_y, num_classes, mean, std, zca).to(device)

    def make_network():
        return build_backbone(cfg.backbone, image_shape, num_classes)

    started = time.perf_counter()
    log: list[dict] = []
    if cfg.steps > 0:
        common = dict(unroll=cfg.unroll, inner_lr=cfg.inner_lr, inner_momentum=cfg.inner_momentum,
                      inner_batch=cfg.inner_batch, inner_sampling=cfg.inner_sampling,
                      real_batch_per_class=cfg.real_batch,
                      classes_per_step=cfg.classes_per_step, outer_optimizer=cfg.outer_optimizer,
                      outer_lr=cfg.outer_lr, outer_momentum=cfg.outer_momentum,
                      outer_lr_decay=cfg.outer_lr_decay, clip=cfg.clip,
                      augment=cfg.augment, checkpoint_every=cfg.checkpoint_every, seed=cfg.seed)
        if cfg.method == "dc":
            loops, steps = dc_loops(cfg.ipc)
            dc = GradientMatchingConfig(**common, match_loops=cfg.match_loops or loops,
                                        net_steps=steps if cfg.net_steps is None else cfg.net_steps,
                                        net_lr=cfg.net_lr)
            distiller = GradientMatchingDistiller(memory, make_network, train_x, train_y, mean, std, dc, device,
                                                  transform=zca)
        else:
            distiller = BPTTDistiller(memory, make_network, train_x, train_y, mean, std,
                                      BPTTConfig(**common, learn_inner_lr=cfg.learn_inner_lr), device,
                                      transform=zca)
        (out / "log.jsonl").write_text("")

        def keep(entry: dict) -> None:
            # the log and the memory so far at every logged step, so a long run that is stopped
            # leaves a memory to evaluate (evaluate-memory) or to go on from (--init FILE)
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(entry) + "\n")
            memory.save(out / "memory.pt")

        log = distiller.run(cfg.steps, progress=progress, log_every=cfg.log_every, callback=keep)
        atomic_write(out / "log.jsonl", "".join(json.dumps(e) + "\n" for e in log))
    distill_s = time.perf_counter() - started
    memory.save(out / "memory.pt")
    peak_distill = _peak_rss_mb()
    from memdistill.distill.pictures import class_similarity_heatmap, recalled_grid
    recalled_grid(memory, out / "recalled.png", class_names=source.class_names)
    if isinstance(memory, AddressableMemory):
        class_similarity_heatmap(memory, out / "similarity.png", class_names=source.class_names)

    schedule = TrainSchedule(epochs=cfg.eval_epochs, lr=cfg.eval_lr, batch_size=cfg.eval_batch,
                             augment=cfg.eval_augment)
    test = HeldOutImages(test_x, test_y, mean, std, zca)
    evaluation = evaluate_memory(memory, make_network, test, cfg.eval_networks, schedule,
                                 seed=cfg.seed, progress=progress)
    step_seconds = [e["seconds"] for e in log]
    summary = {
        "dataset": cfg.dataset, "memory": cfg.memory, "method": cfg.method, "ipc": cfg.ipc,
        "accuracy": {"mean": round(evaluation["mean"], 4), "std": round(evaluation["std"], 4),
                     "per_network": evaluation["accuracies"]},
        "memory_bytes": int(memory.nbytes),
        "image_budget_bytes": int(4 * cfg.ipc * num_classes * image_shape[0] * image_shape[1] * image_shape[2]),
        "recalled_samples": evaluation["train_samples"],
        "evaluated_on": evaluated_on,
        "distill_s": round(distill_s, 3),
        "outer_step_s": round(sum(step_seconds) / len(step_seconds), 3) if step_seconds else None,
        "eval_s": evaluation["seconds"],
        "peak_rss_mb_distill": round(peak_distill, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "bptt_stored_mb": log[-1].get("stored_mb") if log else None,
        "final_outer_loss": log[-1]["outer_loss"] if log else None,
        # the learned α_θ after the last outer step (the evaluation trains with --eval-lr regardless)
        "learned_inner_lr": distiller.inner_lr if cfg.steps > 0 and cfg.learn_inner_lr else None,
        "evaluation": {k: evaluation[k] for k in ("n_networks", "test_samples", "schedule")},
        "zca": None if zca is None else {"eps": zca.eps, "file": "zca.pt"},
        "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "config": asdict(cfg),
    }
    if isinstance(memory, AddressableMemory):
        summary["addressable"] = {"bases": memory.num_bases, "recalls_per_class": memory.recalls_per_query,
                                  "downsample": memory.downsample}
    atomic_write(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def evaluate_memory_file(path: str | Path, dataset: str, n_networks: int = 5, epochs: int = 300,
                         lr: float = 0.01, batch_size: int = 256, backbone: str = "convnet",
                         seed: int = 0, test_samples: int | None = None, data_dir=None, cache_dir=None,
                         progress: bool = True, zca: str | Path | None = None, augment: str = "none") -> dict:
    """``memdistill evaluate-memory FILE``: the evaluation protocol on a saved memory."""
    from memdistill.data.scenarios import NORMALISATION
    from memdistill.data.sources import load_source
    from memdistill.distill.memories import load_memory

    if dataset not in DATASETS:
        raise ConfigError("--dataset", f"unknown value {dataset!r}; allowed: {', '.join(DATASETS)}")
    if backbone not in BACKBONES:
        raise ConfigError("--backbone", f"unknown value {backbone!r}; allowed: {', '.join(BACKBONES)}")
    if augment not in EVAL_AUGMENTATIONS:
        raise ConfigError("--eval-augment", f"unknown value {augment!r}; allowed: {', '.join(EVAL_AUGMENTATIONS)}")
    if n_networks < 1:
        raise ConfigError("--eval-networks", f"must be an integer >= 1 (got {n_networks})")
    memory = load_memory(path)
    transform = None
    if zca is not None:
        from memdistill.distill.zca import ZCA
        try:
            transform = ZCA.load(zca)
        except (OSError, ValueError, RuntimeError) as e:
            raise ConfigError("--zca", f"cannot read {zca}: {e}") from None
    source = load_source(dataset, data_dir=data_dir, cache_dir=cache_dir, seed=seed, progress=progress)
    test_x = torch.from_numpy(source.test.images.copy())
    test_y = torch.from_numpy(source.test.labels.copy())
    if tuple(test_x.shape[1:]) != memory.image_shape or len(source.class_names) != memory.num_classes:
        raise ConfigError("--dataset", f"{path} holds {memory.num_classes} classes of shape "
                                       f"{list(memory.image_shape)}; {dataset} has {len(source.class_names)} "
                                       f"of shape {list(test_x.shape[1:])}")
    if test_samples is not None and test_samples < len(test_y):
        keep = torch.randperm(len(test_y), generator=torch.Generator().manual_seed(seed))[:test_samples].sort().values
        test_x, test_y = test_x[keep], test_y[keep]
    mean, std = NORMALISATION[dataset]
    shape = memory.image_shape
    result = evaluate_memory(memory, lambda: build_backbone(backbone, shape, memory.num_classes),
                             HeldOutImages(test_x, test_y, mean, std, transform), n_networks,
                             TrainSchedule(epochs=epochs, lr=lr, batch_size=batch_size, augment=augment),
                             seed, progress)
    result["kind"] = memory.kind
    return result
