"""Batch-norm forward/backward time on CPU by dtype, memory layout and thread count.

Why bf16 training sped up less on 2 threads than on 1 (docs/benchmarks.md,
"bf16 on an AMX CPU"): PyTorch's channels-last batch-norm backward.  For
channels-last tensors it also times memdistill's ``BatchNorm2d`` (``row`` below),
which takes its row-view route where that kernel is slow.

    python benchmarks/batchnorm_threads.py --threads 1 2 --shape 64 20 32 32
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from memdistill.nets.batchnorm import BatchNorm2d


def time_batchnorm(x: torch.Tensor, reps: int, row: bool = False) -> tuple[float, float]:
    """Seconds per forward and per backward of training-mode batch norm on ``x``
    (PyTorch's kernel, or with ``row`` memdistill's ``BatchNorm2d``)."""
    c = x.shape[1]
    weight, bias = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
    mean, var = torch.zeros(c), torch.ones(c)
    module = BatchNorm2d(c)
    bn = (lambda: module(x)) if row else (lambda: F.batch_norm(x, mean, var, weight, bias, True, 0.1, 1e-5))
    grad = torch.randn_like(bn())
    for _ in range(3):
        bn().backward(grad)
    t0 = time.perf_counter()
    for _ in range(reps):
        bn()
    forward = (time.perf_counter() - t0) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        bn().backward(grad)
    return forward, (time.perf_counter() - t0) / reps - forward


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--shape", type=int, nargs=4, default=[64, 20, 32, 32],
                        help="N C H W (default: reduced-resnet18's first stage at batch 64)")
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    for threads in args.threads:
        torch.set_num_threads(threads)
        for dtype in (torch.float32, torch.bfloat16):
            for layout in ("nchw", "channels-last"):
                x = torch.randn(*args.shape).to(dtype)
                if layout == "channels-last":
                    x = x.contiguous(memory_format=torch.channels_last)
                x.requires_grad_()
                for kernel in ("torch", "row") if layout == "channels-last" else ("torch",):
                    forward, backward = time_batchnorm(x, args.reps, row=kernel == "row")
                    print(f"threads {threads} {str(dtype)[6:]:8s} {layout:13s} {kernel:5s} "
                          f"forward {forward * 1e3:6.2f} ms  backward {backward * 1e3:6.2f} ms")


if __name__ == "__main__":
    main()
