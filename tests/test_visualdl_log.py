"""VisualDL logs: a run's scalars, read back with VisualDL's own reader, are metrics.jsonl's, also after a resume."""
import json
from collections import defaultdict

import numpy as np
import pytest

from conftest import Crash, CrashAt
from ernie_qat.config import load_config
from ernie_qat.plugins import build_plugins
from ernie_qat.train.trainer import fit
from ernie_qat.train.visualdl_log import scalars


def read_back(folder) -> dict:
    """{tag: [(step, value)]} of the scalars in a VisualDL log folder, read by visualdl.LogReader."""
    from visualdl import LogReader
    files = list(folder.glob("vdlrecords.*"))
    assert len(files) == 1, files  # a resumed run's log replaces the old file
    reader = LogReader(file_path=str(files[0]))
    return {tag: [(item.id, item.value) for item in reader.get_data("scalar", tag)]
            for tag in reader.get_tags()["scalar"]}


def expected(metrics_file) -> dict:
    """{tag: [(step, value as float32)]} of metrics.jsonl's numeric fields (VisualDL stores float32)."""
    tags = defaultdict(list)
    for line in metrics_file.read_text().splitlines():
        record = json.loads(line)
        for tag, value in scalars(record).items():
            tags[tag].append((record["step"], float(np.float32(value))))
    return dict(tags)


def test_a_resumed_runs_scalars_read_back_equal_to_metrics_jsonl(toy_task):
    cfg = load_config(toy_task["config"], ["train.epochs=2", "train.log_every=2", "train.eval_every=8"])
    plugins = build_plugins(cfg)
    plugins.loss_terms.append(CrashAt(step=19))  # after the checkpoint of step 16 and the train record of step 18
    with pytest.raises(Crash):
        fit(cfg, plugins)
    assert 18 in [step for step, _ in read_back(toy_task["run"] / "visualdl")["train/loss"]]  # dropped on resume
    fit(cfg, resume=True)

    logged = read_back(toy_task["run"] / "visualdl")
    assert logged == expected(toy_task["run"] / "metrics.jsonl")
    assert {"train/loss", "train/lr", "train/examples_per_s", "dev/accuracy", "dev/macro_f1", "dev/loss"} <= set(logged)
    assert [step for step, _ in logged["train/loss"]] == list(range(2, 33, 2))  # step 18 once
    assert [step for step, _ in logged["dev/accuracy"]] == [8, 16, 24, 32]


def test_scalars_are_the_numbers_of_a_record_but_its_step():
    record = {"step": 7, "epoch": 0, "split": "train", "loss": 0.5, "lr": 1e-5, "step/ascent_loss": 0.75,
              "stage": "oi", "intervened": True, "loss/kurtosis/value": float("nan")}
    assert scalars(record) == {"train/epoch": 0.0, "train/loss": 0.5, "train/lr": 1e-5, "train/step/ascent_loss": 0.75}


def test_switched_off_no_visualdl_folder(toy_task):
    fit(load_config(toy_task["config"], ["train.max_steps=2", "train.visualdl=false"]))
    assert (toy_task["run"] / "metrics.jsonl").exists() and not (toy_task["run"] / "visualdl").exists()
