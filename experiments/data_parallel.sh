#!/usr/bin/env bash
# Data parallelism on one machine: MR FP32 (configs/mr_minilm_fp32.yaml) trained by 1 process x 2 threads and by
# 2 processes x 1 thread (python -m paddle.distributed.launch), both pinned to the same 2 cores; prints the wall
# time of each whole command (launcher start-up included), its training time and its dev and test accuracy.
#
#   bash experiments/data_parallel.sh [WORKDIR]            # default runs/data_parallel; seed 42
#   SEEDS="42 43 44" bash experiments/data_parallel.sh     # seed noise: the settings differ as seeds do
#   CONFIG=configs/r8_minilm_fp32.yaml bash experiments/data_parallel.sh   # another recipe
#
# Wants an otherwise idle machine (wall times). About 2 x 150 s per seed on 2 cores. A finished run
# (results.json) is reported again, not redone; delete its folder to measure it again.
set -euo pipefail
WORK=${1:-runs/data_parallel}
SEEDS=${SEEDS:-42}
CONFIG=${CONFIG:-configs/mr_minilm_fp32.yaml}
CORES=${CORES:-0,1}   # the two cores both settings run on (taskset), so that a bigger machine measures the same
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
PIN=$(command -v taskset >/dev/null && echo "taskset -c $CORES" || echo "")
cd "$ROOT"
[ "$CONFIG" = configs/mr_minilm_fp32.yaml ] && $PY tools/fetch.py minilm mr
mkdir -p "$WORK"

run() {  # $1 setting (1x2 or 2x1), $2 seed
  local out; out="$WORK/$(basename "$CONFIG" .yaml)_$1_seed$2"
  if [ ! -f "$out/results.json" ]; then
    rm -rf "$out" "$out.launch"
    local args=(tools/train.py --config "$CONFIG" -o "train.output_dir=$out" -o "train.seed=$2")
    local start; start=$(date +%s.%N)
    if [ "$1" = 1x2 ]; then
      OMP_NUM_THREADS=2 $PIN $PY "${args[@]}" > "$out.log" 2>&1
    else  # each rank takes its share of the usable cores: 1 thread each
      env -u OMP_NUM_THREADS $PIN $PY -m paddle.distributed.launch --nproc_per_node 2 --host 127.0.0.1 \
        --log_dir "$out.launch" "${args[@]}" > "$out.log" 2>&1
    fi
    $PY -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$start" "$(date +%s.%N)" \
      > "$out/wall_seconds.txt"
  fi
  $PY - "$out" "$1" "$2" <<'EOF'
import json, sys
from pathlib import Path
out, setting, seed = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
results = json.loads((out / "results.json").read_text())
wall = float((out / "wall_seconds.txt").read_text())
print(f"| {setting} | {seed} | {wall:.0f} s | {results['train_seconds']:.0f} s | {results['dev']['accuracy']:.2f} "
      f"| {results['test']['accuracy']:.2f} | {results['environment']} |")
EOF
}

echo "| processes x threads | seed | wall time | training | dev accuracy | test accuracy | CPU settings |"
echo "|---|---|---|---|---|---|---|"
for seed in $SEEDS; do
  run 1x2 "$seed"
  run 2x1 "$seed"
done
