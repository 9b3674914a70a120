"""Hyper-parameter search on Optuna: learning rate, epochs, warm-up and batch size, each trial a training run.

Optuna's TPE sampler proposes each trial's values; the trial is `tools/train.py --resume` in a child process
with its own output folder (OUTPUT/trials/<n>), evaluating dev once per epoch. While it runs, its
metrics.jsonl is read: each dev evaluation is reported to Optuna at step = epochs done, and a trial whose
value falls below the median of the finished trials' at the same epoch (median pruning: from the 2nd epoch
on, once 3 trials have finished) is stopped with SIGTERM (the trainer saves and exits). A trial's value is
its best checkpoint's dev metric (`--metric`, default macro-F1: on imbalanced data accuracy mostly counts the
large classes; on balanced data the two are close), which also selects the checkpoint
(`train.select_metric`).

The study lives in OUTPUT/study.db (SQLite), so an interrupted search continues: run the same command again.
A trial that was running when its search stopped (Ctrl-C, SIGTERM, or the search process killed: its trial
gets SIGTERM then) is marked failed and queued again with the same values and folder, so the new trial resumes
that run from its last checkpoint. The search ends when `trials` trials have finished (completed or pruned);
three failures in a row stop it. Only the best finished trial keeps its checkpoints (disk). `again` runs
finished trials once more with their values, as new trials in new folders (for trials that something other than
their values ended, such as a defect); the old trials stay in the study as they ended.

Written at the end: OUTPUT/best.yaml (the base config with the best values, for tools/train.py),
OUTPUT/search.png (each trial's value and the best so far), OUTPUT/curves.png (dev metric per epoch of every
trial, pruned ones stopping early), OUTPUT/trials.csv.
"""
import contextlib
import ctypes
import fcntl
import json
import math
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from ernie_qat import env
from ernie_qat.atomic import read_jsonl
from ernie_qat.config import METRICS, differences, flat_dict, load_config
from ernie_qat.errors import Stopped, UserError, stop_signals_handled_by

TOOLS_DIR = Path(__file__).resolve().parents[1] / "tools"
STUDY_NAME = "tune"
POLL_SECONDS = 0.5         # how often a running trial's metrics.jsonl is read
PRUNE_AFTER_TRIALS = 3     # finished trials before median pruning starts
PRUNE_FROM_EPOCH = 2       # no trial is pruned on its first evaluation
RANDOM_TRIALS = 4          # trials TPE samples at random before it models the results
MAX_FAILURES_IN_A_ROW = 3


class TuneError(UserError):
    """The search cannot go on: its folder holds another search, or trials keep failing."""


class TuneInterrupted(Stopped):
    """SIGINT or SIGTERM stopped the search; the running trial saved its run."""


@dataclass(frozen=True)
class SearchSpace:
    """The values a trial may take: ranges are inclusive; the learning rate is searched on a log scale."""
    learning_rate: Tuple[float, float] = (1e-5, 1e-4)
    epochs: Tuple[int, int] = (2, 8)
    warmup_ratio: Tuple[float, float] = (0.0, 0.2)
    batch_size: Tuple[int, ...] = (16, 32, 64)  # choices

    def __post_init__(self):
        checks = [("--lr", self.learning_rate, 0.0, math.inf, True), ("--epochs", self.epochs, 1, math.inf, False),
                  ("--warmup", self.warmup_ratio, 0.0, 1.0, False)]
        for flag, (low, high), least, most, open_low in checks:
            if not (least < low if open_low else least <= low) or not low <= high <= most:
                bounds = f"{'(' if open_low else '['}{least}, {most}]"
                raise UserError(f"`{flag} {low} {high}`: expected LOW <= HIGH, both in {bounds}")
        if not self.batch_size or min(self.batch_size) < 1:
            raise UserError(f"`--batch-sizes`: expected positive integers, got {list(self.batch_size)}")

    def suggest(self, trial) -> Dict[str, object]:
        """{config key: value} of one trial (an enqueued trial's own values)."""
        return {"train.learning_rate": trial.suggest_float("train.learning_rate", *self.learning_rate, log=True),
                "train.epochs": trial.suggest_int("train.epochs", *self.epochs),
                "train.warmup_ratio": trial.suggest_float("train.warmup_ratio", *self.warmup_ratio),
                "train.batch_size": trial.suggest_categorical("train.batch_size", list(self.batch_size))}


def median_pruner():
    """Optuna's median pruner as the search uses it: a trial's steps are its epochs done (1, 2, ...), and
    Optuna prunes from step `n_warmup_steps` on, so from epoch PRUNE_FROM_EPOCH."""
    import optuna
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNE_AFTER_TRIALS, n_warmup_steps=PRUNE_FROM_EPOCH)


def tune(config: str, overrides: Sequence[str], trials: int, output: Path, space: SearchSpace,
         metric: str = "macro_f1", again: Sequence[int] = ()) -> dict:
    """Run (or continue) the search in `output` until `trials` trials have finished; write its results.
    `again`: numbers of finished trials to run once more with their values (each queued once).

    Returns:
        {"best_trial", "value", "params", "best_config", "checkpoint"} of the best finished trial.

    Raises:
        TuneError: `output` holds a search of another config, space or metric; or trials kept failing; or
            `again` names a trial that has not finished.
        TuneInterrupted: SIGINT or SIGTERM; the running trial saved its run (run again to continue).
    """
    import optuna
    if not env.verbose():
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    if metric not in METRICS:
        raise UserError(f"`--metric {metric}`: expected one of {', '.join(METRICS)}")
    fixed = [*overrides, f"train.select_metric={metric}", "train.eval_every=0"]  # dev once per epoch: comparable
    base = load_config(config, fixed)
    if base.train.max_steps:
        raise UserError(f"{config}: `train.max_steps: {base.train.max_steps}` would override the epochs searched; "
                        "remove it")
    output.mkdir(parents=True, exist_ok=True)
    with _only_search_in(output) as lock:
        study = optuna.create_study(
            storage=f"sqlite:///{(output / 'study.db').resolve()}", study_name=STUDY_NAME, direction="maximize",
            load_if_exists=True,
            pruner=median_pruner())
        _check_same_search(study, output, base, space, metric)
        # seeded by the trials so far: a continued search does not draw the values it drew before
        study.sampler = optuna.samplers.TPESampler(n_startup_trials=RANDOM_TRIALS,
                                                   seed=base.train.seed + len(study.trials))
        _queue_again_interrupted(study)
        _queue_again_finished(study, again)
        failures = 0
        while _finished(study) < trials:
            trial = study.ask()
            values = space.suggest(trial)
            folder = Path(trial.user_attrs.get("folder") or output / "trials" / str(trial.number))
            trial.set_user_attr("folder", str(folder))
            settings = [*fixed, *(f"{key}={value!r}" for key, value in values.items()), f"train.output_dir={folder}"]
            command = [sys.executable, str(TOOLS_DIR / "train.py"), "--config", config,
                       *(word for item in settings for word in ("-o", item)), "--resume"]
            state, value = run_trial(study, trial, command, folder, metric, lock)
            failures = failures + 1 if state == "failed" else 0
            print(_trial_line(trial.number, values, state, value, metric, study), flush=True)
            _keep_best_checkpoint(study)
            if failures >= MAX_FAILURES_IN_A_ROW:
                raise TuneError(f"{failures} trials in a row failed; their logs are in {output / 'trials'}")
        return write_results(study, config, fixed, output, metric)


def run_trial(study, trial, command: List[str], folder: Path, metric: str, lock: int) -> Tuple[str, float]:
    """Run one trial's training `command` (writing `folder`; its output to `folder`.log), report its dev
    evaluations and tell Optuna how it ended: ("complete", value), ("pruned", last value) or ("failed", nan).

    Raises:
        TuneInterrupted: this process got SIGINT or SIGTERM; the child was stopped (SIGTERM), the trial is
            left running in the study (the next search queues it again).
    """
    from optuna.trial import TrialState
    folder.parent.mkdir(parents=True, exist_ok=True)
    reported: Dict[int, float] = {}
    pruned = False
    with open(folder.with_name(folder.name + ".log"), "a") as log, _forwarded_signals() as stop:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                 preexec_fn=_stop_with_parent, pass_fds=(lock,))  # the folder stays locked
        stop.child = child
        while True:
            code = child.poll()
            for record in read_jsonl(folder / "metrics.jsonl"):
                epochs_done = record["epoch"] + 1
                if record.get("split") == "dev" and epochs_done not in reported and not pruned:
                    reported[epochs_done] = record[metric]
                    trial.report(record[metric], epochs_done)
                    if not pruned and not stop.signals and trial.should_prune():
                        child.send_signal(signal.SIGTERM)
                        pruned = True
            if code is not None:
                break
            time.sleep(POLL_SECONDS)
    if stop.signals:
        number = stop.signals[0]
        raise TuneInterrupted(f"stopped by {signal.Signals(number).name} during trial {trial.number} (its run is "
                              f"saved in {folder}); run the same command to continue the search", number)
    last = reported[max(reported)] if reported else math.nan
    if pruned:
        study.tell(trial, state=TrialState.PRUNED)
        return "pruned", last
    if code != 0:
        study.tell(trial, state=TrialState.FAIL)
        return "failed", math.nan
    value = json.loads((folder / "results.json").read_text())["dev"][metric]
    study.tell(trial, value)
    return "complete", value


def write_results(study, config: str, fixed: Sequence[str], output: Path, metric: str) -> dict:
    """Write best.yaml, search.png, curves.png and trials.csv; return the best trial's summary."""
    import optuna
    import optuna.visualization.matplotlib as optuna_plots

    from ernie_qat.plots import pyplot, write_png
    best = study.best_trial
    best_config = output / "best.yaml"
    load_config(config, [*fixed, *(f"{key}={value!r}" for key, value in best.params.items()),
                         f"train.output_dir={output / 'best'}"]).save(best_config)
    pyplot()  # the file-only backend, before optuna imports pyplot
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, plot, x in (("search.png", optuna_plots.plot_optimization_history, "trial"),
                              ("curves.png", optuna_plots.plot_intermediate_values, "epochs done")):
            axes = plot(study)
            axes.set_xlabel(x)
            axes.set_ylabel(f"dev {metric}")
            write_png(axes.figure, output / name)
    study.trials_dataframe().to_csv(output / "trials.csv", index=False)
    folder = Path(best.user_attrs["folder"])
    return {"best_trial": best.number, "value": best.value, "params": best.params, "best_config": str(best_config),
            "checkpoint": str(folder / "checkpoints" / "best")}


def _finished(study) -> int:
    from optuna.trial import TrialState
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _queue_again_interrupted(study) -> None:
    """Trials still running in the study belong to a search that stopped: mark them failed and queue their
    values again with their folder, so that their run resumes."""
    from optuna.trial import TrialState
    for old in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(old.number, state=TrialState.FAIL)
        if old.params:
            study.enqueue_trial(old.params, user_attrs={"folder": old.user_attrs.get("folder"),
                                                        "resumes_trial": old.number})


def _queue_again_finished(study, numbers: Sequence[int]) -> None:
    """Queue each finished trial in `numbers` once more with its values, unless it was queued before."""
    from optuna.trial import TrialState
    queued = {trial.user_attrs.get("again_of") for trial in study.get_trials(deepcopy=False)}
    finished = {trial.number: trial for trial in study.get_trials(deepcopy=False,
                                                                  states=(TrialState.COMPLETE, TrialState.PRUNED))}
    for number in numbers:
        if number not in finished:
            raise TuneError(f"--again {number}: the study has no finished trial {number} "
                            f"(finished: {', '.join(map(str, sorted(finished))) or 'none'})")
        if number not in queued:
            study.enqueue_trial(finished[number].params, user_attrs={"again_of": number})


def _check_same_search(study, output: Path, base, space: SearchSpace, metric: str) -> None:
    """Record the search's definition in a new study; refuse to continue one defined otherwise."""
    definition = {**flat_dict(base.to_dict(), "config."), **flat_dict(asdict(space), "space."), "metric": metric}
    definition = {key: list(value) if isinstance(value, tuple) else value for key, value in definition.items()
                  if key != "config.train.output_dir"}
    saved = study.user_attrs.get("definition")
    if saved is None:
        study.set_user_attr("definition", definition)
        return
    changed = differences(saved, definition)
    if changed:
        raise TuneError(f"{output} holds a search of another config, search space or metric, and continuing "
                        "would mix the two:\n  " + "\n  ".join(changed) +
                        "\nHINT: restore these values, or choose another --output")


def _keep_best_checkpoint(study) -> None:
    """Delete the checkpoints of every finished trial but the best (the runs' logs and results stay)."""
    from optuna.trial import TrialState
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    best = study.best_trial.number if any(t.state == TrialState.COMPLETE for t in done) else None
    for trial in done:
        if trial.number != best:
            shutil.rmtree(Path(trial.user_attrs["folder"]) / "checkpoints", ignore_errors=True)


def _trial_line(number: int, values: Dict[str, object], state: str, value: float, metric: str, study) -> str:
    """One line about a finished trial: its values and how it ended."""
    settings = (f"lr {values['train.learning_rate']:.2e}, {values['train.epochs']} epochs, warm-up "
                f"{values['train.warmup_ratio']:.2f}, batch {values['train.batch_size']}")
    outcome = {"complete": f"dev {metric} {value:.2f}", "pruned": f"pruned (dev {metric} {value:.2f})",
               "failed": "failed: see its log"}[state]
    best = " (best so far)" if state == "complete" and study.best_trial.number == number else ""
    return f"trial {number} ({settings}): {outcome}{best}"


@contextlib.contextmanager
def _only_search_in(output: Path) -> Iterator[int]:
    """Hold OUTPUT/.lock while the block runs (yields its file descriptor, which trials inherit): one search
    per folder, and none while a trial of a stopped search is still saving."""
    fd = open(output / ".lock", "w")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fd.close()
        raise TuneError(f"{output} is in use by another search (or a trial of a stopped one is still saving): "
                        "wait for it, or choose another --output") from None
    try:
        yield fd.fileno()
    finally:
        fd.close()


class _Stop:
    """The signals received while a trial runs, and the child to pass them on to."""

    def __init__(self):
        self.signals: List[int] = []
        self.child: Optional[subprocess.Popen] = None


@contextlib.contextmanager
def _forwarded_signals() -> Iterator[_Stop]:
    """Within the block, SIGINT and SIGTERM are recorded and passed on to the trial as SIGTERM (it saves its
    step and exits), instead of stopping this process mid-trial."""
    stop = _Stop()

    def record(number, frame):
        stop.signals.append(number)
        if stop.child is not None and stop.child.poll() is None:
            stop.child.send_signal(signal.SIGTERM)

    with stop_signals_handled_by(record):
        yield stop


def _stop_with_parent() -> None:
    """In the trial's process: get SIGTERM when the search process dies (Linux), so no run goes on unwatched."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
