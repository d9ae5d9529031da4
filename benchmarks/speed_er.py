"""Where the time of an online ER step goes, measured in one process.

Compares, on the same batch-64 shapes (stream 32 + 32 replayed):
  bare     a forward/backward/SGD step on ready-made float tensors (the floor)
  er       ``ExperienceReplay.observe`` on uint8 stream batches: sampling the
           buffer, crop+flip, normalisation, the step, the reservoir update
for fp32 and bf16, NCHW and channels-last, interleaved so machine drift hits all
variants alike.  Then a torch.profiler table of the ER step.

    python benchmarks/speed_er.py --backbone reduced-resnet18 --iters 30 [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from memdistill.methods import METHODS, LearnerContext
from memdistill.nets import build_backbone
from memdistill.data.scenarios import NORMALISATION


def make_learner(backbone: str, precision: str, channels_last: bool, seed: int = 0, device: str = "cpu"):
    torch.manual_seed(seed)
    model = build_backbone(backbone, (3, 32, 32), 10)
    mean, std = NORMALISATION["cifar10"]
    ctx = LearnerContext(num_classes=10, num_tasks=5, input_shape=(3, 32, 32), mean=mean, std=std,
                         augment=True, device=torch.device(device), precision=precision,
                         channels_last=channels_last, lr=0.03, batch_size=32, replay_batch_size=32,
                         buffer=200, seed=seed)
    return METHODS["er"](model, ctx)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="reduced-resnet18")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (times are taken after a synchronize)")
    args = parser.parse_args()
    device = torch.device(args.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2000, 3, 32, 32), dtype=torch.uint8, generator=g).to(device)
    labels = torch.randint(0, 10, (2000,), generator=g).to(device)
    variants = [(p, cl) for p in args.precisions for cl in (False, True)]
    learners = {v: make_learner(args.backbone, *v, device=args.device) for v in variants}
    for learner in learners.values():   # fill the buffer so every step replays
        learner.begin_task(type("T", (), {"index": 0, "classes": list(range(10))})())
        for i in range(0, 256, 32):
            learner.observe(images[i:i + 32], labels[i:i + 32], 0)

    def bare_step(learner, x, y):
        with learner.autocast():
            out = learner.model(x).float()
        loss = F.cross_entropy(out, y)
        learner.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        learner.optimizer.step()

    times: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for (precision, cl), learner in learners.items():
            x64 = learner.preprocess(images[:64], learner.generator)
            y64 = labels[:64]
            for name, fn in [("bare", lambda i: bare_step(learner, x64, y64)),
                             ("er", lambda i: learner.observe(images[i:i + 32], labels[i:i + 32], 0))]:
                fn(0)
                sync()
                t0 = time.perf_counter()
                for it in range(args.iters):
                    fn((it * 32) % 1900)
                sync()
                key = f"{name} {precision} {'channels-last' if cl else 'nchw'}"
                times.setdefault(key, []).append((time.perf_counter() - t0) / args.iters)
    result = {k: round(min(v), 4) for k, v in times.items()}
    print(json.dumps({"backbone": args.backbone, "device": str(device), "seconds_per_step": result,
                      "threads": torch.get_num_threads()}, indent=2))
    for precision in args.precisions:
        for layout in ("nchw", "channels-last"):
            er, bare = result[f"er {precision} {layout}"], result[f"bare {precision} {layout}"]
            print(f"{precision} {layout}: ER step {er:.4f} s = {er / bare:.3f} x bare step {bare:.4f} s")
    if "bf16" in args.precisions:
        print(f"bf16 vs fp32 (channels-last, ER step): "
              f"{result['er fp32 channels-last'] / result['er bf16 channels-last']:.2f}x speed-up")
    if args.profile:
        learner = learners[("fp32", True)]
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for it in range(10):
                learner.observe(images[it * 32:(it + 1) * 32], labels[it * 32:(it + 1) * 32], 0)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
