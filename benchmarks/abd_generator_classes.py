"""Which old classes does a run's last generator produce?  (diagnoses mode collapse)

Usage: python benchmarks/abd_generator_classes.py RUN_FOLDER [N]
Loads the run's final checkpoint into its learner (abd or deepinversion), samples N
(default 256) synthetic images from the generator and prints how many the frozen
previous model labels as each old class (Eq. 3).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import yaml

from memdistill import engine
from memdistill.config import RunConfig


def main(folder: str, n: int = 256) -> None:
    cfg = RunConfig.from_dict(yaml.safe_load((Path(folder) / "config.yaml").read_text()))
    cfg, scenario, device = engine.prepare(cfg, progress=False)
    learner = engine.build_learner(cfg, scenario, device)
    ckpt = torch.load(Path(folder) / "checkpoint.pt", map_location="cpu", weights_only=True)
    learner.load_state_dict(ckpt["learner"])
    x = learner.synthetic_batch(n)
    old_logits, _ = learner.previous_forward(x)
    labels = learner.pseudo_labels(old_logits)
    counts = {c: int((labels == c).sum()) for c in learner.old_classes}
    print(json.dumps({"run": folder, "samples": n, "count_per_old_class": counts}))


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))
