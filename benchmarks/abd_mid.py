"""The MID diagnostic of ABD Fig. 2 (Eq. 10): after task 2, is the feature space closer
to real task-1 data for synthetic task-1 data or for real task-2 data?

Trains a method for the first two tasks of a scenario (the options of a preset and
flags, as ``memdistill run``), keeping the generator trained after task 1 (the one
that supplied task 2's synthetic data), then prints, on the final network's
penultimate features,

    MID(real task 1, synthetic task 1)   and   MID(real task 1, real task 2).

Usage: python benchmarks/abd_mid.py --preset abd-split-cifar10-cpu --method abd \
           --method-arg generator_steps=50 --method-arg generator_width=16 [--seed 0]
"""
from __future__ import annotations

import argparse
import copy
import json

import torch

from memdistill import engine, metrics
from memdistill.cli import _method_arg
from memdistill.config import RunConfig, load_preset
from memdistill.logging_backends import ScalarLog


def features(learner, x: torch.Tensor) -> torch.Tensor:
    learner.model.eval()
    with torch.no_grad():
        out = torch.cat([learner.model.features(x[i:i + 256]) for i in range(0, len(x), 256)])
    learner.model.train()
    return out.float()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="abd-split-cifar10-cpu")
    p.add_argument("--method", default="abd")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method-arg", dest="method_args", type=_method_arg, action="append", default=[])
    args = p.parse_args()
    options = {k: v for k, v in load_preset(args.preset).items() if k not in ("seed", "method")}
    cfg = RunConfig.from_dict({**options, "method": args.method, "seed": args.seed,
                               "class_order_seed": args.seed,
                               "method_args": {**options.get("method_args", {}), **dict(args.method_args)}})
    cfg, scenario, device = engine.prepare(cfg, progress=False)
    learner = engine.build_learner(cfg, scenario, device)
    stream = torch.Generator().manual_seed(cfg.seed + 1)
    state = engine.RunState(class_il=[], task_il=[], log=[])
    generator_after_task1 = None
    for task in scenario.tasks[:2]:
        engine._train_task(learner, task, cfg, stream, state, device, False, len(scenario.tasks),
                           ScalarLog(cfg, None))
        if task.index == 0:
            generator_after_task1 = copy.deepcopy(learner.image_generator)
    t1, t2 = scenario.tasks[0], scenario.tasks[1]
    real1 = features(learner, learner.preprocess(t1.test_images.to(device), train=False))
    real2 = features(learner, learner.preprocess(t2.test_images.to(device), train=False))
    with torch.no_grad():
        syn1 = generator_after_task1.eval().sample(len(t1.test_labels), torch.Generator().manual_seed(0), device)
    synthetic1 = features(learner, syn1)
    print(json.dumps({"method": cfg.method, "seed": cfg.seed,
                      "mid_real1_synthetic1": round(metrics.mean_image_distance(real1.cpu(), synthetic1.cpu()), 3),
                      "mid_real1_real2": round(metrics.mean_image_distance(real1.cpu(), real2.cpu()), 3)}))


if __name__ == "__main__":
    main()
