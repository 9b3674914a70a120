#!/usr/bin/env bash
# Kurtosis regularization on the real model (docs/kurtosis.md), MR then R8:
#  1. per-layer weight/activation statistics of the FP32 starting point (tools/analyze.py);
#  2. QAT W8A8 from the FP32 checkpoint with KURE (fixed target 1.8) and with the ERNIE-aware
#     relative target (each tensor to half its own starting kurtosis); plain QAT is configs/*_qat.yaml;
#  3. KURE's robustness claim: FP32 fine-tuning with each regularizer, then post-training
#     quantization of the weights to W8/W6/W4 (LQ abs-max per tensor, activations A8).
# Needs the FP32 and QAT runs of the README. Resumable: finished runs are skipped.
# TASKS (default "mr r8") and FP32_REGULARIZERS (default "kure_fixed kure_relative") narrow it down;
# EXTRA_SEEDS (e.g. "43 44") repeats the three QAT runs with more seeds (MR's test set is small).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
declare -A LABEL=([kure_fixed]="KURE (fixed 1.8)" [kure_relative]="relative 0.5 (ERNIE-aware)")
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
  fp32_regs=${FP32_REGULARIZERS:-kure_fixed kure_relative}
  for reg in kure_fixed kure_relative; do
    train configs/${task}_minilm_qat.yaml runs/${task}_qat_${reg} ${REGULARIZER[$reg]}
  done
  for seed in ${EXTRA_SEEDS:-}; do
    train configs/${task}_minilm_qat.yaml runs/${task}_qat_s$seed -o train.seed=$seed
    for reg in kure_fixed kure_relative; do
      train configs/${task}_minilm_qat.yaml runs/${task}_qat_${reg}_s$seed -o train.seed=$seed ${REGULARIZER[$reg]}
    done
  done
  for reg in $fp32_regs; do
    train configs/${task}_minilm_fp32.yaml runs/${task}_fp32_${reg} ${REGULARIZER[$reg]}
  done
  for run in ${task}_minilm_fp32 $(printf "${task}_fp32_%s " $fp32_regs); do
    $PY tools/ptq.py --config configs/${task}_minilm_ptq.yaml -o ptq.checkpoint=runs/$run/checkpoints/best \
      -o train.output_dir=runs/robustness/$run --grid --resume --methods lq_absmax --bits 8 6 4 --granularity per_tensor \
      --markdown docs/kurtosis/robustness_$run.md
  done
  for reg in $fp32_regs; do
    $PY tools/analyze.py kurtosis --checkpoint runs/${task}_minilm_fp32/checkpoints/best \
      --compare runs/${task}_fp32_${reg}/checkpoints/best --out docs/kurtosis/${task}_fp32_vs_${reg}
  done
  runs=("FP32=runs/${task}_minilm_fp32" "QAT W8A8=runs/${task}_minilm_qat")
  for reg in kure_fixed kure_relative; do runs+=("QAT + ${LABEL[$reg]}=runs/${task}_qat_$reg"); done
  for seed in ${EXTRA_SEEDS:-}; do
    runs+=("QAT W8A8, seed $seed=runs/${task}_qat_s$seed")
    for reg in kure_fixed kure_relative; do runs+=("QAT + ${LABEL[$reg]}, seed $seed=runs/${task}_qat_${reg}_s$seed"); done
  done
  for reg in $fp32_regs; do runs+=("FP32 + ${LABEL[$reg]}=runs/${task}_fp32_$reg"); done
  $PY tools/report.py "${runs[@]}" --markdown docs/kurtosis/${task}_runs.md
done
