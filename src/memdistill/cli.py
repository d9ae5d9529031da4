"""``memdistill`` command line: run | sweep | compare | distill | evaluate-memory | list | report.

Bad input exits with status 2 and a one-line message naming the option and the
allowed values, before any output folder is created.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from memdistill import engine
from memdistill.config import (PRECISIONS, SETTINGS, ConfigError, RunConfig, load_preset, parse_method_spec,
                               parse_option, preset_names)
from memdistill.data.scenarios import SCENARIOS, ScenarioError
from memdistill.data.sources import DataError
from memdistill.distill.memories import MemoryFileError
from memdistill.memory import BUFFERS
from memdistill.methods import METHODS, PLUGINS
from memdistill.nets import BACKBONES
from memdistill.results import atomic_write

class UsageError(Exception):
    pass


def _method_arg(text: str) -> tuple[str, object]:
    try:
        return parse_option(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[1]) from None


def add_run_options(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """The options of one run (``memdistill run``); ``compare`` shares them but for ``skip``."""
    def add(*flags, **kwargs):
        if not any(f in skip for f in flags):
            parser.add_argument(*flags, **kwargs)

    add("--preset", help="preset name (see `memdistill list presets`) or YAML file")
    add("--scenario", help=f"one of: {', '.join(SCENARIOS)} (default seq-digits)")
    add("--method", nargs="+",
        help=f"one or more of: {', '.join(METHODS)} (default er); METHOD+PLUGIN "
             f"(e.g. er+ddn, er+label-smoothing:eps=0.5) adds a plug-in to that run only, "
             f"METHOD:KEY=VALUE (e.g. clser:plastic_prob=0.9+ddn) sets that run's method options")
    add("--backbone", help=f"one of: {', '.join(BACKBONES)} (default: the scenario's)")
    add("--buffer", type=int, nargs="+", help="memory size(s) in samples (default 200)")
    add("--buffer-policy", help=f"one of: {', '.join(BUFFERS)} (default reservoir)")
    add("--seed", type=int, nargs="+", help="one or more seeds (default 0)")
    add("--setting", help=f"one of: {', '.join(SETTINGS)}")
    add("--online", dest="setting", action="store_const", const="online",
        help="each stream sample seen once (same as --setting online)")
    add("--offline", dest="setting", action="store_const", const="offline",
        help="several epochs per task (same as --setting offline)")
    add("--epochs", type=int, help="epochs per task (offline)")
    add("--batch-size", type=int, help="stream batch size")
    add("--replay-batch-size", type=int, help="samples replayed per step (default: batch size)")
    add("--glances", type=int, help="optimiser steps on each stream batch, memory updated once "
                                     "(La-MAML's --glances; default 1)")
    add("--lr", type=float, help="learning rate (SGD)")
    add("--lr-milestones", type=int, nargs="+", metavar="EPOCH",
        help="multiply the lr by --lr-gamma at these epochs of every task (e.g. 100 150 200)")
    add("--lr-gamma", type=float, help="lr factor at each milestone (default 0.1)")
    add("--momentum", type=float)
    add("--weight-decay", type=float)
    add("--n-tasks", type=int, help="number of tasks (scenario default otherwise)")
    add("--samples-per-task", type=int, help="training samples per task (sub-sampled)")
    add("--test-samples-per-task", type=int)
    add("--class-order-seed", type=_int_or_seed, help="shuffle the class order with this seed "
                                                       "('seed': the run's --seed)")
    add("--augment", dest="augment", action="store_true", help="crop + flip on")
    add("--no-augment", dest="augment", action="store_false", help="augmentation off")
    add("--device", help="auto, cpu, cuda, cuda:N (default auto)")
    add("--precision", help=f"one of: {', '.join(PRECISIONS)} (default fp32)")
    add("--no-channels-last", dest="channels_last", action="store_false",
        help="keep NCHW memory layout for convolutions")
    add("--method-arg", dest="method_args", type=_method_arg, action="append",
        metavar="KEY=VALUE", help="a method-specific option (repeatable)")
    add("--plugin", help=f"plug-in for a replay method: {', '.join(PLUGINS)}")
    add("--plugin-arg", dest="plugin_args", type=_method_arg, action="append",
        metavar="KEY=VALUE", help="a plug-in option (repeatable), e.g. every=4")
    add("--eval-batch-size", type=int)
    add("--log-every", type=int, help="log losses every N steps")
    add("--tensorboard", action="store_true",
        help="also write scalars (losses, accuracy after each task, samples/s) to OUT/tb")
    add("--wandb", metavar="PROJECT", help="also log the scalars to this W&B project")
    add("--data-dir", help="where datasets are (also $MEMDISTILL_DATA)")
    add("--cache-dir", help="decoded-array cache (also $MEMDISTILL_CACHE)")
    add("--download", action="store_true", help="download missing datasets")
    add("--out", help="run folder (default runs/<scenario>)")
    add("--no-resume", dest="resume", action="store_false",
        help="start over even if --out holds a checkpoint")
    add("--no-progress", dest="progress", action="store_false",
        help="no progress bars (a line per finished task is still printed)")
    add("--no-figures", dest="figures", action="store_false",
        help="skip each run's probability/confusion/per-task figures (seconds per run on a CPU)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memdistill", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run continual-learning experiments",
                         argument_default=argparse.SUPPRESS)
    add_run_options(run)

    cmp = sub.add_parser("compare", help="every memory kind at equal byte budgets: one table, one plot",
                         argument_default=argparse.SUPPRESS)
    cmp.add_argument("--budget", nargs="+", help="budgets in bytes: 51200, 50KB, 50KiB, 1.5MB (KB = 1000 B)")
    cmp.add_argument("--budget-ipc", dest="budget_ipc", type=int, nargs="+",
        help="budgets as real images per class (IPC x classes x exemplar bytes)")
    from memdistill.budget import KINDS
    cmp.add_argument("--kinds", nargs="+", help=f"memory kinds (default: all that apply): {', '.join(KINDS)}")
    cmp.add_argument("--kind-arg", dest="kind_args", type=_kind_arg, action="append", metavar="KIND:KEY=VALUE",
        help="an option of one kind's method (plug-in for exemplars+ddn), e.g. "
                          "addressable:distill_steps=20 (repeatable)")
    cmp.add_argument("--seed", type=int, nargs="+", help="seeds (default 0)")
    cmp.add_argument("--out", help="output folder (default runs/compare-<scenario>)")
    add_executor_options(cmp)
    cmp.add_argument("--dry-run", dest="dry_run", action="store_true",
        help="print the planned runs and their bytes, run nothing")
    cmp.add_argument("--report-only", dest="report_only", action="store_true",
        help="run nothing: write the table and plot from the runs finished so far")
    cmp.add_argument("--include", nargs="+", metavar="COMPARE_JSON",
        help="other comparisons' compare.json files (runs made into other folders): their rows "
             "fill the table and plot where this folder has no finished run")
    add_run_options(cmp, skip=("--method", "--buffer", "--seed", "--method-arg", "--plugin", "--plugin-arg",
                               "--out", "--no-resume"))

    _add_distill_parsers(sub)
    _add_sweep_parser(sub)

    lst = sub.add_parser("list", help="list methods, plugins, scenarios, backbones, presets, memory kinds; "
                                      "or one method's / plug-in's options")
    lst.add_argument("what", nargs="?", metavar="SECTION|METHOD|PLUGIN",
                     help=f"one of {', '.join(LIST_SECTIONS)}, or a method or plug-in name: its options and defaults")

    rep = sub.add_parser("report", help="markdown table + heatmap from run folders")
    rep.add_argument("runs", nargs="+", help="run folders (searched recursively)")
    rep.add_argument("--out", help="folder for report.md and heatmap.png (default: the first folder)")
    return parser


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    """Where the runs of a sweep or a compare execute (``sweep.run_jobs``)."""
    parser.add_argument("--workers", type=int, default=1,
                        help="local worker processes (default 1: in this process)")
    parser.add_argument("--ray", metavar="auto|ADDRESS",
                        help="one Ray task per run; auto: a running cluster, else a local one")
    parser.add_argument("--slurm-partition", help="submit each run as a Slurm job (needs submitit)")
    parser.add_argument("--slurm-time", type=int, metavar="MIN", help="Slurm time limit per run in minutes")
    parser.add_argument("--slurm-mem-gb", type=int, help="Slurm memory per run in GB")
    parser.add_argument("--slurm-arg", type=_method_arg, action="append", default=[], metavar="KEY=VALUE",
                        help="another submitit parameter (repeatable), e.g. slurm_constraint=volta")
    parser.add_argument("--threads-per-run", type=int,
                        help="torch threads (and Ray/Slurm CPUs) per run (default: cores // workers; 1 on Ray/Slurm)")


EXECUTOR_FLAGS = ("workers", "ray", "slurm_partition", "slurm_time", "slurm_mem_gb", "slurm_arg", "threads_per_run")


def executor_options(args: argparse.Namespace) -> dict:
    """``sweep.run_jobs`` keyword arguments from the flags of :func:`add_executor_options`."""
    flags = {k: getattr(args, k, None) for k in EXECUTOR_FLAGS}
    slurm = None
    if flags["slurm_partition"] or flags["slurm_time"] or flags["slurm_mem_gb"] or flags["slurm_arg"]:
        slurm = dict(flags["slurm_arg"] or [])
        for key, value in (("slurm_partition", flags["slurm_partition"]), ("timeout_min", flags["slurm_time"]),
                           ("mem_gb", flags["slurm_mem_gb"])):
            if value is not None:
                slurm[key] = value
    return {"workers": flags["workers"] or 1, "ray": flags["ray"], "slurm": slurm,
            "threads_per_run": flags["threads_per_run"]}


def _report_failures(command: str, error, total: int) -> int:
    for name, message in error.failures.items():
        print(f"memdistill {command}: {name} failed: {message}", file=sys.stderr)
    print(f"memdistill {command}: {len(error.failures)} of {total} runs failed; "
          f"run the same command again to finish", file=sys.stderr)
    return 1


def _add_sweep_parser(sub) -> None:
    s = sub.add_parser("sweep", help="run a grid of runs (GRID.yaml), locally, on Ray or on Slurm",
                       description="Run every combination of the options given as lists in GRID.yaml; "
                                   "finished runs are skipped, so run it again to finish an interrupted "
                                   "sweep. See docs/sweeps.md.")
    s.add_argument("grid", help="YAML file: run options, lists are swept (see docs/sweeps.md)")
    s.add_argument("--out", help="sweep folder (default runs/<grid file name>)")
    add_executor_options(s)
    s.add_argument("--dry-run", action="store_true", help="print the runs and their folders, run nothing")
    s.add_argument("--no-progress", dest="progress", action="store_false")


def cmd_sweep(args: argparse.Namespace) -> int:
    from memdistill import sweep

    jobs = sweep.load_grid(args.grid)
    out = Path(args.out or f"runs/{Path(args.grid).stem}")
    if args.dry_run:
        sweep.check_jobs(jobs)
        for job in jobs:
            print(f"{out / job.name}")
        print(f"{len(jobs)} runs", file=sys.stderr)
        return 0
    try:
        summaries = sweep.run_jobs(jobs, out, progress=args.progress, **executor_options(args))
    except sweep.RunsFailed as e:
        return _report_failures("sweep", e, len(jobs))
    table = sweep.report_runs(jobs, summaries, out)
    print(table)
    print(f"wrote {out / 'report.md'} and {out / 'heatmap.png'}", file=sys.stderr)
    return 0


def _int_or_seed(text: str) -> int | str:
    return text if text == "seed" else int(text)


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "all") else int(text)


def _optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "off") else float(text)


def _add_distill_parsers(sub) -> None:
    from memdistill.distill.augment import AUGMENTATIONS
    from memdistill.distill.bptt import OUTER_LR_DECAYS, OUTER_OPTIMIZERS
    from memdistill.distill.experiment import DATASETS, DISTILL_METHODS, INITS
    from memdistill.distill.memories import MEMORIES

    d = sub.add_parser("distill", help="distil a dataset into a memory and evaluate it",
                       argument_default=argparse.SUPPRESS)
    d.add_argument("--dataset", help=f"one of: {', '.join(DATASETS)} (default mnist)")
    d.add_argument("--memory", help=f"one of: {', '.join(MEMORIES)} (default addressable)")
    d.add_argument("--method", help=f"how the memory is learned: {', '.join(DISTILL_METHODS)} (default bptt; "
                                    "dc = gradient matching, DC's public settings: --outer-optimizer sgd "
                                    "--outer-lr 0.1 --outer-momentum 0.5 --real-batch 256)")
    d.add_argument("--ipc", type=int, help="budget in images per class (Eq. 4; default 1)")
    d.add_argument("--bases", type=int, help="addressable: number of bases K (default 16)")
    d.add_argument("--downsample", type=int, help="addressable: bases stored at 1/ds resolution (default 2)")
    d.add_argument("--init", help=f"start from {', '.join(INITS)} (default real: random real images as images/bases; "
                                  "mean: means of random groups of each class's images, the class mean at "
                                  "one per class), or from a memory.pt a run saved, to go on distilling it")
    d.add_argument("--steps", type=int, help="outer steps (default 300; 0 = no distillation, e.g. random real)")
    d.add_argument("--unroll", type=int, help="inner SGD steps T per outer step (default 10)")
    d.add_argument("--inner-lr", type=float, help="inner SGD learning rate (default 0.01)")
    d.add_argument("--inner-momentum", type=float, help="inner SGD momentum (default 0.9; 0 = no momentum)")
    d.add_argument("--learn-inner-lr", action="store_true",
                   help="learn the inner SGD learning rate with the memory, starting from --inner-lr "
                        "(ours; the paper keeps it fixed; the evaluation still trains with --eval-lr)")
    d.add_argument("--inner-batch", type=_optional_int, help="recalled samples per inner step (default all)")
    d.add_argument("--inner-sampling", help="how --inner-batch draws them: per-class (default: the same number "
                                            "from every class, as the public code) or uniform")
    d.add_argument("--real-batch", type=int, help="real samples per class in the outer loss (default 32)")
    d.add_argument("--classes-per-step", type=_optional_int, help="labels sampled per outer step (default all)")
    d.add_argument("--outer-optimizer", help=f"one of: {', '.join(OUTER_OPTIMIZERS)} (default adam)")
    d.add_argument("--outer-lr", type=float, help="outer learning rate (default 0.01)")
    d.add_argument("--outer-momentum", type=float, help="outer SGD momentum (default 0.5)")
    d.add_argument("--outer-lr-decay", help=f"one of: {', '.join(OUTER_LR_DECAYS)} (default none; cosine: "
                                            "the outer rate decays to 0 over --steps)")
    d.add_argument("--clip", type=_optional_float, help="outer gradient-norm clip (default 2; none = off)")
    d.add_argument("--augment", help=f"one of: {', '.join(AUGMENTATIONS)} (default none)")
    d.add_argument("--checkpoint-every", type=_optional_int,
                   help="BPTT checkpoint interval k (default ceil(sqrt(T)); 1 = keep every step)")
    d.add_argument("--match-loops", type=_optional_int,
                   help="dc: gradient matchings per outer step (default DC's: 1, 10, 50 for ipc 1, <=10, more)")
    d.add_argument("--net-steps", type=_optional_int,
                   help="dc: network SGD steps between matchings (default DC's: 1, 50, 10)")
    d.add_argument("--net-lr", type=float, help="dc: the network's SGD lr between matchings (default 0.01)")
    d.add_argument("--zca", action="store_true",
                   help="ZCA-whiten the input space (real, memory and test images); saved as zca.pt")
    d.add_argument("--zca-eps", type=float, help="ZCA regulariser added to the eigenvalues (default 0.1)")
    d.add_argument("--backbone", help=f"one of: {', '.join(BACKBONES)} (default convnet)")
    d.add_argument("--eval-networks", type=int, help="fresh networks trained on the memory (default 5)")
    d.add_argument("--eval-epochs", type=int, help="epochs per evaluation network (default 300)")
    d.add_argument("--eval-lr", type=float, help="evaluation SGD learning rate (default 0.01)")
    d.add_argument("--eval-batch", type=int, help="evaluation batch size (default 256)")
    d.add_argument("--eval-augment", help="evaluation networks' training augmentation: none (default) or "
                                          "crop-scale-rotate (DC's MNIST evaluation protocol)")
    d.add_argument("--eval-test-samples", type=_optional_int, help="test images used (default all)")
    d.add_argument("--validation-fraction", type=float,
                   help="hold out this share of each class's training images, distil on the rest and "
                        "evaluate on the held-out ones instead of the test split (default 0; the paper "
                        "chooses the number of bases on 0.1)")
    d.add_argument("--seed", type=int)
    d.add_argument("--device", help="cpu, auto, cuda, cuda:N (default cpu)")
    d.add_argument("--data-dir", help="where datasets are (also $MEMDISTILL_DATA)")
    d.add_argument("--cache-dir", help="decoded-array cache (also $MEMDISTILL_CACHE)")
    d.add_argument("--log-every", type=int, help="log the outer loss every N outer steps, and save the memory "
                                                 "so far (default 10)")
    d.add_argument("--out", help="run folder (default runs/distill-<dataset>-<memory>-ipc<N>)")
    d.add_argument("--no-progress", dest="progress", action="store_false")
    from memdistill.distill.domain_experiment import add_arguments as add_domain_arguments
    add_domain_arguments(d)   # --scenario ...: domain-incremental distillation (issue 5)

    e = sub.add_parser("evaluate-memory", help="train fresh networks on a memory file, report accuracy")
    e.add_argument("file", help="a memory.pt written by `memdistill distill`")
    e.add_argument("--dataset", default="mnist", help=f"test split of: {', '.join(DATASETS)} (default mnist)")
    e.add_argument("--backbone", default="convnet")
    e.add_argument("--eval-networks", type=int, default=5)
    e.add_argument("--eval-epochs", type=int, default=300)
    e.add_argument("--eval-lr", type=float, default=0.01)
    e.add_argument("--eval-batch", type=int, default=256)
    e.add_argument("--eval-augment", default="none",
                   help="none (default) or crop-scale-rotate (DC's MNIST evaluation protocol)")
    e.add_argument("--eval-test-samples", type=_optional_int, default=None)
    e.add_argument("--zca", help="the zca.pt of a memory distilled with --zca (test images are whitened alike)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--data-dir")
    e.add_argument("--cache-dir")
    e.add_argument("--no-progress", dest="progress", action="store_false")


def cmd_distill(args: argparse.Namespace) -> int:
    import json

    from memdistill.distill.experiment import TABLE_PRESETS, DistillConfig, run_distillation, run_table, validate

    options = {k: v for k, v in vars(args).items() if k in DistillConfig.option_names()}
    if getattr(args, "preset", None) in TABLE_PRESETS and "scenario" not in args:
        out = Path(getattr(args, "out", None) or f"runs/{args.preset}")
        run_table(args.preset, options, out, progress=getattr(args, "progress", True))
        return 0
    if "scenario" in args or "preset" in args:
        from memdistill.distill.domain_experiment import run_from_args
        return run_from_args(args)
    cfg = DistillConfig(**options)
    validate(cfg)
    out = Path(getattr(args, "out", None) or f"runs/distill-{cfg.dataset}-{cfg.memory}-ipc{cfg.ipc}")
    summary = run_distillation(cfg, out, progress=getattr(args, "progress", True))
    print(json.dumps({k: summary[k] for k in ("dataset", "memory", "ipc", "accuracy", "memory_bytes",
                                              "distill_s", "outer_step_s", "peak_rss_mb")}))
    print(f"wrote {out / 'memory.pt'} and {out / 'summary.json'}", file=sys.stderr)
    return 0


def cmd_evaluate_memory(args: argparse.Namespace) -> int:
    import json

    from memdistill.distill.experiment import evaluate_memory_file

    result = evaluate_memory_file(args.file, args.dataset, args.eval_networks, args.eval_epochs,
                                  args.eval_lr, args.eval_batch, args.backbone, args.seed,
                                  args.eval_test_samples, args.data_dir, args.cache_dir, args.progress,
                                  zca=args.zca, augment=args.eval_augment)
    print(json.dumps(result))
    return 0


def _jobs(args: argparse.Namespace) -> list:
    """One job (folder name, RunConfig) per combination of the options given several values."""
    from memdistill.sweep import DICT_OPTIONS, expand

    options = {}
    if "preset" in args:
        options.update(load_preset(args.preset))
    given = {k: v for k, v in vars(args).items()
             if k not in ("command", "preset", "out", "resume", "progress")}
    for key in DICT_OPTIONS:
        if key in given:
            given[key] = {**options.get(key, {}), **dict(given[key])}
    options.update(given)
    return expand(options)


def cmd_run(args: argparse.Namespace) -> int:
    from memdistill import report

    jobs = _jobs(args)
    configs, names = [job.config for job in jobs], [job.name for job in jobs]
    out = Path(getattr(args, "out", None) or f"runs/{configs[0].scenario}")
    progress = getattr(args, "progress", True)
    # Validate every run and load its data before writing anything.
    prepared = [engine.prepare(cfg, progress=progress) for cfg in configs]
    folders = [out] if len(configs) == 1 else [out / name for name in names]
    for (cfg, scenario, _), folder, name in zip(prepared, folders, names):
        print(f"[memdistill] {name}: {cfg.scenario} / {cfg.method}{'+' + cfg.plugin if cfg.plugin else ''} / {cfg.backbone} / "
              f"buffer {cfg.buffer} / {cfg.setting} -> {folder}", file=sys.stderr)
        summary = engine.run(cfg, folder, scenario=scenario, progress=progress,
                             resume=getattr(args, "resume", True), task_lines=True)
        til = f", task-IL ACC {summary['task_il']['acc']:.2f}" if "task_il" in summary else ""
        print(f"[memdistill] {name}: {report.accuracy_label(cfg.scenario)} ACC {summary['class_il']['acc']:.2f}, "
              f"FM {summary['class_il']['fm']:.2f}{til}, {summary['wall_s']:.1f} s", file=sys.stderr)
    runs = report.load_runs(folders)
    table = report.markdown_table(runs)
    atomic_write(out / "report.md", table)
    print(table)
    return 0


def _kind_arg(text: str) -> tuple[str, str, object]:
    kind, sep, rest = text.partition(":")
    if not sep or not kind.strip():
        raise argparse.ArgumentTypeError(f"expected KIND:KEY=VALUE (got {text!r})")
    key, value = _method_arg(rest)
    return kind.strip(), key, value


def cmd_compare(args: argparse.Namespace) -> int:
    from memdistill import sweep
    from memdistill.compare import CompareSpec, run_compare

    options = dict(load_preset(args.preset)) if "preset" in args else {}
    given = {k: v for k, v in vars(args).items()
             if k not in ("command", "preset", "out", "progress", "dry_run", "report_only", "kind_args",
                          "include", *EXECUTOR_FLAGS)}
    kind_args = {k: dict(v) for k, v in (options.get("kind_args") or {}).items()}
    for kind, key, value in getattr(args, "kind_args", []):
        kind_args.setdefault(kind, {})[key] = value
    if "budget_ipc" in given:
        options.pop("budget", None)     # a budget flag replaces the preset's budgets of either form
    if "budget" in given:
        options.pop("budget_ipc", None)
    options.update(given)
    options["kind_args"] = kind_args
    spec = CompareSpec.from_options(options)
    out = Path(getattr(args, "out", None) or f"runs/compare-{spec.run_options.get('scenario', 'seq-digits')}")
    try:
        records = run_compare(spec, out, progress=getattr(args, "progress", True),
                              dry_run=getattr(args, "dry_run", False),
                              report_only=getattr(args, "report_only", False),
                              include=getattr(args, "include", ()), **executor_options(args))
    except sweep.RunsFailed as e:
        return _report_failures("compare", e, len(e.summaries))
    if records:
        print((out / "compare.md").read_text(), end="")
        print(f"wrote {out / 'compare.md'} and {out / 'compare.png'}", file=sys.stderr)
    return 0


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if text and text.strip() else ""


LIST_SECTIONS = ("methods", "plugins", "scenarios", "backbones", "presets", "kinds")


def _list_options(kind: str, name: str, cls) -> int:
    """A method's or plug-in's description and its options with their defaults."""
    flag = "--method-arg KEY=VALUE" if kind == "method" else f"--plugin-arg KEY=VALUE, or --method METHOD+{name}:KEY=VALUE"
    print(f"{kind} {name}: {_first_line(cls.__doc__ or sys.modules[cls.__module__].__doc__)}")
    options = getattr(cls, "options", {}) or {}
    if not options:
        print("  no options")
        return 0
    print(f"options ({flag}), with their defaults:")
    for key, value in options.items():
        print(f"  {key:<22} {value!r}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from memdistill.budget import KINDS
    if args.what in METHODS:
        return _list_options("method", args.what, METHODS[args.what])
    if args.what in PLUGINS:
        return _list_options("plugin", args.what, PLUGINS[args.what])
    if args.what is not None and args.what not in LIST_SECTIONS:
        raise ConfigError("SECTION|METHOD|PLUGIN", f"unknown section, method or plug-in {args.what!r}; allowed: "
                                  f"{', '.join(LIST_SECTIONS)}, a method ({', '.join(METHODS)}) "
                                  f"or a plug-in ({', '.join(PLUGINS)})")
    sections = {
        "methods": [(n, _first_line(m.__doc__ or sys.modules[m.__module__].__doc__))
                    for n, m in METHODS.items()],
        "scenarios": [(n, f"{s.kind}, {s.source}, {s.default_tasks} tasks by default")
                      for n, s in SCENARIOS.items()],
        "plugins": [(n, _first_line(p.__doc__ or sys.modules[p.__module__].__doc__))
                    for n, p in PLUGINS.items()],
        "backbones": [(n, "") for n in BACKBONES],
        "presets": [(n, "") for n in preset_names()],
        "kinds": [(n, k.description) for n, k in KINDS.items()],
    }
    for section, rows in sections.items():
        if args.what not in (None, section):
            continue
        print(f"{section}:")
        for name, text in rows:
            print(f"  {name:<24} {text}".rstrip())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from memdistill import report

    runs = report.load_runs(args.runs)
    out = Path(args.out or args.runs[0])
    table = report.markdown_table(runs)
    atomic_write(out / "report.md", table)
    report.heatmap(runs, out / "heatmap.png")
    print(table)
    print(f"wrote {out / 'report.md'} and {out / 'heatmap.png'}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = {"run": cmd_run, "sweep": cmd_sweep, "compare": cmd_compare, "distill": cmd_distill,
               "evaluate-memory": cmd_evaluate_memory, "list": cmd_list, "report": cmd_report}[args.command]
    try:
        return handler(args)
    except (ConfigError, ScenarioError) as e:
        option = getattr(e, "option", "")
        message = str(e)
        if option and not message.startswith(option):
            message = f"{option}: {message}"
        print(f"memdistill {args.command}: error: {message}", file=sys.stderr)
    except (DataError, FileNotFoundError, MemoryFileError) as e:
        print(f"memdistill {args.command}: error: {e}", file=sys.stderr)
    except FloatingPointError as e:     # a method that saw its training diverge says why
        print(f"memdistill {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.command == "distill" and "scenario" not in args and "preset" not in args:
            # a distillation keeps its memory at every logged step; it does not resume itself
            out = getattr(args, "out", None) or "the run folder"
            print(f"memdistill distill: interrupted; the memory of the last logged step is in {out}/memory.pt "
                  f"(evaluate it with evaluate-memory, or go on with --init)", file=sys.stderr)
        else:
            print("memdistill: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
