"""Tables of experiments/regression.sh: the same recipes and benchmark under an old and a new checkout.

    python experiments/compare_runs.py runs OLD_CHECKOUT NEW_CHECKOUT   # test metrics, weights, INT8 verification
    python experiments/compare_runs.py bench WORKDIR   # bench_{old,new}_*.json and ab_{old,new}_{engine}_*.json
"""
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

RUNS = ("mr_minilm_fp32", "mr_minilm_qat", "r8_minilm_fp32", "r8_minilm_qat")
METRICS = ("accuracy", "macro_f1", "mcc")


def _metrics(values: dict) -> str:
    return " / ".join(f"{values[m]:.2f}" for m in METRICS)


def _verification(checkout: Path, task: str) -> dict:
    """The JSON report `tools/export.py --verify` printed after its first line."""
    text = (checkout / "deploy" / f"{task}_verify.txt").read_text()
    return json.loads(text[text.index("{"):text.rindex("}") + 1])


def compare_runs(old: Path, new: Path) -> str:
    import paddle
    rows = ["| run | old: test acc / F1 / MCC | new: test acc / F1 / MCC | best step old / new | max abs weight difference |",
            "|---|---|---|---|---|"]
    tasks = os.environ.get("TASKS", "mr r8").split()
    for run in (run for run in RUNS if run.split("_")[0] in tasks):
        results = [json.loads((side / "runs" / run / "results.json").read_text()) for side in (old, new)]
        weights = [paddle.load(str(side / "runs" / run / "checkpoints" / "best" / "model_state.pdparams"))
                   for side in (old, new)]
        diff = (max(float(np.abs(weights[0][k].numpy() - weights[1][k].numpy()).max()) for k in weights[0])
                if weights[0].keys() == weights[1].keys() else "parameter names differ")
        rows.append(f"| {run} | {_metrics(results[0]['test'])} | {_metrics(results[1]['test'])} | "
                    f"{results[0]['best_step']} / {results[1]['best_step']} | {diff} |")
    for task in tasks:
        reports = [_verification(side, task) for side in (old, new)]
        rows.append(f"| {task} INT8 (verified export) | {_metrics(reports[0]['exported'])}, agreement "
                    f"{reports[0]['agreement']:.2f}%, max abs logit diff {reports[0]['max_abs_logit_diff']:.3f} | "
                    f"{_metrics(reports[1]['exported'])}, agreement {reports[1]['agreement']:.2f}%, max abs logit diff "
                    f"{reports[1]['max_abs_logit_diff']:.3f} | | |")
    return "\n".join(rows)


def compare_bench(work: Path) -> str:
    steps = {}
    for side in ("old", "new"):
        for path in sorted(work.glob(f"bench_{side}_*.json")):
            for row in json.loads(path.read_text())["rows"]:
                steps.setdefault(row["engine"], {}).setdefault(side, []).append(row["step_s"])
    rows = ["| engine | old step (s), each run | new step (s), each run | new / old (medians) |", "|---|---|---|---|"]
    for engine, sides in steps.items():
        if "old" in sides and "new" in sides:
            ratio = statistics.median(sides["new"]) / statistics.median(sides["old"])
            rows.append(f"| {engine} | {', '.join(f'{s:.3f}' for s in sides['old'])} | "
                        f"{', '.join(f'{s:.3f}' for s in sides['new'])} | {ratio:.3f} |")
    rows += ["", "| engine (12 steps × 2 runs each side) | old: median per run (s) | new: median per run (s) | "
             "new / old (median of all steps) |", "|---|---|---|---|"]
    for engine in ("fp32", "qat"):
        runs = {side: [json.loads(p.read_text()) for p in sorted(work.glob(f"ab_{side}_{engine}_*.json"))]
                for side in ("old", "new")}
        if runs["old"] and runs["new"]:
            pooled = {side: statistics.median([t for run in runs[side] for t in run]) for side in runs}
            rows.append(f"| paddle-{engine} | {', '.join(f'{statistics.median(r):.3f}' for r in runs['old'])} | "
                        f"{', '.join(f'{statistics.median(r):.3f}' for r in runs['new'])} | "
                        f"{pooled['new'] / pooled['old']:.3f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    mode, *paths = sys.argv[1:]
    print(compare_runs(Path(paths[0]), Path(paths[1])) if mode == "runs" else compare_bench(Path(paths[0])))
