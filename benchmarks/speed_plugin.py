"""What a plug-in (DDN by default) costs on top of each replay method, in one process.

For each method, the method alone and the method with the plug-in take online steps
(stream 32 + 32 replayed, CIFAR-shaped uint8 batches, fp32), interleaved round by
round so this machine's speed drift hits both alike; the ratio is the plug-in's cost.

    python benchmarks/speed_plugin.py --methods er derpp clser er-ace --iters 20
    python benchmarks/speed_plugin.py --methods er --plugin-arg lookahead=own --plugin-arg every=1
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from memdistill.config import parse_option
from memdistill.data.scenarios import NORMALISATION
from memdistill.methods import METHODS, PLUGINS, LearnerContext
from memdistill.nets import build_backbone


def make_learner(method: str, backbone: str, plugin: str | None, plugin_args: dict, seed: int = 0):
    torch.manual_seed(seed)
    model = build_backbone(backbone, (3, 32, 32), 10)
    mean, std = NORMALISATION["cifar10"]
    ctx = LearnerContext(num_classes=10, num_tasks=5, input_shape=(3, 32, 32), mean=mean, std=std,
                         augment=True, device=torch.device("cpu"), channels_last=True, lr=0.03,
                         batch_size=32, replay_batch_size=32, buffer=200, seed=seed)
    kwargs = {} if plugin is None else {"plugins": [PLUGINS[plugin](**plugin_args)]}
    return METHODS[method](model, ctx, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["er", "derpp", "clser", "er-ace"])
    parser.add_argument("--plugin", default="ddn")
    parser.add_argument("--plugin-arg", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--backbone", default="reduced-resnet18")
    parser.add_argument("--iters", type=int, default=20, help="steps per timing")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timings (the fastest counts)")
    args = parser.parse_args()
    plugin_args = dict(parse_option(a) for a in args.plugin_arg)

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2000, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (2000,), generator=g)
    task = type("Task", (), {"index": 0, "classes": list(range(10))})()
    learners = {}
    for method in args.methods:
        for plugin in (None, args.plugin):
            learner = make_learner(method, args.backbone, plugin, plugin_args)
            learner.begin_task(task)
            for i in range(0, 256, 32):      # fill the buffer so every step replays
                learner.observe(images[i:i + 32], labels[i:i + 32], 0)
            learners[method if plugin is None else f"{method}+{plugin}"] = learner

    times: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, learner in learners.items():
            t0 = time.perf_counter()
            for it in range(args.iters):
                i = (it * 32) % 1900
                learner.observe(images[i:i + 32], labels[i:i + 32], 0)
            times.setdefault(name, []).append((time.perf_counter() - t0) / args.iters)
    best = {k: round(min(v), 4) for k, v in times.items()}
    print(json.dumps({"backbone": args.backbone, "plugin": args.plugin, "plugin_args": plugin_args,
                      "threads": torch.get_num_threads(), "seconds_per_step": best}, indent=2))
    for method in args.methods:
        with_plugin = best[f"{method}+{args.plugin}"]
        print(f"{method}: {best[method]:.4f} s/step, +{args.plugin} {with_plugin:.4f} s/step "
              f"= {with_plugin / best[method]:.2f}x")


if __name__ == "__main__":
    main()
