"""Grids of runs: expansion into jobs, and the executors that run them.

A grid is a mapping of run options (the keys of a preset); every option whose
value is a list is swept, and the runs are the cartesian product.  A ``grid:``
section says explicitly what is swept (needed nowhere, but clear), and
``base:`` / ``preset:`` give the fixed options::

    scenario: seq-digits             # or:  base: {scenario: seq-digits, epochs: 1}
    method: [finetune, er, er+ddn]   #      grid: {method: [finetune, er], seed: [0, 1]}
    seed: [0, 1]

Each run gets a folder under the sweep's out dir named by what it is: the
scenario and other options when they vary, always the method (with its
plug-in) and the seed, e.g. ``seq-digits/er+ddn/buf100/seed0``.

``run_jobs`` runs jobs in this process, in local worker processes, as Ray tasks
or as Slurm jobs (submitit).  A run whose folder holds a summary written under the
same options is skipped; one holding a checkpoint resumes (the engine does
that), so running an interrupted sweep again finishes it.  Every executor sets
torch's thread count in the process that runs a job, because floating-point
results can depend on it: the same jobs with the same ``threads_per_run`` give
the same summaries whichever executor runs them.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import re
import sys
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from memdistill import engine
from memdistill.config import ConfigError, RunConfig, load_preset, parse_method_spec
from memdistill.results import RunFolder

# Summary keys that measure the machine, not the result.
TIMING_KEYS = ("wall_s", "train_s", "eval_s", "samples_per_s", "peak_mem_mb", "device")

# Options whose value is a mapping: merged (not replaced) when a grid overrides a preset.
DICT_OPTIONS = ("method_args", "plugin_args")
# Options whose single value is a list: a flat list is that value; sweep with a list of lists.
LIST_OPTIONS = ("lr_milestones",)

# Test-only: "RUN_NAME@TASK" makes a local worker kill itself (SIGKILL) right after
# the checkpoint of TASK of that run, as a crashed machine would.  Read only in
# worker processes, never in the process that called run_jobs.
KILL_HOOK_ENV = "MEMDISTILL_TEST_KILL_RUN"


@dataclass
class Job:
    name: str            # folder relative to the sweep's out dir
    config: RunConfig


class RunsFailed(Exception):
    """Some runs failed; the others finished.  ``summaries`` has None for the failed."""

    def __init__(self, failures: dict[str, str], summaries: list[dict | None]):
        super().__init__(f"{len(failures)} of {len(summaries)} runs failed")
        self.failures = failures
        self.summaries = summaries


def comparable(summary: dict) -> dict:
    """A summary without the keys that depend on the machine and the moment."""
    return {k: v for k, v in summary.items() if k not in TIMING_KEYS}


# -- expansion -------------------------------------------------------------------

_FIELD_ORDER = [f.name for f in dataclasses.fields(RunConfig)]


def expand(options: dict[str, Any], grid: dict[str, list] | None = None, source: str = "options") -> list[Job]:
    """One job per combination of the swept options (``grid`` plus every list in ``options``).

    A method spec ``METHOD[:k=v,...][+PLUGIN[:k=v,...]]`` gives that run its own method options and
    plug-in (``config.parse_method_spec``), so one grid can mix runs with and without a plug-in.
    """
    options = dict(options)
    grid = dict(grid or {})
    for key, value in list(options.items()):
        if key in LIST_OPTIONS and isinstance(value, list) and not any(isinstance(v, list) for v in value):
            continue
        if isinstance(value, list):
            grid.setdefault(key, options.pop(key))
        elif key in grid:
            options.pop(key)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(key, f"a swept option needs a non-empty list of values (got {values!r})")
    keys = sorted(grid, key=lambda k: _FIELD_ORDER.index(k) if k in _FIELD_ORDER else -1)
    varying = [k for k in keys if len(grid[k]) > 1]
    several_methods = len(grid.get("method", [])) > 1
    plugin_given = "plugin" in options or "plugin" in grid

    jobs = []
    for values in itertools.product(*(grid[k] for k in keys)):
        combo = dict(zip(keys, values))
        run_options = {**options, **combo}
        spec = str(run_options.get("method", "er"))
        method, method_args, plugin, spec_args = parse_method_spec(spec)
        run_options["method"] = method
        if method_args:   # "clser:plastic_prob=0.9": options for this run's method only
            run_options["method_args"] = {**run_options.get("method_args", {}), **method_args}
        if plugin is not None:   # "er+ddn": a plug-in for this run only, so one sweep mixes both
            if run_options.get("plugin") not in (None, plugin):
                raise ConfigError("--plugin", f"{spec} names plugin {plugin}, but --plugin is "
                                              f"{run_options['plugin']}; give one of them")
            run_options.update(method=method, plugin=plugin,
                               plugin_args={**run_options.get("plugin_args", {}), **spec_args})
        elif several_methods and not plugin_given:
            run_options.pop("plugin_args", None)   # plug-in options belong to the "+" runs
        cfg = RunConfig.from_dict(run_options, source=source)
        jobs.append(Job(_folder_name(cfg, combo, method_args, spec_args, varying), cfg))
    seen: dict[str, int] = {}
    for job in jobs:
        if job.name in seen:
            raise ConfigError("grid", f"two runs would share the folder {job.name}; "
                                      f"give each swept value once")
        seen[job.name] = 1
    return jobs


def _folder_name(cfg: RunConfig, combo: dict, method_args: dict, spec_args: dict, varying: list[str]) -> str:
    label = cfg.method + "".join(f"-{k}{v}" for k, v in method_args.items())
    if cfg.plugin:
        label += f"+{cfg.plugin}" + "".join(f"-{k}{v}" for k, v in spec_args.items())
    parts = [str(cfg.scenario)] if "scenario" in varying else []
    parts.append(label)
    for key in varying:
        if key in ("scenario", "method", "plugin", "seed"):
            continue
        value = combo[key]
        if isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in value.items()) or "none"
        parts.append(f"buf{value}" if key == "buffer" else f"{key}-{value}")
    parts.append(f"seed{cfg.seed}")
    return "/".join(re.sub(r"[^A-Za-z0-9._+=,-]", "_", p) for p in parts)


def load_grid(path: str | os.PathLike) -> list[Job]:
    """The jobs of a GRID.yaml (see the module docstring for the format)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("GRID", f"no grid file {str(path)!r}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError("GRID", f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError("GRID", f"{path} must be a mapping of option: value or [values]")
    data = dict(data)
    grid = data.pop("grid", {})
    base = data.pop("base", {})
    for key, value in (("grid", grid), ("base", base)):
        if not isinstance(value, dict):
            raise ConfigError(key, f"must be a mapping of option: value (got {value!r})")
    options = {**base, **data}
    if "preset" in options:
        preset = load_preset(options.pop("preset"))
        for key in DICT_OPTIONS:
            if isinstance(options.get(key), dict):
                options[key] = {**preset.get(key, {}), **options[key]}
        options = {**preset, **options}
    return expand(options, grid, source=f"grid file {path.name}")


def check_jobs(jobs: list[Job]) -> list[RunConfig]:
    """Every job's config resolved and validated, without loading data; the first bad
    one raises ConfigError naming the option and the run."""
    checked = []
    for job in jobs:
        try:
            checked.append(engine.check(job.config))
        except ConfigError as e:
            message = str(e).split(": ", 1)[-1]
            raise ConfigError(e.option, f"{message} (run {job.name})") from None
    return checked


# -- running ---------------------------------------------------------------------

def default_threads(workers: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, workers))


def is_finished(folder: Path, cfg: RunConfig) -> bool:
    """``folder`` holds a summary written under the options of ``cfg`` (resolved)."""
    config_path = folder / "config.yaml"
    if not (folder / "summary.json").exists() or not config_path.exists():
        return False
    stored = yaml.safe_load(config_path.read_text()) or {}
    return not cfg.changed_options(stored, engine.RESUME_FREE)


def run_jobs(jobs: list[Job], out: str | os.PathLike, *, workers: int = 1, ray: str | None = None,
             slurm: dict | None = None, threads_per_run: int | None = None,
             progress: bool = True) -> list[dict]:
    """Run every job not finished yet into ``out/<job.name>``; summaries in job order.

    ``workers=1``: in this process, one after another; ``workers>1``: that many local
    worker processes; ``ray="auto"|ADDRESS``: one Ray task per run; ``slurm``: submitit
    parameters (e.g. ``{"slurm_partition": "gpu", "timeout_min": 60}``).  Raises
    ConfigError before running anything if a job or the executor is misconfigured,
    and RunsFailed at the end if some runs failed (the rest finish regardless).
    """
    out = Path(out).absolute()
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError("--workers", f"must be an integer >= 1 (got {workers!r})")
    if sum([workers > 1, ray is not None, slurm is not None]) > 1:
        raise ConfigError("--workers", "choose one executor: --workers N, --ray or --slurm-*")
    remote = ray is not None or slurm is not None
    threads = threads_per_run or (1 if remote else default_threads(workers))
    if not isinstance(threads, int) or threads < 1:
        raise ConfigError("--threads-per-run", f"must be an integer >= 1 (got {threads!r})")
    configs = check_jobs(jobs)
    if ray is not None:
        _optional_import("ray", "--ray", "ray")
    if slurm is not None:
        _optional_import("submitit", "--slurm-partition", "slurm")
    if not remote:
        _check_data(configs)   # on a cluster the data may live only on the nodes

    log = _ProgressLines(len(jobs), progress)
    summaries: list[dict | None] = [None] * len(jobs)
    failures: dict[str, str] = {}
    pending = []
    for index, (job, cfg) in enumerate(zip(jobs, configs)):
        if is_finished(out / job.name, cfg):
            summaries[index] = RunFolder(out / job.name).read_summary()
            log.done("skipped (finished)", job.name)
        else:
            pending.append((index, job))

    def finished(index: int, summary: dict) -> None:
        summaries[index] = summary
        log.done("finished", jobs[index].name, f"class-IL ACC {summary['class_il']['acc']:.2f}, "
                                               f"{summary['wall_s']:.1f} s")

    def failed(index: int, message: str) -> None:
        failures[jobs[index].name] = message
        log.done("FAILED", jobs[index].name, message)

    if pending:
        if ray is not None:
            _run_on_ray(pending, out, ray, threads, log, finished, failed)
        elif slurm is not None:
            _run_on_slurm(pending, out, slurm, threads, log, finished, failed)
        elif workers > 1:
            _run_in_workers(pending, out, workers, threads, log, finished, failed)
        else:
            _run_here(pending, out, threads, log, finished, failed)
    if failures:
        raise RunsFailed(failures, summaries)
    return summaries


class _ProgressLines:
    """One line per run started, finished, skipped or failed, with k/N done."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.count, self.enabled = total, 0, enabled

    def started(self, what: str, name: str) -> None:
        if self.enabled:
            print(f"[sweep {self.count}/{self.total}] {what} {name}", file=sys.stderr, flush=True)

    def done(self, what: str, name: str, detail: str = "") -> None:
        self.count += 1
        if self.enabled or what == "FAILED":
            print(f"[sweep {self.count}/{self.total}] {what} {name}" + (f": {detail}" if detail else ""),
                  file=sys.stderr, flush=True)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def run_one(config: RunConfig, folder: str, threads: int, progress: bool = False) -> dict:
    """Run one job in the current process with ``threads`` torch threads.  ``progress``:
    the engine's per-task bars (only where one run has the terminal to itself)."""
    import torch
    torch.set_num_threads(threads)
    return engine.run(config, folder, progress=progress)


def _run_here(pending, out, threads, log, finished, failed) -> None:
    import torch
    before = torch.get_num_threads()
    try:
        for index, job in pending:
            log.started("started", job.name)
            try:
                finished(index, run_one(job.config, str(out / job.name), threads, progress=log.enabled))
            except Exception as e:   # one bad run must not stop the others
                failed(index, _one_line(e))
    finally:
        torch.set_num_threads(before)


def _worker_main(conn, threads: int) -> None:
    """A local worker process: run the jobs the parent sends until it sends None."""
    import torch
    torch.set_num_threads(threads)
    kill_name, _, kill_task = os.environ.get(KILL_HOOK_ENV, "").rpartition("@")
    while True:
        message = conn.recv()
        if message is None:
            return
        name, config, folder = message
        try:
            if name == kill_name:
                try:
                    engine.run(config, folder, progress=False, stop_after_task=int(kill_task))
                except engine.Interrupted:
                    import signal
                    os.kill(os.getpid(), signal.SIGKILL)
            conn.send(("ok", engine.run(config, folder, progress=False)))
        except Exception as e:
            traceback.print_exc(file=sys.stderr)
            conn.send(("error", _one_line(e)))


def _run_in_workers(pending, out, workers, threads, log, finished, failed) -> None:
    """Local worker processes (spawn), each fed one job at a time through its own pipe,
    so a worker that dies costs only its own run: it is reported and replaced."""
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("spawn")
    queue = deque(pending)
    busy: dict = {}     # parent end of the pipe -> (process, index, job)

    def start_worker():
        parent_end, child_end = context.Pipe()
        process = context.Process(target=_worker_main, args=(child_end, threads), daemon=True)
        process.start()
        child_end.close()
        return parent_end, process

    def give_work(conn, process) -> None:
        if not queue:
            conn.send(None)
            process.join()
            conn.close()
            return
        index, job = queue.popleft()
        conn.send((job.name, job.config, str(out / job.name)))
        busy[conn] = (process, index, job)
        log.started("started", job.name)

    try:
        for _ in range(min(workers, len(queue))):
            give_work(*start_worker())
        while busy:
            ready = set(wait(list(busy) + [p.sentinel for p, _, _ in busy.values()]))
            for conn, (process, index, job) in list(busy.items()):
                if conn not in ready and process.sentinel not in ready:
                    continue
                del busy[conn]
                try:
                    status, payload = conn.recv()
                except (EOFError, OSError):
                    process.join()
                    conn.close()
                    failed(index, f"worker process died (exit code {process.exitcode})")
                    if queue:
                        give_work(*start_worker())
                    continue
                if status == "ok":
                    finished(index, payload)
                else:
                    failed(index, payload)
                give_work(conn, process)
    finally:
        for conn, (process, _, _) in busy.items():
            process.terminate()
            process.join()


def _optional_import(module: str, option: str, extra: str):
    """Ray and submitit are optional extras, imported only by the executors that use them."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        pretty = {"ray": "Ray", "submitit": "submitit"}[module]
        raise ConfigError(option, f"needs {pretty}: pip install 'memdistill[{extra}]'") from None


def worker_env() -> dict[str, str]:
    """Environment a remote worker needs: this package on its path and memdistill's data settings."""
    source_root = str(Path(__file__).resolve().parent.parent)
    path = [source_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {k: v for k, v in os.environ.items() if k.startswith("MEMDISTILL_")}
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
    return env


def _run_on_ray(pending, out, address, threads, log, finished, failed) -> None:
    ray = _optional_import("ray", "--ray", "ray")
    runtime_env = {"env_vars": worker_env()}
    if not ray.is_initialized():
        if address == "auto":
            try:     # a running cluster if there is one, else a local one on this machine
                ray.init(address="auto", runtime_env=runtime_env, include_dashboard=False)
            except ConnectionError:
                ray.init(runtime_env=runtime_env, include_dashboard=False)
        else:
            ray.init(address=address, runtime_env=runtime_env)
    task = ray.remote(run_one)
    refs = {}
    for index, job in pending:
        needs_gpu = str(job.config.device).startswith("cuda")
        ref = task.options(num_cpus=threads, num_gpus=1 if needs_gpu else 0, max_retries=0,
                           runtime_env=runtime_env).remote(job.config, str(out / job.name), threads)
        refs[ref] = index
        log.started("queued", job.name)
    while refs:
        done, _ = ray.wait(list(refs), num_returns=1)
        for ref in done:
            index = refs.pop(ref)
            try:
                finished(index, ray.get(ref))
            except Exception as e:   # RayTaskError wraps the run's own error
                cause = getattr(e, "cause", None)
                failed(index, _one_line(cause if isinstance(cause, BaseException) else e))


def _run_on_slurm(pending, out, slurm, threads, log, finished, failed) -> None:
    submitit = _optional_import("submitit", "--slurm-partition", "slurm")
    params = dict(slurm)
    cluster = params.pop("cluster", None)    # "local" / "debug": submitit's stand-ins for testing
    executor = submitit.AutoExecutor(folder=str(out / ".submitit" / "%j"), cluster=cluster)
    submitted = []
    for index, job in pending:
        needs_gpu = str(job.config.device).startswith("cuda")
        executor.update_parameters(cpus_per_task=threads, gpus_per_node=1 if needs_gpu else 0,
                                   name=f"memdistill-{job.name}", **params)
        submitted.append((index, executor.submit(run_one, job.config, str(out / job.name), threads)))
        log.started(f"submitted ({submitted[-1][1].job_id})", job.name)
    for index, slurm_job in submitted:
        try:
            finished(index, slurm_job.result())
        except Exception as e:
            failed(index, _one_line(e))


def _check_data(configs: list[RunConfig]) -> None:
    """Load each dataset once before any run starts: a missing one fails now, with
    one message, and the decoded cache is written once, not by every worker at once."""
    from memdistill.data.scenarios import SCENARIOS
    from memdistill.data.sources import load_source

    seen = set()
    for cfg in configs:
        key = (SCENARIOS[cfg.scenario].source, cfg.data_dir, cfg.cache_dir, cfg.download)
        if key not in seen:
            seen.add(key)
            load_source(key[0], data_dir=cfg.data_dir, cache_dir=cfg.cache_dir,
                        download=cfg.download, progress=False)


def report_runs(jobs: list[Job], summaries: list[dict], out: Path) -> str:
    """``report.md`` (and ``heatmap.png``) over the grid's runs; returns the table.

    Swept options the report does not group by (e.g. lr) become extra columns, so
    runs that differ in them are not averaged together."""
    from memdistill import report
    from memdistill.results import atomic_write

    configs = [job.config.resolved().to_dict() for job in jobs]
    known = set(report.GROUP_KEYS) | {"seed", "plugin_args"} | engine.RESUME_FREE
    extra = tuple(k for k in _FIELD_ORDER if k not in known
                  and len({repr(c[k]) for c in configs}) > 1)
    runs = []
    for job, config, summary in zip(jobs, configs, summaries):
        summary = dict(summary)
        for key in extra:
            value = config[key]
            summary[key] = ",".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else value
        runs.append((Path(out) / job.name, summary))
    table = report.markdown_table(runs, extra_keys=extra)
    atomic_write(Path(out) / "report.md", table)
    report.heatmap(runs, Path(out) / "heatmap.png", extra_keys=extra)
    return table
