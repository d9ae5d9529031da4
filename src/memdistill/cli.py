"""``memdistill`` command line: run | sweep | distill | evaluate-memory | list | report.

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memdistill", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run continual-learning experiments",
                         argument_default=argparse.SUPPRESS)
    run.add_argument("--preset", help="preset name (see `memdistill list presets`) or YAML file")
    run.add_argument("--scenario", help=f"one of: {', '.join(SCENARIOS)} (default seq-digits)")
    run.add_argument("--method", nargs="+",
                     help=f"one or more of: {', '.join(METHODS)} (default er); METHOD+PLUGIN "
                          f"(e.g. er+ddn, er+label-smoothing:eps=0.5) adds a plug-in to that run only")
    run.add_argument("--backbone", help=f"one of: {', '.join(BACKBONES)} (default: the scenario's)")
    run.add_argument("--buffer", type=int, nargs="+", help="memory size(s) in samples (default 200)")
    run.add_argument("--buffer-policy", help=f"one of: {', '.join(BUFFERS)} (default reservoir)")
    run.add_argument("--seed", type=int, nargs="+", help="one or more seeds (default 0)")
    run.add_argument("--setting", help=f"one of: {', '.join(SETTINGS)}")
    run.add_argument("--online", dest="setting", action="store_const", const="online",
                     help="each stream sample seen once (same as --setting online)")
    run.add_argument("--offline", dest="setting", action="store_const", const="offline",
                     help="several epochs per task (same as --setting offline)")
    run.add_argument("--epochs", type=int, help="epochs per task (offline)")
    run.add_argument("--batch-size", type=int, help="stream batch size")
    run.add_argument("--replay-batch-size", type=int, help="samples replayed per step (default: batch size)")
    run.add_argument("--lr", type=float, help="learning rate (SGD)")
    run.add_argument("--momentum", type=float)
    run.add_argument("--weight-decay", type=float)
    run.add_argument("--n-tasks", type=int, help="number of tasks (scenario default otherwise)")
    run.add_argument("--samples-per-task", type=int, help="training samples per task (sub-sampled)")
    run.add_argument("--test-samples-per-task", type=int)
    run.add_argument("--class-order-seed", type=int, help="shuffle the class order with this seed")
    run.add_argument("--augment", dest="augment", action="store_true", help="crop + flip on")
    run.add_argument("--no-augment", dest="augment", action="store_false", help="augmentation off")
    run.add_argument("--device", help="auto, cpu, cuda, cuda:N (default auto)")
    run.add_argument("--precision", help=f"one of: {', '.join(PRECISIONS)} (default fp32)")
    run.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                     help="keep NCHW memory layout for convolutions")
    run.add_argument("--method-arg", dest="method_args", type=_method_arg, action="append",
                     metavar="KEY=VALUE", help="a method-specific option (repeatable)")
    run.add_argument("--plugin", help=f"plug-in for a replay method: {', '.join(PLUGINS)}")
    run.add_argument("--plugin-arg", dest="plugin_args", type=_method_arg, action="append",
                     metavar="KEY=VALUE", help="a plug-in option (repeatable), e.g. every=4")
    run.add_argument("--eval-batch-size", type=int)
    run.add_argument("--log-every", type=int, help="log losses every N steps")
    run.add_argument("--tensorboard", action="store_true",
                     help="also write scalars (losses, accuracy after each task, samples/s) to OUT/tb")
    run.add_argument("--wandb", metavar="PROJECT", help="also log the scalars to this W&B project")
    run.add_argument("--data-dir", help="where datasets are (also $MEMDISTILL_DATA)")
    run.add_argument("--cache-dir", help="decoded-array cache (also $MEMDISTILL_CACHE)")
    run.add_argument("--download", action="store_true", help="download missing datasets")
    run.add_argument("--out", help="run folder (default runs/<scenario>)")
    run.add_argument("--no-resume", dest="resume", action="store_false",
                     help="start over even if --out holds a checkpoint")
    run.add_argument("--no-progress", dest="progress", action="store_false")

    _add_distill_parsers(sub)
    _add_sweep_parser(sub)

    lst = sub.add_parser("list", help="list methods, scenarios, backbones, presets")
    lst.add_argument("what", nargs="?", choices=["methods", "plugins", "scenarios", "backbones", "presets"])

    rep = sub.add_parser("report", help="markdown table + heatmap from run folders")
    rep.add_argument("runs", nargs="+", help="run folders (searched recursively)")
    rep.add_argument("--out", help="folder for report.md and heatmap.png (default: the first folder)")
    return parser


def _add_sweep_parser(sub) -> None:
    s = sub.add_parser("sweep", help="run a grid of runs (GRID.yaml), locally, on Ray or on Slurm",
                       description="Run every combination of the options given as lists in GRID.yaml; "
                                   "finished runs are skipped, so run it again to finish an interrupted "
                                   "sweep. See docs/sweeps.md.")
    s.add_argument("grid", help="YAML file: run options, lists are swept (see docs/sweeps.md)")
    s.add_argument("--out", help="sweep folder (default runs/<grid file name>)")
    s.add_argument("--workers", type=int, default=1, help="local worker processes (default 1: in this process)")
    s.add_argument("--ray", metavar="auto|ADDRESS",
                   help="one Ray task per run; auto: a running cluster, else a local one")
    s.add_argument("--slurm-partition", help="submit each run as a Slurm job (needs submitit)")
    s.add_argument("--slurm-time", type=int, metavar="MIN", help="Slurm time limit per run in minutes")
    s.add_argument("--slurm-mem-gb", type=int, help="Slurm memory per run in GB")
    s.add_argument("--slurm-arg", type=_method_arg, action="append", default=[], metavar="KEY=VALUE",
                   help="another submitit parameter (repeatable), e.g. slurm_constraint=volta")
    s.add_argument("--threads-per-run", type=int,
                   help="torch threads (and Ray/Slurm CPUs) per run (default: cores // workers; 1 on Ray/Slurm)")
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
    slurm = None
    if args.slurm_partition or args.slurm_time or args.slurm_mem_gb or args.slurm_arg:
        slurm = dict(args.slurm_arg)
        for key, value in (("slurm_partition", args.slurm_partition), ("timeout_min", args.slurm_time),
                           ("mem_gb", args.slurm_mem_gb)):
            if value is not None:
                slurm[key] = value
    try:
        summaries = sweep.run_jobs(jobs, out, workers=args.workers, ray=args.ray, slurm=slurm,
                                   threads_per_run=args.threads_per_run, progress=args.progress)
    except sweep.RunsFailed as e:
        for name, message in e.failures.items():
            print(f"memdistill sweep: {name} failed: {message}", file=sys.stderr)
        print(f"memdistill sweep: {len(e.failures)} of {len(jobs)} runs failed; "
              f"run the same command again to finish", file=sys.stderr)
        return 1
    table = sweep.report_runs(jobs, summaries, out)
    print(table)
    print(f"wrote {out / 'report.md'} and {out / 'heatmap.png'}", file=sys.stderr)
    return 0


def _optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "all") else int(text)


def _optional_float(text: str) -> float | None:
    return None if text.lower() in ("none", "off") else float(text)


def _add_distill_parsers(sub) -> None:
    from memdistill.distill.augment import AUGMENTATIONS
    from memdistill.distill.bptt import OUTER_OPTIMIZERS
    from memdistill.distill.experiment import DATASETS, DISTILL_METHODS, INITS
    from memdistill.distill.memories import MEMORIES

    d = sub.add_parser("distill", help="distil a dataset into a memory and evaluate it",
                       argument_default=argparse.SUPPRESS)
    d.add_argument("--dataset", help=f"one of: {', '.join(DATASETS)} (default mnist)")
    d.add_argument("--memory", help=f"one of: {', '.join(MEMORIES)} (default addressable)")
    d.add_argument("--method", help=f"how the memory is learned: {', '.join(DISTILL_METHODS)} (default bptt)")
    d.add_argument("--ipc", type=int, help="budget in images per class (Eq. 4; default 1)")
    d.add_argument("--bases", type=int, help="addressable: number of bases K (default 16)")
    d.add_argument("--downsample", type=int, help="addressable: bases stored at 1/ds resolution (default 2)")
    d.add_argument("--init", help=f"start from {' or '.join(INITS)} (default real: real images as images/bases)")
    d.add_argument("--steps", type=int, help="outer steps (default 300; 0 = no distillation, e.g. random real)")
    d.add_argument("--unroll", type=int, help="inner SGD steps T per outer step (default 10)")
    d.add_argument("--inner-lr", type=float, help="inner SGD learning rate (default 0.01)")
    d.add_argument("--inner-momentum", type=float, help="inner SGD momentum (default 0.9; 0 = no momentum)")
    d.add_argument("--inner-batch", type=_optional_int, help="recalled samples per inner step (default all)")
    d.add_argument("--real-batch", type=int, help="real samples per class in the outer loss (default 32)")
    d.add_argument("--classes-per-step", type=_optional_int, help="labels sampled per outer step (default all)")
    d.add_argument("--outer-optimizer", help=f"one of: {', '.join(OUTER_OPTIMIZERS)} (default adam)")
    d.add_argument("--outer-lr", type=float, help="outer learning rate (default 0.01)")
    d.add_argument("--outer-momentum", type=float, help="outer SGD momentum (default 0.5)")
    d.add_argument("--clip", type=_optional_float, help="outer gradient-norm clip (default 2; none = off)")
    d.add_argument("--augment", help=f"one of: {', '.join(AUGMENTATIONS)} (default none)")
    d.add_argument("--checkpoint-every", type=_optional_int,
                   help="BPTT checkpoint interval k (default ceil(sqrt(T)); 1 = keep every step)")
    d.add_argument("--backbone", help=f"one of: {', '.join(BACKBONES)} (default convnet)")
    d.add_argument("--eval-networks", type=int, help="fresh networks trained on the memory (default 5)")
    d.add_argument("--eval-epochs", type=int, help="epochs per evaluation network (default 300)")
    d.add_argument("--eval-lr", type=float, help="evaluation SGD learning rate (default 0.01)")
    d.add_argument("--eval-batch", type=int, help="evaluation batch size (default 256)")
    d.add_argument("--eval-test-samples", type=_optional_int, help="test images used (default all)")
    d.add_argument("--seed", type=int)
    d.add_argument("--device", help="cpu, auto, cuda, cuda:N (default cpu)")
    d.add_argument("--data-dir", help="where datasets are (also $MEMDISTILL_DATA)")
    d.add_argument("--cache-dir", help="decoded-array cache (also $MEMDISTILL_CACHE)")
    d.add_argument("--log-every", type=int, help="log the outer loss every N outer steps (default 10)")
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
    e.add_argument("--eval-test-samples", type=_optional_int, default=None)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--data-dir")
    e.add_argument("--cache-dir")
    e.add_argument("--no-progress", dest="progress", action="store_false")


def cmd_distill(args: argparse.Namespace) -> int:
    import json

    from memdistill.distill.experiment import DistillConfig, run_distillation, validate

    if "scenario" in args or "preset" in args:
        from memdistill.distill.domain_experiment import run_from_args
        return run_from_args(args)
    options = {k: v for k, v in vars(args).items() if k in DistillConfig.option_names()}
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
                                  args.eval_test_samples, args.data_dir, args.cache_dir, args.progress)
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
                             resume=getattr(args, "resume", True))
        til = f", task-IL ACC {summary['task_il']['acc']:.2f}" if "task_il" in summary else ""
        print(f"[memdistill] {name}: class-IL ACC {summary['class_il']['acc']:.2f}, "
              f"FM {summary['class_il']['fm']:.2f}{til}, {summary['wall_s']:.1f} s", file=sys.stderr)
    runs = report.load_runs(folders)
    table = report.markdown_table(runs)
    atomic_write(out / "report.md", table)
    print(table)
    return 0


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if text and text.strip() else ""


def cmd_list(args: argparse.Namespace) -> int:
    sections = {
        "methods": [(n, _first_line(m.__doc__ or sys.modules[m.__module__].__doc__))
                    for n, m in METHODS.items()],
        "scenarios": [(n, f"{s.kind}, {s.source}, {s.default_tasks} tasks by default")
                      for n, s in SCENARIOS.items()],
        "plugins": [(n, _first_line(p.__doc__ or sys.modules[p.__module__].__doc__))
                    for n, p in PLUGINS.items()],
        "backbones": [(n, "") for n in BACKBONES],
        "presets": [(n, "") for n in preset_names()],
    }
    for section, rows in sections.items():
        if args.what not in (None, section):
            continue
        print(f"{section}:")
        for name, text in rows:
            print(f"  {name:<20} {text}".rstrip())
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
    handler = {"run": cmd_run, "distill": cmd_distill, "evaluate-memory": cmd_evaluate_memory,
               "list": cmd_list, "report": cmd_report, "sweep": cmd_sweep}[args.command]
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
    except KeyboardInterrupt:
        print("memdistill: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
