"""Compress-recall on Rotated MNIST task 0 alone: which memory shape at 1/20 of buffer 200.

Streams task 0 (1,000 samples, batch 10) into a ``compress-recall`` learner built as for
the full 20-task run (buffer 200 -> 7,920-7,960 bytes per task), distils, retrains an
MLP 100-100 from the recalls, prints its accuracy on 1,000 test images of task 0.

    OMP_NUM_THREADS=1 python benchmarks/compress_recall_task0.py
"""
from __future__ import annotations

import time

from memdistill import engine
from memdistill.config import RunConfig
from memdistill.data.scenarios import build_scenario

# (bases, downsample, distill steps, outer lr)
SETTINGS = [(8, 2, 0, 0.01), (8, 2, 100, 0.01), (20, 4, 100, 0.01), (20, 4, 100, 0.03),
            (10, 4, 100, 0.01), (10, 4, 100, 0.03)]


def main() -> None:
    scenario = build_scenario("rot-mnist", 20, seed=0, test_samples_per_task=1000, progress=False)
    task = scenario.tasks[0]
    for bases, ds, steps, outer_lr in SETTINGS:
        cfg = RunConfig(scenario="rot-mnist", method="compress-recall", backbone="mlp", buffer=200,
                        setting="online", batch_size=10,
                        method_args={"bases": bases, "downsample": ds, "distill_steps": steps,
                                     "outer_lr": outer_lr, "retrain_epochs": 300})
        cfg, _, device = engine.prepare(cfg, scenario, progress=False)
        learner = engine.build_learner(cfg, scenario, device)
        started = time.perf_counter()
        learner.begin_task(task)
        for i in range(0, len(task.train_labels), 10):
            learner.observe(task.train_images[i:i + 10], task.train_labels[i:i + 10], 0)
        learner.end_task(task)
        acc = (learner.predict(task.test_images).argmax(1) == task.test_labels).float().mean().item()
        print(f"bases {bases:2d} ds {ds} steps {steps:3d} outer_lr {outer_lr}: "
              f"{len(learner.recalled_dataset()[1])} recalls, {learner.memory_nbytes} bytes, "
              f"accuracy {100 * acc:.1f}%, {time.perf_counter() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
