"""What one network per task reaches on all of a task's real training samples.

The ceiling for compress-then-recall with ``recall=per-task``: a memory that lost nothing
would give this. The networks are trained with compress-recall's retraining schedule
(300 epochs, SGD lr 0.01, momentum 0.9, batch 256, the rate x0.1 at half) and a seed per task.

    OMP_NUM_THREADS=1 python benchmarks/per_task_ceiling.py --scenario perm-mnist --n-tasks 100 \
        --samples-per-task 200 --test-samples-per-task 200 --tasks 8
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from memdistill.data.scenarios import build_scenario
from memdistill.distill.evaluate import HeldOutImages, TrainSchedule, test_accuracy, train_fresh_network
from memdistill.nets import build_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="perm-mnist")
    parser.add_argument("--n-tasks", type=int, default=None)
    parser.add_argument("--samples-per-task", type=int, default=None)
    parser.add_argument("--test-samples-per-task", type=int, default=None)
    parser.add_argument("--tasks", type=int, default=None, help="only the first N tasks (default all)")
    parser.add_argument("--backbone", default="mlp")
    parser.add_argument("--seed", type=int, default=0, help="the scenario's seed (sub-sampling, permutations)")
    args = parser.parse_args()
    scenario = build_scenario(args.scenario, args.n_tasks, seed=args.seed, samples_per_task=args.samples_per_task,
                              test_samples_per_task=args.test_samples_per_task, progress=False)
    mean = torch.tensor(scenario.mean).reshape(1, -1, 1, 1)
    std = torch.tensor(scenario.std).reshape(1, -1, 1, 1)
    accs = []
    for task in scenario.tasks[: args.tasks]:
        x = (task.train_images.float() / 255 - mean) / std
        net = train_fresh_network(x, task.train_labels,
                                  lambda: build_backbone(args.backbone, scenario.input_shape, scenario.num_classes),
                                  TrainSchedule(), seed=args.seed * 1_000 + 500 + task.index)
        accs.append(test_accuracy(net, HeldOutImages(task.test_images, task.test_labels,
                                                      scenario.mean, scenario.std)))
        print(f"task {task.index}: {len(task.train_labels)} samples, {accs[-1]:.2f} %", flush=True)
    print(f"mean over {len(accs)} tasks: {np.mean(accs):.2f} %")


if __name__ == "__main__":
    main()
