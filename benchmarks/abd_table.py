"""A_N and Omega (ABD Eq. 16-17) from the run folders of benchmarks/abd_split_cifar10.sh.

Usage: python benchmarks/abd_table.py OUT [UPPER]
OUT holds LABEL/seedS run folders (LABEL may hold a slash, as a sweep's folders do);
the runs labelled UPPER (default ``upper-bound``, joint training) give the offline accuracy A_offline that Omega is normalised by
(their final accuracy over all classes, for the same seed).  UPPER may instead list
those accuracies, ``SEED=ACC,SEED=ACC,...``, when the joint runs' folders are gone.
FM is class-IL forgetting from each run's summary.json; the per-seed column lists
A_N / Omega / FM by seed.
"""
from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

from memdistill import metrics

ORDER = ["upper-bound", "upper-bound-8ep", "upper-bound-15ep", "base", "lwf", "lwf-mc", "naive-rehearsal", "lwf-coreset", "dgr", "deepinversion", "abd", "abd-gen200", "abd-no-balance", "abd-standard-ce",
         "abd-no-kd-real", "abd-no-kd-synthetic", "abd-no-ft"]


def matrix(folder: Path) -> list[list[float]]:
    with open(folder / "accuracy_class_il.csv") as f:
        rows = list(csv.reader(f))[1:]
    return [[float(v) if v else math.nan for v in row[1:]] for row in rows]


def main(out: str, upper_label: str = "upper-bound") -> None:
    root = Path(out)
    runs: dict[str, dict[int, Path]] = {}
    for summary in sorted(root.glob("**/seed*/summary.json")):   # LABEL may be nested: abd/method_args-X
        label = summary.parent.parent.relative_to(root).as_posix()
        runs.setdefault(label, {})[int(summary.parent.name[4:])] = summary.parent
    if "=" in upper_label:
        upper = {int(seed): float(acc) for seed, acc in (pair.split("=") for pair in upper_label.split(","))}
    else:
        upper = {seed: metrics.final_accuracy_all_classes(matrix(f)) for seed, f in runs.get(upper_label, {}).items()}
    labels = sorted(runs, key=lambda k: (ORDER.index(k) if k in ORDER else len(ORDER), k))
    print("| method | A_N (%) | Omega (%) | FM | per seed: A_N / Omega / FM | synthesis s / task | wall s | seeds |")
    print("|---|---|---|---|---|---|---|---|")
    for label in labels:
        a_n, omega, fm, synth, wall, per_seed = [], [], [], [], [], []
        for seed, folder in sorted(runs[label].items()):
            R = matrix(folder)
            s = json.loads((folder / "summary.json").read_text())
            a_n.append(metrics.final_accuracy_all_classes(R))
            if seed in upper:
                omega.append(100.0 if label == upper_label else metrics.omega(R, upper[seed]))
            fm.append(s["class_il"]["fm"])
            per_seed.append(f"{seed}: {a_n[-1]:.2f} / " + (f"{omega[-1]:.1f}" if seed in upper else "–")
                            + f" / {fm[-1]:.1f}")
            synth += s.get("synthesis_s_per_task", [])
            wall.append(s["wall_s"])

        def fmt(v):
            return "–" if not v else f"{np.mean(v):.1f} ± {np.std(v):.1f}"
        syn = f"{np.mean(synth):.1f}" if synth else "–"
        print(f"| {label} | {fmt(a_n)} | {fmt(omega)} | {fmt(fm)} | {'; '.join(per_seed)} | {syn} | "
              f"{np.mean(wall):.0f} | {len(a_n)} |")


if __name__ == "__main__":
    main(*(sys.argv[1:3] or ["benchmarks/out/abd-split-cifar10"]))
