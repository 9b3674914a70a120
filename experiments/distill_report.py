"""Tables and curves of experiments/distill.sh: low-bit QAT alone, with KD and with TI, per task.

    python experiments/distill_report.py TASK [--runs runs/distill] [--out docs/distillation]

Reads RUNS/<task>_<format>_<method>_s<seed>/ (results.json, metrics.jsonl), the INT8 verification
reports RUNS/<...>.int8.json and the FP32 run runs/<task>_minilm_fp32; writes OUT/<task>_runs.md,
OUT/<task>_runs.json and OUT/<task>_curves.png (dev accuracy against steps, mean over seeds, the band
spanning them). "Steps to KD's final" is the first evaluation at which a method's mean dev accuracy
reaches plain KD's mean dev accuracy at the last step.
"""
import argparse
import json
import statistics
from pathlib import Path

from ernie_qat import cli
from ernie_qat.atomic import read_jsonl, write_json, write_text
from ernie_qat.errors import UserError
from ernie_qat.plots import pyplot, write_png

FORMATS = {"w2a8": "W2A8 (ternary weights)", "w4a8": "W4A8 (LSQ 4-bit weights)"}
METHODS = {"qat": "QAT", "kd": "QAT + KD", "ti": "QAT + TI"}


def load_runs(runs: Path, task: str) -> dict:
    """{(format, method): {seed: {"results", "dev_curve", "int8"}}} of the finished runs."""
    found = {}
    for folder in sorted(runs.glob(f"{task}_*_s*")):
        if not folder.is_dir() or not (folder / "results.json").exists():
            continue
        _, fmt, method, seed = folder.name.rsplit("_", 3)
        dev = [r for r in read_jsonl(folder / "metrics.jsonl") if r.get("split") == "dev"]
        report = runs / f"{folder.name}.int8.json"
        found.setdefault((fmt, method), {})[int(seed[1:])] = {
            "results": json.loads((folder / "results.json").read_text()),
            "dev_curve": {r["step"]: r["accuracy"] for r in dev},
            "int8": json.loads(report.read_text()) if report.exists() else None}
    if not found:
        raise UserError(f"no finished runs of `{task}` in {runs}")
    return found


def mean_curve(seeds: dict) -> dict:
    """{step: (mean, min, max) dev accuracy over seeds}, at the steps every seed evaluated."""
    steps = set.intersection(*(set(run["dev_curve"]) for run in seeds.values()))
    return {s: (statistics.mean(v), min(v), max(v))
            for s in sorted(steps) for v in [[run["dev_curve"][s] for run in seeds.values()]]}


def summarize(found: dict, fp32: dict) -> list:
    rows = []
    for fmt in FORMATS:
        kd = found.get((fmt, "kd"))
        target = mean_curve(kd)[max(mean_curve(kd))][0] if kd else None
        for method in METHODS:
            seeds = found.get((fmt, method))
            if not seeds:
                continue
            curve = mean_curve(seeds)
            reached = next((s for s, (m, _, _) in curve.items() if target is not None and m >= target), None)
            int8 = next((run["int8"] for seed, run in sorted(seeds.items()) if run["int8"]), None)
            rows.append({"format": fmt, "method": method, **seed_statistics(seeds, fp32),
                         "int8": int8, "steps": max(curve), "steps_to_kd_final": reached, "kd_final_dev": target})
    return rows


def seed_statistics(seeds: dict, fp32: dict) -> dict:
    """Test accuracy per seed, its mean and std, mean macro-F1, % of FP32's accuracy and seconds per step."""
    accuracy = [run["results"]["test"]["accuracy"] for run in seeds.values()]
    return {"seeds": sorted(seeds), "test_accuracy": accuracy, "mean": statistics.mean(accuracy),
            "std": statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0,
            "macro_f1": statistics.mean(run["results"]["test"]["macro_f1"] for run in seeds.values()),
            "percent_of_fp32": 100 * statistics.mean(accuracy) / fp32["test"]["accuracy"],
            "train_seconds_per_step": statistics.mean(run["results"]["train_seconds"] / run["results"]["steps"]
                                                      for run in seeds.values())}


def accuracy_cell(row: dict) -> str:
    """"mean ± std (per seed)" of a row's test accuracy."""
    per_seed = ", ".join(f"{a:.2f}" for a in row["test_accuracy"])
    return f"{row['mean']:.2f} ± {row['std']:.2f} ({per_seed})"


def markdown(task: str, rows: list, fp32: dict) -> str:
    lines = [f"FP32 teacher (runs/{task}_minilm_fp32): test accuracy {fp32['test']['accuracy']:.2f}, "
             f"macro-F1 {fp32['test']['macro_f1']:.2f}.", "",
             "| weights | method | test accuracy, mean ± std (per seed) | macro-F1 | % of FP32 | INT8 deployed "
             "(agreement, max abs Δlogit) | steps to KD's final dev accuracy | s / step |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        int8 = r["int8"]
        deployed = (f"{int8['exported']['accuracy']:.2f} ({int8['agreement']:.2f}%, {int8['max_abs_logit_diff']:.3f})"
                    if int8 else "not exported")
        reached = f"{r['steps_to_kd_final']} of {r['steps']}" if r["steps_to_kd_final"] is not None else \
            f"not within {r['steps']}"
        lines.append(f"| {FORMATS[r['format']]} | {METHODS[r['method']]} | {accuracy_cell(r)} "
                     f"| {r['macro_f1']:.2f} | {r['percent_of_fp32']:.1f} | {deployed} | {reached} "
                     f"| {r['train_seconds_per_step']:.2f} |")
    return "\n".join(lines) + "\n"


def plot(task: str, found: dict, fp32_dev: float, path: Path, formats: dict = FORMATS, methods: dict = METHODS) -> None:
    """Mean dev accuracy against steps per format (a panel each) and method, the band spanning the seeds."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(formats), figsize=(11, 4), sharey=True, squeeze=False)
    for ax, fmt in zip(axes[0], formats):
        for method, label in methods.items():
            if (fmt, method) not in found:
                continue
            curve = mean_curve(found[(fmt, method)])
            steps = list(curve)
            line, = ax.plot(steps, [curve[s][0] for s in steps], marker=".", label=label)
            ax.fill_between(steps, [curve[s][1] for s in steps], [curve[s][2] for s in steps],
                            color=line.get_color(), alpha=0.15)
        ax.axhline(fp32_dev, color="gray", linestyle="--", label="FP32")
        ax.set(title=f"{task.upper()} {formats[fmt]}", xlabel="optimizer step", ylabel="dev accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    write_png(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("--runs", default="runs/distill", type=Path)
    parser.add_argument("--out", default="docs/distillation", type=Path)
    args = parser.parse_args()
    fp32_run = Path(f"runs/{args.task}_minilm_fp32")
    fp32 = json.loads((fp32_run / "results.json").read_text())
    found = load_runs(args.runs, args.task)
    rows = summarize(found, fp32)
    table = markdown(args.task, rows, fp32)
    print(table)
    write_text(args.out / f"{args.task}_runs.md", table)
    write_json(args.out / f"{args.task}_runs.json", rows)
    plot(args.task, found, fp32["dev"]["accuracy"], args.out / f"{args.task}_curves.png")


if __name__ == "__main__":
    cli.run(main)
