"""Faster CPU versions of the encoder's ops for the training step, computing what Paddle's compute.

Paddle 2.6 runs much of a training step's CPU work on one thread. Inside `fast_cpu_ops(model)`:
- Linear layers compute their bias gradient as `ones[1, N] @ dY` (an MKL GEMV on all cores)
  instead of a one-thread reduction over the N = batch × tokens rows (44 ms for a [4096, 1536]
  gradient, three times its matmul);
- LayerNorm, softmax, the encoder's exact GELU and QAT's abs-max weight and moving-average
  abs-max activation quantizers run the compiled OpenMP kernels of `ernie_qat.train.kernels` when they could be
  built (Paddle's otherwise).
Results equal Paddle's up to float rounding and summation order (tests/test_fast_ops.py).
Evaluation and export run outside the context, on Paddle's own ops.
"""
import contextlib
import functools
from unittest import mock

import numpy as np
import paddle
import paddle.nn.functional as F
import paddle.nn.layer.norm as norm_layers
from paddle.autograd import PyLayer
from paddle.nn.quant.quant_layers import FakeQuantAbsMax, FakeQuantMovingAverageAbsMax

from ernie_qat.train.kernels import encoder_ops

_paddle_linear, _paddle_layer_norm, _paddle_softmax, _paddle_gelu = F.linear, F.layer_norm, F.softmax, F.gelu


class _AddBias(PyLayer):
    """y [..., out] + bias [out]; the backward sums dy over the leading axes with a GEMV."""

    @staticmethod
    def forward(ctx, y, bias):
        return y + bias

    @staticmethod
    def backward(ctx, grad):
        rows = grad.reshape([-1, grad.shape[-1]])
        ones = paddle.ones([1, rows.shape[0]], dtype=grad.dtype)
        return grad, paddle.matmul(ones, rows).reshape([grad.shape[-1]])


def linear(x, weight, bias=None, name=None):
    """Drop-in for `paddle.nn.functional.linear` (x [..., in], weight [in, out], bias [out])."""
    y = paddle.matmul(x, weight)
    return y if bias is None else _AddBias.apply(y, bias)


def _compiled(x):
    """The kernels module if `x` is a float32 CPU tensor they can take, else None."""
    return encoder_ops() if x.dtype == paddle.float32 and x.place.is_cpu_place() else None


def layer_norm(x, normalized_shape, weight=None, bias=None, epsilon=1e-05, name=None):
    """Drop-in for `paddle.nn.functional.layer_norm`; compiled for a last-axis norm with weight and bias."""
    ops = _compiled(x)
    last_axis = isinstance(normalized_shape, int) or len(normalized_shape) == 1
    if ops is None or not last_axis or weight is None or bias is None:
        return _paddle_layer_norm(x, normalized_shape, weight, bias, epsilon, name)
    return ops.ernie_layer_norm(x, weight, bias, float(epsilon))[0]


def softmax(x, axis=-1, dtype=None, name=None):
    """Drop-in for `paddle.nn.functional.softmax`; compiled along the last axis."""
    ops = _compiled(x)
    if ops is None or dtype is not None or axis not in (-1, x.ndim - 1):
        return _paddle_softmax(x, axis, dtype, name)
    return ops.ernie_softmax(x)


def gelu(x, approximate=False, name=None):
    """Drop-in for `paddle.nn.functional.gelu`; compiled for the exact (erf) form."""
    ops = _compiled(x)
    if ops is None or approximate:
        return _paddle_gelu(x, approximate, name)
    return ops.ernie_gelu(x)


class _StraightThrough(PyLayer):
    """Quantize-dequantize x onto ±scale with 2^(bits-1) - 1 levels; the gradient passes straight through."""

    @staticmethod
    def forward(ctx, x, scale: float, bits: int):
        return encoder_ops().ernie_fake_quant_dequant(x, scale, bits)

    @staticmethod
    def backward(ctx, grad):
        return grad


@paddle.no_grad()
def _update_moving_average(quantizer: FakeQuantMovingAverageAbsMax, x) -> None:
    """Paddle's moving-average abs-max scale update, in float32: state, accum and scale of `quantizer`."""
    rate = np.float32(quantizer._moving_rate)
    state = rate * np.float32(quantizer._state.item()) + np.float32(1)
    accum = rate * np.float32(quantizer._accum.item()) + np.float32(encoder_ops().ernie_abs_max(x).item())
    quantizer._state.set_value(np.array([state], np.float32))
    quantizer._accum.set_value(np.array([accum], np.float32))
    quantizer._scale.set_value(np.array([accum / state], np.float32))


def moving_average_fake_quant(quantizer: FakeQuantMovingAverageAbsMax, x):
    """Drop-in for `FakeQuantMovingAverageAbsMax.forward` on a float32 CPU input."""
    if _compiled(x) is None or quantizer._reduce_type is not None:
        return FakeQuantMovingAverageAbsMax.forward(quantizer, x)
    if quantizer.training:
        _update_moving_average(quantizer, x)
    return _StraightThrough.apply(x, float(quantizer._scale.item()), quantizer._quant_bits)


def abs_max_fake_quant(quantizer: FakeQuantAbsMax, x):
    """Drop-in for `FakeQuantAbsMax.forward` (weights) on a float32 CPU input; records the scale as Paddle's does."""
    if _compiled(x) is None or quantizer._reduce_type is not None:
        return FakeQuantAbsMax.forward(quantizer, x)
    scale = encoder_ops().ernie_abs_max(x)
    if quantizer._scale is not None:
        with paddle.no_grad():
            quantizer._scale.set_value(scale)
    return _StraightThrough.apply(x, float(scale.item()), quantizer._quant_bits)


@contextlib.contextmanager
def fast_cpu_ops(model: paddle.nn.Layer):
    """Within the block, `model`'s Linear, LayerNorm, attention softmax, GELU and activation quantizers use the ops above.

    Patches the functions nn.Linear (and PaddleSlim's QuantizedLinear), nn.LayerNorm and
    nn.MultiHeadAttention call, the `activation` of `model`'s transformer layers that use
    Paddle's GELU, and the `forward` of its abs-max and moving-average quantizers; all are
    restored on exit.
    """
    patches = [(F, "linear", linear), (norm_layers, "layer_norm", layer_norm), (F, "softmax", softmax)]
    for layer in model.sublayers(include_self=True):
        if getattr(layer, "activation", None) is _paddle_gelu:
            patches.append((layer, "activation", gelu))
        if type(layer) is FakeQuantMovingAverageAbsMax:
            patches.append((layer, "forward", functools.partial(moving_average_fake_quant, layer)))
        if type(layer) is FakeQuantAbsMax:
            patches.append((layer, "forward", functools.partial(abs_max_fake_quant, layer)))
    with contextlib.ExitStack() as stack:
        for owner, attribute, replacement in patches:
            stack.enter_context(mock.patch.object(owner, attribute, replacement))
        yield
