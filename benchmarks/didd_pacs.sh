#!/usr/bin/env bash
# The domain-incremental distillation rows on PACS (4 domains at 64x64, IPC 10; presets
# didd-pacs-main and didd-pacs-ablation, reduced per-domain settings, docs/benchmarks.md):
# the main rows (finetune, EWC, MAS, LwF, joint, asymmetric) and the ablation's extra rows
# (stable, asymmetric-linear), for each seed.
# Usage: SEEDS="0 1 2" bash benchmarks/didd_pacs.sh [OUT]   (default OUT benchmarks/out/didd-pacs)
# A strategy whose folder holds a summary is not run again, so an interrupted run resumes.
set -euo pipefail
out=${1:-benchmarks/out/didd-pacs}
memdistill=${MEMDISTILL:-memdistill}
for seed in ${SEEDS:-0 1 2}; do
    for strategy in finetune asymmetric stable ewc mas lwf joint asymmetric-linear; do
        [ -f "$out/seed$seed/$strategy/summary.json" ] && continue
        preset=didd-pacs-main
        case $strategy in stable|asymmetric-linear) preset=didd-pacs-ablation ;; esac
        $memdistill distill --preset $preset --strategy $strategy --seed "$seed" \
            --no-progress --out "$out/seed$seed/$strategy"
    done
done
${PYTHON:-python} "$(dirname "$0")/didd_table.py" "$out"
