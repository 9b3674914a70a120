"""Kurtosis regularizer: its gradient, its pull toward the target, its targets, the loop, the analysis tool."""
import copy
import json

import numpy as np
import paddle
import pytest

from conftest import one_error_line, run_here, trained
from ernie_qat.analysis.kurtosis import layer_weights
from ernie_qat.config import ConfigError, PTQConfig, QuantConfig, RegularizerConfig, load_config
from ernie_qat.data.batching import collate, encode
from ernie_qat.data.loader import LabelVocab, read_examples
from ernie_qat.models.classifier import build_classifier, encoder_linears
from ernie_qat.ptq.calibrate import calibrate
from ernie_qat.ptq.quantize import quantize_post_training
from ernie_qat.quant.qat import QATTransform
from ernie_qat.regularizers.kurtosis import KurtosisRegularizer, kurtosis


def test_kurtosis_value_and_gradient_against_finite_differences():
    rng = np.random.default_rng(0)
    values = rng.standard_t(df=5, size=(12, 9))
    weight = paddle.to_tensor(values, dtype="float64", stop_gradient=False)
    z = (values - values.mean()) / values.std()
    assert float(kurtosis(weight)) == pytest.approx(np.mean(z ** 4), rel=1e-12)
    kurtosis(weight).backward()
    analytic = weight.grad.numpy()
    eps = 1e-6
    for i, j in [(0, 0), (3, 4), (11, 8), tuple(np.unravel_index(np.abs(values).argmax(), values.shape))]:
        up, down = values.copy(), values.copy()
        up[i, j] += eps
        down[i, j] -= eps
        numeric = (float(kurtosis(paddle.to_tensor(up))) - float(kurtosis(paddle.to_tensor(down)))) / (2 * eps)
        assert analytic[i, j] == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def _layer(values):
    layer = paddle.nn.Linear(*values.shape)
    layer.weight.set_value(values.astype("float32"))
    return layer


def _descend(regularizer, model, steps=300, lr=1e-2):
    optimizer = paddle.optimizer.Adam(learning_rate=lr, parameters=[model.weight])
    for step in range(steps):
        loss, logs = regularizer(model, None, None, step)
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
    return logs


def test_kure_drives_a_heavy_tailed_tensor_toward_the_uniform_target():
    model = _layer(np.random.default_rng(1).standard_t(df=3, size=(64, 64)) * 0.05)
    regularizer = KurtosisRegularizer(RegularizerConfig(method="kurtosis", include="weight"))
    regularizer.setup(model)
    start = float(kurtosis(model.weight))
    logs = _descend(regularizer, model)
    assert start > 6 and logs["kurt/weight"] < 2.0 and logs["loss"] < 0.05  # K_T = 1.8


def test_targets_relative_and_one_sided_and_the_warmup_ramp():
    model = _layer(np.random.default_rng(2).standard_t(df=4, size=(32, 48)))
    start = float(kurtosis(model.weight))
    relative = KurtosisRegularizer(RegularizerConfig(target="relative", relative_factor=0.5, include="weight"))
    relative.setup(model)
    loss, _ = relative(model, None, None, step=0)
    assert relative.start["weight"] == pytest.approx(start, rel=1e-6)
    assert float(loss) == pytest.approx(0.25, rel=1e-5)  # ((K0 - 0.5 K0) / K0)^2, whatever K0 is
    # one-sided: a tensor already below the target costs nothing and gets no gradient
    uniform = _layer(np.random.default_rng(3).uniform(-1, 1, size=(32, 48)))
    one_sided = KurtosisRegularizer(RegularizerConfig(target="one_sided", target_kurtosis=3.0, include="weight",
                                                      warmup_steps=10))
    one_sided.setup(uniform)
    loss, _ = one_sided(uniform, None, None, step=0)
    loss.backward()
    assert float(loss) == 0 and not np.any(uniform.weight.grad.numpy())
    assert [one_sided.weight_at(s) for s in (0, 4, 9, 50)] == pytest.approx([0.1, 0.5, 1.0, 1.0])


def test_bad_patterns_fail_naming_the_key():
    with pytest.raises(ConfigError, match="regularizer.include"):
        KurtosisRegularizer(RegularizerConfig(include="("))
    with pytest.raises(ConfigError, match="matches no parameter"):
        KurtosisRegularizer(RegularizerConfig(include="nothing_here")).setup(_layer(np.ones((2, 2))))


def test_qat_with_kurtosis_logs_per_layer_kurtosis_and_the_analysis_tool_reports_it(toy_task, fp32_checkpoint,
                                                                                    monkeypatch, capsys):
    run = trained(toy_task, "kure", "quant.method=qat", f"model.name_or_path={fp32_checkpoint}",
                  "regularizer.method=kurtosis", "regularizer.target=relative", "regularizer.weight=0.1")
    records = [json.loads(line) for line in (run.parent.parent / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    kurt_keys = [k for k in train[0] if k.startswith("loss/kurtosis/kurt/")]
    assert len(kurt_keys) == 2 * 6 and "loss/kurtosis/loss" in train[0]  # 2 layers × 6 Linear weights
    out = toy_task["dir"] / "analysis"
    code, _, err = run_here("analyze.py", monkeypatch, capsys, "kurtosis", "--checkpoint", fp32_checkpoint,
                            "--compare", run, "--batches", "2", "--out", out)
    assert code == 0, err[-3000:]
    report = json.loads((out / "kurtosis.json").read_text())
    assert set(report["weights"]) == {"before", "after"} and len(report["weights"]["after"]) == 12
    assert len(report["activations"]["before"]) == 12 and (out / "weights.png").stat().st_size > 10_000
    # the QAT model's Linear layers are fake-quant layers: their inputs line up with the FP32 model's
    assert list(report["activations"]["after"]) == list(report["activations"]["before"])
    assert list(report["weights"]["after"]) == list(report["weights"]["before"])
    # a model in which no encoder layer is found: an error before anything is written (no stray PNG)
    monkeypatch.setattr("ernie_qat.analysis.kurtosis.encoder_layers", lambda model: [])
    code, _, err = run_here("analyze.py", monkeypatch, capsys, "kurtosis", "--checkpoint", run, "--batches", "1",
                            "--out", toy_task["dir"] / "nothing")
    assert one_error_line(code, err) == (f"error: `{run}` has no encoder Linear layers (plain, fake-quantized or "
                                         "OCS-split) to analyze: nothing written")
    assert not (toy_task["dir"] / "nothing").exists()


def test_quantized_models_report_their_layers_under_the_fp32_names(toy_task):
    """calibrate and layer_weights find the encoder layers that QAT's and PTQ+OCS's fake-quant layers replaced."""
    paddle.seed(0)
    fp32, tokenizer = build_classifier(load_config(toy_task["config"]).model, LabelVocab(["neg", "pos"]))
    items = encode(read_examples(toy_task["dir"] / "train.tsv")[:32], tokenizer, 32, LabelVocab(["neg", "pos"]))
    batches = [{k: paddle.to_tensor(v) for k, v in collate(items, tokenizer.pad_token_id).items()}]
    include = RegularizerConfig().include
    stats = calibrate(fp32, batches, sample_size=4000)
    names, weights = list(stats), layer_weights(fp32, include)
    assert names == [name for name, _ in encoder_linears(fp32)]  # what PTQ calibrates, as before
    assert len(names) == 12 and list(weights) == [f"{name}.weight" for name in names]
    qat = QATTransform(QuantConfig(method="qat")).prepare(copy.deepcopy(fp32))
    ocs = quantize_post_training(copy.deepcopy(fp32), PTQConfig(ocs_expand_ratio=0.05), stats)
    first = "net.ernie.encoder.layers.0.self_attn.q_proj"  # reads the embeddings, which both leave in float
    for model in (qat, ocs):
        quantized = calibrate(model, batches, sample_size=4000)
        assert list(quantized) == names and list(layer_weights(model, include)) == list(weights)
        # the input the layer receives, before its fake quantization (not on an 8-bit grid) and OCS's split
        assert quantized[first].absmax == stats[first].absmax
        np.testing.assert_array_equal(quantized[first].sample, stats[first].sample)
        assert len(np.unique(quantized[first].sample)) > 256
    np.testing.assert_array_equal(layer_weights(qat, include)[f"{first}.weight"], weights[f"{first}.weight"])
    assert layer_weights(ocs, include)[f"{first}.weight"].shape == (34, 32)  # 32 inputs, ceil(0.05 · 32) split
