"""``memdistill compare``: every memory kind at equal byte budgets, one table, one plot.

    CompareSpec (flags / compare preset)
      -> engine.prepare(base run): validate, load the data once -> ScenarioShape
      -> budget.plan(kind, B, shape) for every kind x budget: run options + planned bytes
      -> jobs [Job(name="<kind>/<budget>/seed<k>", config=RunConfig)], each learner built once
         as a check (bad input fails here, before any folder exists)
      -> sweep.run_jobs(jobs, out, ...)  in this process, local workers, Ray or Slurm;
                                          finished runs are skipped
      -> compare.md (kind, budget, bytes used, ACC, FM, seconds), compare.png (ACC vs bytes)

The runs go through the same executors as ``memdistill sweep`` (``--workers``,
``--ray``, ``--slurm-*``), so a comparison spreads over a cluster like any grid.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memdistill import budget as budgets
from memdistill import engine
from memdistill.config import ConfigError, RunConfig
from memdistill.results import atomic_write
from memdistill.results import RunFolder
from memdistill.sweep import Job, check_jobs, is_finished, run_jobs

# Options of a compare that are not options of one run.
COMPARE_KEYS = ("budget", "budget_ipc", "kinds", "seed", "kind_args")


@dataclass
class CompareSpec:
    budgets: list[str] = field(default_factory=list)       # "50KB", "200000", ...
    budgets_ipc: list[int] = field(default_factory=list)   # images per class, as exemplar bytes
    kinds: list[str] | None = None                         # None: every kind the scenario allows
    seeds: list[int] = field(default_factory=lambda: [0])
    kind_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "CompareSpec":
        options = dict(options)
        listed = {k: options.pop(k) for k in COMPARE_KEYS if k in options}

        def as_list(value):
            return value if isinstance(value, list) else [value]
        kind_args = listed.get("kind_args") or {}
        if not isinstance(kind_args, dict) or not all(isinstance(v, dict) for v in kind_args.values()):
            raise ConfigError("--kind-arg", "expected a mapping kind: {option: value}")
        for bad in ("method", "buffer", "plugin", "plugin_args", "method_args"):
            if bad in options:
                raise ConfigError(f"--{bad.replace('_', '-')}", "compare chooses it from the memory kind; "
                                  "give kind options with --kind-arg KIND:KEY=VALUE")
        return cls([str(b) for b in as_list(listed.get("budget", []))],
                   as_list(listed.get("budget_ipc", [])),
                   as_list(listed["kinds"]) if listed.get("kinds") else None,
                   [int(s) for s in as_list(listed.get("seed", [0]))], kind_args, options)


@dataclass
class Row:
    """One (kind, budget) of the plan and the runs that measure it."""
    plan: budgets.Plan
    label: str                  # the budget's folder name ("fixed" for a budget-free kind)
    jobs: list[Job]


def plan_compare(spec: CompareSpec, progress: bool = False, scenario=None):
    """Validate ``spec`` and expand it into rows of jobs; nothing is written.

    Returns (rows, shape).  ``scenario`` may be given (tests); otherwise the base run's
    scenario is built (loading the data) to learn its shape."""
    if not spec.budgets and not spec.budgets_ipc:
        raise ConfigError("--budget", "give at least one budget: --budget 50KB ... or --budget-ipc 1 5 ...")
    if spec.budgets and spec.budgets_ipc:
        raise ConfigError("--budget", "give either --budget or --budget-ipc, not both")
    # Checks that need no data first.
    for kind in list(spec.kinds or []) + list(spec.kind_args):
        if kind not in budgets.KINDS:
            option = "--kinds" if kind in (spec.kinds or []) else "--kind-arg"
            raise ConfigError(option, f"unknown memory kind {kind!r}; allowed: {', '.join(budgets.KINDS)}")
    byte_budgets = [budgets.parse_budget(b) for b in spec.budgets]
    base = RunConfig.from_dict({**spec.run_options, "seed": spec.seeds[0]}, source="options")
    base_resolved, scenario, device = engine.prepare(base, scenario, progress=progress)
    shape = budgets.ScenarioShape.of(scenario)
    kinds = spec.kinds if spec.kinds is not None else budgets.applicable_kinds(shape.kind)
    if spec.budgets:
        amounts = [(b, None) for b in byte_budgets]
    else:
        amounts = [(budgets.ipc_budget(i, shape), i) for i in spec.budgets_ipc]
    rows: list[Row] = []
    for kind in kinds:
        args = dict(spec.kind_args.get(kind, {}))
        if budgets.KINDS[kind].fixed_size(args):
            amounts_here = [(amounts[0][0], None)]
        else:
            amounts_here = amounts
        for nbytes, ipc in amounts_here:
            plan = budgets.plan(kind, nbytes, shape, args)
            if plan.budget is None:
                label = "fixed"
            else:
                label = f"ipc{ipc}" if ipc is not None else budgets.budget_label(nbytes)
            jobs = []
            for seed in spec.seeds:
                cfg = RunConfig.from_dict({**spec.run_options, **plan.run_options(), "seed": seed},
                                          source="options")
                jobs.append(Job(f"{kind}/{label}/seed{seed}", cfg))
            rows.append(Row(plan, label, jobs))
    # Build each row's learner once: method/plug-in options are checked before anything runs.
    for row in rows:
        cfg = engine.prepare(row.jobs[0].config, scenario, progress=False)[0]
        engine.build_learner(cfg, scenario, device)
    return rows, shape


# -- the outputs ----------------------------------------------------------------------------

def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    if not values:
        return float("nan"), float("nan")
    # one seed: no spread to report (nan, shown as the mean alone, no error bar)
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def aggregate(rows: list[Row], summaries: dict[str, dict]) -> list[dict]:
    """One record per row: planned and used bytes, ACC / FM / seconds mean and std over seeds."""
    records = []
    for row in rows:
        runs = [summaries[j.name] for j in row.jobs if j.name in summaries]
        acc = _mean_std([s["class_il"]["acc"] for s in runs])
        fm = _mean_std([s["class_il"].get("fm") for s in runs])
        secs = _mean_std([s["wall_s"] for s in runs])
        used = sorted({int(s["memory_bytes"]) for s in runs})
        records.append({"kind": row.plan.kind, "budget": row.plan.budget, "label": row.label,
                        "method": row.plan.method, "planned_bytes": row.plan.planned_bytes,
                        "bytes_used": used, "acc": acc, "fm": fm, "seconds": secs, "seeds": len(runs),
                        "budget_free": row.plan.budget is None, "note": row.plan.note})
    return records


RECORD_KEYS = ("kind", "label", "budget", "bytes_used", "acc", "fm", "seconds", "seeds", "budget_free")


def load_included(paths) -> list[dict]:
    """Records of other comparisons (their ``compare.json``), e.g. runs made on another day or
    machine into another folder; each record is tagged with the file it came from."""
    included = []
    for path in map(Path, paths):
        try:
            records = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError("--include", f"no such file: {path}") from None
        except json.JSONDecodeError as e:
            raise ConfigError("--include", f"{path} is not JSON ({e})") from None
        if not isinstance(records, list):
            raise ConfigError("--include", f"{path} must hold a list of records (a compare.json)")
        for i, r in enumerate(records):
            missing = [k for k in RECORD_KEYS if not isinstance(r, dict) or k not in r]
            if missing:
                raise ConfigError("--include", f"record {i} of {path} lacks {', '.join(missing)}")
            included.append({**r, "acc": tuple(r["acc"]), "fm": tuple(r["fm"]),
                             "seconds": tuple(r["seconds"]), "from": str(path)})
    return included


def merge_records(records: list[dict], included: list[dict]) -> list[dict]:
    """This folder's records, with an included record in place of a row that has no finished
    run here (the same kind and budget label), and included rows this folder lacks appended."""
    here = {(r["kind"], r["label"]): r for r in records}
    for r in included:
        key = (r["kind"], r["label"])
        if key not in here:
            records.append(r)
            here[key] = r
        elif here[key]["seeds"] == 0 and "from" not in here[key]:
            records[records.index(here[key])] = r
            here[key] = r
    return records


def markdown(records: list[dict], shape: budgets.ScenarioShape, run_options: dict) -> str:
    def pm(pair, digits=2):
        mean, std = pair
        if np.isnan(mean):
            return "–"
        return f"{mean:.{digits}f}" if np.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"

    lines = [f"# Memory at equal budget: {shape.name} ({shape.kind}, {shape.num_tasks} tasks, "
             f"{shape.num_classes} classes, input {'x'.join(map(str, shape.input_shape))})", "",
             "Bytes are counted one way for every kind (docs/memory-budget.md); ACC and FM are class-IL "
             "accuracy and forgetting (%) after the last task, mean ± sample std over seeds; seconds = wall "
             "time of one run.", "",
             "| kind | budget | budget bytes | holds | bytes used | ACC | FM | seconds | seeds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        used = "/".join(str(b) for b in r["bytes_used"]) or "–"
        budget = "fixed (one point, not a line)" if r["budget_free"] else r["label"]
        budget_bytes = "–" if r["budget"] is None else str(r["budget"])
        lines.append(f"| {r['kind']} | {budget} | {budget_bytes} | {r['note'] or '–'} | {used} | {pm(r['acc'])} | {pm(r['fm'])} | "
                     f"{pm(r['seconds'], 1)} | {r['seeds']} |")
    sources = sorted({r["from"] for r in records if "from" in r})
    for source in sources:
        rows = ", ".join(f"{r['kind']} {r['label']}" for r in records if r.get("from") == source)
        lines += ["", f"From {source} (not run in this folder): {rows}."]
    options = ", ".join(f"{k}={v}" for k, v in sorted(run_options.items()) if v is not None)
    lines += ["", f"Run options: {options or 'scenario defaults'}."]
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path, title: str) -> None:
    """Accuracy against bytes used (log x): a line with error bars per kind, a marker for a
    budget-free kind (the generator)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    kinds = list(dict.fromkeys(r["kind"] for r in records))
    markers = "osD^v<>p"
    for i, kind in enumerate(kinds):
        mine = [r for r in records if r["kind"] == kind and r["bytes_used"] and not np.isnan(r["acc"][0])]
        if not mine:
            continue
        x = [float(np.mean(r["bytes_used"])) for r in mine]
        y = [r["acc"][0] for r in mine]
        err = [0.0 if np.isnan(r["acc"][1]) else r["acc"][1] for r in mine]
        if mine[0]["budget_free"]:
            ax.errorbar(x, y, yerr=err, fmt="*", markersize=14, capsize=3, label=f"{kind} (fixed size)")
        else:
            order = np.argsort(x)
            ax.errorbar(np.array(x)[order], np.array(y)[order], yerr=np.array(err)[order],
                        marker=markers[i % len(markers)], capsize=3, label=kind)
    ax.set_xscale("log")
    ax.set_xlabel("memory (bytes, log scale)")
    ax.set_ylabel("ACC (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def dry_run_table(rows: list[Row]) -> str:
    lines = ["| kind | budget | budget bytes | holds | method | run options | planned bytes | breakdown | runs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        p = row.plan
        opts = {k: v for k, v in p.run_options().items() if k not in ("method", "memory_kind", "memory_budget_bytes")}
        lines.append(f"| {p.kind} | {row.label} | {p.budget if p.budget is not None else '–'} | {p.note or '–'} | "
                     f"{p.method} | "
                     f"{json.dumps(opts, sort_keys=True)} | {p.planned_bytes} | "
                     f"{json.dumps(p.detail)} | {len(row.jobs)} |")
    return "\n".join(lines) + "\n"


def finished_summaries(jobs: list[Job], out: Path) -> dict[str, dict]:
    """The summaries of the jobs already finished in ``out`` (under the same options)."""
    configs = check_jobs(jobs)
    return {job.name: RunFolder(out / job.name).read_summary()
            for job, cfg in zip(jobs, configs) if is_finished(out / job.name, cfg)}


def run_compare(spec: CompareSpec, out: str | Path, progress: bool = True, dry_run: bool = False,
                report_only: bool = False, include=(), **executor) -> list[dict]:
    """Plan, run (skipping finished runs), and write compare.md, compare.json and compare.png.

    ``report_only``: run nothing; the table and plot hold the runs finished so far (the
    others are rows with 0 seeds).  ``executor``: ``workers``, ``ray``, ``slurm``,
    ``threads_per_run`` of ``sweep.run_jobs``; it raises ``sweep.RunsFailed`` after the
    other runs finish if some failed.  ``include``: other comparisons' ``compare.json`` files
    whose rows fill the table and plot where this folder has none (``merge_records``)."""
    included = load_included(include)      # a bad file is refused before anything runs
    rows, shape = plan_compare(spec, progress=progress)
    if dry_run:
        print(dry_run_table(rows), end="")
        return []
    out = Path(out)
    jobs = [job for row in rows for job in row.jobs]
    if report_only:
        summaries = finished_summaries(jobs, out)
        missing = [job.name for job in jobs if job.name not in summaries]
        if missing:
            print(f"[memdistill] {len(summaries)} of {len(jobs)} runs finished; not in the table yet: "
                  f"{', '.join(missing)}", file=sys.stderr)
    else:
        results = run_jobs(jobs, out, progress=progress, **executor)
        summaries = {job.name: s for job, s in zip(jobs, results)}
    records = merge_records(aggregate(rows, summaries), included)
    atomic_write(out / "compare.md", markdown(records, shape, spec.run_options))
    atomic_write(out / "compare.json", json.dumps(records, indent=2) + "\n")
    plot(records, out / "compare.png", f"{shape.name}: accuracy vs memory bytes ({len(spec.seeds)} seed(s))")
    return records
