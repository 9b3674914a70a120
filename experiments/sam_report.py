"""Tables and curves of experiments/sam.sh: LSQ QAT, with SAM, SQuAT and the best with KD/TI, per task.

    python experiments/sam_report.py TASK [--runs runs/sam] [--out docs/sam]

Reads RUNS/<task>_<format>_<method>_s<seed>/ (results.json, metrics.jsonl), the sharpness measured by
experiments/sam.sh (OUT/<task>_sharpness/sharpness.json, first seed's best checkpoints) and the FP32 run
runs/<task>_minilm_fp32; writes OUT/<task>_runs.md, OUT/<task>_runs.json and OUT/<task>_curves.png.
"SAM step vs plain" is the mean over logged steps of the step's own time over its first pass plus
update (`step/time_vs_plain`), a ratio measured inside each step.
"""
import argparse
import json
import statistics
from pathlib import Path

from distill_report import accuracy_cell, load_runs, plot, seed_statistics

from ernie_qat import cli
from ernie_qat.atomic import read_jsonl, write_json, write_text

FORMATS = {"w4a8": "W4A8 (LSQ 4-bit weights)", "w2a8": "W2A8 (LSQ 2-bit weights)"}
LABELS = {"qat": "LSQ QAT", "sam": "QAT + SAM", "squat": "SQuAT", "kd": "KD", "ti": "TI"}


def label(method: str) -> str:
    """"squat+kd" -> "SQuAT + KD"."""
    return " + ".join(LABELS[part] for part in method.split("+"))


def time_vs_plain(runs: Path, task: str, fmt: str, method: str) -> "float | None":
    ratios = [r["step/time_vs_plain"] for folder in runs.glob(f"{task}_{fmt}_{method}_s*")
              if (folder / "metrics.jsonl").exists()
              for r in read_jsonl(folder / "metrics.jsonl") if "step/time_vs_plain" in r]
    return statistics.mean(ratios) if ratios else None


def summarize(found: dict, fp32: dict, sharpness: dict, runs: Path, task: str) -> list:
    rows = []
    for fmt in FORMATS:
        methods = sorted((m for f, m in found if f == fmt), key=lambda m: (m.count("+"), list(LABELS).index(m.split("+")[0])))
        baseline = found.get((fmt, "qat"))
        for method in methods:
            seeds = found[(fmt, method)]
            stats = seed_statistics(seeds, fp32)
            measured = {seed: sharpness.get(f"{task}_{fmt}_{method}_s{seed}/best") for seed in seeds}
            first = next(((seed, m) for seed, m in sorted(measured.items()) if m), (None, None))
            rows.append({"format": fmt, "method": method, **stats,
                         "vs_qat": stats["mean"] - seed_statistics(baseline, fp32)["mean"] if baseline else None,
                         "sharpness_seed": first[0], "sharpness": first[1],
                         "time_vs_plain": time_vs_plain(runs, task, fmt, method)})
    return rows


def markdown(task: str, rows: list, fp32: dict, rho: "float | None") -> str:
    lines = [f"FP32 starting point (runs/{task}_minilm_fp32): test accuracy {fp32['test']['accuracy']:.2f}, "
             f"macro-F1 {fp32['test']['macro_f1']:.2f}. Sharpness: loss increase on 4 dev batches within a "
             f"ρ = {rho} ball (‖δ‖₂), first seed's best checkpoint.", "",
             "| weights | method | test accuracy, mean ± std (per seed) | Δ vs LSQ QAT | macro-F1 | % of FP32 "
             "| sharpness: worst case / random average | step time vs plain (in-step) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        delta = f"{r['vs_qat']:+.2f}" if r["vs_qat"] is not None else "–"
        sharp = f"{r['sharpness']['worst_case']:.4f} / {r['sharpness']['average']:.5f}" if r["sharpness"] else "–"
        ratio = f"{r['time_vs_plain']:.2f}×" if r["time_vs_plain"] else "–"
        lines.append(f"| {FORMATS[r['format']]} | {label(r['method'])} | {accuracy_cell(r)} "
                     f"| {delta} | {r['macro_f1']:.2f} | {r['percent_of_fp32']:.1f} | {sharp} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("--runs", default="runs/sam", type=Path)
    parser.add_argument("--out", default="docs/sam", type=Path)
    args = parser.parse_args()
    fp32 = json.loads(Path(f"runs/{args.task}_minilm_fp32/results.json").read_text())
    found = load_runs(args.runs, args.task)
    measured = args.out / f"{args.task}_sharpness" / "sharpness.json"
    sharpness = json.loads(measured.read_text()) if measured.exists() else {"results": {}}
    rho = next((r["rho"] for r in sharpness["results"].values()), None)
    rows = summarize(found, fp32, sharpness["results"], args.runs, args.task)
    table = markdown(args.task, rows, fp32, rho)
    print(table)
    write_text(args.out / f"{args.task}_runs.md", table)
    write_json(args.out / f"{args.task}_runs.json", rows)
    methods = {m: label(m) for m in dict.fromkeys(r["method"] for r in rows)}
    plot(args.task, found, fp32["dev"]["accuracy"], args.out / f"{args.task}_curves.png", FORMATS, methods)


if __name__ == "__main__":
    cli.run(main)
