#!/usr/bin/env bash
# SAM and SQuAT on the real model (docs/sam.md). For each task, weight format and seed, from the FP32
# checkpoint at equal step budgets of one epoch (MR 100 steps, R8 155), learning rate 2e-5, dev accuracy
# every 10 steps, LSQ per-tensor weights and PaddleSlim's 8-bit activations (W4A8 and W2A8):
#   qat    plain LSQ QAT (at W4A8 the very command of experiments/distill.sh: its run is shared, not redone);
#   sam    QAT with SAM steps (ρ = 0.05);
#   squat  SQuAT: SAM steps on the weights alternating with plain steps on the LSQ step sizes;
#   ${COMBINE}: the method BEST (default squat) with ${COMBINE} (default kd: experiments/distill.sh's KD).
# Then the sharpness of every first-seed checkpoint (tools/analyze.py sharpness, on the dev split; those
# measured before are kept) and the report (experiments/sam_report.py). Needs the FP32 runs of the
# README. Resumable: finished runs are skipped, a killed one resumes. TASKS (default "mr r8"), SEEDS_mr
# (default "42 43 44"), SEEDS_r8 (default "42"), FORMATS (default "w4a8 w2a8") and METHODS narrow it down;
# ANALYZE=0 trains only (for lanes run side by side at one thread each; a last call with the default
# measures and reports); LANDSCAPE (default 21) sets the landscape's points.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BEST=${BEST:-squat} COMBINE=${COMBINE:-kd}
declare -A FORMAT=([w4a8]="-o quant.weight_bits=4" [w2a8]="-o quant.weight_bits=2")
declare -A SEEDS=([mr]="${SEEDS_mr:-42 43 44}" [r8]="${SEEDS_r8:-42}")
declare -A STEP=([qat]="" [sam]="-o optimizer.method=sam" [squat]="-o optimizer.method=squat")
declare -A DISTILL=([kd]="-o distill.ground_truth_weight=0 -o distill.attention_output_weight=1"
                    [ti]="-o distill.ground_truth_weight=0 -o distill.attention_output_weight=1
                          -o distill.intervention=scheduled -o distill.intervention_steps=30")
mkdir -p runs/sam
run() {  # run TASK FORMAT METHOD SEED
  local task=$1 format=$2 method=$3 seed=$4 name=$1_$2_$3_s$4
  local out=runs/sam/$name step=${STEP[${method%%+*}]} distill=""
  if [ "$format/$method" = w4a8/qat ] && [ ! -e "$out" ] && [ -f "runs/distill/$name/results.json" ]; then
    ln -s "../distill/$name" "$out"
  fi
  if [ "$method" != "${method%%+*}" ]; then
    distill="-o distill.teacher=runs/${task}_minilm_fp32/checkpoints/best ${DISTILL[${method#*+}]}"
  fi
  test -f "$out/results.json" || $PY tools/train.py --config configs/${task}_minilm_qat.yaml --resume \
    -o train.output_dir=$out -o train.seed=$seed -o train.epochs=1 -o train.learning_rate=2e-5 \
    -o train.eval_every=10 -o quant.weight_quantizer=lsq ${FORMAT[$format]} $step $distill
}
for task in ${TASKS:-mr r8}; do
  for seed in ${SEEDS[$task]}; do
    for format in ${FORMATS:-w4a8 w2a8}; do
      for method in ${METHODS:-qat sam squat $BEST+$COMBINE}; do run $task $format $method $seed; done
    done
  done
  test "${ANALYZE:-1}" = 0 && continue
  first=${SEEDS[$task]%% *}
  checkpoints=$(for run in runs/sam/${task}_*_s$first; do test -f $run/results.json && echo "--checkpoint $run/checkpoints/best"; done)
  $PY tools/analyze.py sharpness $checkpoints --data $task:dev --landscape ${LANDSCAPE:-21} --out docs/sam/${task}_sharpness
  $PY experiments/sam_report.py $task
done
