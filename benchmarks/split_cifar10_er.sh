#!/usr/bin/env bash
# Online Split CIFAR-10 with ER: the runs behind docs/benchmarks.md (issue 2).
# Usage: bash benchmarks/split_cifar10_er.sh [OUT]   (default benchmarks/out/split-cifar10)
# Each run resumes if interrupted; run it again to finish.  Needs cifar10.tar.gz in
# ../shared/datasets (or --data-dir / $MEMDISTILL_DATA).
set -euo pipefail
out=${1:-benchmarks/out/split-cifar10}
# 1. reduced-resnet18, lr 0.03 (DDN paper App. C.2), buffers 200 and 500, 3 seeds
memdistill run --preset split-cifar10-online-er --out "$out/er-reduced" --no-progress
# 2. the lower bound in the same setting
memdistill run --preset split-cifar10-online-er --method finetune --buffer 0 --seed 0 1 2 \
    --out "$out/finetune-reduced" --no-progress
# 3. Mammoth's setting for the side-by-side comparison (lr 0.1, buffer 200, seed 0)
memdistill run --preset mammoth-er-online --out "$out/er-reduced-mammoth" --no-progress
# 4. the DDN paper's backbone, once
memdistill run --preset split-cifar10-online-er --backbone resnet18 --buffer 200 --seed 0 \
    --out "$out/er-resnet18" --no-progress
memdistill report "$out"
