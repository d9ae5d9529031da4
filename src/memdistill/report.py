"""Tables and plots across run folders, like the papers' tables.

Runs are grouped by everything that is not the seed; each group's ACC and FM are
given as mean ± std over its seeds (sample std, as the papers report).
"""
from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

from memdistill.data.scenarios import SCENARIOS
from memdistill.results import find_runs, matrix_from_csv

GROUP_KEYS = ("scenario", "method", "plugin", "backbone", "buffer", "setting", "precision")
# marks runs that answer each test image with its task's own network (compress-recall's recall=per-task)
TASK_IDENTITY_MARK = " (per task) †"
TASK_IDENTITY_NOTE = ("† one network per task answers that task's test images: "
                      "these runs use the task's identity at test time, the others do not.")


def accuracy_label(scenario: str | None) -> str:
    """What the ``class_il`` accuracies of a scenario's runs are: "domain-IL" on a
    domain-incremental scenario (one head over the same classes), else "class-IL"."""
    spec = SCENARIOS.get(scenario or "")
    return "domain-IL" if spec is not None and spec.kind == "domain-incremental" else "class-IL"


def _runs_label(runs: list[tuple[Path, dict]]) -> str:
    labels = {accuracy_label(s.get("scenario")) for _, s in runs}
    return labels.pop() if len(labels) == 1 else "class-/domain-IL"


def _get(summary: dict, dotted: str) -> float | None:
    value = summary
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {float(np.std(values, ddof=1)):.2f}"


def load_runs(paths) -> list[tuple[Path, dict]]:
    runs = find_runs(paths)
    if not runs:
        raise FileNotFoundError(f"no run folders (with summary.json) under: {', '.join(map(str, paths))}")
    return [(p, json.loads((p / "summary.json").read_text())) for p in runs]


def method_label(summary: dict) -> str:
    """``er``, ``er+ddn`` or ``er+label-smoothing:eps=0.5`` (the --method spelling of the run)."""
    label = str(summary.get("method"))
    if summary.get("plugin"):
        label += f"+{summary['plugin']}"
        args = summary.get("plugin_args") or {}
        if args:
            label += ":" + ",".join(f"{k}={v}" for k, v in sorted(args.items()))
    if summary.get("uses_task_identity"):
        label += TASK_IDENTITY_MARK
    return label


def group_runs(runs: list[tuple[Path, dict]], extra_keys: tuple[str, ...] = ()) -> dict[tuple, list[tuple[Path, dict]]]:
    """Runs grouped by GROUP_KEYS (+ ``extra_keys``, e.g. options a sweep varies), i.e. over seeds."""
    groups: dict[tuple, list] = defaultdict(list)
    for path, summary in runs:
        key = tuple(summary.get(k) for k in GROUP_KEYS + tuple(extra_keys))
        labelled = summary.get("plugin") or summary.get("uses_task_identity")
        key = key[:2] + (method_label(summary) if labelled else None,) + key[3:]
        groups[key].append((path, summary))
    return dict(groups)


def markdown_table(runs: list[tuple[Path, dict]], extra_keys: tuple[str, ...] = ()) -> str:
    groups = group_runs(runs, extra_keys)
    keys = GROUP_KEYS + tuple(extra_keys)
    # Only show the grouping columns that vary, plus the metrics.
    varying = [i for i, k in enumerate(keys)
               if k != "plugin" and len({g[i] for g in groups}) > 1] or [1]
    if 1 not in varying and any(g[2] for g in groups):
        varying.insert(0, 1)      # show "method+plugin" when plug-ins differ
    columns = [keys[i] for i in varying]
    label = _runs_label(runs)
    metrics = [(f"{label} ACC", "class_il.acc"), (f"{label} FM", "class_il.fm"),
               ("task-IL ACC", "task_il.acc"), ("task-IL FM", "task_il.fm"),
               ("wall s", "wall_s"), ("samples/s", "samples_per_s")]
    metrics = [(name, key) for name, key in metrics
               if any(_get(s, key) is not None for _, s in runs)]
    lines = ["| " + " | ".join(columns + [m for m, _ in metrics] + ["seeds"]) + " |",
             "|" + "---|" * (len(columns) + len(metrics) + 1)]
    for key, members in groups.items():
        cells = [str(key[2] if i == 1 and key[2] else key[i]) for i in varying]
        for _, dotted in metrics:
            values = [v for _, s in members if (v := _get(s, dotted)) is not None]
            cells.append(_mean_std(values))
        cells.append(str(len(members)))
        lines.append("| " + " | ".join(cells) + " |")
    first = runs[0][1]
    header = (f"{first.get('scenario')}, {first.get('num_tasks')} tasks "
              f"({first.get('setting')}); mean ± std over seeds, accuracies in %")
    note = f"\n{TASK_IDENTITY_NOTE}\n" if any(s.get("uses_task_identity") for _, s in runs) else ""
    return header + "\n\n" + "\n".join(lines) + "\n" + note


def heatmap(runs: list[tuple[Path, dict]], path: Path, extra_keys: tuple[str, ...] = ()) -> None:
    """One accuracy-matrix heatmap (class-IL, mean over seeds) per group."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group_runs(runs, extra_keys)
    fig, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(groups), 3.4), squeeze=False)
    for ax, (key, members) in zip(axes[0], groups.items()):
        mats = [np.array(matrix_from_csv((p / "accuracy_class_il.csv").read_text())) for p, _ in members]
        with warnings.catch_warnings():     # cells never evaluated stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            R = np.nanmean(np.stack(mats), axis=0)
        image = ax.imshow(R, vmin=0, vmax=100, cmap="viridis")
        T = len(R)
        if T <= 10:
            for i in range(T):
                for j in range(T):
                    if not math.isnan(R[i, j]):
                        ax.text(j, i, f"{R[i, j]:.0f}", ha="center", va="center", fontsize=7,
                                color="white" if R[i, j] < 60 else "black")
        label = key[2] or key[1]
        label += "".join(f", {k} {v}" for k, v in zip(extra_keys, key[len(GROUP_KEYS):]))
        ax.set_title(f"{label} (buffer {key[4]})", fontsize=9)
        ax.set_xlabel("evaluated on task")
        ax.set_ylabel("after training task")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label=f"{_runs_label(runs)} accuracy (%)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
