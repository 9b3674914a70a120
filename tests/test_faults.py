"""Faults injected into training on the tiny model: after each, `--resume` reproduces the uninterrupted
run's losses and weights exactly, and user-caused failures exit 2 with one line and no traceback.

Kills are injected deterministically at named points (ernie_qat.faults), not by timing. The run
logs every 3 steps and evaluates every 4, so a resumed run must also restore a half-filled log window.
"""
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import paddle
import pytest

from conftest import ROOT, full_disk_at, make_toy_task
from ernie_qat import faults
from ernie_qat.atomic import DamagedFileError, is_complete
from ernie_qat.config import load_config
from ernie_qat.models.classifier import ModelError
from ernie_qat.plugins import build_plugins
from ernie_qat.train.checkpoint import load_checkpoint
from ernie_qat.train.hooks import LossTerm
from ernie_qat.train.trainer import NonFiniteError, fit

RUN = ["train.max_steps=12", "train.eval_every=4", "train.log_every=3"]


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return make_toy_task(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def reference(task):
    """The uninterrupted run."""
    result = train(task, "reference")
    assert result.returncode == 0, result.stderr
    return outcome(task["dir"] / "reference")


def train(task, name, *overrides, fault=None, resume=False, file_size_limit=None) -> subprocess.CompletedProcess:
    """tools/train.py on the toy task into `<dir>/<name>`, with a fault injected or a file-size limit."""
    args = [sys.executable, ROOT / "tools" / "train.py", "--config", task["config"],
            "-o", f"train.output_dir={task['dir'] / name}"]
    for item in RUN + list(overrides):
        args += ["-o", item]
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    env["OMP_NUM_THREADS"] = "1"  # float sums depend on the thread count: every run of a comparison uses one
    if fault:
        env[faults.ENV] = fault
    return subprocess.run([str(a) for a in args] + (["--resume"] if resume else []), capture_output=True, text=True,
                          env=env, timeout=600, preexec_fn=full_disk_at(file_size_limit) if file_size_limit else None)


def outcome(run_dir):
    """(metrics records without timings, final weights, test metrics) of a finished run."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        record.pop("examples_per_s", None)
    weights = {k: v.numpy() for k, v in paddle.load(str(run_dir / "checkpoints" / "last" / "model_state.pdparams")).items()}
    return records, weights, json.loads((run_dir / "results.json").read_text())["test"]


def assert_reproduces(reference, run_dir):
    records, weights, test = outcome(run_dir)
    assert records == reference[0]
    assert weights.keys() == reference[1].keys()
    assert all(np.array_equal(weights[k], reference[1][k]) for k in weights)
    assert test == reference[2]


def saved_step(run_dir, name="last") -> int:
    return json.loads((run_dir / "checkpoints" / name / "trainer_state.json").read_text())["step"]


def one_error_line(result, *parts):
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for part in parts:
        assert part in result.stderr


@pytest.mark.parametrize("fault", ["checkpoint.written#2", "folder.staged#2", "folder.aside#1", "folder.swapped#2", "train.backward#6"])
def test_sigkill_then_resume_reproduces_the_run(task, reference, fault):
    name = "kill-" + fault.replace("#", "-")
    run_dir = task["dir"] / name
    killed = train(task, name, fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    checkpoints = run_dir / "checkpoints"
    if fault == "folder.aside#1":  # the crash window in which a checkpoint is missing from its place
        assert not ((checkpoints / "last").exists() and (checkpoints / "best").exists())
    if fault == "train.backward#6":  # the record being written when the process died
        with open(run_dir / "metrics.jsonl", "a") as log:
            log.write('{"step": 6, "epoch": 0, "spl')
    resumed = train(task, name, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    if fault == "folder.aside#1":
        assert "recovered checkpoint" in resumed.stderr
    assert not [p.name for p in checkpoints.iterdir() if p.name.startswith(".")]
    assert_reproduces(reference, run_dir)


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_signal_saves_the_current_step_and_says_how_to_resume(task, reference, signal_name):
    name = "signal-" + signal_name
    stopped = train(task, name, fault=f"train.backward#6:{signal_name}")
    number = getattr(signal, signal_name)
    assert stopped.returncode == 128 + number, stopped.stderr
    first = stopped.stderr.strip().splitlines()[-2]  # a stop the user asked for, not an error
    assert first.startswith(f"stopped by {signal_name} at step 6 of 12; saved ") and "error" not in stopped.stderr
    assert "Traceback" not in stopped.stderr
    command = stopped.stderr.split("resume with: ", 1)[1].strip()
    assert command.endswith("--resume") and "tools/train.py" in command
    assert saved_step(task["dir"] / name) == 6  # between evaluations (4 and 8): saved because of the signal
    resumed = train(task, name, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_reproduces(reference, task["dir"] / name)


def test_full_disk_keeps_earlier_outputs_and_resume_reproduces(task, reference):
    run_dir = task["dir"] / "full-disk"
    first = train(task, "full-disk", fault="train.backward#6", resume=True)
    assert first.returncode == -signal.SIGKILL and "no checkpoint" in first.stderr and "starting a fresh run" in first.stderr
    log_before = (run_dir / "metrics.jsonl").read_text()
    weights = (run_dir / "checkpoints" / "last" / "model_state.pdparams").stat().st_size
    full = train(task, "full-disk", resume=True, file_size_limit=weights // 2)  # logs fit, weights do not
    one_error_line(full, "cannot write", str(run_dir / "checkpoints"), "File too large")
    assert saved_step(run_dir) == 4 and is_complete(run_dir / "checkpoints" / "last")
    assert (run_dir / "metrics.jsonl").read_text().startswith(log_before.split('\n{"step": 6')[0])
    resumed = train(task, "full-disk", resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_reproduces(reference, run_dir)


class NaNAt(LossTerm):
    """A loss term that is NaN at one step."""
    name = "nan"

    def __init__(self, step: int):
        self.step = step

    def __call__(self, model, outputs, batch, step):
        return paddle.to_tensor(float("nan") if step == self.step else 0.0), {}


def test_nan_stops_before_the_update_and_resume_reproduces(task):
    def config(name):
        return load_config(task["config"], RUN + [f"train.output_dir={task['dir'] / name}"])

    fit(config("nan-reference"))  # in this process: the same CPU math threads as the runs below
    run_dir = task["dir"] / "nan"
    plugins = build_plugins(config("nan"))
    plugins.loss_terms.append(NaNAt(step=6))
    with pytest.raises(NonFiniteError, match=r"diverged at step 7: the loss is nan; the last good checkpoint, "
                                             r".*last \(step 4\), is intact"):
        fit(config("nan"), plugins)
    assert saved_step(run_dir) == 4 and is_complete(run_dir / "checkpoints" / "last")
    fit(config("nan"), resume=True)
    assert_reproduces(outcome(task["dir"] / "nan-reference"), run_dir)


def test_divergence_through_the_cli_exits_2_naming_step_and_checkpoint(task):
    diverged = train(task, "diverged", "train.learning_rate=1e3", "train.max_grad_norm=0")
    one_error_line(diverged, "training diverged at step", "HINT")
    assert not (task["dir"] / "diverged" / "results.json").exists()


def test_resume_refuses_another_config_or_data_before_touching_the_run(task, reference):
    run_dir = task["dir"] / "reference"
    config_before = (run_dir / "config.yaml").read_bytes()
    changed = train(task, "reference", "train.learning_rate=1e-3", resume=True)
    one_error_line(changed, "cannot resume", "train.learning_rate: 0.002 -> 0.001")
    train_file = task["dir"] / "train.tsv"
    original = train_file.read_text()
    try:
        train_file.write_text(original.replace("\tpos\t", "\tx\t").replace("pos\t", "neg\t", 5))
        relabelled = train(task, "reference", resume=True)
    finally:
        train_file.write_text(original)
    one_error_line(relabelled, "cannot resume", "data: the train split's examples differ")
    assert (run_dir / "config.yaml").read_bytes() == config_before


def test_damaged_checkpoint_files_are_named(task, reference, tmp_path):
    best = task["dir"] / "reference" / "checkpoints" / "best"
    copy = tmp_path / "best"
    shutil.copytree(best, copy)
    weights = copy / "model_state.pdparams"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
    weights.write_bytes(bytes(data))
    with pytest.raises(DamagedFileError, match=f"`{weights}` is damaged: .* but a different checksum"):
        load_checkpoint(copy)
    evaluated = subprocess.run([sys.executable, str(ROOT / "tools" / "eval.py"), "--checkpoint", str(copy)],
                               capture_output=True, text=True, timeout=600)
    one_error_line(evaluated, str(weights), "is damaged")
    (copy / "manifest.json").unlink()  # a folder written before manifests: the file itself is checked
    for content in (b"", bytes(data[:len(data) // 3]), b"garbage" * 100):
        weights.write_bytes(content)
        with pytest.raises(ModelError, match=f"`{weights}` cannot be read"):
            load_checkpoint(copy)
    state = paddle.load(str(best / "model_state.pdparams"))
    name = next(iter(state))
    state[name] = state[name] * float("nan")
    paddle.save(state, str(weights))
    with pytest.raises(ModelError, match=f"`{weights}`: 1 of \\d+ tensors hold NaN or infinity \\(first: {name}\\)"):
        load_checkpoint(copy)


def test_output_under_a_regular_file_is_a_user_error(task):
    blocker = task["dir"] / "a-file"
    blocker.write_text("")
    result = train(task, "a-file/run")
    one_error_line(result, "cannot write", str(blocker))


def test_full_disk_during_export_is_a_user_error(task, reference, tmp_path):
    output = tmp_path / "deploy"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "export.py"), "--checkpoint",
                             str(task["dir"] / "reference" / "checkpoints" / "best"), "--output", str(output),
                             "--precision", "fp32"], capture_output=True, text=True, timeout=600,
                            preexec_fn=full_disk_at(30_000))
    one_error_line(result, f"cannot write `{output}`", "File too large")
    assert list(tmp_path.iterdir()) == []
