#!/usr/bin/env bash
# Do the numbers move between two revisions? Runs the README's FP32 -> QAT -> verified INT8 recipes
# (MR and R8) and the training-step benchmark for an old revision and for this checkout, on this
# machine, and compares test metrics and the best checkpoints' weights.
#
#   bash experiments/regression.sh OLD_REV [WORKDIR]      # e.g. OLD_REV=d4564d6 (before issue 10)
#   TASKS=mr bash experiments/regression.sh OLD_REV       # MR only: about 40 minutes
#
# Each checkout trains with its own cache folder (compiled kernels are per source path) sharing the
# fetched data and models. Runs resume, so an interrupted comparison continues. Takes about an hour
# and a half on 2 cores (R8 dominates); the benchmark wants an otherwise idle machine.
set -euo pipefail
OLD_REV=${1:?usage: regression.sh OLD_REV [WORKDIR]}
export TASKS=${TASKS:-mr r8}
WORK=${2:-$PWD/regression}
NEW=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$NEW/.venv/bin/python}
CACHE=${ERNIE_QAT_HOME:-$HOME/.cache/ernie-qat}
mkdir -p "$WORK"
[ -d "$WORK/old" ] || git -C "$NEW" worktree add --detach "$WORK/old" "$OLD_REV"
$PY "$NEW/tools/fetch.py" minilm r8 mr

recipes() {  # $1 checkout, $2 cache folder, $3 log
  (cd "$1" && export PYTHONPATH="$1" ERNIE_QAT_HOME="$2" && {
    for task in $TASKS; do
      $PY tools/train.py --config configs/${task}_minilm_fp32.yaml --resume
      $PY tools/train.py --config configs/${task}_minilm_qat.yaml --resume
      mkdir -p deploy
      $PY tools/export.py --checkpoint runs/${task}_minilm_qat/checkpoints/best --output deploy/${task}_int8 \
        --verify $task:test > deploy/${task}_verify.txt
    done; } > "$3" 2>&1)
}
for side in old new; do
  dir=$([ $side = old ] && echo "$WORK/old" || echo "$NEW")
  home="$WORK/cache-$side"; mkdir -p "$home"
  for sub in data models packages paddlenlp; do ln -sfn "$CACHE/$sub" "$home/$sub"; done
  recipes "$dir" "$home" "$WORK/$side.log"
done
$PY "$NEW/experiments/compare_runs.py" runs "$WORK/old" "$NEW"

for i in 1 2; do  # alternate, so drift of the machine hits both sides
  for side in old new; do
    dir=$([ $side = old ] && echo "$WORK/old" || echo "$NEW")
    (cd "$dir" && PYTHONPATH="$dir" ERNIE_QAT_HOME="$WORK/cache-$side" $PY tools/benchmark.py --train --shape minilm \
      --batch 32 --seq-len 128 --threads 2 --json "$WORK/bench_${side}_$i.json" > /dev/null)
  done
done
for i in 1 2; do  # the same two engines with 12 timed steps each, alternating
  for engine in fp32 qat; do
    for side in old new; do
      dir=$([ $side = old ] && echo "$WORK/old" || echo "$NEW")
      (cd "$dir" && PYTHONPATH="$dir" ERNIE_QAT_HOME="$WORK/cache-$side" $PY "$NEW/experiments/step_ab.py" $engine 12 \
        "$WORK/ab_${side}_${engine}_$i.json" > /dev/null 2>&1)
    done
  done
done
$PY "$NEW/experiments/compare_runs.py" bench "$WORK"
