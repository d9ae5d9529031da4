"""Wall time of one grid run three ways, in one process: sequentially, with local
worker processes, and through a local Ray cluster.  Prints a markdown table.

    python benchmarks/sweep_timing.py                     # seq-digits x {finetune, er, er+ddn} x 2 seeds
    python benchmarks/sweep_timing.py --tiny              # a 4-run grid, to check it works

Each executor writes into its own fresh folder (nothing skipped) with the same
threads per run, and the summaries of all three are checked to be equal.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from memdistill.sweep import comparable, expand, run_jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="local workers and Ray CPUs (default 2)")
    parser.add_argument("--threads-per-run", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="finetune and er, 40 samples per task")
    parser.add_argument("--out", help="folder for the runs (default: a temporary one, removed)")
    args = parser.parse_args()

    options = dict(scenario="seq-digits", buffer=100, epochs=args.epochs, seed=list(range(args.seeds)),
                   method=["finetune", "er", "er+ddn"])
    if args.tiny:
        options.update(method=["finetune", "er"], samples_per_task=40, test_samples_per_task=20)
    jobs = expand(options)
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="sweep-timing-"))

    import ray
    executors = [("sequential (1 process)", dict()),
                 (f"{args.workers} local workers", dict(workers=args.workers)),
                 (f"Ray, local cluster of {args.workers} CPUs", dict(ray="auto"))]
    rows, results = [], []
    try:
        for label, kwargs in executors:
            out = root / f"executor{len(rows)}"
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            if "ray" in kwargs:    # cluster start-up is timed: a user waits for it too
                ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
            summaries = run_jobs(jobs, out, threads_per_run=args.threads_per_run, progress=False, **kwargs)
            rows.append((label, time.perf_counter() - started))
            results.append([comparable(s) for s in summaries])
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if not args.out:
            shutil.rmtree(root, ignore_errors=True)
    same = all(r == results[0] for r in results)
    print(f"{len(jobs)} runs ({', '.join(j.name for j in jobs[:3])}, ...), "
          f"{args.threads_per_run} thread(s) per run; summaries equal across executors: {same}\n")
    print("| executor | wall s |\n|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
