"""Retrain the networks of a finished compress-recall run from its stored memories and print
the mean test accuracy over all tasks (RA).

* ``--recall joint`` (default): one network on every recall, under several schedules. Does
  the retraining limit compress-then-recall, or the memories?  (docs/benchmarks.md, Rotated MNIST.)
* ``--recall per-task``: one network per task on that task's recalls alone, each task's test
  images answered by its own network (the method's ``recall=per-task``, which uses the task's
  identity). The memories do not depend on the recall, so this gives what the same run with
  ``--method-arg recall=per-task`` gives, without distilling again.

    OMP_NUM_THREADS=1 python benchmarks/compress_recall_retrain.py benchmarks/out/rot-mnist-cr/stream1-end100
    OMP_NUM_THREADS=1 python benchmarks/compress_recall_retrain.py --recall per-task RUN [RUN ...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import yaml

from memdistill import engine
from memdistill.config import RunConfig
from memdistill.distill.evaluate import TrainSchedule, train_fresh_network

# (epochs, lr, batch); the first is the method's default
SCHEDULES = [(300, 0.01, 256), (300, 0.05, 256), (1000, 0.01, 256), (300, 0.01, 32), (100, 0.1, 64)]


def load_run(run: Path, **method_args):
    """The run's scenario and its learner at the end of the run (``method_args`` override)."""
    saved = yaml.safe_load((run / "config.yaml").read_text())
    cfg = RunConfig(**{k: v for k, v in saved.items() if k in RunConfig.__dataclass_fields__})
    if cfg.method != "compress-recall":
        raise SystemExit(f"{run} is a {cfg.method} run, not compress-recall")
    cfg.method_args = {**dict(cfg.method_args or {}), **method_args}
    cfg, scenario, device = engine.prepare(cfg, progress=False)
    learner = engine.build_learner(cfg, scenario, device)
    learner.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=True)["learner"])
    return cfg, scenario, device, learner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="finished compress-recall run folders")
    parser.add_argument("--recall", choices=("joint", "per-task"), default="joint")
    parser.add_argument("--seed", type=int, default=123, help="seed of the retrained networks (joint)")
    args = parser.parse_args()
    for run in args.runs:
        if args.recall == "per-task":
            cfg, scenario, device, learner = load_run(run, recall="per-task")
            accs, _ = engine.evaluate(learner, scenario, len(scenario.tasks) - 1, cfg.eval_batch_size, device)
            print(f"{run}: per-task RA {np.mean(accs):.2f}; tasks {' '.join(f'{a:.1f}' for a in accs)}",
                  flush=True)
            continue
        _, scenario, _, learner = load_run(run)
        images, labels = learner.recalled_dataset()
        print(f"{run}: {len(labels)} recalled samples from {len(learner.memories)} memories")
        for epochs, lr, batch in SCHEDULES:
            net = train_fresh_network(images, labels, learner._fresh_network,
                                      TrainSchedule(epochs=epochs, lr=lr, batch_size=batch), seed=args.seed)
            learner.model.load_state_dict(net.state_dict())
            accs = [(learner.predict(t.test_images).argmax(1) == t.test_labels).float().mean().item()
                    for t in scenario.tasks]
            print(f"epochs {epochs:4d} lr {lr:<5} batch {batch:3d}: RA {100 * sum(accs) / len(accs):.2f}", flush=True)


if __name__ == "__main__":
    main()
