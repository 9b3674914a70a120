"""Model sources: PaddleNLP names offline, unknown names, and earlier checkpoints as starting points."""
import time

import pytest

from ernie_qat.config import load_config
from ernie_qat.data.loader import LabelVocab
from ernie_qat.models.classifier import ModelError, build_classifier
from ernie_qat.train.trainer import fit


def test_paddlenlp_name_fails_fast_and_clearly_offline(toy_task):
    cfg = load_config(toy_task["config"], ["model.name_or_path=ernie-3.0-medium-zh"])
    started = time.time()
    with pytest.raises(ModelError, match=r"(?s)cannot load ERNIE model `ernie-3.0-medium-zh`.*pass a local model directory"):
        build_classifier(cfg.model, LabelVocab(["neg", "pos"]))
    assert time.time() - started < 60


def test_unknown_name(toy_task):
    cfg = load_config(toy_task["config"], ["model.name_or_path=no-such-model"])
    with pytest.raises(ModelError, match=r"`no-such-model` is neither a directory, a built-in model \(minilm, random\)"):
        build_classifier(cfg.model, LabelVocab(["neg", "pos"]))


def test_checkpoint_as_start_needs_same_labels_and_fp32(toy_task, tmp_path):
    fit(load_config(toy_task["config"], ["train.max_steps=1"]))
    best = toy_task["run"] / "checkpoints" / "best"
    cfg = load_config(toy_task["config"], [f"model.name_or_path={best}"])
    model, _ = build_classifier(cfg.model, LabelVocab(["neg", "pos"]))
    assert model.net.classifier.weight.shape == [32, 2]
    with pytest.raises(ModelError, match=r"was trained on labels \['neg', 'pos'\], this data has \['a', 'b', 'c'\]"):
        build_classifier(cfg.model, LabelVocab(["a", "b", "c"]))
    qat_run = tmp_path / "qat"
    fit(load_config(toy_task["config"], ["train.max_steps=1", "quant.method=qat", f"train.output_dir={qat_run}",
                                         f"model.name_or_path={best}"]))
    cfg = load_config(toy_task["config"], [f"model.name_or_path={qat_run / 'checkpoints' / 'best'}"])
    with pytest.raises(ModelError, match="is a quantized checkpoint; start from an FP32 checkpoint"):
        build_classifier(cfg.model, LabelVocab(["neg", "pos"]))
    with pytest.raises(ModelError, match="not a PaddleNLP model directory"):
        build_classifier(load_config(toy_task["config"], [f"model.name_or_path={tmp_path}"]).model,
                         LabelVocab(["neg", "pos"]))
