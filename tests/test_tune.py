"""tools/tune.py: an interrupted search resumes its trial and finishes; pruning stops a trial's run."""
import json
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from conftest import ROOT, make_toy_task, write_toy_split
from ernie_qat.atomic import read_jsonl
from ernie_qat.config import load_config
from ernie_qat.tune import STUDY_NAME, SearchSpace, TuneError, median_pruner, run_trial, tune


def tune_command(task, output, *extra):
    return [sys.executable, str(ROOT / "tools" / "tune.py"), "--config", str(task["config"]), "--trials", "2",
            "--epochs", "1", "2", "--batch-sizes", "16", "--output", str(output), *extra]


def load_study(output):
    return optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{output / 'study.db'}")


def test_an_interrupted_search_resumes_its_trial_and_finishes(tmp_path):
    task = make_toy_task(tmp_path)
    write_toy_split(tmp_path / "train.tsv", 1200, 0)  # 75 steps per epoch: a trial runs for seconds
    output = tmp_path / "search"
    search = subprocess.Popen(tune_command(task, output), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not any(r["split"] == "train" for r in read_jsonl(output / "trials" / "1" / "metrics.jsonl")):
        assert search.poll() is None and time.time() < deadline, search.communicate()
        time.sleep(0.05)
    search.send_signal(signal.SIGINT)  # mid-trial 1: its run saves its step and stops, then the search
    out, err = search.communicate(timeout=300)
    assert search.returncode == 130, err
    assert "stopped by SIGINT during trial 1" in err and "run the same command to continue" in err
    assert out.startswith("trial 0 (") and "trial 1" not in out
    interrupted_at = json.loads((output / "trials" / "1" / "checkpoints" / "last" / "trainer_state.json")
                                .read_text())["step"]
    assert 0 < interrupted_at < 75

    again = subprocess.run(tune_command(task, output), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    study = load_study(output)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.COMPLETE) == 2
    failed = next(t for t in study.trials if t.state == TrialState.FAIL)
    retried = next(t for t in study.trials if t.user_attrs.get("resumes_trial") == failed.number)
    assert retried.params == failed.params and retried.user_attrs["folder"] == str(output / "trials" / "1")
    log = (output / "trials" / "1.log").read_text()
    assert "starting a fresh run" not in log.split("stopped by SIGTERM")[-1]  # the retry resumed the saved run
    train_steps = [r["step"] for r in read_jsonl(output / "trials" / "1" / "metrics.jsonl") if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps))  # no step twice

    best = load_config(output / "best.yaml")
    assert best.train.learning_rate == study.best_params["train.learning_rate"]
    assert best.train.epochs == study.best_params["train.epochs"] and best.train.select_metric == "macro_f1"
    assert best.train.output_dir == str(output / "best")
    assert (output / "search.png").stat().st_size > 0 and (output / "trials.csv").exists()
    kept = [t.number for t in study.trials if (output / "trials" / str(t.number) / "checkpoints").exists()]
    assert kept == [study.best_trial.number]

    with pytest.raises(TuneError, match=r"holds a search of another config(.|\n)*metric: 'macro_f1' -> 'accuracy'"):
        tune(str(task["config"]), [], 2, output, SearchSpace(epochs=(1, 2), batch_size=(16,)), "accuracy")

    space = SearchSpace(epochs=(1, 2), batch_size=(16,))
    tune(str(task["config"]), [], 3, output, space, again=[0])  # trial 0 once more, with its values
    rerun = load_study(output).trials[-1]
    assert rerun.state == TrialState.COMPLETE and rerun.params == study.trials[0].params
    assert rerun.user_attrs["again_of"] == 0 and rerun.user_attrs["folder"] == str(output / "trials" / str(rerun.number))
    tune(str(task["config"]), [], 3, output, space, again=[0])  # queued once: nothing more to run
    assert len(load_study(output).trials) == rerun.number + 1
    with pytest.raises(TuneError, match=r"--again 9: the study has no finished trial 9 \(finished: 0, 2, 3\)"):
        tune(str(task["config"]), [], 3, output, space, again=[9])


FAKE_TRAINING = """
import json, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
with open(sys.argv[1], "a") as log:
    for epoch in range(10):
        log.write(json.dumps({"step": epoch + 1, "epoch": epoch, "split": "dev", "macro_f1": 50.0 - epoch}) + "\\n")
        log.flush()
        time.sleep(0.2)
"""


def test_the_median_pruner_spares_a_first_epoch_and_prunes_from_the_second():
    """Steps are epochs done (1, 2, ...): a long trial still warming up at epoch 1 is not judged there."""
    study = optuna.create_study(direction="maximize", pruner=median_pruner())
    for finished in range(3):
        trial = study.ask()
        trial.report(60.0, 1)
        trial.report(70.0, 2)
        study.tell(trial, 70.0)
    trial = study.ask()
    trial.report(5.0, 1)
    assert not trial.should_prune()
    trial.report(5.0, 2)
    assert trial.should_prune()


def test_a_pruned_trial_stops_its_run(tmp_path):
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=49.5))
    trial = study.ask()
    folder = tmp_path / "trial"
    folder.mkdir()
    started = time.time()
    state, value = run_trial(study, trial, [sys.executable, "-c", FAKE_TRAINING, str(folder / "metrics.jsonl")],
                             folder, "macro_f1", lock=open(tmp_path / "lock", "w").fileno())
    assert (state, value) == ("pruned", 49.0) and time.time() - started < 1.5  # stopped at its 2nd epoch
    assert study.trials[0].state == TrialState.PRUNED and study.trials[0].intermediate_values == {1: 50.0, 2: 49.0}
