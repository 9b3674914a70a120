"""Low-bit quantizer layers against their formulas: LSQ (values, step-size gradient, per-channel columns),
TWN ternary weights, dynamic and clipped max-abs activations, ternary rows; LSQ W4, ternary and the TI reference's
scope trained through QAT's config on the tiny model."""
import math

import numpy as np
import paddle
import pytest

from paddle.nn.quant.quant_layers import QuantizedLinear

from conftest import trained
from ernie_qat.quant.attention import QuantizedAttention
from ernie_qat.quant.embedding import ternary_rows
from ernie_qat.quant.lowbit import (ClampedTernaryQuantizer, ClippedAbsMaxQuantizer, DynamicAbsMaxQuantizer,
                                   LSQQuantizer, TernaryQuantizer)
from ernie_qat.quant.quantizers import QuantizerSpec
from ernie_qat.train.checkpoint import load_checkpoint


def weight_spec(bits, shape, per_channel=False):
    return QuantizerSpec(role="weight", bits=bits, per_channel=per_channel, shape=tuple(shape))


def lsq_reference(v, s, qn, qp, upstream):
    """(v̂, ∂L/∂s before the gradient scale, ∂L/∂v) of LSQ for one step size broadcast over v."""
    q = v / s
    clipped = np.clip(q, -qn, qp)
    inside = (q > -qn) & (q < qp)
    ds = np.where(q <= -qn, -qn, np.where(q >= qp, qp, np.round(q) - q))
    return np.round(clipped) * s, ds * upstream, inside * upstream


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_lsq_per_tensor_matches_the_formulas(bits):
    rng = np.random.default_rng(bits)
    w = rng.normal(0, 0.05, size=(16, 8)).astype("float32")
    upstream = rng.normal(size=w.shape).astype("float32")
    qn, qp = 2 ** (bits - 1), 2 ** (bits - 1) - 1
    weight = paddle.to_tensor(w, stop_gradient=False)
    quantizer = LSQQuantizer(weight_spec(bits, w.shape), weight)
    s = float(quantizer.step.numpy()[0])
    assert s == pytest.approx(2 * np.abs(w).mean() / math.sqrt(qp), rel=1e-6)  # s₀
    out = quantizer(weight)
    (out * paddle.to_tensor(upstream)).sum().backward()
    expected, ds, dv = lsq_reference(w, s, qn, qp, upstream)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-7)
    g = 1 / math.sqrt(w.size * qp)
    assert float(quantizer.step.grad.numpy()[0]) == pytest.approx(ds.sum() * g, rel=1e-4, abs=1e-7)
    np.testing.assert_allclose(weight.grad.numpy(), dv, atol=1e-6)


def test_lsq_per_channel_scales_are_columns_of_a_linear_weight():
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(32, 4)) * np.array([0.01, 0.1, 1.0, 10.0])).astype("float32")  # [in, out]
    weight = paddle.to_tensor(w, stop_gradient=False)
    quantizer = LSQQuantizer(weight_spec(4, w.shape, per_channel=True), weight)
    steps = quantizer.step.numpy()
    np.testing.assert_allclose(steps, 2 * np.abs(w).mean(axis=0) / math.sqrt(7), rtol=1e-6)
    out = quantizer(weight)
    out.sum().backward()
    for column in range(4):
        expected, ds, _ = lsq_reference(w[:, column], steps[column], 8, 7, np.ones(32))
        np.testing.assert_allclose(out.numpy()[:, column], expected, rtol=1e-6, atol=1e-7)
        assert quantizer.step.grad.numpy()[column] == pytest.approx(ds.sum() / math.sqrt(32 * 7), rel=1e-4, abs=1e-7)


def test_lsq_activation_initialises_from_its_first_batch_and_keeps_it():
    quantizer = LSQQuantizer(QuantizerSpec(role="activation", bits=8), None)
    first = paddle.to_tensor(np.linspace(-2, 2, 64, dtype="float32").reshape(4, 16))
    quantizer(first)
    s0 = 2 * float(first.abs().mean()) / math.sqrt(127)
    assert float(quantizer.step.numpy()[0]) == pytest.approx(s0, rel=1e-6)
    quantizer(first * 10)
    assert float(quantizer.step.numpy()[0]) == pytest.approx(s0, rel=1e-6)
    state = quantizer.state_dict()
    again = LSQQuantizer(QuantizerSpec(role="activation", bits=8), None)
    again.set_state_dict(state)
    np.testing.assert_array_equal(again(first).numpy(), quantizer(first).numpy())


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("layer, clamp", [(TernaryQuantizer, np.inf), (ClampedTernaryQuantizer, 2.5)])
def test_ternary_matches_twn(per_channel, layer, clamp):
    """TWN of W (`ternary`) or of W clamped to ±2.5 (`ternary_clamped`, the reference code's); no gradient
    where |W| > 2.5 in both."""
    rng = np.random.default_rng(1)
    w = rng.normal(0, 1.5, size=(24, 6)).astype("float32")
    w[3, 0], w[7, 2] = 8.0, -6.0  # outliers, as MiniLM's
    weight = paddle.to_tensor(w, stop_gradient=False)
    out = layer(weight_spec(2, w.shape, per_channel), weight)(weight)
    (out * 3).sum().backward()
    axis = 0 if per_channel else None
    counted = np.minimum(np.abs(w), clamp)
    kept = counted > 0.7 * counted.mean(axis=axis, keepdims=True)
    alpha = (counted * kept).sum(axis=axis, keepdims=True) / kept.sum(axis=axis, keepdims=True)
    np.testing.assert_allclose(out.numpy(), alpha * np.sign(w) * kept, rtol=1e-6)
    assert len(np.unique(np.round(out.numpy()[:, 0], 6))) <= 3
    np.testing.assert_array_equal(weight.grad.numpy(), 3.0 * (np.abs(w) <= 2.5))


def test_dynamic_absmax_is_symmetric_8bit_with_straight_through_gradient():
    x = paddle.to_tensor(np.array([[-3.0, 0.01, 1.0, 2.5]], dtype="float32"), stop_gradient=False)
    out = DynamicAbsMaxQuantizer(QuantizerSpec(role="activation", bits=8), None)(x)
    out.sum().backward()
    scale = 3.0 / 127
    np.testing.assert_allclose(out.numpy(), np.round(x.numpy() / scale) * scale, rtol=1e-6)
    np.testing.assert_array_equal(x.grad.numpy(), np.ones((1, 4)))


def test_lsq_step_gradient_against_finite_differences_away_from_rounding_edges():
    """Where rounding does not switch, ∂v̂/∂s is round(v/s) inside the clip and -Qn or Qp outside it. LSQ's
    gradient equals it outside and drops exactly the v/s term inside (its straight-through estimate)."""
    qn, qp, s = 8, 7, 0.1
    levels = np.array([-11.7, -8.6, -5.3, -1.2, 0.3, 2.2, 4.6, 6.4, 7.8, 12.3])  # no level within 0.1 of an edge
    v = (levels * s).astype("float32")
    upstream = np.linspace(-1, 1, v.size).astype("float32")
    quantizer = LSQQuantizer(QuantizerSpec(role="activation", bits=4))
    quantizer.step.set_value(paddle.to_tensor([s], dtype="float32"))
    quantizer.initialized.set_value(paddle.to_tensor(True))

    def loss(step):
        with paddle.no_grad():
            quantizer.step.set_value(paddle.to_tensor([step], dtype="float32"))
            return float((quantizer(paddle.to_tensor(v)) * paddle.to_tensor(upstream)).sum())

    h = 1e-3 * s
    finite_difference = (loss(s + h) - loss(s - h)) / (2 * h)
    q = levels
    inside = (q > -qn) & (q < qp)
    assert finite_difference == pytest.approx((upstream * np.clip(np.round(q), -qn, qp)).sum(), rel=1e-3)
    quantizer.step.set_value(paddle.to_tensor([s], dtype="float32"))
    (quantizer(paddle.to_tensor(v)) * paddle.to_tensor(upstream)).sum().backward()
    lsq = float(quantizer.step.grad.numpy()[0]) * math.sqrt(v.size * qp)  # without the gradient scale g
    assert lsq == pytest.approx(finite_difference - (upstream * q * inside).sum(), rel=1e-4)


def test_lsq_w4_qat_trains_its_step_sizes_and_reloads_exactly(toy_task, fp32_checkpoint):
    checkpoint = trained(toy_task, "lsq", "quant.method=qat", "quant.weight_quantizer=lsq",
                         "quant.activation_quantizer=lsq", "quant.weight_bits=4", "train.max_steps=8",
                         f"model.name_or_path={fp32_checkpoint}", "train.learning_rate=1e-3")
    model = load_checkpoint(checkpoint)[0]
    quantizers = [layer for layer in model.sublayers() if isinstance(layer, LSQQuantizer)]
    assert len(quantizers) == 2 * 12  # weight and input of the 6 encoder Linear layers of 2 layers
    assert sum(q.qp == 7 for q in quantizers) == 12 and all(bool(q.initialized) for q in quantizers)
    linear = model.net.ernie.encoder.layers[0].linear1
    fresh = LSQQuantizer(weight_spec(4, linear.weight.shape), linear.weight)
    assert not np.allclose(fresh.step.numpy(), linear._fake_quant_weight.step.numpy())  # trained away from s₀
    ids = paddle.to_tensor([[2, 6, 7, 3]])
    np.testing.assert_array_equal(model(ids, paddle.zeros_like(ids)).numpy(),
                                  load_checkpoint(checkpoint)[0](ids, paddle.zeros_like(ids)).numpy())


def test_ternary_qat_trains_and_its_weights_are_ternary(toy_task, fp32_checkpoint):
    checkpoint = trained(toy_task, "twn", "quant.method=qat", "quant.weight_quantizer=ternary",
                         "quant.activation_quantizer=dynamic_absmax", "quant.weight_bits=2", "train.max_steps=8",
                         f"model.name_or_path={fp32_checkpoint}", "train.learning_rate=1e-3")
    model = load_checkpoint(checkpoint)[0]
    linear = model.net.ernie.encoder.layers[1].self_attn.q_proj
    assert isinstance(linear._fake_quant_weight, TernaryQuantizer)
    assert len(np.unique(linear._fake_quant_weight(linear.weight).numpy())) == 3


def test_clipped_absmax_clamps_then_quantizes_by_the_clamped_max():
    x = paddle.to_tensor([[-4.0, -1.0, 0.3], [0.02, 1.7, 3.0]], stop_gradient=False)
    out = ClippedAbsMaxQuantizer(QuantizerSpec("activation", 8))(x)
    clipped = np.clip(x.numpy(), -2.5, 2.5)
    scale = 2.5 / 127  # max|clamped| = 2.5
    np.testing.assert_allclose(out.numpy(), np.round(clipped / scale) * scale, rtol=1e-6)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 1, 1], [1, 1, 0]])  # none outside the clamp


def test_ternary_rows_match_twn_per_row_of_the_clamped_table():
    table = np.random.default_rng(0).normal(0, 1, (5, 16)).astype("float32")
    table[0, 3] = 7.0  # an outlier: clamped to 2.5 before Δ and α
    got = ternary_rows(paddle.to_tensor(table)).numpy()
    clipped = np.clip(table, -2.5, 2.5)
    for row, want in zip(got, clipped):
        kept = np.abs(want) > 0.7 * np.abs(want).mean()
        np.testing.assert_allclose(row, np.abs(want[kept]).mean() * np.sign(want) * kept, rtol=1e-5)


def test_the_reference_scope_quantizes_embeddings_pooler_and_attention_and_does_not_export(toy_task,
                                                                                            fp32_checkpoint):
    from ernie_qat.export import ExportError, export
    from ernie_qat.models.taps import TapsTransform, forward_outputs
    best = trained(toy_task, "reference", f"model.name_or_path={fp32_checkpoint}", "quant.method=qat",
                   "quant.weight_quantizer=ternary_clamped", "quant.weight_bits=2", "quant.scope=reference",
                   "train.max_steps=4", "train.eval_every=4")
    model = load_checkpoint(best)[0]
    ernie = model.net.ernie
    assert all(isinstance(layer.self_attn, QuantizedAttention) for layer in ernie.encoder.layers)
    assert isinstance(ernie.pooler.dense, QuantizedLinear)
    assert all(isinstance(layer._fake_quant_input, ClippedAbsMaxQuantizer)
               for layer in model.sublayers() if isinstance(layer, QuantizedLinear))
    table = ernie.embeddings.word_embeddings.rows(ernie.embeddings.word_embeddings.weight).numpy()
    assert max(len(np.unique(np.abs(row))) for row in table) <= 2  # each row: 0 and its α
    ids = paddle.to_tensor([[2, 5, 17, 8, 3, 0]], dtype="int64")
    batch = {"input_ids": ids, "token_type_ids": paddle.zeros_like(ids)}
    plain = model(ids, batch["token_type_ids"]).numpy()
    tapped = TapsTransform().prepare(model)  # the training forward applies the same quantizers
    tapped.eval()
    np.testing.assert_array_equal(forward_outputs(tapped, batch).logits.numpy(), plain)
    with pytest.raises(ExportError, match=r"TI reference's scope .*evaluate it in fake quantization"):
        export(best, toy_task["dir"] / "int8", "int8")
