"""The CPU speed-ups of the training step compute what Paddle's own ops compute."""
import contextlib

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from ernie_qat.train import fast_ops
from ernie_qat.train.fast_dropout import dropout, fast_dropout
from ernie_qat.train.fast_ops import fast_cpu_ops
from ernie_qat.train.kernels import encoder_ops


def _grads(layer, x):
    x = paddle.to_tensor(x, stop_gradient=False)
    y = layer(x)
    (y * y).sum().backward()
    grads = {"x": x.grad.numpy(), "weight": layer.weight.grad.numpy(), "bias": layer.bias.grad.numpy()}
    layer.clear_gradients()
    return y.numpy(), grads


@pytest.mark.parametrize("layer", [paddle.nn.Linear(24, 40), paddle.nn.LayerNorm(24, epsilon=1e-12)],
                         ids=["linear", "layer_norm"])
def test_fast_layers_match_paddle_and_are_restored(layer):
    x = np.random.RandomState(0).randn(3, 50, 24).astype("float32") * 3 + 1
    y_ref, ref = _grads(layer, x)
    with fast_cpu_ops(layer):
        assert F.linear is fast_ops.linear
        y, fast = _grads(layer, x)
    assert F.linear is paddle.nn.functional.common.linear
    assert paddle.nn.layer.norm.layer_norm is paddle.nn.functional.norm.layer_norm
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    for name in ref:
        np.testing.assert_allclose(fast[name], ref[name], rtol=1e-4, atol=1e-4)


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


def test_encoder_layer_under_fast_ops_matches_paddle_and_gelu_is_restored():
    paddle.seed(0)
    layer = paddle.nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, activation="gelu")
    x = np.random.RandomState(3).randn(2, 7, 32).astype("float32")
    outputs = []
    for fast in (False, True):
        inputs = paddle.to_tensor(x, stop_gradient=False)
        if fast:
            with fast_cpu_ops(layer):
                assert layer.activation is fast_ops.gelu
                out = layer(inputs)
        else:
            out = layer(inputs)
        (out * out).sum().backward()
        outputs.append((out.numpy(), inputs.grad.numpy(), layer.linear1.weight.grad.numpy()))
        layer.clear_gradients()
    assert layer.activation is F.gelu
    for got, want in zip(*outputs):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_fast_dropout_is_upscaled_bernoulli_and_reproducible():
    x = paddle.ones([200, 500])
    paddle.seed(7)
    out = dropout(x, p=0.1).numpy()
    np.testing.assert_allclose(np.unique(out), [0.0, 1 / 0.9], rtol=1e-6)
    assert abs((out == 0).mean() - 0.1) < 0.005  # 100k draws: 0.1 +- 5 sigma
    paddle.seed(7)
    np.testing.assert_array_equal(dropout(x, p=0.1).numpy(), out)
    np.testing.assert_array_equal(dropout(x, p=0.1, training=False).numpy(), x.numpy())


def test_fast_dropout_gradient_is_the_mask_and_the_patch_is_scoped():
    x = paddle.ones([64, 64])
    x.stop_gradient = False
    with fast_dropout():
        out = paddle.nn.Dropout(0.5)(x)
    out.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), out.numpy())  # d(sum(x * mask * 2))/dx = mask * 2 = out for x = 1
    assert F.dropout is paddle.nn.functional.common.dropout
    with fast_dropout(enabled=False):
        assert F.dropout is paddle.nn.functional.common.dropout


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
            with fast_cpu_ops(quantizer) if fast else contextlib.nullcontext():
                y = quantizer(x)
            (y * y).sum().backward()
            outputs.append((y.numpy(), x.grad.numpy()))
        assert "forward" not in vars(quantizer)  # the patch is gone
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
    with fast_cpu_ops(quantizer):
        fast = quantizer(weight)
    fast.sum().backward()
    step = float(quantizer._scale.item()) / 7
    assert float(quantizer._scale.item()) == pytest.approx(np.abs(weight.numpy()).max())
    np.testing.assert_array_equal(np.round(fast.numpy() / step), np.round(reference / step))  # same levels
    np.testing.assert_allclose(fast.numpy(), reference, rtol=1e-6)
    np.testing.assert_array_equal(weight.grad.numpy(), np.ones([48, 96]))  # straight-through
