#!/usr/bin/env bash
# The RT study of docs/reproduction.md (issue 26), one cell at a time in the order that settles the most per hour:
# each paper's claim gets its first paired comparison before any claim gets its second seed. Every cell is
# recorded in docs/suites/<suite>/cells as it ends (commit those); a recorded cell is skipped, a stopped one
# resumes from its checkpoint, so run it again, here or on a fresh clone, to continue. A W8A8 or W4A8 cell takes
# about 20 minutes on 2 cores, a distillation cell about 30; all of it, about 15 hours. In the background, from a
# checkout nobody edits meanwhile (git worktree add ../study), as the machine's other work allows:
#   setsid nohup nice -n 19 bash experiments/rt_study.sh > logs/rt_study.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

cells() {  # SUITE PATTERN...: run these cells of configs/suites/SUITE.yaml
  local suite=$1
  shift
  for pattern in "$@"; do $PY tools/experiment.py --suite "configs/suites/$suite.yaml" --only "$pattern"; done
}

$PY tools/fetch.py minilm rt
[ -f runs/rt_minilm_fp32/results.json ] || $PY tools/train.py --config configs/rt_minilm_fp32.yaml --resume

# first seed of every comparison
cells rt_w4a8 squat-s42                               # SQuAT: >= 1 point over LSQ QAT (qat-s42 recorded)
cells rt_w8a8 qat-s42 qat_int8_attention-s42          # the attention matmuls on int8: what accuracy they cost
cells rt_w2a8_reference kd-s42 ti-s42                 # TI over KD in the reference's mode
cells rt_w8a8 qat_kure-s42 qat_int8_embeddings-s42 ptq_absmax-s42  # KURE's INT8 robustness; the int8 word table
cells rt_w2a8 kd-s42 ti-s42                           # TI over KD in ours, paired from records (the old runs kept none)
cells rt_w4a8 ti-s42 kd-s42 sam-s42                   # W4A8: the best recipe within 0.5 of FP32?
cells rt_w2a8 sam-s42 ti_sam-s42 lsq-s42 lsq_squat-s42
cells rt_w2a8_reference qat-s42 kd_gt-s42
# the second and third seeds
for seed in 43 44; do
  cells rt_w4a8 "qat-s$seed" "squat-s$seed"
  cells rt_w2a8_reference "kd-s$seed" "ti-s$seed"
  cells rt_w8a8 "qat-s$seed" "qat_kure-s$seed" "qat_int8_embeddings-s$seed" "qat_int8_attention-s$seed"
  cells rt_w2a8 "kd-s$seed" "ti-s$seed" "qat-s$seed" "kd_gt-s$seed"
done
for suite in rt_w2a8 rt_w2a8_reference rt_w4a8 rt_w8a8; do $PY tools/experiment.py --suite "configs/suites/$suite.yaml" --report-only; done
