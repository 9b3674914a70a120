"""The training loop end to end on a tiny random ERNIE: learning, outputs, resume, evaluation."""
import json
import runpy
import subprocess
import sys

import numpy as np
import paddle
import pytest

from conftest import ROOT, Crash, CrashAt
from ernie_qat.config import load_config
from ernie_qat.plugins import build_plugins
from ernie_qat.train.trainer import RunExistsError, fit


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / name), *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def test_tiny_model_learns_toy_task_through_train_tool(toy_task):
    result = run_tool("train.py", "--config", toy_task["config"])
    assert result.returncode == 0, result.stderr
    run = toy_task["run"]
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["accuracy"] > 90 and results["dev"]["accuracy"] > 90
    assert results["steps"] == 4 * 16
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert train[-1]["loss"] < 0.5 * train[0]["loss"] and all(r["examples_per_s"] > 0 for r in train)
    assert [r["step"] for r in records if r["split"] == "dev"] == [16, 32, 48, 64]
    assert load_config(run / "config.yaml") == load_config(toy_task["config"])
    for name in ("best", "last"):
        assert {"config.json", "model_state.pdparams", "vocab.txt", "labels.json", "config.yaml",
                "trainer_state.json"} <= {p.name for p in (run / "checkpoints" / name).iterdir()}
    assert (run / "checkpoints" / "last" / "optimizer.pdopt").exists()
    assert "Traceback" not in result.stderr and "INFO" not in result.stderr

    evaluated = run_tool("eval.py", "--config", toy_task["config"], "--checkpoint", run / "checkpoints" / "best")
    assert evaluated.returncode == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)
    assert metrics["test"]["accuracy"] == pytest.approx(results["test"]["accuracy"])

    again = run_tool("train.py", "--config", toy_task["config"])  # the same folder again, without --resume
    assert again.returncode == 2 and "pass --resume" in again.stderr and "Traceback" not in again.stderr


def test_eval_of_a_deployment_folder_points_to_infer(tmp_path, monkeypatch, capsys):
    (tmp_path / "deploy.yaml").write_text("format: 3\nprecision: fp32\nmax_seq_len: 32\n")
    for config in ([], ["--config", "any.yaml"]):
        monkeypatch.setattr(sys, "argv", ["eval.py", "--checkpoint", str(tmp_path), *config])
        with pytest.raises(SystemExit) as stop:
            runpy.run_path(str(ROOT / "tools" / "eval.py"), run_name="__main__")
        assert stop.value.code == 2
        assert capsys.readouterr().err == (f"error: `{tmp_path}` is a deployment folder, not a checkpoint; evaluate it "
                                          f"with tools/infer.py --model {tmp_path} --input DATA --eval\n")


def test_resume_continues_exactly(toy_task):
    overrides = ["train.epochs=2", "train.eval_every=8", "train.log_every=1"]
    full = load_config(toy_task["config"], overrides + [f"train.output_dir={toy_task['dir'] / 'full'}"])
    fit(full)
    split = load_config(toy_task["config"], overrides + [f"train.output_dir={toy_task['dir'] / 'split'}"])
    plugins = build_plugins(split)
    plugins.loss_terms.append(CrashAt(step=19))
    with pytest.raises(Crash):
        fit(split, plugins)
    with pytest.raises(RunExistsError, match="pass --resume"):
        fit(split)
    resumed = fit(split, resume=True)
    assert resumed["steps"] == 32
    weights = [paddle.load(str(toy_task["dir"] / name / "checkpoints" / "last" / "model_state.pdparams"))
               for name in ("full", "split")]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        np.testing.assert_allclose(weights[0][key].numpy(), weights[1][key].numpy(), rtol=0, atol=1e-6)
    logs = [(toy_task["dir"] / name / "metrics.jsonl").read_text().splitlines() for name in ("full", "split")]
    assert [json.loads(x)["step"] for x in logs[0]] == [json.loads(x)["step"] for x in logs[1]]


def test_unknown_dev_label_fails_with_file_and_line(toy_task):
    with open(toy_task["dir"] / "dev.tsv", "a") as f:
        f.write("neutral\tthe film\n")
    result = run_tool("train.py", "--config", toy_task["config"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (f"error: {toy_task['dir'] / 'dev.tsv'}:66: unknown label 'neutral'; "
                                     "the model knows ['neg', 'pos']")


def test_frozen_word_embeddings_stay_put(toy_task):
    cfg = load_config(toy_task["config"], ["train.max_steps=3", "train.freeze_word_embeddings=True"])
    fit(cfg)
    run = toy_task["run"] / "checkpoints" / "last" / "model_state.pdparams"
    trained = paddle.load(str(run))
    key = "ernie.embeddings.word_embeddings.weight"
    paddle.seed(cfg.train.seed)  # the model's initialisation, rebuilt as fit builds it
    from ernie_qat.data.loader import LabelVocab
    from ernie_qat.models.classifier import build_classifier
    initial = build_classifier(cfg.model, LabelVocab(["neg", "pos"]))[0].net.state_dict()
    np.testing.assert_array_equal(trained[key].numpy(), initial[key].numpy())
    assert not np.allclose(trained["classifier.weight"].numpy(), initial["classifier.weight"].numpy())
