"""Data-parallel training under `python -m paddle.distributed.launch`: 2 CPU processes (gloo, connections to
127.0.0.1) on the tiny model.

Two ranks train as one process does on the same global batch; only rank 0 writes; quantizer state is the same on
every rank; any stop (the launcher killed, a rank killed, a NaN on one rank) stops every rank at one step with one
message and leaves the last checkpoint intact, and --resume continues exactly. A launch starts three Python
processes (about 15 s on 2 cores); rank internals are seen through tests/rank_probe.py.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import paddle
import pytest

from conftest import ROOT, make_toy_task
from ernie_qat import faults
from ernie_qat.atomic import is_complete
from ernie_qat.config import load_config
from ernie_qat.errors import UserError
from ernie_qat.train.parallel import Topology
from ernie_qat.train.trainer import fit

RUN = ["train.max_steps=12", "train.eval_every=4", "train.log_every=3"]
# One process cannot draw the dropout masks two ranks draw (each from (seed, rank, step)): compared without dropout.
NO_DROPOUT = ["model.dropout=0", "train.log_every=1"]
MODES = {
    "fp32": [],
    "qat": ["quant.method=qat", "regularizer.method=kurtosis"],  # PaddleSlim's moving-average activation scales
    "lsq": ["quant.method=qat", "quant.weight_quantizer=lsq", "quant.weight_bits=4", "quant.activation_quantizer=lsq",
            "optimizer.method=squat", "optimizer.squat_period=2"],  # learned step sizes, SAM steps and plain ones
    "sam": ["optimizer.method=sam"],
    "ti": ["quant.method=qat", "quant.weight_quantizer=ternary", "quant.weight_bits=2", "distill.ground_truth_weight=0",
           "distill.attention_output_weight=1", "distill.intervention=scheduled", "distill.intervention_steps=6",
           "distill.intervention_schedule=oi,ci,mi"],  # + distill.teacher: the teacher runs on every rank
}
# Tolerances against one process. Losses (train, dev, loss terms) within 1e-5 relative (measured: 5e-7), but TI's
# 2e-3, its loss terms of 1e-4 within 1e-5 absolute (measured 7e-4 relative: distillation's MSE terms average over
# each rank's own real tokens, and its ternary weights drift as quantized ones do, below); other logged values and
# weights within 1e-5 for FP32 (measured 2e-7), 1e-3 relative and 1e-2 absolute quantized (measured 4e-5 and 4e-4):
# a rounding difference can move a value across a quantization step, and Adam turns a changed gradient sign into a
# learning-rate-sized update.
LOSS_RTOL, LOSS_ATOL = {"ti": 2e-3}, {"ti": 1e-5}
EXACT = ("fp32", "sam")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return make_toy_task(tmp_path_factory.mktemp("distributed"))


@pytest.fixture(scope="module")
def teacher(task):
    """An FP32 checkpoint of the toy task, trained in this process."""
    fit(load_config(task["config"], RUN + [f"train.output_dir={task['dir'] / 'teacher'}"]))
    return task["dir"] / "teacher" / "checkpoints" / "best"


def launch(task, name, *args, script="tools/train.py", fault=None, wait=True):
    """Two ranks of `script` on the toy task into `<dir>/<name>` (RUN and `args` as overrides or options); the
    launcher runs in `<dir>/<name>.launch`, its log folder there."""
    cwd = task["dir"] / f"{name}.launch"
    cwd.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--host", "127.0.0.1",
               "--log_dir", str(cwd / "log"), str(ROOT / script), "--config", str(task["config"]),
               "-o", f"train.output_dir={task['dir'] / name}"]
    for item in RUN + list(args):
        command += ["-o", item] if "=" in item else [item]
    env = {k: v for k, v in os.environ.items() if k not in (faults.ENV, "OMP_NUM_THREADS")}
    if fault:
        env[faults.ENV] = fault
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return process
    output = process.communicate(timeout=300)[0]
    return subprocess.CompletedProcess(command, process.returncode, output, "")


def records(run_dir, *drop):
    out = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in out:
        for key in ("examples_per_s", *drop):
            record.pop(key, None)
    return out


def weights(run_dir, name="last"):
    return {k: v.numpy() for k, v in paddle.load(str(run_dir / "checkpoints" / name / "model_state.pdparams")).items()}


def saved_step(run_dir) -> int:
    return json.loads((run_dir / "checkpoints" / "last" / "trainer_state.json").read_text())["step"]


@pytest.mark.parametrize("mode", list(MODES))
def test_two_processes_train_as_one_on_the_same_global_batch(task, teacher, mode):
    overrides = RUN + NO_DROPOUT + MODES[mode] + ([f"distill.teacher={teacher}"] if mode == "ti" else [])
    fit(load_config(task["config"], overrides + [f"train.output_dir={task['dir'] / ('one-' + mode)}"]))
    states = task["dir"] / f"states-{mode}"
    two = launch(task, "two-" + mode, *overrides, "--states", str(states), script="tests/rank_probe.py")
    assert two.returncode == 0, two.stdout
    one_dir, two_dir = task["dir"] / ("one-" + mode), task["dir"] / ("two-" + mode)

    # only rank 0 wrote: what one process writes, one checkpoint set, one log of one record per step and split
    assert sorted(p.name for p in two_dir.iterdir()) == sorted(p.name for p in one_dir.iterdir())
    assert {"checkpoints", "config.yaml", "metrics.jsonl", "results.json"} <= {p.name for p in two_dir.iterdir()}
    assert sorted(p.name for p in (two_dir / "checkpoints").iterdir()) == ["best", "last"]
    assert sorted(p.name for p in (task["dir"] / f"two-{mode}.launch").iterdir()) == ["log"]
    logged = records(two_dir, "step/time_vs_plain")
    alone = records(one_dir, "step/time_vs_plain")
    assert [(r["step"], r["split"]) for r in logged] == [(r["step"], r["split"]) for r in alone]

    # the whole batch's losses, logs and weights, as one process computes them
    for two_record, one_record in zip(logged, alone):
        assert two_record.keys() == one_record.keys()
        for key, value in one_record.items():
            if isinstance(value, float):
                loss = key == "loss" or key.startswith("loss/")
                rtol = LOSS_RTOL.get(mode, 1e-5) if loss or mode in EXACT else 1e-3
                atol = LOSS_ATOL.get(mode, 1e-6) if loss else 1e-6
                assert two_record[key] == pytest.approx(value, rel=rtol, abs=atol), (key, two_record["step"])
    ours, theirs = weights(two_dir), weights(one_dir)
    assert ours.keys() == theirs.keys()
    for key in ours:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=0, atol=1e-5 if mode in EXACT else 1e-2, err_msg=key)

    # every rank held the same parameters and quantizer state after each evaluation, and rank 0 saved them; but for
    # the max|W| a weight fake-quant records at each forward (a cache of the weights, which rank 0's evaluation
    # refreshed: read by nothing, recomputed by any forward)
    for step in (4, 8, 12):
        ranks = [np.load(states / f"rank{rank}-step{step}.npz") for rank in (0, 1)]
        assert ranks[0].files == ranks[1].files
        trained = [key for key in ranks[0].files if not key.endswith("_fake_quant_weight._scale")]
        assert all(np.array_equal(ranks[0][key], ranks[1][key]) for key in trained), step
    final = np.load(states / "rank0-step12.npz")
    saved = {f"net.{key}": value for key, value in ours.items()}
    assert all(np.array_equal(final[key], saved[key]) for key in saved)
    quantizer_state = {"qat": "_fake_quant_input._scale", "lsq": "_fake_quant_input.step",
                       "ti": "_fake_quant_input._accum"}
    if mode in quantizer_state:  # the state the ranks agree on includes the quantizers'
        assert any(key.endswith(quantizer_state[mode]) for key in saved)


@pytest.fixture(scope="module")
def reference(task):
    """An uninterrupted 2-process run (dropout on)."""
    result = launch(task, "reference")
    assert result.returncode == 0, result.stdout
    return records(task["dir"] / "reference"), weights(task["dir"] / "reference")


def assert_reproduces(reference, run_dir):
    assert records(run_dir) == reference[0]
    ours = weights(run_dir)
    assert ours.keys() == reference[1].keys() and all(np.array_equal(ours[k], reference[1][k]) for k in ours)


def rank_processes(launcher: int) -> dict:
    """{rank: pid} of the processes the launcher started."""
    children = [int(pid) for thread in Path(f"/proc/{launcher}/task").iterdir()
                for pid in (thread / "children").read_text().split()]
    ranks = {}
    for pid in children:
        items = Path(f"/proc/{pid}/environ").read_text().split("\0")
        ranks[int(dict(item.split("=", 1) for item in items if "=" in item)["PADDLE_TRAINER_ID"])] = pid
    return ranks


def process_state(pid: int) -> str:
    """R, S, T (stopped), Z (exited, not yet reaped)... or "" once gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return ""


def wait_until(condition, timeout=120.0):
    end = time.time() + timeout
    while not condition():
        assert time.time() < end, "timed out"
        time.sleep(0.1)


def test_killing_the_launcher_stops_every_rank_at_one_step_and_resume_reproduces(task, reference):
    run_dir = task["dir"] / "killed"
    # rank 0 pauses itself after step 7's backward, so that the launcher dies at a known step
    launcher = launch(task, "killed", fault="train.backward#7@0:SIGSTOP", wait=False)
    ranks = {}

    def rank0_paused():
        nonlocal ranks
        assert launcher.poll() is None, launcher.communicate()[0]
        try:
            ranks = rank_processes(launcher.pid)
        except (FileNotFoundError, KeyError, ValueError):  # a rank starting up
            return False
        return len(ranks) == 2 and process_state(ranks[0]) == "T"

    wait_until(rank0_paused)
    launcher.kill()  # SIGKILL: the launcher cannot pass anything on; each rank gets SIGTERM as its parent dies
    launcher.communicate()
    os.kill(ranks[0], signal.SIGCONT)
    wait_until(lambda: all(process_state(pid) in ("", "Z") for pid in ranks.values()))
    assert saved_step(run_dir) == 7 and is_complete(run_dir / "checkpoints" / "last")  # both stopped after step 7
    for rank in (0, 1):
        log = (task["dir"] / "killed.launch" / "log" / f"workerlog.{rank}").read_text()
        assert "stopped by SIGTERM at step 7 of 12" in log and "Traceback" not in log
        assert "resume with: python -m paddle.distributed.launch --nproc_per_node 2 " in log
    resumed = launch(task, "killed", "--resume")
    assert resumed.returncode == 0, resumed.stdout
    assert_reproduces(reference, run_dir)


def test_a_rank_that_dies_stops_the_run_with_one_message_and_resume_reproduces(task, reference):
    run_dir = task["dir"] / "rank-died"
    died = launch(task, "rank-died", fault="train.backward#6@1")  # rank 1 SIGKILLed mid-step 6
    assert died.returncode != 0
    log = (task["dir"] / "rank-died.launch" / "log" / "workerlog.0").read_text()
    assert log.count("error: ") == 1 and "Traceback" not in log
    message = next(line for line in log.splitlines() if line.startswith("error: "))
    assert message.startswith("error: training stopped after step 5: another process of this data-parallel run "
                              "stopped or cannot be reached") and "the last good checkpoint" in message
    assert f"{run_dir / 'checkpoints' / 'last'} (step 4), is intact" in message
    assert saved_step(run_dir) == 4 and is_complete(run_dir / "checkpoints" / "last")
    resumed = launch(task, "rank-died", "--resume")
    assert resumed.returncode == 0, resumed.stdout
    assert_reproduces(reference, run_dir)


def test_nan_on_one_rank_stops_every_rank_before_the_update(task, reference):
    run_dir = task["dir"] / "nan"
    stopped = launch(task, "nan", "--nan-at", "6", script="tests/rank_probe.py")  # NaN loss at step 7 on rank 1 alone
    assert stopped.returncode != 0  # 2, or the launcher's SIGTERM (-15) if a rank was still exiting when it came
    expected = (f"error: training diverged at step 7: the loss is nan; the last good checkpoint, "
                f"{run_dir / 'checkpoints' / 'last'} (step 4), is intact: --resume continues from it.")
    assert expected in stopped.stdout  # the rank that failed first said it, and the launcher shows its log
    for rank in (0, 1):  # every rank saw the NaN and stopped before the update; none said anything else
        log = (task["dir"] / "nan.launch" / "log" / f"workerlog.{rank}").read_text()
        assert "Traceback" not in log and all(line == expected for line in log.splitlines() if "error" in line)
    assert saved_step(run_dir) == 4 and is_complete(run_dir / "checkpoints" / "last")
    assert records(run_dir) == [r for r in reference[0] if r["step"] <= 6]  # the steps before, as the reference's


def test_shards_shares_and_seeds():
    two = [Topology(rank, 2) for rank in (0, 1)]
    assert [t.shard([5, 6, 7, 8, 9]).indices for t in two] == [[5, 7, 9], [6, 8]]
    assert [t.shard([5, 6, 7, 8, 9]).share for t in two] == [3 / 5, 2 / 5]  # the gradient is Σ share·g: the mean's
    assert [t.shard([5]).indices for t in two] == [[5], [5]]  # a batch smaller than the ranks: each runs it whole
    assert [(t.shard([5]).share, t.shard([5]).fraction) for t in two] == [(0.5, 1.0), (0.5, 1.0)]
    assert Topology(0, 1).step_seed(42, 7) == 42 * 1_000_003 + 7  # one process: the seeds it always had
    assert len({t.step_seed(seed, step) for t in two for seed in (0, 1) for step in range(100)}) == 400


def test_a_global_batch_smaller_than_the_processes_is_refused(task, monkeypatch):
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "32")  # what the launcher sets: checked before any communication
    monkeypatch.setenv("PADDLE_TRAINER_ID", "0")
    with pytest.raises(UserError, match=r"`train.batch_size` 16 is the global batch, shared by the run's 32 "
                                         r"processes: .* raise it to 32 or more, or start fewer processes"):
        fit(load_config(task["config"], [f"train.output_dir={task['dir'] / 'too-small'}"]))
    assert not (task["dir"] / "too-small").exists()


def test_each_process_takes_its_share_of_the_cores():
    code = "import ernie_qat; from ernie_qat.env import cpu_settings; print(cpu_settings())"
    cores = len(os.sched_getaffinity(0))
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    # under the launcher OMP_NUM_THREADS=1 is the launcher's own import of paddle speaking, not the user
    shared = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**env, "PADDLE_LOCAL_SIZE": "2", "OMP_NUM_THREADS": "1"}).stdout
    assert f"OMP_NUM_THREADS={max(1, cores // 2)} (ernie-qat)" in shared and "shared by 2 processes" in shared
    chosen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**env, "PADDLE_LOCAL_SIZE": "2", "OMP_NUM_THREADS": "3"}).stdout
    assert "OMP_NUM_THREADS=3 (user)" in chosen


@pytest.mark.parametrize("outcome, code", [("print('done')", 0), ("raise RankLost('rank 1 stopped')", 1)])
def test_a_rank_ends_with_its_code_and_output_but_without_the_interpreters_teardown(tmp_path, outcome, code):
    # in the teardown Paddle 2.6 destroys the gloo process group (an atexit hook) and has aborted with SIGABRT
    marker = tmp_path / "teardown-ran"
    script = "\n".join([
        "import atexit", "from pathlib import Path", "from ernie_qat import cli", "from ernie_qat.train import parallel",
        "from ernie_qat.train.parallel import RankLost",
        f"atexit.register(lambda: Path({str(marker)!r}).touch())",
        "parallel._started.append(True)  # what `start` records once the process group is up",
        "def main():", f"    {outcome}",
        "cli.run(main)"])
    ended = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert ended.returncode == code, ended.stderr
    assert ended.stdout == ("done\n" if code == 0 else "")  # flushed, though the process left with os._exit
    if code:
        assert ended.stderr.endswith("error: rank 1 stopped\n")
    assert not marker.exists()
