#!/usr/bin/env bash
# Post-training quantization baselines on the real model (docs/ptq.md): LQ, ACIQ, OCS × per-tensor /
# per-channel × W8/W6/W4/W3 (activations A8) on R8 and MR, 8-bit results exported to oneDNN INT8 and
# verified. Needs the FP32 runs (configs/{r8,mr}_minilm_fp32.yaml). Resumable: a grid skips finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for task in r8 mr; do
  test -f runs/${task}_minilm_fp32/checkpoints/best/config.yaml ||
    $PY tools/train.py --config configs/${task}_minilm_fp32.yaml --resume
  $PY tools/ptq.py --config configs/${task}_minilm_ptq.yaml --grid --verify ${task}:test --markdown docs/ptq_${task}.md
done
