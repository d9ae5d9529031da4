"""Time and peak memory of one BPTT outer step against the unroll length T.

Each (T, checkpoint interval) runs in its own process, so the process's peak
resident memory (ru_maxrss) belongs to that setting alone.  Setting: MNIST, plain
images IPC 1 (10 images, real-image init), ConvNet-3, real batch 16 per class,
inner SGD lr 0.01 momentum 0.9.  ``sqrt`` is the default checkpointing (every
ceil(sqrt(T)) steps, recomputing segments); ``1`` keeps every step's parameters
(no recomputation; the O(T x model) strategy of the public code).

    OMP_NUM_THREADS=1 python benchmarks/bptt_memory.py --unrolls 10 50 150

``--setting cifar10-reduced-resnet18`` is one task of the Split CIFAR-10 comparison's
distilled kinds instead: 2 classes, 388 real-image starts per class (776 images, what
an addressable memory recalls at the smallest budget), reduced-resnet18 with batch
statistics, inner minibatches of 64, real batch 32 per class.  ``--setting mnist-mlp`` is the
shape of a Rotated MNIST compress-recall step: GEM's MLP on 200 images (20 per class), all in
every inner step, real batch 32 per class.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


SETTINGS = {  # dataset, backbone, classes, images per class, inner batch, real batch per class
    "mnist-convnet": ("mnist", "convnet", 10, 1, None, 16),
    "cifar10-reduced-resnet18": ("cifar10", "reduced-resnet18", 2, 388, 64, 32),
    "mnist-mlp": ("mnist", "mlp", 10, 20, None, 32),
}


def one(unroll: int, checkpoint_every: int | None, steps: int, cache_dir: str | None,
        setting: str = "mnist-convnet") -> dict:
    import torch

    from memdistill.data.scenarios import NORMALISATION
    from memdistill.data.sources import load_source
    from memdistill.distill import BPTTConfig, BPTTDistiller
    from memdistill.distill.experiment import DistillConfig, build_memory
    from memdistill.nets import build_backbone

    dataset, backbone, classes, ipc, inner_batch, real_batch = SETTINGS[setting]
    src = load_source(dataset, cache_dir=cache_dir, progress=False)
    x = torch.from_numpy(src.train.images.copy())
    y = torch.from_numpy(src.train.labels.copy())
    keep = y < classes
    x, y = x[keep], y[keep]
    mean, std = NORMALISATION[dataset]
    memory = build_memory(DistillConfig(memory="images", ipc=ipc), x, y, classes, mean, std)
    cfg = BPTTConfig(unroll=unroll, real_batch_per_class=real_batch, inner_batch=inner_batch,
                     checkpoint_every=checkpoint_every)
    shape = tuple(x.shape[1:])
    distiller = BPTTDistiller(memory, lambda: build_backbone(backbone, shape, classes), x, y, mean, std, cfg)
    before = rss_mb()
    times, entry = [], {}
    for _ in range(steps):
        t0 = time.perf_counter()
        entry = distiller.outer_step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"setting": setting, "unroll": unroll, "checkpoint_every": checkpoint_every or "sqrt", "steps": steps,
            "seconds_per_step": round(sum(times) / len(times), 2), "rss_before_mb": round(before, 1),
            "peak_rss_mb": round(peak, 1), "step_peak_increase_mb": round(peak - before, 1),
            "stored_param_sets": entry["stored_param_sets"], "stored_mb": round(entry["stored_mb"], 1),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unrolls", type=int, nargs="+", default=[10, 50, 150])
    parser.add_argument("--modes", nargs="+", default=["sqrt", "1"], help="checkpoint intervals: sqrt or an int")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--cache-dir")
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="mnist-convnet")
    parser.add_argument("--child", nargs=2, metavar=("T", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        T, mode = int(args.child[0]), args.child[1]
        print(json.dumps(one(T, None if mode == "sqrt" else int(mode), args.steps, args.cache_dir, args.setting)))
        return
    for T in args.unrolls:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--child", str(T), mode, "--steps", str(args.steps),
                   "--setting", args.setting]
            if args.cache_dir:
                cmd += ["--cache-dir", args.cache_dir]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            print(out.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
