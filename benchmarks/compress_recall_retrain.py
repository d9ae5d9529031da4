"""Retrain the network of a finished compress-recall run from its stored memories, under
other schedules, and print the mean test accuracy over all tasks (RA) for each.

Does the retraining limit compress-then-recall, or the memories?  (docs/benchmarks.md,
Rotated MNIST.)

    OMP_NUM_THREADS=1 python benchmarks/compress_recall_retrain.py benchmarks/out/rot-mnist-cr/stream1-end100
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import yaml

from memdistill import engine
from memdistill.config import RunConfig
from memdistill.distill.evaluate import TrainSchedule, train_fresh_network

# (epochs, lr, batch); the first is the method's default
SCHEDULES = [(300, 0.01, 256), (300, 0.05, 256), (1000, 0.01, 256), (300, 0.01, 32), (100, 0.1, 64)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished compress-recall run folder")
    parser.add_argument("--seed", type=int, default=123, help="seed of the retrained networks")
    args = parser.parse_args()
    saved = yaml.safe_load((args.run / "config.yaml").read_text())
    cfg = RunConfig(**{k: v for k, v in saved.items() if k in RunConfig.__dataclass_fields__})
    if cfg.method != "compress-recall":
        parser.error(f"{args.run} is a {cfg.method} run, not compress-recall")
    cfg, scenario, device = engine.prepare(cfg, progress=False)
    learner = engine.build_learner(cfg, scenario, device)
    learner.load_state_dict(torch.load(args.run / "checkpoint.pt", weights_only=True)["learner"])
    images, labels = learner.recalled_dataset()
    print(f"{args.run}: {len(labels)} recalled samples from {len(learner.memories)} memories")
    for epochs, lr, batch in SCHEDULES:
        net = train_fresh_network(images, labels, learner._fresh_network,
                                  TrainSchedule(epochs=epochs, lr=lr, batch_size=batch), seed=args.seed)
        learner.model.load_state_dict(net.state_dict())
        accs = [(learner.predict(t.test_images).argmax(1) == t.test_labels).float().mean().item()
                for t in scenario.tasks]
        print(f"epochs {epochs:4d} lr {lr:<5} batch {batch:3d}: RA {100 * sum(accs) / len(accs):.2f}", flush=True)


if __name__ == "__main__":
    main()
