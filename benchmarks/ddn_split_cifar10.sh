#!/usr/bin/env bash
# DDN's Table 1 (four replay methods, each with and without DDN), Table 3 (soft-label
# sources for ER) and Table 4 (ER at buffers 50 and 100) on the CPU protocol of
# docs/benchmarks.md: online Split CIFAR-10, reduced-resnet18, lr 0.03, stream 32 + 32.
#
# Usage: bash benchmarks/ddn_split_cifar10.sh TABLE [SEEDS] [JOBS]
#   TABLE: table1-m200 | table1-m500 | table3-m200 | table3-m500 | table4
#   SEEDS: e.g. "0 1 2" (default 0); JOBS: runs at once (default 2, one thread each)
# One folder per run, benchmarks/out/split-cifar10/<table>/<label>-m<M>/seed<S>; a run
# that is interrupted resumes from its last finished task when started again, and a
# finished one is skipped.  Never start two copies on the same table and seed.
set -euo pipefail
table=${1:?usage: ddn_split_cifar10.sh TABLE [SEEDS] [JOBS]}
seeds=${2:-0}
jobs=${3:-2}
out=benchmarks/out/split-cifar10

# label|method spec|buffer
case $table in
  table1-m200|table1-m500)
    m=${table#table1-m}
    # CLS-ER's reference plastic update probability is 0.3 at 200 samples and 0.9 at 500
    pp=$([ "$m" = 500 ] && echo 0.9 || echo 0.3)
    rows="er|er|$m er+ddn|er+ddn|$m derpp|derpp|$m derpp+ddn|derpp+ddn|$m
          clser|clser:plastic_prob=$pp|$m clser+ddn|clser:plastic_prob=$pp+ddn|$m
          er-ace|er-ace|$m er-ace+ddn|er-ace+ddn|$m"
    dir=table1 ;;
  table3-m200|table3-m500)
    m=${table#table3-m}
    rows="er+random-labels|er+random-labels|$m er+ls0.1|er+label-smoothing:eps=0.1|$m
          er+ls0.5|er+label-smoothing:eps=0.5|$m er+l2y|er+l2y|$m"
    dir=table3 ;;
  table4)
    rows="er|er|50 er+ddn|er+ddn|50 er|er|100 er+ddn|er+ddn|100"
    dir=table4 ;;
  *) echo "unknown table $table (table1-m200, table1-m500, table3-m200, table3-m500, table4)" >&2; exit 2 ;;
esac

for seed in $seeds; do
  for row in $rows; do
    IFS='|' read -r label spec buffer <<< "$row"
    folder=$out/$dir/$label-m$buffer/seed$seed
    [ -f "$folder/summary.json" ] && continue
    echo "$spec|$buffer|$seed|$folder"
  done
done | xargs -P "$jobs" -I{} bash -c '
  IFS="|" read -r spec buffer seed folder <<< "{}"
  mkdir -p "$(dirname "$folder")"
  OMP_NUM_THREADS=1 memdistill run --preset split-cifar10-online-er --method "$spec" --buffer "$buffer" \
      --seed "$seed" --out "$folder" --no-progress > "$folder.log" 2>&1 \
    && echo "done $folder" || echo "FAILED $folder (see $folder.log)"'
memdistill report "$out/$dir"
