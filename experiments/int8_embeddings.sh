#!/usr/bin/env bash
# MR W8A8 QAT with a float word table against one trained on int8 levels per row (quant.quantize_embeddings),
# seeds 42 43 44: QAT test accuracy, INT8 export verified on mr:test, deployment folder size (docs/int8_parity.md).
# Needs runs/mr_minilm_fp32 (the README's FP32 run). Resumable: finished runs and exports are skipped; an
# export that fails verification is reported (its report kept) and tried again on the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p runs/int8_emb deploy/int8_emb
for seed in ${SEEDS:-42 43 44}; do
  for table in false true; do
    name=mr_qat_emb-${table}_s$seed out=runs/int8_emb/mr_qat_emb-${table}_s$seed
    test -f $out/results.json || $PY tools/train.py --config configs/mr_minilm_qat.yaml --resume \
      -o train.output_dir=$out -o train.seed=$seed -o quant.quantize_embeddings=$table
    test -d deploy/int8_emb/$name || $PY tools/export.py --checkpoint $out/checkpoints/best \
      --output deploy/int8_emb/$name --verify mr:test --report deploy/int8_emb/$name.verify.json ||
      echo "$name: INT8 export failed verification (its report: deploy/int8_emb/$name.verify.json)"
  done
done
$PY - <<'PY'
import json, pathlib, statistics
rows = {}
for report in sorted(pathlib.Path("deploy/int8_emb").glob("*.verify.json")):
    name = report.name.removesuffix(".verify.json")
    folder = report.with_name(name)
    size = sum(f.stat().st_size for f in folder.iterdir()) / 1e6 if folder.is_dir() else float("nan")
    table = "int8" if "-true_" in name else "float32"
    rows.setdefault(table, []).append((name, json.loads(report.read_text()), size))
print("| word table | seeds | QAT test accuracy (per seed) | INT8 deployed accuracy | --verify agreement | max \\|Δlogit\\| | folder |")
print("|---|---|---|---|---|---|---|")
for table, runs in rows.items():
    trained = [r["trained"]["accuracy"] for _, r, _ in runs]
    deployed = [r["exported"]["accuracy"] for _, r, _ in runs]
    print(f"| {table} | {len(runs)} | {statistics.mean(trained):.2f} ({', '.join(f'{a:.2f}' for a in trained)}) | "
          f"{statistics.mean(deployed):.2f} | {min(r['agreement'] for _, r, _ in runs):.2f}% (lowest) | "
          f"{max(r['max_abs_logit_diff'] for _, r, _ in runs):.3f} (highest) | {statistics.mean(s for *_, s in runs):.0f} MB |")
PY
