"""A_T, F_T and accuracy by segments of domains, mean ± std over seeds, from
``memdistill distill --scenario ...`` run folders laid out as OUT/seedS/STRATEGY.

Usage: python benchmarks/didd_table.py OUT
(e.g. benchmarks/out/didd-rot-mnist-20 after running a didd preset with --seed 0, 1, 2).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

# Rows in the order of the paper's main and ablation tables.
ORDER = ["finetune", "ewc", "mas", "lwf", "stable", "asymmetric-linear", "asymmetric", "distill-gather", "joint"]


def fmt(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def main(out: str) -> None:
    runs: dict[str, list[dict]] = {}
    for path in sorted(Path(out).glob("seed*/*/summary.json")):
        summary = json.loads(path.read_text())
        runs.setdefault(summary["strategy"], []).append(summary)
    if not runs:
        raise SystemExit(f"no run folders OUT/seedS/STRATEGY/summary.json under {out}")
    segments = sorted({k for rs in runs.values() for r in rs for k in (r.get("segments") or {})},
                      key=lambda k: int(k.split("-")[0]))
    print("| strategy | A_T | F_T | " + " | ".join(f"A {k}" for k in segments) + " | bytes | s / domain | seeds |")
    print("|---|---|---|" + "---|" * len(segments) + "---|---|---|")
    for strategy in sorted(runs, key=lambda k: ORDER.index(k) if k in ORDER else len(ORDER)):
        rs = runs[strategy]
        f_t = [r["F_T"] for r in rs if r["F_T"] is not None]
        segs = [fmt([r["segments"][k] for r in rs if k in (r.get("segments") or {})]) for k in segments]
        print(f"| {strategy} | {fmt([r['A_T'] for r in rs])} | {fmt(f_t)} | " + " | ".join(segs)
              + f" | {rs[0]['bytes']} | {np.mean([r['distill_s_mean'] for r in rs]):.1f} | "
              + f"{', '.join(str(r['config']['seed']) for r in rs)} |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
