#!/usr/bin/env bash
# Post-training quantization baselines on the real model (docs/ptq.md): LQ, ACIQ and OCS per tensor, and
# LQ and ACIQ per output channel, at W8/W6/W4/W3 (activations A8) on R8 and MR; 8-bit results that
# Paddle's INT8 predictor can run are exported to oneDNN INT8 and verified. Needs the FP32 runs
# (configs/{r8,mr}_minilm_fp32.yaml). Resumable: with --resume a grid skips the runs its grid.jsonl holds
# (the per-channel grid continues the per-tensor one's; both must read the same checkpoint and config).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for task in r8 mr; do
  test -f runs/${task}_minilm_fp32/checkpoints/best/config.yaml ||
    $PY tools/train.py --config configs/${task}_minilm_fp32.yaml --resume
  ptq="$PY tools/ptq.py --config configs/${task}_minilm_ptq.yaml --grid --verify ${task}:test --resume"
  $ptq --granularity per_tensor
  $ptq --granularity per_channel --methods lq_absmax aciq_laplace --markdown docs/ptq_${task}.md
done
