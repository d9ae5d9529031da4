"""Where do a DDN run's soft labels put their mass?  (diagnoses G collapsing to a class prior)

Usage: python benchmarks/ddn_label_mass.py RUN_FOLDER
Loads the run's final checkpoint (a method with the `ddn` plug-in) into its learner and,
for the buffer's samples of each task, prints the mean mass that the classifier's
probabilities p, G_w's output and the soft label y~ put on the sample's true class and
on the last task's classes, G's mass on each task's classes, and how much G's output
varies across the buffer (a G whose output does not depend on its input has standard
deviation 0).  G's output is read as the plug-in uses it (centred with ``center=true``).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import yaml

from memdistill import engine
from memdistill.config import RunConfig
from memdistill.memory import MemoryBatch


def main(folder: str) -> None:
    cfg = RunConfig.from_dict(yaml.safe_load((Path(folder) / "config.yaml").read_text()))
    if cfg.plugin != "ddn":
        raise SystemExit(f"{folder}: not a ddn run (plugin {cfg.plugin!r})")
    cfg, scenario, device = engine.prepare(cfg, progress=False)
    learner = engine.build_learner(cfg, scenario, device)
    ckpt = torch.load(Path(folder) / "checkpoint.pt", map_location="cpu", weights_only=True)
    learner.load_state_dict(ckpt["learner"])
    plugin = learner.plugins[0]
    buffer = learner.buffer
    n = len(buffer)
    batch = MemoryBatch(buffer.images[:n], buffer.labels[:n], buffer.tasks[:n], torch.arange(n))
    last = torch.tensor(scenario.tasks[-1].classes)
    learner.model.eval()
    with torch.no_grad():
        p = plugin.probabilities(learner.model(learner.preprocess(batch.images, train=False)))
        # the scores over this buffer taken as one batch (what centring centres on)
        g = plugin.seen_softmax(plugin.scores(plugin.net, p))
        soft = plugin.soft_labels(batch, p)
    print(f"{folder}: buffer of {n}, last task's classes {last.tolist()}\n")
    print("| buffer task | samples | p: true | p: last task | G: true | G: last task | y~: true | y~: last task "
          "| G: mass on the classes of tasks 0, 1, ... |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t in range(len(scenario.tasks)):
        m = batch.tasks == t
        if not m.any():
            continue
        cells = []
        for d in (p, g, soft):
            cells += [d[m].gather(1, batch.labels[m][:, None]).mean(), d[m][:, last].sum(1).mean()]
        by_task = " / ".join(f"{float(g[m][:, task.classes].sum(1).mean()):.2f}" for task in scenario.tasks)
        print(f"| {t} | {int(m.sum())} | " + " | ".join(f"{float(c):.3f}" for c in cells) + f" | {by_task} |")
    print(f"\nG's output, standard deviation across the buffer, largest over classes: {float(g.std(0).max()):.3f}; "
          f"mean largest entry {float(g.max(1).values.mean()):.3f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(sys.argv[1])
