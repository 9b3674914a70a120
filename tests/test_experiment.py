"""tools/experiment.py on the toy task: a suite of 2 methods × 2 seeds and a PTQ cell runs, stops on Ctrl-C and
continues exactly, skips what is finished, refuses a changed cell; the paired statistics against hand-computed numbers.

The runner runs in this process. Run 1 trains the first cell (--only); run 2 starts the second cell's
training as a child process, as always, which a SIGINT it sends itself (ERNIE_QAT_FAULT) stops; run 3
finishes the suite. Runs 1 and 3 run each cell's command (tools/train.py or tools/ptq.py and the same
arguments) in this process instead of a child, to spare Paddle's start-up per cell (about 5 s).
"""
import contextlib
import csv
import io
import json
import os
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from paddle.base import core
from scipy.stats import binomtest

from conftest import ROOT, make_toy_task, one_error_line, run_here, trained
from ernie_qat import faults
from ernie_qat.atomic import folder_megabytes
from ernie_qat.benchmark.machine import cpu_summary
from ernie_qat.suite import run
from ernie_qat.suite.paired import mcnemar, paired_bootstrap
from ernie_qat.suite.report import steps_to_reach
from ernie_qat.suite.spec import SuiteError, cells, check_finished, load_suite

RUN = ["train.max_steps=48", "train.eval_every=8", "train.log_every=6"]  # 20 (the stop): half a log window
CELLS = ["fp32-s1", "fp32-s2", "qat-s1", "qat-s2", "ptq-s1"]


def suite_text(task, out, qat=("quant.method=qat",), **top) -> str:
    """A suite on the toy task: FP32 and QAT training at seeds 1 and 2, PTQ of fp32-s1 (at seed 1), which is
    also the FP32 reference."""
    keys = {"base": task["config"], "output_dir": out, "seeds": [1, 2], "overrides": RUN, "baseline": "fp32",
            "fp32": f"{out}/fp32-s1/checkpoints/best",
            "axes": {"dataset": {"toy": []}, "method": {
                "fp32": [], "qat": list(qat),
                "ptq": {"tool": "ptq", "overrides": [f"ptq.checkpoint={out}/fp32-s1/checkpoints/best"]}}}, **top}
    return json.dumps({key: str(value) if isinstance(value, os.PathLike) else value for key, value in keys.items()})


def experiment(*args, env=None):
    """tools/experiment.py in this process, with `env` added to the environment: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        patch.setattr(sys, "argv", ["experiment.py", *map(str, args)])
        for key, value in (env or {}).items():
            patch.setenv(key, value)
        try:
            runpy.run_path(str(ROOT / "tools" / "experiment.py"), run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def tool_here(command):
    """`run.run_tool`'s stand-in: the child's command (python TOOL ARGS...) run in this process."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", command[1:])
        try:
            runpy.run_path(command[1], run_name="__main__")
        except SystemExit as exc:
            return exc.code or 0, None
    return 0, None


def mtimes(out) -> dict:
    return {path.relative_to(out): path.stat().st_mtime_ns for path in sorted(out.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    task = make_toy_task(tmp_path_factory.mktemp("suite"))
    out, path = task["dir"] / "suite", task["dir"] / "suite.yaml"
    path.write_text(suite_text(task, out))
    # the uninterrupted run of fp32-s2, here, at the child's thread count (OMP_NUM_THREADS; a predictor built
    # earlier in this process may have set another)
    core.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    reference = trained(task, "reference", *RUN, "train.seed=2").parents[1]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run, "run_tool", tool_here)
        first = experiment("--suite", path, "--only", "fp32-s1")
    after_first = mtimes(out / "fp32-s1")
    stopped = experiment("--suite", path, env={faults.ENV: "train.backward#20:SIGINT"})  # a child process
    stopped_at = json.loads((out / "fp32-s2" / "checkpoints" / "last" / "trainer_state.json").read_text())["step"]
    after_stop = mtimes(out / "fp32-s1")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run, "run_tool", tool_here)
        rest = experiment("--suite", path)
    return {"task": task, "out": out, "path": path, "first": first, "stopped": stopped, "stopped_at": stopped_at,
            "rest": rest, "after_first": after_first, "after_stop": after_stop, "reference": reference}


def records(run_dir) -> list:
    found = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in found:
        record.pop("examples_per_s", None)
    return found


def test_suite_stopped_by_ctrl_c_continues_exactly_without_redoing_finished_cells(suite):
    out = suite["out"]
    code, stdout, err = suite["first"]
    assert code == 0, err
    assert "[1/1] fp32-s1: training" in stdout and "[1/1] fp32-s1: done: test accuracy" in stdout
    code, stdout, err = suite["stopped"]
    assert code == 130, err
    assert "[1/5] fp32-s1: skipped (finished)" in stdout and "[2/5] fp32-s2: training" in stdout
    assert suite["stopped_at"] == 20  # the child saved the step it was in
    assert err.strip().splitlines()[-1] == ("stopped by SIGINT in cell fp32-s2 [2/5]; continue the suite with: "
                                            f"python {ROOT / 'tools' / 'experiment.py'} --suite {suite['path']}")
    assert "error:" not in err
    code, stdout, err = suite["rest"]
    assert code == 0, err
    assert "[1/5] fp32-s1: skipped (finished)" in stdout and "[2/5] fp32-s2: training (resuming)" in stdout
    assert suite["after_first"] == suite["after_stop"] == mtimes(out / "fp32-s1")  # never touched again
    # the resumed cell is the uninterrupted run
    assert records(out / "fp32-s2") == records(suite["reference"])
    resumed, reference = (json.loads((folder / "results.json").read_text()) for folder in (out / "fp32-s2",
                                                                                           suite["reference"]))
    assert resumed["test"] == reference["test"] and resumed["dev"] == reference["dev"]


def test_results_csv_and_report_come_from_the_cells(suite):
    out = suite["out"]
    rows = {row["cell"]: row for row in csv.DictReader((out / "results.csv").open())}
    assert list(rows) == CELLS
    fp32_test = json.loads((out / "fp32-s1" / "results.json").read_text())["test"]["accuracy"]
    for name, row in rows.items():
        results = json.loads((out / name / "results.json").read_text())
        assert row["status"] == "finished" and row["seed"] == name[-1] and row["method"] == name.split("-")[0]
        for split in ("dev", "test"):
            for metric in ("accuracy", "macro_f1"):
                assert float(row[f"{split}_{metric}"]) == results[split][metric]
        assert float(row["pct_of_fp32"]) == 100 * results["test"]["accuracy"] / fp32_test
        predictions = json.loads((out / name / "test_predictions.json").read_text())
        assert len(predictions["gold"]) == 64
        assert 100 * np.mean(np.equal(predictions["predicted"], predictions["gold"])) == \
            pytest.approx(results["test"]["accuracy"])
        verification = json.loads((out / name / "int8_verification.json").read_text())
        if name.startswith("fp32"):  # nothing to deploy as INT8: the reason is recorded
            assert row["int8_accuracy"] == "" and "FP32 checkpoint" in row["int8_reason"]
            assert not verification["deployed"] and not (out / name / "int8").exists()
        else:  # QAT and 8-bit PTQ deploy, verified
            assert verification["deployed"] and (out / name / "int8" / "deploy.yaml").is_file()
            assert float(row["int8_accuracy"]) == verification["verification"]["exported"]["accuracy"]
            assert float(row["int8_folder_mb"]) == round(folder_megabytes(out / name / "int8"), 2) > 0
            assert row["int8_reason"] == ""
        assert row["cpu"] == results["cpu"] == cpu_summary()  # the CPU of the process that finished the cell
    assert rows["fp32-s1"]["steps"] == "48" and rows["ptq-s1"]["steps"] == ""
    # REPORT.md: McNemar on the predictions pooled over the seeds both methods have
    report = (out / "REPORT.md").read_text()
    right = {name: np.equal(*(json.loads((out / name / "test_predictions.json").read_text())[key]
                              for key in ("predicted", "gold"))) for name in CELLS}
    b = sum(int(np.sum(right[f"fp32-s{s}"] & ~right[f"qat-s{s}"])) for s in (1, 2))
    c = sum(int(np.sum(right[f"qat-s{s}"] & ~right[f"fp32-s{s}"])) for s in (1, 2))
    p = binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    paired = report[report.index("| McNemar p |"):].splitlines()
    qat_row = next(line for line in paired if line.startswith("| qat | fp32 | 1, 2 | "))
    assert b + c > 0 and qat_row.endswith(f"| {b} | {c} | {p:.3g} |")
    per_seed = [100 * (np.mean(right[f"qat-s{s}"]) - np.mean(right[f"fp32-s{s}"])) for s in (1, 2)]
    assert qat_row.split(" | ")[3:5] == [", ".join(f"{d:+.2f}" for d in per_seed), f"{np.mean(per_seed):+.2f}"]
    assert any(line.startswith("| ptq | fp32 | 1 | ") for line in paired)  # paired on seed 1 only
    # against the FP32 reference (fp32-s1's checkpoint): its predictions met by every seed's
    against_fp32 = report[report.index("Each method against the FP32 reference"):].splitlines()
    b = sum(int(np.sum(right["fp32-s1"] & ~right[f"qat-s{s}"])) for s in (1, 2))
    c = sum(int(np.sum(right[f"qat-s{s}"] & ~right["fp32-s1"])) for s in (1, 2))
    difference = 100 * (np.mean(right["qat-s1"]) + np.mean(right["qat-s2"])) / 2 - 100 * np.mean(right["fp32-s1"])
    p = binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    columns = next(line for line in against_fp32 if line.startswith("| qat | 1, 2 | ")).split(" | ")
    assert columns[2] == f"{difference:+.2f}" and columns[4:] == [str(b), str(c), f"{p:.3g} |"]
    assert any(line.startswith("| ptq | 1 | ") for line in against_fp32)
    reference = json.loads((out / "fp32_toy.json").read_text())
    assert reference["predicted"] == json.loads((out / "fp32-s1" / "test_predictions.json").read_text())["predicted"]
    assert "CPUs the cells finished on (speeds depend on it, and a quantized cell does not repeat exactly on " \
           f"another): {cpu_summary()}: {len(CELLS)} cells." in report
    assert "Unfinished" not in report and "![dev accuracy, mean over seeds](curves_toy.png)" in report
    # steps to the baseline's final dev accuracy, per seed, from the cells' dev records
    curves = {name: {r["step"]: r["accuracy"] for r in records(out / name) if r["split"] == "dev"}
              for name in ("fp32-s1", "qat-s1")}
    reached = steps_to_reach(curves["qat-s1"], curves["fp32-s1"][max(curves["fp32-s1"])])
    converged = report[report.index("Steps to reach"):].splitlines()
    assert next(line for line in converged if line.startswith("| qat | fp32 | 1, 2 | ")).startswith(
        f"| qat | fp32 | 1, 2 | {'never' if reached is None else reached}, ")
    assert (out / "curves_toy.png").read_bytes()[:4] == b"\x89PNG"


def test_running_again_skips_every_cell(suite, monkeypatch):
    calls = []
    monkeypatch.setattr(run, "run_tool", lambda command: calls.append(command) or (0, None))
    before = mtimes(suite["out"])
    code, stdout, err = experiment("--suite", suite["path"])
    assert code == 0, err
    assert calls == [] and stdout.count("skipped (finished)") == len(CELLS)
    after = mtimes(suite["out"])
    assert {path: t for path, t in after.items() if path.parent.name} == \
        {path: t for path, t in before.items() if path.parent.name}  # only results.csv, REPORT.md, PNG rewritten


def test_a_changed_cell_definition_is_refused(suite, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(run, "run_tool", lambda command: calls.append(command) or (0, None))
    changed = suite["task"]["dir"] / "changed.yaml"
    changed.write_text(suite_text(suite["task"], suite["out"], qat=("quant.method=qat", "quant.weight_bits=7")))
    line = one_error_line(*run_here("experiment.py", monkeypatch, capsys, "--suite", changed)[::2])
    assert "`qat-s1` (quant.weight_bits: 8 -> 7), `qat-s2` (quant.weight_bits: 8 -> 7)" in line
    assert "fp32-s" not in line and calls == []


def test_cells_are_the_product_of_the_axes_and_seeds(tmp_path):
    task = make_toy_task(tmp_path)
    path = tmp_path / "suite.yaml"
    path.write_text(json.dumps({
        "base": str(task["config"]), "output_dir": "out", "seeds": [7, 8],
        "axes": {"dataset": {"dev": [f"data.test_file={tmp_path}/{{dataset}}.tsv"], "test": []},
                 "format": {"w8a8": ["quant.method=qat"]},
                 "method": {"qat": [], "ptq": {"tool": "ptq", "overrides": ["ptq.checkpoint=fp32"]},
                            "ptq_each": {"tool": "ptq", "overrides": ["ptq.checkpoint=fp32_s{seed}"]}}}}))
    found = cells(load_suite(path))
    assert [(c.name, c.tool) for c in found] == [
        ("dev-qat-s7", "train"), ("dev-qat-s8", "train"), ("dev-ptq-s7", "ptq"),  # PTQ once, at the first seed,
        ("dev-ptq_each-s7", "ptq"), ("dev-ptq_each-s8", "ptq"),                  # unless it names {seed}
        ("test-qat-s7", "train"), ("test-qat-s8", "train"), ("test-ptq-s7", "ptq"),
        ("test-ptq_each-s7", "ptq"), ("test-ptq_each-s8", "ptq")]
    assert found[4].overrides == [f"data.test_file={tmp_path}/dev.tsv", "quant.method=qat", "ptq.checkpoint=fp32_s8",
                                  "train.output_dir=out/dev-ptq_each-s8", "train.seed=8"]
    assert found[5].cfg.data.test_file == str(tmp_path / "test.tsv") and found[5].cfg.train.seed == 7


def test_dry_run_and_report_only(suite, monkeypatch, capsys):
    code, out, err = run_here("experiment.py", monkeypatch, capsys, "--suite", suite["path"], "--dry-run",
                              "--only", "qat-*")
    assert code == 0, err
    assert f"[2/2] qat-s2 (train, finished): --config {suite['task']['config']} -o train.max_steps=48 " \
           f"-o train.eval_every=8 -o train.log_every=6 -o quant.method=qat " \
           f"-o train.output_dir={suite['out'] / 'qat-s2'} -o train.seed=2" in out
    # an FP32 reference without its run's results.json beside it is evaluated once, and kept
    reference = suite["task"]["dir"] / "fp32_copy"
    shutil.copytree(suite["out"] / "fp32-s1" / "checkpoints" / "best", reference)
    elsewhere = suite["task"]["dir"] / "fp32_elsewhere.yaml"
    elsewhere.write_text(suite_text(suite["task"], suite["out"], fp32=reference))
    (suite["out"] / "REPORT.md").unlink()
    code, out, err = run_here("experiment.py", monkeypatch, capsys, "--suite", elsewhere, "--report-only")
    assert code == 0 and "5 of 5 cells finished" in out, err
    report = (suite["out"] / "REPORT.md").read_text()
    accuracy = json.loads((suite["out"] / "fp32-s1" / "results.json").read_text())["test"]["accuracy"]
    assert json.loads((suite["out"] / "fp32_toy.json").read_text())["test"]["accuracy"] == accuracy
    assert f"FP32 reference (`{reference}`): test accuracy {accuracy:.2f}." in report and "| qat | 1, 2 |" in report


def test_a_method_is_paired_with_its_own_baseline(suite, monkeypatch, capsys):
    """`baselines: {ptq: [qat, fp32]}`: PTQ is compared with QAT (seed 1, the one PTQ has) and then FP32, the others
    with `baseline`."""
    own = suite["task"]["dir"] / "own_baseline.yaml"
    own.write_text(suite_text(suite["task"], suite["out"], baselines={"ptq": ["qat", "fp32"]}))
    code, out, err = run_here("experiment.py", monkeypatch, capsys, "--suite", own, "--report-only")
    assert code == 0, err
    right = {name: np.equal(*(json.loads((suite["out"] / name / "test_predictions.json").read_text())[key]
                              for key in ("predicted", "gold"))) for name in ("qat-s1", "ptq-s1")}
    b, c = int(np.sum(right["qat-s1"] & ~right["ptq-s1"])), int(np.sum(right["ptq-s1"] & ~right["qat-s1"]))
    paired = (suite["out"] / "REPORT.md").read_text().split("| McNemar p |")[1].splitlines()
    assert [line.split(" | ")[1:3] for line in paired if line.startswith("| ptq | ")] == [["qat", "1"], ["fp32", "1"]]
    assert next(line for line in paired if line.startswith("| ptq | ")).endswith(
        f"| {b} | {c} | {binomtest(b, b + c, 0.5).pvalue if b + c else 1.0:.3g} |")
    assert any(line.startswith("| qat | fp32 | 1, 2 | ") for line in paired)
    (suite["out"] / "REPORT.md").unlink()  # the next test compares reports made from the main suite file
    assert run_here("experiment.py", monkeypatch, capsys, "--suite", suite["path"], "--report-only")[0] == 0


def test_records_outlive_the_cell_folders(suite, monkeypatch):
    """A suite with `records` keeps each finished cell's small files there; with the cell folders gone (another
    machine), the report is the same, the cells count as finished, and a changed definition is still refused."""
    calls = []
    monkeypatch.setattr(run, "run_tool", lambda command: calls.append(command) or (0, None))
    kept = suite["task"]["dir"] / "kept"
    recording = suite["task"]["dir"] / "recording.yaml"
    recording.write_text(suite_text(suite["task"], suite["out"], records=kept))
    code, stdout, err = experiment("--suite", recording)
    assert code == 0, err
    assert sorted(path.name for path in kept.iterdir()) == sorted(CELLS + ["fp32_toy.json"])
    assert sorted(path.name for path in (kept / "qat-s1").iterdir()) == [
        "config.yaml", "int8_verification.json", "metrics.jsonl", "results.json", "test_predictions.json"]
    assert (kept / "ptq-s1" / "identity.json").is_file()
    size = sum(path.stat().st_size for path in kept.rglob("*"))
    assert size < 200_000  # no weights
    before = {name: (suite["out"] / name).read_text() for name in ("results.csv", "REPORT.md")}
    moved = suite["task"]["dir"] / "cells_elsewhere"
    suite["out"].rename(moved)
    try:
        code, stdout, err = experiment("--suite", recording)
        assert code == 0, err
        assert calls == [] and stdout.count("skipped (finished, recorded in ") == len(CELLS)
        after = {name: (suite["out"] / name).read_text() for name in ("results.csv", "REPORT.md")}
        assert after == before
        changed = suite["task"]["dir"] / "recording_changed.yaml"
        changed.write_text(suite_text(suite["task"], suite["out"], qat=("quant.method=qat", "quant.weight_bits=7"),
                                      records=kept))
        code, stdout, err = experiment("--suite", changed)
        assert code == 2 and "`qat-s1` (quant.weight_bits: 8 -> 7)" in err and calls == []
    finally:
        shutil.rmtree(suite["out"])
        moved.rename(suite["out"])


@pytest.mark.parametrize("change, message", [
    ({"seed": [1]}, "unknown key `seed`; did you mean `seeds`?"),
    ({"seeds": "1"}, "`seeds`: expected a list of distinct non-negative integers, got '1'"),
    ({"baseline": "qats"}, "`baseline: qats` is not a value of the `method` axis (fp32, qat, ptq); did you mean "
                           "`qat`?"),
    ({"baselines": {"ptq": "qta"}}, "`baselines.ptq: qta` is not a value of the `method` axis (fp32, qat, ptq); "
                                    "did you mean `qat`?"),
    ({"baselines": {"qat": "qat"}}, "`baselines.qat`: expected one or more methods other than `qat`, got ['qat']"),
    ({"baselines": {"qat": ["ptq", "qat"]}}, "`baselines.qat`: expected one or more methods other than `qat`, got "
                                             "['ptq', 'qat']"),
    ({"baselines": {"qat": ["ptq", "qta"]}}, "`baselines.qat: qta` is not a value of the `method` axis"),
    ({"overrides": ["train.seed=3"]}, "`overrides`: `train.seed` is set by the suite for each cell"),
    ({"axes": {"method": {"a-b": []}}}, "`axes.method.a-b`: value names are"),
    ({"axes": {"method": {"a": "quant.method=qat"}}}, "`axes.method.a`: expected a list of `section.key=value`"),
    ({"axes": {"method": {"a": {"tool": "eval"}}}}, "`axes.method.a.tool` must be one of ['train', 'ptq']"),
    ({"axes": {"method": {"a": {"base": "no/such.yaml"}}}}, "`axes.method.a.base` no/such.yaml: no such file"),
    ({"axes": {"method": {"fp32": ["train.lr=1"]}}}, "cell `s1`: override `-o train.lr=1`: unknown key"),
    ({"fp32": {"rt": "x"}}, "`fp32.rt`: not a value of the `dataset` axis (toy)"),
])
def test_suite_file_errors_name_the_file_and_key(tmp_path, monkeypatch, capsys, change, message):
    task = make_toy_task(tmp_path)
    path = tmp_path / "suite.yaml"
    keys = json.loads(suite_text(task, tmp_path / "out"))
    keys.pop("baseline") if "axes" in change else None
    path.write_text(json.dumps({**keys, **change}))
    line = one_error_line(*run_here("experiment.py", monkeypatch, capsys, "--suite", path)[::2])
    assert line.startswith(f"error: {path}: ") and message in line, line


def test_a_value_may_name_its_own_base_config(tmp_path, monkeypatch, capsys):
    task = make_toy_task(tmp_path)
    fp32 = str(task["config"])
    qat = tmp_path / "qat.yaml"  # the suite's base: the toy task in QAT
    qat.write_text(task["config"].read_text() + "quant: {method: qat}\n")
    keys = {"base": str(qat), "output_dir": str(tmp_path / "out"), "seeds": [1, 2], "axes": {"method": {
        "qat": [], "fp32": {"base": fp32},
        "ptq": {"tool": "ptq", "base": fp32, "overrides": ["ptq.checkpoint=out/fp32-s1/checkpoints/best"]}}}}
    path = tmp_path / "suite.yaml"
    path.write_text(json.dumps(keys))
    found = {c.name: c for c in cells(load_suite(path))}
    assert {name: (c.base, c.tool, c.cfg.quant.method) for name, c in found.items()} == {
        "qat-s1": (str(qat), "train", "qat"), "qat-s2": (str(qat), "train", "qat"),
        "fp32-s1": (fp32, "train", "none"), "fp32-s2": (fp32, "train", "none"), "ptq-s1": (fp32, "ptq", "none")}
    assert run.tool_command(found["fp32-s1"])[2:4] == ["--config", fp32]
    code, out, err = run_here("experiment.py", monkeypatch, capsys, "--suite", path, "--dry-run",
                              "--only", "ptq-s1", "--only", "*-s1")
    assert code == 0, err
    assert [line.split()[1] for line in out.splitlines()[1:]] == ["ptq-s1", "qat-s1", "fp32-s1"]  # --only's order
    assert f"fp32-s1 (train, not started): --config {fp32} -o train.output_dir=" in out
    assert f"qat-s1 (train, not started): --config {qat} -o train.output_dir=" in out
    # the finished check compares a cell's saved config with the one its own base gives
    finished = found["fp32-s1"]
    finished.folder.mkdir(parents=True)
    finished.cfg.save(finished.folder / "config.yaml")
    (finished.folder / "results.json").write_text("{}")
    check_finished(list(found.values()))
    del keys["axes"]["method"]["fp32"]["base"]  # the same cell on the suite's base: another definition
    path.write_text(json.dumps(keys))
    with pytest.raises(SuiteError, match=r"`fp32-s1` \(quant.method: 'none' -> 'qat'\)"):
        check_finished(cells(load_suite(path)))
    # a cell takes its base from one value at most
    keys["axes"]["format"] = {"w8a8": {"base": fp32}}
    keys["axes"]["method"]["fp32"]["base"] = fp32
    path.write_text(json.dumps(keys))
    with pytest.raises(SuiteError, match=r"cell `fp32-s1`: `axes.method.fp32.base` and `axes.format.w8a8.base` "
                                         "each name its base config; name it on one axis only"):
        cells(load_suite(path))


@pytest.mark.parametrize("suite_file", sorted((ROOT / "configs" / "suites").glob("*.yaml")), ids=lambda p: p.name)
def test_every_suite_in_configs_loads_and_checks_its_cells(suite_file, monkeypatch, capsys):
    # what --dry-run checks: the suite file and every cell's config; no cell needs runs/ (checkpoints are only paths
    # until a cell runs), so this holds on a fresh clone
    monkeypatch.chdir(ROOT)  # a suite's paths are relative to the working directory
    relative = suite_file.relative_to(ROOT)
    code, out, err = run_here("experiment.py", monkeypatch, capsys, "--suite", relative, "--dry-run")
    assert code == 0, err
    suite = load_suite(relative)
    count = len(cells(suite))
    assert out.startswith(f"{count} of {count} cells of {relative}")
    assert suite.output_dir == Path("runs/suites") / suite_file.stem  # one folder per suite
    assert suite.records == Path("docs/suites") / suite_file.stem / "cells"  # committed beside its report
    assert suite_file.read_text().startswith("# ")  # what it measures and the doc it feeds


@pytest.mark.parametrize("recipe, suite_file, method", [("rt_minilm_w2a8_kd_gt", "rt_w2a8", "kd_gt"),
                                                         ("rt_minilm_w4a8_sam", "rt_w4a8", "sam")])
def test_a_shipped_recipe_is_the_suite_cell_it_was_measured_as(recipe, suite_file, method, monkeypatch):
    # a recipe's comment quotes its suite's numbers: it must train what those cells trained
    from ernie_qat.config import flat_dict, load_config
    monkeypatch.chdir(ROOT)
    measured = next(c for c in cells(load_suite(f"configs/suites/{suite_file}.yaml")) if c.values["method"] == method)
    shipped = flat_dict(load_config(f"configs/{recipe}.yaml").to_dict())
    differing = {key for key, value in flat_dict(measured.cfg.to_dict()).items() if shipped[key] != value}
    assert differing <= {"train.output_dir", "train.seed"}


def test_steps_to_reach_is_the_first_evaluated_step_at_or_above_the_target():
    curve = {30: 70.0, 60: 81.0, 90: 80.0, 120: 82.5}
    assert [steps_to_reach(curve, target) for target in (65, 81, 82, 90)] == [30, 60, 120, None]


def test_paired_statistics_against_hand_computed_numbers():
    # seed 1: b = 3, c = 1; seed 2: b = 4, c = 0; pooled b = 7, c = 1: p = 2 · P(X <= 1 | 8, 1/2) = 2 · 9/256
    baseline = np.array([[1, 1, 1, 1, 0, 1], [1, 1, 1, 1, 1, 1]], dtype=bool)
    method = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 1, 1]], dtype=bool)
    assert mcnemar(baseline, method) == (7, 1, 18 / 256)
    assert mcnemar(baseline, baseline) == (0, 0, 1.0)
    assert mcnemar(np.ones((1, 10), bool), np.zeros((1, 10), bool)).p == pytest.approx(2 / 1024)
    # the mean difference: (−2/6 − 4/6) / 2 = −50 points; the bootstrap means lie between −100 and 0
    difference = paired_bootstrap(baseline, method)
    assert difference.mean == pytest.approx(-50.0) and -100 <= difference.low < -50 < difference.high <= 0
    assert paired_bootstrap(baseline, method) == difference  # fixed generator seed
    # per-example differences 1, 0: resampled means 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4 -> [0, 100]
    assert paired_bootstrap(np.zeros((1, 2), bool), np.array([[1, 0]], bool)) == (50.0, 0.0, 100.0)
    # every example one point apart: no spread
    assert paired_bootstrap(np.zeros((2, 5), bool), np.ones((2, 5), bool)) == (100.0, 100.0, 100.0)
    # 30 of 100 examples gained: the mean of a Binomial(100, 0.3)/100, 95% of its mass in [21, 39] (binom.ppf)
    gained = np.zeros((1, 100), bool)
    gained[0, :30] = True
    difference = paired_bootstrap(np.zeros((1, 100), bool), gained)
    assert difference.mean == pytest.approx(30.0)
    assert difference.low == pytest.approx(21, abs=1) and difference.high == pytest.approx(39, abs=1)
