"""Where the time of an online ER step goes, measured in one process.

Compares, on the same batch-64 shapes (stream 32 + 32 replayed):
  bare     a forward/backward/SGD step on ready-made float tensors (the floor)
  er       ``ExperienceReplay.observe`` on uint8 stream batches: sampling the
           buffer, crop+flip, normalisation, the step, the reservoir update
for fp32 and bf16, NCHW and channels-last, interleaved so machine drift hits all
variants alike.  ``--torch-batchnorm`` adds channels-last variants whose batch-norm
layers use PyTorch's own kernel instead of memdistill's row path
(``memdistill.nets.batchnorm``).  Then a torch.profiler table of the ER step.

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


def make_learner(backbone: str, precision: str, channels_last: bool, torch_batchnorm: bool = False,
                 seed: int = 0, device: str = "cpu"):
    torch.manual_seed(seed)
    model = build_backbone(backbone, (3, 32, 32), 10)
    if torch_batchnorm:   # same parameters, PyTorch's forward
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.__class__ = torch.nn.BatchNorm2d
    mean, std = NORMALISATION["cifar10"]
    ctx = LearnerContext(num_classes=10, num_tasks=5, input_shape=(3, 32, 32), mean=mean, std=std,
                         augment=True, device=torch.device(device), precision=precision,
                         channels_last=channels_last, lr=0.03, batch_size=32, replay_batch_size=32,
                         buffer=200, seed=seed)
    return METHODS["er"](model, ctx)


def layout_name(channels_last: bool, torch_batchnorm: bool) -> str:
    if not channels_last:
        return "nchw"
    return "channels-last torch-bn" if torch_batchnorm else "channels-last"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="reduced-resnet18")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--torch-batchnorm", action="store_true",
                        help="also time channels-last with PyTorch's batch-norm kernel")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (times are taken after a synchronize)")
    args = parser.parse_args()
    device = torch.device(args.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2000, 3, 32, 32), dtype=torch.uint8, generator=g).to(device)
    labels = torch.randint(0, 10, (2000,), generator=g).to(device)
    layouts = [(False, False), (True, False)] + ([(True, True)] if args.torch_batchnorm else [])
    variants = [(p, cl, tbn) for p in args.precisions for cl, tbn in layouts]
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
        for (precision, cl, tbn), learner in learners.items():
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
                key = f"{name} {precision} {layout_name(cl, tbn)}"
                times.setdefault(key, []).append((time.perf_counter() - t0) / args.iters)
    result = {k: round(min(v), 4) for k, v in times.items()}
    print(json.dumps({"backbone": args.backbone, "device": str(device), "seconds_per_step": result,
                      "threads": torch.get_num_threads()}, indent=2))
    for precision in args.precisions:
        for layout in [layout_name(*v) for v in layouts]:
            er, bare = result[f"er {precision} {layout}"], result[f"bare {precision} {layout}"]
            print(f"{precision} {layout}: ER step {er:.4f} s = {er / bare:.3f} x bare step {bare:.4f} s")
    if "bf16" in args.precisions and "fp32" in args.precisions:
        for layout in [layout_name(*v) for v in layouts]:
            print(f"bf16 vs fp32 ({layout}, ER step): "
                  f"{result[f'er fp32 {layout}'] / result[f'er bf16 {layout}']:.2f}x speed-up")
        best = {p: min(result[f"er {p} {layout_name(*v)}"] for v in layouts) for p in ("fp32", "bf16")}
        print(f"bf16 vs fp32 (fastest layout of each, ER step): {best['fp32'] / best['bf16']:.2f}x speed-up")
    if args.profile:
        learner = learners[("fp32", True, False)]
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for it in range(10):
                learner.observe(images[it * 32:(it + 1) * 32], labels[it * 32:(it + 1) * 32], 0)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
