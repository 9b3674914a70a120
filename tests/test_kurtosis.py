"""Kurtosis regularizer: its gradient, its pull toward the target, its targets, the loop, the analysis tool."""
import json

import numpy as np
import paddle
import pytest

from conftest import trained
from ernie_qat.config import ConfigError, RegularizerConfig
from ernie_qat.regularizers.kurtosis import KurtosisRegularizer, kurtosis
from test_export import run_tool


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


def test_qat_with_kurtosis_logs_per_layer_kurtosis_and_the_analysis_tool_reports_it(toy_task, fp32_checkpoint):
    run = trained(toy_task, "kure", "quant.method=qat", f"model.name_or_path={fp32_checkpoint}",
                  "regularizer.method=kurtosis", "regularizer.target=relative", "regularizer.weight=0.1")
    records = [json.loads(line) for line in (run.parent.parent / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    kurt_keys = [k for k in train[0] if k.startswith("loss/kurtosis/kurt/")]
    assert len(kurt_keys) == 2 * 6 and "loss/kurtosis/loss" in train[0]  # 2 layers × 6 Linear weights
    out = toy_task["dir"] / "analysis"
    result = run_tool("analyze.py", "kurtosis", "--checkpoint", fp32_checkpoint, "--compare", run,
                      "--batches", "2", "--out", out)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    report = json.loads((out / "kurtosis.json").read_text())
    assert set(report["weights"]) == {"before", "after"} and len(report["weights"]["after"]) == 12
    assert len(report["activations"]["before"]) == 12 and (out / "weights.png").stat().st_size > 10_000
