#!/usr/bin/env bash
# Low-bit QAT with distillation and Teacher Intervention on the real model (docs/distillation.md).
# For each task, weight format and seed: QAT alone (ground-truth cross-entropy), QAT + KD (TernaryBERT's
# losses plus TI's attention-output term, no ground truth, as the TI reference runs them) and QAT + TI
# (the same KD, with gradual TI for the first s = 30 steps), all from the FP32 checkpoint at equal step
# budgets of one epoch (MR 100 steps, R8 155), learning rate 2e-5 (TI's reference), dev accuracy every 10 steps.
#   W4A8 = LSQ 4-bit per-tensor weights, W2A8 = TWN ternary per-tensor weights; PaddleSlim's 8-bit
#   moving-average activations in both, so both export to oneDNN INT8 (the first seed's runs are exported
#   and verified on the test split).
# Needs the FP32 runs of the README. Resumable: finished runs are skipped, a killed one resumes.
# TASKS (default "mr r8"), SEEDS_mr (default "42 43 44"), SEEDS_r8 (default "42"), FORMATS (default
# "w2a8 w4a8") and METHODS (default "qat kd ti") narrow it down.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
declare -A FORMAT=([w4a8]="-o quant.weight_quantizer=lsq -o quant.weight_bits=4"
                   [w2a8]="-o quant.weight_quantizer=ternary -o quant.weight_bits=2")
declare -A SEEDS=([mr]="${SEEDS_mr:-42 43 44}" [r8]="${SEEDS_r8:-42}")
KD="-o distill.ground_truth_weight=0 -o distill.attention_output_weight=1"
declare -A METHOD=([qat]="" [kd]="$KD" [ti]="$KD -o distill.intervention=scheduled -o distill.intervention_steps=30")
run() {  # run TASK FORMAT METHOD SEED
  local task=$1 format=$2 method=$3 seed=$4 out=runs/distill/$1_$2_$3_s$4
  local teacher=runs/${task}_minilm_fp32/checkpoints/best
  local distill=""
  [ "$method" = qat ] || distill="-o distill.teacher=$teacher ${METHOD[$method]}"
  test -f "$out/results.json" || $PY tools/train.py --config configs/${task}_minilm_qat.yaml --resume \
    -o train.output_dir=$out -o train.seed=$seed -o train.epochs=1 -o train.learning_rate=2e-5 \
    -o train.eval_every=10 ${FORMAT[$format]} $distill
  local report=runs/distill/$(basename $out).int8.json  # the INT8 export's verification, passed or not
  if [ "$seed" = 42 ] && ! test -f $report; then
    $PY tools/export.py --checkpoint $out/checkpoints/best --output deploy/distill/$(basename $out) \
      --verify $task:test --report $report || echo "export of $out failed (see above)"
  fi
}
for task in ${TASKS:-mr r8}; do
  for seed in ${SEEDS[$task]}; do
    for format in ${FORMATS:-w2a8 w4a8}; do
      for method in ${METHODS:-qat kd ti}; do run $task $format $method $seed; done
    done
  done
  $PY experiments/distill_report.py $task
done
