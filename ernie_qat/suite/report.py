"""A suite's results.csv, REPORT.md and dev-accuracy curves, built from what its cells left on disk.

results.csv has one row per cell (unfinished cells too, with their status). REPORT.md groups the
cells by their `dataset` and `format` values; in each group, a table row per method (and value of
any other axis) gives the mean ± std over seeds of test accuracy and macro-F1, % of the FP32
reference's test accuracy, the deployed INT8 accuracy and the training time; a second table
compares each method with its baseline (the suite's `baseline`, or the method's own in `baselines`) on
the seeds both have: the mean accuracy difference with its paired-bootstrap 95% interval, and
McNemar's exact test of the pooled discordant pairs (ernie_qat.suite.paired); a third, each method against
the FP32 reference's predictions the same way. The dev-accuracy curves (mean over seeds, band from min to
max) of each group are drawn to curves_<dataset>_<format>.png.
"""
import csv
import json
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ernie_qat.atomic import atomic_file, folder_identity, folder_megabytes, read_jsonl, write_json, write_text
from ernie_qat.plots import pyplot, write_png
from ernie_qat.suite.paired import BOOTSTRAP_SEED, RESAMPLES, mcnemar, paired_bootstrap
from ernie_qat.suite.run import INT8, INT8_REPORT, PREDICTIONS, duration, test_predictions, tested_on
from ernie_qat.suite.spec import Cell, Suite, status

GROUP_AXES = ("dataset", "format")  # a section of the report each


@dataclass
class Outcome:
    """What one cell left on disk."""
    cell: Cell
    status: str
    results: Optional[dict]      # results.json
    predictions: Optional[dict]  # PREDICTIONS
    int8: Optional[dict]         # INT8_REPORT
    dev_curve: Dict[int, float]  # step -> dev accuracy, from metrics.jsonl
    intervened_curve: Dict[int, float]  # the same where an intervention acted: its `dev_intervened` records

    @property
    def group(self) -> Tuple[str, ...]:
        return tuple(self.cell.values.get(axis, "") for axis in GROUP_AXES)

    @property
    def row(self) -> Tuple[str, ...]:
        """The cell's values on the axes other than GROUP_AXES, in the suite's order: its row in the tables."""
        return tuple(value for axis, value in self.cell.values.items() if axis not in GROUP_AXES)

    @property
    def int8_megabytes(self) -> Optional[float]:
        """The deployed INT8 folder's size, MB, as recorded at export (measured, for an export that did not)."""
        if not (self.int8 and self.int8["deployed"]):
            return None
        return self.int8.get("folder_mb") or round(folder_megabytes(self.cell.folder / INT8), 2)

    @property
    def seconds(self) -> Optional[float]:
        """Training time, s (a PTQ cell: its quantization and evaluation)."""
        return self.results.get("train_seconds", self.results.get("seconds")) if self.results else None


def collect(cells: List[Cell]) -> List[Outcome]:
    """What each cell left on disk; run `spec.check_finished` first."""
    found = []
    for cell in cells:
        state = status(cell)
        folder = cell.finished_in or cell.folder
        records = read_jsonl(folder / "metrics.jsonl")
        dev = {r["step"]: r["accuracy"] for r in records if r.get("split") == "dev"}
        intervened = {r["step"]: r["accuracy"] for r in records if r.get("split") == "dev_intervened"}
        found.append(Outcome(cell, state, _json(folder / "results.json") if state == "finished" else None,
                             _json(folder / PREDICTIONS), _json(folder / INT8_REPORT), dev, {**dev, **intervened}))
    return found


def fp32_references(suite: Suite, cells: List[Cell]) -> Dict[str, dict]:
    """{dataset value: its FP32 reference's {"checkpoint", "test" (metrics), "predicted", "gold"}} on the cells' test
    data. The metrics come from the run's results.json beside the checkpoint (RUN/checkpoints/best ->
    RUN/results.json), else from evaluating it; the predictions from the checkpoint. Both are kept in
    output_dir/fp32_<dataset>.json (fp32.json without a dataset axis) while the checkpoint is unchanged, and in
    the suite's records (records/fp32_<dataset>.json), for when the checkpoint is gone. A reference found nowhere
    is left out; one recorded before records kept predictions has none."""
    found = {}
    for dataset, checkpoint in suite.fp32.items():
        folder = Path(checkpoint)
        name = f"fp32{'_' * bool(dataset)}{dataset}.json"
        recorded = _json(suite.records / name) if suite.records else None
        reference = recorded
        if folder.is_dir():
            kept, identity = _json(suite.output_dir / name), folder_identity(folder)
            if not kept or kept["identity"] != identity or "predicted" not in kept:
                cfg = next(cell.cfg for cell in cells if cell.dataset == dataset)
                run = _json(folder.parent.parent / "results.json") if folder.parent.name == "checkpoints" else None
                if run and "test" in run:
                    test = run["test"]
                else:
                    from ernie_qat.train.evaluate import evaluate_checkpoint
                    test = evaluate_checkpoint(folder, cfg, tested_on(cfg))[tested_on(cfg)]
                kept = {"identity": identity, "test": test,
                        **test_predictions(folder, tested_on(cfg)), "checkpoint": checkpoint}
                write_json(suite.output_dir / name, kept)
            reference = {key: value for key, value in kept.items() if key != "identity"}
            if suite.records and reference != recorded:
                write_json(suite.records / name, reference)
        if reference:
            found[dataset] = reference
    return found


def write_results_csv(path: Path, suite: Suite, outcomes: List[Outcome], fp32: Dict[str, dict]) -> None:
    columns = ["cell", *suite.axes, "seed", "tool", "status", "steps", "train_seconds", "dev_accuracy",
               "dev_macro_f1", "test_accuracy", "test_macro_f1", "pct_of_fp32", "int8_accuracy", "int8_agreement",
               "int8_folder_mb", "int8_reason", "cpu"]
    with atomic_file(path) as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for o in outcomes:
            r = o.results or {}
            test, dev = r.get("test", {}), r.get("dev", {})
            reference = fp32[o.cell.dataset]["test"]["accuracy"] if o.cell.dataset in fp32 else None
            check = (o.int8 or {}).get("verification") or {}
            deployed = bool(o.int8 and o.int8["deployed"])
            reason = "" if not r or deployed else o.int8["reason"] if o.int8 else "not exported yet"
            writer.writerow([o.cell.name, *o.cell.values.values(), o.cell.seed, o.cell.tool, o.status,
                             r.get("steps", ""), "" if o.seconds is None else o.seconds,
                             dev.get("accuracy", ""), dev.get("macro_f1", ""),
                             test.get("accuracy", ""), test.get("macro_f1", ""),
                             100.0 * test["accuracy"] / reference if test and reference else "",
                             check["exported"]["accuracy"] if deployed else "",
                             check["agreement"] if deployed else "",
                             o.int8_megabytes if deployed else "", reason, r.get("cpu", "")])


def write_report(path: Path, suite: Suite, outcomes: List[Outcome], fp32: Dict[str, dict], command: str) -> None:
    """REPORT.md, and a curves PNG per group beside it."""
    bases = list(dict.fromkeys([suite.base] + [o.cell.base for o in outcomes]))  # the suite's, then values' own
    lines = [f"# Suite {suite.output_dir}", "",
             f"Made by `{command}` from `{suite.path}` (base{'s' * (len(bases) > 1)} "
             f"{', '.join(f'`{base}`' for base in bases)}, seeds "
             f"{', '.join(map(str, suite.seeds))}). One row per cell: [results.csv](results.csv). "
             "How to read the paired tests: docs/experiments.md.", ""]
    unfinished = [o for o in outcomes if o.status != "finished"]
    if unfinished:
        lines += [f"Unfinished cells ({len(unfinished)} of {len(outcomes)}): "
                  + ", ".join(f"`{o.cell.name}` ({o.status})" for o in unfinished) + ".", ""]
    cpus = Counter((o.results or {}).get("cpu") or "not recorded" for o in outcomes if o.status == "finished")
    if set(cpus) - {"not recorded"}:
        counts = "; ".join(f"{cpu}: {count} cell{'s' * (count > 1)}" for cpu, count in cpus.items())
        lines += ["CPUs the cells finished on (speeds depend on it, and a quantized cell does not repeat exactly on "
                  f"another): {counts}.", ""]
    groups: Dict[Tuple[str, ...], List[Outcome]] = {}
    for o in outcomes:
        groups.setdefault(o.group, []).append(o)
    for group, members in groups.items():
        title = " ".join(value for value in group if value)
        lines += [f"## {title or 'Results'}", ""]
        reference = fp32.get(group[0])
        if reference:
            lines += [f"FP32 reference (`{suite.fp32[group[0]]}`): test accuracy {reference['test']['accuracy']:.2f}.",
                      ""]
        elif group[0] in suite.fp32:
            lines += [f"FP32 reference `{suite.fp32[group[0]]}`: no such checkpoint (yet).", ""]
        rows: Dict[Tuple[str, ...], List[Outcome]] = {}
        for o in members:
            if o.status == "finished":
                rows.setdefault(o.row, []).append(o)
        if not rows:
            lines += ["No finished cells yet.", ""]
            continue
        lines += _summary_table(rows, reference["test"]["accuracy"] if reference else None)
        lines += _paired_table(suite, rows)
        lines += _fp32_paired_table(rows, reference)
        lines += _convergence_table(suite, rows)
        png = "curves" + "".join(f"_{value}" for value in group if value) + ".png"
        if plot_curves(path.parent / png, title, rows):
            lines += [f"![dev accuracy, mean over seeds]({png})", ""]
    write_text(path, "\n".join(lines))


def _summary_table(rows: Dict[Tuple[str, ...], List[Outcome]], fp32: Optional[float]) -> List[str]:
    lines = ["| method | seeds | test accuracy | test macro-F1 | % of FP32 | INT8 accuracy (deployed) | INT8 folder "
             "| training time |", "|---|---|---|---|---|---|---|---|"]
    reasons = []
    for key, cells in rows.items():
        accuracy = [o.results["test"]["accuracy"] for o in cells]
        macro_f1 = [o.results["test"]["macro_f1"] for o in cells]
        deployed = [o.int8["verification"]["exported"]["accuracy"] for o in cells if o.int8 and o.int8["deployed"]]
        refused = [o for o in cells if o.int8 and not o.int8["deployed"]]
        int8 = f"{statistics.mean(deployed):.2f} ({len(deployed)} of {len(cells)})" if deployed else \
            "not deployed" if refused else "not exported yet"
        sizes = [o.int8_megabytes for o in cells if o.int8 and o.int8["deployed"]]
        size = f"{statistics.mean(sizes):.1f} MB" if sizes else ""
        if refused:
            reasons.append(f"- `{_label(key)}` not deployed ({refused[0].cell.name}): {refused[0].int8['reason']}")
        percent = f"{100.0 * statistics.mean(accuracy) / fp32:.1f}" if fp32 else ""
        lines.append(f"| {_label(key)} | {', '.join(str(o.cell.seed) for o in cells)} | {_mean_std(accuracy)} | "
                     f"{_mean_std(macro_f1)} | {percent} | {int8} | {size} | "
                     f"{duration(statistics.mean(o.seconds for o in cells))} |")
    return lines + [""] + reasons + ([""] if reasons else [])


def _paired_table(suite: Suite, rows: Dict[Tuple[str, ...], List[Outcome]]) -> List[str]:
    """Each method against its baseline with the same other values, on the seeds both have predictions for."""
    lines = []
    for key, cells, base_key in _with_baselines(suite, rows):
        if base_key == key:
            continue
        base = {o.cell.seed: o for o in rows.get(base_key, []) if o.predictions}
        pairs = [(base[o.cell.seed], o) for o in cells if o.predictions and o.cell.seed in base]
        seeds = ", ".join(str(m.cell.seed) for _, m in pairs)
        against = f"| {_label(key)} | {_label(base_key)} |"
        if not pairs:
            lines.append(f"{against} none yet | | | | | | |")
        elif any(b.predictions["gold"] != m.predictions["gold"] for b, m in pairs):
            lines.append(f"{against} {seeds} | tested on other examples than the baseline | | | | | |")
        else:
            baseline_right = [_correct(b.predictions) for b, _ in pairs]
            method_right = [_correct(m.predictions) for _, m in pairs]
            per_seed = ", ".join(f"{100 * (m.mean() - b.mean()):+.2f}" for b, m in zip(baseline_right, method_right))
            columns = _paired_columns(baseline_right, method_right)
            lines.append(f"{against} {seeds} | {per_seed} | {columns}")
    if not lines:
        return []
    return ["Each method against its baseline, paired by seed and test example (b: the baseline right and the "
            "method wrong, c: the reverse; p: McNemar's exact two-sided test on b and c pooled over the seeds; "
            f"95% interval: paired bootstrap of the mean accuracy difference, {RESAMPLES:,} resamples of the "
            f"test examples, seed {BOOTSTRAP_SEED}; per seed: each seed's difference, whose spread the pooled tests "
            "do not cover):", "",
            "| method | baseline | seeds paired | per seed | accuracy difference (points) | 95% interval | b | c "
            "| McNemar p |",
            "|---|---|---|---|---|---|---|---|---|", *lines, ""]


def _fp32_paired_table(rows: Dict[Tuple[str, ...], List[Outcome]], reference: Optional[dict]) -> List[str]:
    """Each method against the FP32 reference, by test example: one model, so each seed meets the same predictions."""
    if not (reference and "predicted" in reference):
        return []
    right = _correct(reference)
    lines = []
    for key, cells in rows.items():
        paired = [o for o in cells if o.predictions and o.predictions["gold"] == reference["gold"]]
        if paired:
            lines.append(f"| {_label(key)} | {', '.join(str(o.cell.seed) for o in paired)} | "
                         + _paired_columns([right] * len(paired), [_correct(o.predictions) for o in paired]))
    if not lines:
        return []
    return ["Each method against the FP32 reference, paired by test example (the same FP32 predictions for every "
            "seed; b, c, p and the interval as above):", "",
            "| method | seeds | accuracy difference (points) | 95% interval | b | c | McNemar p |",
            "|---|---|---|---|---|---|---|", *lines, ""]


def _paired_columns(baseline_right: List[np.ndarray], method_right: List[np.ndarray]) -> str:
    """The difference, its interval, b, c and p table cells of a method against a baseline, right/wrong per test
    example, one array per seed, pooled."""
    test = mcnemar(np.array(baseline_right), np.array(method_right))
    difference = paired_bootstrap(np.array(baseline_right), np.array(method_right))
    return (f"{difference.mean:+.2f} | [{difference.low:+.2f}, {difference.high:+.2f}] | {test.b} | {test.c} | "
            f"{test.p:.3g} |")


def _with_baselines(suite: Suite, rows: Dict[Tuple[str, ...], List[Outcome]]):
    """(row key, its cells, a baseline's row key) of each row and each of its method's baselines."""
    if not (suite.baseline or suite.baselines):
        return
    position = [axis for axis in suite.axes if axis not in GROUP_AXES].index("method")
    for key, cells in rows.items():
        for baseline in suite.baselines_of(key[position]):
            yield key, cells, key[:position] + (baseline,) + key[position + 1:]


def steps_to_reach(curve: Dict[int, float], target: float) -> Optional[int]:
    """The first evaluated step whose dev accuracy is at least `target`, None if none is."""
    return next((step for step in sorted(curve) if curve[step] >= target), None)


def _convergence_table(suite: Suite, rows: Dict[Tuple[str, ...], List[Outcome]]) -> List[str]:
    """Steps each method took to reach its baseline's final dev accuracy (same seed), the student alone and, where an
    intervention acted, as the intervened student was evaluated (a baseline's own row: its steps to its end)."""
    lines = []
    for key, cells, base_key in _with_baselines(suite, rows):
        base = {o.cell.seed: o for o in rows.get(base_key, []) if o.dev_curve}
        pairs = [(base[o.cell.seed], o) for o in cells if o.dev_curve and o.cell.seed in base]
        if not pairs:
            continue
        views = []
        for curve in ("dev_curve", "intervened_curve"):
            reached = [steps_to_reach(getattr(m, curve), b.dev_curve[max(b.dev_curve)]) for b, m in pairs]
            views.append(", ".join("never" if step is None else str(step) for step in reached))
        lines.append(f"| {_label(key)} | {_label(base_key)} | {', '.join(str(m.cell.seed) for _, m in pairs)} | "
                     f"{views[0]} | {views[1]} |")
    if not lines:
        return []
    return ["Steps to reach the baseline's final dev accuracy (same seed; per seed, at the evaluated steps):", "",
            "| method | baseline | seeds | the student alone | as evaluated with the intervention on |",
            "|---|---|---|---|---|", *lines, ""]


def plot_curves(path: Path, title: str, rows: Dict[Tuple[str, ...], List[Outcome]]) -> bool:
    """Mean dev accuracy over seeds against steps per row, at the steps every seed evaluated, the band from the
    lowest to the highest seed; False (nothing drawn) if no row has a curve (PTQ cells have none)."""
    curves = {}
    for key, cells in rows.items():
        steps = sorted(set.intersection(*(set(o.dev_curve) for o in cells)))
        if steps:
            curves[key] = (steps, np.array([[o.dev_curve[s] for s in steps] for o in cells]))
    if not curves:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, (steps, accuracy) in curves.items():
        line, = ax.plot(steps, accuracy.mean(axis=0), marker=".", label=_label(key))
        ax.fill_between(steps, accuracy.min(axis=0), accuracy.max(axis=0), color=line.get_color(), alpha=0.15)
    ax.set(title=title, xlabel="optimizer step", ylabel="dev accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    write_png(fig, path)
    return True


def _correct(predictions: dict) -> np.ndarray:
    """Whether each test example was predicted right, from a {"predicted", "gold"} record: bool [examples]."""
    return np.array(predictions["predicted"]) == np.array(predictions["gold"])


def _label(key: Tuple[str, ...]) -> str:
    return "-".join(key) or "all"


def _mean_std(values: List[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def _json(path: Path) -> Optional[dict]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
