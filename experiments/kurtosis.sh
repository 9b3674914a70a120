#!/usr/bin/env bash
# Kurtosis regularization on the real model (docs/kurtosis.md), MR then R8:
#  1. per-layer weight/activation statistics of the FP32 starting point (tools/analyze.py);
#  2. QAT W8A8 from the FP32 checkpoint with KURE (fixed target 1.8) and with the ERNIE-aware
#     relative target (each tensor to half its own starting kurtosis); plain QAT is configs/*_qat.yaml;
#  3. KURE's robustness claim: FP32 fine-tuning with each regularizer, then post-training
#     quantization of the weights to W8/W6/W4 (LQ abs-max per tensor, activations A8).
# Needs the FP32 and QAT runs of the README. Resumable: finished runs are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
declare -A REGULARIZER=(
  [kure_fixed]="-o regularizer.method=kurtosis -o regularizer.target=fixed"
  [kure_relative]="-o regularizer.method=kurtosis -o regularizer.target=relative -o regularizer.relative_factor=0.5"
)
train() {  # train CONFIG OUTPUT_DIR [overrides...]
  local config=$1 out=$2; shift 2
  test -f "$out/results.json" || $PY tools/train.py --config "$config" -o train.output_dir="$out" "$@" --resume
}
for task in ${TASKS:-mr r8}; do
  $PY tools/analyze.py kurtosis --checkpoint runs/${task}_minilm_fp32/checkpoints/best --out docs/kurtosis/${task}_fp32
  for reg in kure_fixed kure_relative; do
    train configs/${task}_minilm_qat.yaml runs/${task}_qat_${reg} ${REGULARIZER[$reg]}
    train configs/${task}_minilm_fp32.yaml runs/${task}_fp32_${reg} ${REGULARIZER[$reg]}
  done
  for run in ${task}_minilm_fp32 ${task}_fp32_kure_fixed ${task}_fp32_kure_relative; do
    $PY tools/ptq.py --config configs/${task}_minilm_ptq.yaml -o ptq.checkpoint=runs/$run/checkpoints/best \
      -o train.output_dir=runs/robustness/$run --grid --methods lq_absmax --bits 8 6 4 --granularity per_tensor \
      --markdown docs/kurtosis/robustness_$run.md
  done
  for reg in kure_fixed kure_relative; do
    $PY tools/analyze.py kurtosis --checkpoint runs/${task}_minilm_fp32/checkpoints/best \
      --compare runs/${task}_fp32_${reg}/checkpoints/best --out docs/kurtosis/${task}_fp32_vs_${reg}
  done
  $PY tools/report.py "FP32=runs/${task}_minilm_fp32" "QAT W8A8=runs/${task}_minilm_qat" \
    "QAT + KURE (fixed 1.8)=runs/${task}_qat_kure_fixed" "QAT + relative (ERNIE-aware)=runs/${task}_qat_kure_relative" \
    "FP32 + KURE (fixed 1.8)=runs/${task}_fp32_kure_fixed" "FP32 + relative (ERNIE-aware)=runs/${task}_fp32_kure_relative" \
    --markdown docs/kurtosis/${task}_runs.md
done
