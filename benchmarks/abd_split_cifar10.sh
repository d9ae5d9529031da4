#!/usr/bin/env bash
# ABD against base (finetune), LwF, LwF.MC and DeepInversion on the reduced CPU protocol
# (preset abd-split-cifar10-cpu: Split CIFAR-10, 5 tasks, ResNet-32), plus the offline
# upper bound (joint) for Omega and, with ABLATIONS=1, the Table 3 ablations of ABD.
# Usage: SEEDS="0 1 2" ABLATIONS=1 bash benchmarks/abd_split_cifar10.sh [OUT]
# (default OUT benchmarks/out/abd-split-cifar10).  Every run resumes if interrupted.
# CORESET=N (default 200: the paper's 2,000 of CIFAR-100's 50,000 images, 4 %, scaled to
# these 5,000) adds the stored-data baselines naive-rehearsal and lwf-coreset; 0 skips them.
# Then: python benchmarks/abd_table.py OUT   (A_N and Omega, mean ± std over seeds).
set -euo pipefail
out=${1:-benchmarks/out/abd-split-cifar10}
seeds=${SEEDS:-0 1 2}
memdistill=${MEMDISTILL:-memdistill}
# The generator on a CPU budget: 300 Adam steps per task, width 16, batch 64 (= the stream
# batch); at 50 it stops at its most collapsed point (docs/benchmarks.md).
gen=(--method-arg generator_steps=${GEN_STEPS:-300} --method-arg generator_width=${GEN_WIDTH:-16})

run() {   # run LABEL SEED ARGS...
    local label=$1 seed=$2
    shift 2
    $memdistill run --preset abd-split-cifar10-cpu --seed "$seed" --class-order-seed "$seed" \
        --out "$out/$label/seed$seed" --no-progress "$@"
}

for seed in $seeds; do
    run abd "$seed" --method abd "${gen[@]}"
    run deepinversion "$seed" --method deepinversion "${gen[@]}"
    run lwf "$seed" --method lwf
    run lwf-mc "$seed" --method lwf-mc
    run base "$seed" --method finetune
    if [ "${CORESET:-200}" != 0 ]; then
        run naive-rehearsal "$seed" --method naive-rehearsal --buffer "${CORESET:-200}"
        run lwf-coreset "$seed" --method lwf-coreset --buffer "${CORESET:-200}"
    fi
    # the offline upper bound, trained to convergence: 15 epochs over all five tasks' data
    run upper-bound "$seed" --method joint --epochs "${UPPER_EPOCHS:-15}"
done
if [ "${ABLATIONS:-0}" = 1 ]; then
    for seed in $seeds; do
        run abd-no-balance "$seed" --method abd "${gen[@]}" --method-arg balance=false
        run abd-standard-ce "$seed" --method abd "${gen[@]}" --method-arg local_ce=false
        run abd-no-kd-real "$seed" --method abd "${gen[@]}" --method-arg kd_real=false
        run abd-no-kd-synthetic "$seed" --method abd "${gen[@]}" --method-arg kd_synthetic=false
        run abd-no-ft "$seed" --method abd "${gen[@]}" --method-arg finetune_head=false
    done
fi
${PYTHON:-python} "$(dirname "$0")/abd_table.py" "$out"
