#!/usr/bin/env bash
# The full-size runs that need a GPU, in blocks that each fit one call of the device tool
# (10 minutes a command; since 2026-12 a task drawn for a device gets 15 minutes of device
# time in all, start-up included, so plan one block per session).  Block times are
# estimates for an H100/H200 (a resnet18 online Split CIFAR-10 run is ~1,565 steps of
# batch 64), not measurements: the first session that runs a block should record them.
#
# Once, in the checkout (the data does not travel with ../shared):
#   echo /data/ >> .git/info/exclude; mkdir -p data; cp ../shared/datasets/{cifar10,mnist}.tar.gz data/
# Then one device-tool call per block, e.g.
#   run(command="bash benchmarks/gpu_session.sh ddn-m200-s01", carry=["data"])
# and unpack what comes back:  tar xzf <files_at>/results-ddn-m200-s01.tar.gz -C benchmarks/out/gpu
#
# Blocks:
#   ddn-m200-s01   DDN Table 1, buffer 200, seeds 0-1: 8 methods (4 baselines +- DDN), resnet18 (~8 min)
#   ddn-m500-s01   the same at buffer 500 (~8 min)
#   ddn-s2         both buffers, seed 2 (~8 min)
#   speed          ER step vs bare step, fp32 vs bf16, on the GPU (~1 min)
#   rtp-mnist-images       Remember the Past, MNIST IPC 1: plain images from class means, the paper's
#                          T = 150 inner steps, 200 outer steps, 20 evaluation networks x 300 epochs on
#                          the whole test set (~6 min; on this CPU one T = 150 step took 85 s)
#   rtp-mnist-addressable  the same with the addressable memory (32 bases at 14x14, 4 recalls a class)
set -euo pipefail
block=${1:?usage: bash benchmarks/gpu_session.sh BLOCK (ddn-m200-s01 | ddn-m500-s01 | ddn-s2 | speed | rtp-mnist-images | rtp-mnist-addressable)}
root=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH=$root/src MEMDISTILL_DATA=$root/data MEMDISTILL_CACHE=/tmp/mdcache PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
out=$root/runs/gpu
md() { "$python" -m memdistill.cli "$@"; }
table1() {  # table1 BUFFER SEED...
    local buffer=$1
    shift
    md run --preset "ddn/table1-cifar10-online-m$buffer" --seed "$@" --device cuda --no-progress \
        --no-figures --out "$out/table1-m$buffer"
}

rtp_mnist() {  # rtp_mnist NAME MEMORY-OPTIONS...: the issue's MNIST IPC 1 protocol at the paper's unroll
    local name=$1
    shift
    md distill --dataset mnist --ipc 1 --init mean "$@" --unroll 150 --steps 200 --real-batch 16 \
        --outer-optimizer adam --outer-lr 0.01 --clip 2 --checkpoint-every 1 --eval-networks 20 --eval-epochs 300 \
        --seed 0 --device cuda --no-progress --log-every 10 --out "$out/rtp-mnist-ipc1-t150/$name"
}

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
started=$(date +%s)
case $block in
    ddn-m200-s01) table1 200 0 1 ;;
    ddn-m500-s01) table1 500 0 1 ;;
    ddn-s2) table1 200 2; table1 500 2 ;;
    speed)
        mkdir -p "$out"
        for backbone in reduced-resnet18 resnet18; do
            "$python" "$root/benchmarks/speed_er.py" --device cuda --backbone "$backbone" --iters 50 --rounds 3 \
                | tee "$out/speed-$backbone.txt"
        done ;;
    rtp-mnist-images) rtp_mnist images --memory images ;;
    rtp-mnist-addressable)
        rtp_mnist addressable --memory addressable --bases 32 --downsample 2 --inner-batch 10 --inner-sampling per-class ;;
    *) echo "unknown block $block" >&2; exit 2 ;;
esac
echo "block $block took $(( $(date +%s) - started )) s"
# Summaries, matrices, configs and logs come back; checkpoints stay on the machine.
tar czf "${OUT:-$root}/results-$block.tar.gz" -C "$out" --exclude='*.pt' .
