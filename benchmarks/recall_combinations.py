"""Beyond recall by label (Remember the Past, Sec. 5.3): classifiers for class combinations
that no task held together, trained from what a run stored.

Usage: python benchmarks/recall_combinations.py [--ways 2 5] [--combos 10] [--epochs 300] RUN_FOLDER...

For each class-incremental run folder (compress-recall: what its memories recall; a
replay method: its buffer's images) the final checkpoint is loaded, ``--combos`` random
sets of ``--ways`` classes that lie in more than one task are drawn (the same sets for
every run), and for each set a fresh network (the run's backbone, ``ways`` outputs) is
trained on the run's stored samples of those classes and tested on their real test
images.  Prints a markdown table: accuracy mean ± std over the sets, per ``ways``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import yaml

from memdistill import engine
from memdistill.config import RunConfig
from memdistill.distill.evaluate import HeldOutImages, TrainSchedule, test_accuracy, train_fresh_network
from memdistill.nets import build_backbone


def stored_samples(learner) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(images in the network's input space, global labels, what they are)."""
    if hasattr(learner, "recalled_dataset"):
        images, labels = learner.recalled_dataset()
        return images.detach(), labels, "recalled"
    buffer = getattr(learner, "buffer", None)
    if buffer is None or len(buffer) == 0:
        raise SystemExit(f"{learner.name}: the run stores no samples to train from")
    n = len(buffer)
    return learner.preprocess(buffer.images[:n], train=False), buffer.labels[:n], "buffer"


def combinations(tasks, ways: int, count: int, seed: int) -> list[list[int]]:
    """``count`` distinct sets of ``ways`` classes, none inside a single task."""
    classes = sorted(c for t in tasks for c in t.classes)
    task_of = {c: t.index for t in tasks for c in t.classes}
    rng = np.random.default_rng(seed)
    found: list[list[int]] = []
    for _ in range(1000 * count):
        pick = sorted(rng.choice(classes, size=ways, replace=False).tolist())
        if len({task_of[c] for c in pick}) > 1 and pick not in found:
            found.append(pick)
        if len(found) == count:
            break
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--ways", type=int, nargs="+", default=[2, 5])
    parser.add_argument("--combos", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=300)   # the evaluation protocol (distill/evaluate.py)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"| run | stored | bytes | " + " | ".join(f"{w}-way ACC" for w in args.ways) + " |")
    print("|---|---|---|" + "---|" * len(args.ways))
    for folder in args.runs:
        folder = Path(folder)
        cfg = RunConfig.from_dict(yaml.safe_load((folder / "config.yaml").read_text()))
        cfg, scenario, device = engine.prepare(cfg, progress=False)
        if scenario.kind != "class-incremental":
            raise SystemExit(f"{folder}: {scenario.name} is not class-incremental")
        learner = engine.build_learner(cfg, scenario, device)
        learner.load_state_dict(torch.load(folder / "checkpoint.pt", map_location="cpu",
                                           weights_only=True)["learner"])
        images, labels, what = stored_samples(learner)
        test_x = torch.cat([t.test_images for t in scenario.tasks])
        test_y = torch.cat([t.test_labels for t in scenario.tasks])
        summary = json.loads((folder / "summary.json").read_text())
        cells = []
        for ways in args.ways:
            accuracies = []
            for i, pick in enumerate(combinations(scenario.tasks, ways, args.combos, args.seed)):
                position = {c: k for k, c in enumerate(pick)}
                keep = torch.isin(labels, torch.tensor(pick, device=labels.device))
                test_keep = torch.isin(test_y, torch.tensor(pick))
                if not keep.any():
                    continue
                y = torch.tensor([position[int(c)] for c in labels[keep]], device=images.device)
                net = train_fresh_network(images[keep], y,
                                          lambda: build_backbone(cfg.backbone, scenario.input_shape, ways),
                                          TrainSchedule(epochs=args.epochs), seed=args.seed * 1000 + i)
                test = HeldOutImages(test_x[test_keep], torch.tensor([position[int(c)] for c in test_y[test_keep]]),
                                     scenario.mean, scenario.std)
                accuracies.append(test_accuracy(net, test))
            cells.append(f"{np.mean(accuracies):.2f} ± {np.std(accuracies):.2f} ({len(accuracies)} sets)")
        print(f"| {folder} | {what} | {summary['memory_bytes']} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
