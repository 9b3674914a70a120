"""The CPU speed-ups of the training step compute what Paddle's own ops compute, and touch only the student."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddle import nn

from conftest import ROOT
from ernie_qat.train import fast_ops
from ernie_qat.train.fast_ops import FastDropout, FastGELU, FastLayerNorm, FastLinear, fake_quant, install_fast_ops
from ernie_qat.train.kernels import encoder_ops


def _grads(layer, x):
    x = paddle.to_tensor(x, stop_gradient=False)
    y = layer(x)
    (y * y).sum().backward()
    grads = {"x": x.grad.numpy(), "weight": layer.weight.grad.numpy(), "bias": layer.bias.grad.numpy()}
    layer.clear_gradients()
    return y.numpy(), grads


@pytest.mark.parametrize("layer, fast_class", [(nn.Linear(24, 40), FastLinear),
                                               (nn.LayerNorm(24, epsilon=1e-12), FastLayerNorm)],
                         ids=["linear", "layer_norm"])
def test_fast_layers_match_paddle_and_share_its_parameters(layer, fast_class):
    x = np.random.RandomState(0).randn(3, 50, 24).astype("float32") * 3 + 1
    y_ref, ref = _grads(layer, x)
    fast = fast_class(layer)
    assert fast.weight is layer.weight and fast.bias is layer.bias
    assert fast.state_dict().keys() == layer.state_dict().keys()
    y, grads = _grads(fast, x)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for name in ref:
        np.testing.assert_allclose(grads[name], ref[name], rtol=1e-4, atol=1e-4)
    fast.eval(), layer.eval()
    x_eval = paddle.to_tensor(x)
    np.testing.assert_array_equal(fast(x_eval).numpy(), layer(x_eval).numpy())  # eval: Paddle's own op


def test_compiled_kernels_build_here():
    assert encoder_ops() is not None, "encoder_ops.cc did not compile: see the warning logged above"


@pytest.mark.parametrize("fast, reference", [(fast_ops.gelu, F.gelu), (fast_ops.softmax, F.softmax)],
                         ids=["gelu", "softmax"])
def test_compiled_activations_match_paddle(fast, reference):
    x_np = np.random.RandomState(1).randn(4, 6, 33).astype("float32") * 4
    weights = paddle.to_tensor(np.random.RandomState(2).randn(4, 6, 33).astype("float32"))
    results = []
    for op in (fast, reference):
        x = paddle.to_tensor(x_np, stop_gradient=False)
        y = op(x)
        (y * weights).sum().backward()
        results.append((y.numpy(), x.grad.numpy()))
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_encoder_layer_with_fast_ops_matches_paddle():
    paddle.seed(0)
    reference = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, activation="gelu")
    student = nn.LayerList([nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, activation="gelu")])
    student[0].set_state_dict(reference.state_dict())
    install_fast_ops(student)
    layer = student[0]
    assert isinstance(layer.activation, FastGELU) and isinstance(layer.linear1, FastLinear)
    assert layer.state_dict().keys() == reference.state_dict().keys()
    assert reference.activation is F.gelu  # nothing outside the student changed
    x = np.random.RandomState(3).randn(2, 7, 32).astype("float32")
    outputs = []
    for encoder in (reference, layer):
        inputs = paddle.to_tensor(x, stop_gradient=False)
        out = encoder(inputs)
        (out * out).sum().backward()
        outputs.append((out.numpy(), inputs.grad.numpy(), encoder.linear1.weight.grad.numpy()))
    for got, want in zip(*outputs):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_fast_dropout_is_upscaled_bernoulli_and_reproducible():
    x = paddle.ones([200, 500])
    paddle.seed(7)
    out = fast_ops.dropout(x, p=0.1).numpy()
    np.testing.assert_allclose(np.unique(out), [0.0, 1 / 0.9], rtol=1e-6)
    assert abs((out == 0).mean() - 0.1) < 0.005  # 100k draws: 0.1 +- 5 sigma
    paddle.seed(7)
    np.testing.assert_array_equal(fast_ops.dropout(x, p=0.1).numpy(), out)
    np.testing.assert_array_equal(fast_ops.dropout(x, p=0.1, training=False).numpy(), x.numpy())


def test_fast_dropout_gradient_is_the_mask_and_is_opt_in():
    x = paddle.ones([64, 64])
    x.stop_gradient = False
    out = FastDropout(nn.Dropout(0.5))(x)
    out.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), out.numpy())  # d(sum(x * mask * 2))/dx = mask * 2 = out for x = 1
    kept = install_fast_ops(nn.Sequential(nn.Dropout(0.5)))
    assert type(kept[0]) is nn.Dropout
    assert type(install_fast_ops(nn.Sequential(nn.Dropout(0.5)), fast_dropout=True)[0]) is FastDropout


def test_compiled_activation_quantizer_matches_paddles_and_updates_the_same_scale():
    from paddle.nn.quant.quant_layers import FakeQuantMovingAverageAbsMax
    inputs = [np.random.RandomState(seed).randn(8, 50).astype("float32") * (1 + seed) for seed in range(3)]
    runs = []
    for fast in (False, True):
        paddle.seed(0)
        quantizer = FakeQuantMovingAverageAbsMax(moving_rate=0.9, quant_bits=8)
        quantizer.train()
        outputs = []
        for x_np in inputs:
            x = paddle.to_tensor(x_np, stop_gradient=False)
            y = fake_quant(quantizer, x) if fast else quantizer(x)
            (y * y).sum().backward()
            outputs.append((y.numpy(), x.grad.numpy()))
        runs.append((outputs, [p.numpy() for p in (quantizer._scale, quantizer._state, quantizer._accum)]))
    (ref_out, ref_state), (fast_out, fast_state) = runs
    for (y_ref, g_ref), (y, g) in zip(ref_out, fast_out):
        np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(g, g_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fast_state, ref_state, rtol=1e-6)


def test_compiled_weight_quantizer_matches_paddles_levels_and_scale():
    from paddle.nn.quant.quant_layers import FakeQuantAbsMax
    quantizer = FakeQuantAbsMax(quant_bits=4, quant_on_weight=True)
    weight = paddle.to_tensor(np.random.RandomState(5).randn(48, 96).astype("float32"), stop_gradient=False)
    reference = quantizer(weight).numpy()
    fast = fake_quant(quantizer, weight)
    fast.sum().backward()
    step = float(quantizer._scale.item()) / 7
    assert float(quantizer._scale.item()) == pytest.approx(np.abs(weight.numpy()).max())
    np.testing.assert_array_equal(np.round(fast.numpy() / step), np.round(reference / step))  # same levels
    np.testing.assert_allclose(fast.numpy(), reference, rtol=1e-6)
    np.testing.assert_array_equal(weight.grad.numpy(), np.ones([48, 96]))  # straight-through


def test_the_package_patches_no_paddle_module_at_run_time():
    sources = {path: path.read_text() for path in (ROOT / "ernie_qat").rglob("*.py")}
    offenders = [str(path) for path, text in sources.items()
                 if "unittest.mock" in text or "mock.patch" in text or "monkeypatch" in text]
    assert offenders == []
