#!/usr/bin/env bash
# The attention matmuls on int8 (docs/quantization.md, "The attention matmuls on int8"), on this machine: the INT8
# folders of RT's W8A8 QAT without and with `quant.quantize_attention` (the cells qat-s$SEED and
# qat_int8_attention-s$SEED of configs/suites/rt_w8a8.yaml, SEED 42 unless set; their accuracy and paired test are
# in its report; the seed changes the weights, not the graph) timed against the FP32 model's export in one benchmark
# run, and where an INT8 call's time goes in each (tools/analyze.py kernels, 8 x 64 tokens, the models' longest).
# Results go to docs/int8_speed/attention/<isa>/ (<isa>: amx, vnni or avx2). Run it on an idle machine, after the
# two cells (python tools/experiment.py --suite configs/suites/rt_w8a8.yaml --only "qat*-s$SEED"); about 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
source experiments/int8_isa.sh
out=docs/int8_speed/attention/$isa
suite=runs/suites/rt_w8a8
seed=${SEED:-42}
for cell in qat-s$seed qat_int8_attention-s$seed; do
  if [ ! -f "$suite/$cell/int8/deploy.yaml" ]; then
    echo "no INT8 folder $suite/$cell/int8: run the cell first (its record alone has no model):" >&2
    echo "  $PY tools/experiment.py --suite configs/suites/rt_w8a8.yaml --only $cell" >&2
    exit 2
  fi
done
mkdir -p "$out"
[ -f deploy/rt_fp32/deploy.yaml ] || $PY tools/export.py --checkpoint runs/rt_minilm_fp32/checkpoints/best \
  --output deploy/rt_fp32 --precision fp32
$PY tools/benchmark.py --model "$suite/qat-s$seed/int8" --fp32-model deploy/rt_fp32 \
  --model "$suite/qat_int8_attention-s$seed/int8" --fp32-model deploy/rt_fp32 \
  --batch 1 8 --seq-len 32 64 --threads 1 2 --runs 20 --rounds 5 --warmup 2 --no-memory --json "$out/benchmark.json"
for cell in qat qat_int8_attention; do
  $PY tools/analyze.py kernels --model "$suite/$cell-s$seed/int8" --threads 2 --batch 8 --seq-len 64 --runs 10 \
    --json "$out/${cell}_b8s64_t2.json"
done
