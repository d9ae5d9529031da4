#!/usr/bin/env bash
# The domain-incremental distillation tables on the paper's 20 Rotated-MNIST domains
# (presets didd-rot-mnist-20 and didd-rot-mnist-20-ablation: reduced per-domain settings,
# docs/benchmarks.md): the main rows (finetune, EWC, MAS, LwF, stable, asymmetric, joint)
# and the ablation's extra row (asymmetric-linear), for each IPC and seed.
# Usage: SEEDS="0 1 2" IPCS="1 10" bash benchmarks/didd_rot_mnist_20.sh [OUT]
# (default OUT benchmarks/out/didd-rot-mnist-20; IPC 1 goes to OUT, IPC N > 1 to OUT-ipcN).
# IPC 1 keeps the preset's evaluation (1 ConvNet, 100 epochs of one batch: 100 SGD steps);
# IPC N > 1 trains the evaluation net for the same 100 steps, in batches of 25
# (--eval-epochs 100*25/(10N) --eval-batch 25), not 100 epochs of 10N images, which costs
# N times more (at IPC 10 one finetune run was still evaluating after 17 minutes).
# EVAL_ARGS overrides this.
# A strategy whose folder holds a summary is not run again.  On the 2-core Xeon one IPC-1
# strategy takes ~5 minutes on 1 thread (joint ~3); two scripts with disjoint SEEDS can
# run side by side.
set -euo pipefail
out=${1:-benchmarks/out/didd-rot-mnist-20}
memdistill=${MEMDISTILL:-memdistill}
for ipc in ${IPCS:-1}; do
    folder=$out
    [ "$ipc" = 1 ] || folder=$out-ipc$ipc
    eval_args=${EVAL_ARGS:-}
    [ -n "$eval_args" ] || [ "$ipc" = 1 ] || eval_args="--eval-epochs $(( (250 + ipc - 1) / ipc )) --eval-batch 25"
    for seed in ${SEEDS:-0 1 2}; do
        for strategy in finetune asymmetric stable ewc mas lwf joint asymmetric-linear; do
            [ -f "$folder/seed$seed/$strategy/summary.json" ] && continue
            preset=didd-rot-mnist-20
            ranges=""
            # The hand-made split over the full (0, 2) ranges (the defaults before 2026-12-06):
            # within a class, rates from pure stability to pure plasticity.
            [ "$strategy" = asymmetric-linear ] && preset=didd-rot-mnist-20-ablation \
                && ranges="--alpha-min 0 --alpha-max 2 --beta-min 0 --beta-max 2"
            $memdistill distill --preset $preset --strategy $strategy --ipc "$ipc" --seed "$seed" \
                $ranges $eval_args --no-progress --out "$folder/seed$seed/$strategy"
        done
    done
    ${PYTHON:-python} "$(dirname "$0")/didd_table.py" "$folder"
done
