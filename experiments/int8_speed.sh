#!/usr/bin/env bash
# The INT8 speed study of docs/int8_speed.md, on this machine: where a predictor's time goes
# (tools/analyze.py kernels on the benchmark's random-weight MiniLM, batch 1 x 64 tokens, INT8 and FP32,
# 1 and 2 threads, and on ERNIE-base at batch 8 x 128 tokens, 2 threads) and the full benchmark of both
# shapes with the ONNX Runtime peer (pip install -r requirements-bench.txt). Results go to
# docs/int8_speed/<isa>/, <isa> naming the CPU's best int8 instructions (amx, vnni or avx2), so runs on
# different CPUs sit side by side. Run it on an idle machine: it takes about 30 minutes on 2 AVX2 cores.
# It ends with the batch-1 MiniLM study (docs/int8_speed.md, "Batch 1: a fixed cost per call"): one
# benchmark run with ONNX Runtime at 4, 64 and 128 tokens (4 tokens: the fixed cost of a call), in $out/b1/,
# summed up by experiments/b1_report.py. PART=b1 runs only that (about 4 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
source experiments/int8_isa.sh
out=docs/int8_speed/$isa
mkdir -p "$out"
if [ "${PART:-all}" = all ]; then
  for precision in int8 fp32; do
    for threads in 1 2; do
      $PY tools/analyze.py kernels --shape minilm --precision $precision --threads $threads --batch 1 --seq-len 64 \
        --runs 20 --json "$out/minilm_${precision}_b1s64_t$threads.json"
    done
  done
  for precision in int8 fp32; do
    $PY tools/analyze.py kernels --shape ernie-base --precision $precision --threads 2 --batch 8 --seq-len 128 \
      --runs 5 --json "$out/ernie-base_${precision}_b8s128_t2.json"
  done
  $PY tools/benchmark.py --shape minilm --shape ernie-base --runs 8 --warmup 1 --json "$out/benchmark.json" \
    --png "$out/benchmark.png"
fi
mkdir -p "$out/b1"
$PY tools/benchmark.py --shape minilm --batch 1 --seq-len 4 64 128 --runs 200 --rounds 10 --warmup 3 --no-memory \
  --json "$out/b1/benchmark.json"
$PY experiments/b1_report.py "$out/b1/benchmark.json" | tee "$out/b1/report.md"
