"""Faster CPU versions of the encoder's layers for the training step, computing what Paddle's compute.

Paddle 2.6 runs much of a training step's CPU work on one thread. `FastCPUOps`, a training-only
model transform, replaces the student's layers by equivalents that keep their parameters (same
objects, same names) and, in training mode only, run:
- Linear layers (plain and PaddleSlim's QuantizedLinear) with the bias gradient as
  `ones[1, N] @ dY` (an MKL GEMV on all cores) instead of a one-thread reduction over the
  N = batch × tokens rows (44 ms for a [4096, 1536] gradient, three times its matmul);
- LayerNorm, the attention softmax, the exact GELU, QAT's abs-max weight and moving-average
  abs-max activation quantizers, and (opt-in, `train.fast_dropout`) dropout on the compiled
  OpenMP kernels of `ernie_qat.train.kernels`.
In eval mode they run Paddle's own ops, so evaluation and everything saved or exported is
unchanged; results equal Paddle's up to float rounding and summation order (tests/test_fast_ops.py).
Where the kernels cannot be built the transform is not installed and Paddle's ops run.

Fast dropout: Paddle draws CPU masks one element at a time on one thread (64 ms for a MiniLM
layer's attention probabilities at batch 32 × 128); `ernie_dropout` draws them from a
counter-based generator (SplitMix64) seeded from Paddle's generator on all cores, so runs stay
reproducible under `paddle.seed` and `--resume`, but the masks differ from Paddle's: results
differ from runs without it as a change of seed would.
"""
import paddle
import paddle.nn.functional as F
from paddle import nn
from paddle.autograd import PyLayer
from paddle.nn.quant.quant_layers import FakeQuantAbsMax, FakeQuantMovingAverageAbsMax, QuantizedLinear

from ernie_qat.models.classifier import replace_sublayer
from ernie_qat.quant.observers import GlobalBatchMovingAverageAbsMax, update_moving_average
from ernie_qat.train.hooks import TRAINING, TRANSFORMS, ModelTransform
from ernie_qat.train.kernels import encoder_ops
from ernie_qat.train.parallel import batch_max


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


def linear(x, weight, bias=None):
    """`paddle.nn.functional.linear` (x [..., in], weight [in, out], bias [out]) with the GEMV bias gradient."""
    y = paddle.matmul(x, weight)
    return y if bias is None else _AddBias.apply(y, bias)


def _compiled(x):
    """The kernels module if `x` is a float32 CPU tensor they can take, else None."""
    return encoder_ops() if x.dtype == paddle.float32 and x.place.is_cpu_place() else None


def layer_norm(x, normalized_shape, weight=None, bias=None, epsilon=1e-05):
    """`paddle.nn.functional.layer_norm`; compiled for a last-axis norm with weight and bias."""
    ops = _compiled(x)
    last_axis = isinstance(normalized_shape, int) or len(normalized_shape) == 1
    if ops is None or not last_axis or weight is None or bias is None:
        return F.layer_norm(x, normalized_shape, weight, bias, epsilon)
    return ops.ernie_layer_norm(x, weight, bias, float(epsilon))[0]


def softmax(x, axis=-1):
    """`paddle.nn.functional.softmax`; compiled along the last axis."""
    ops = _compiled(x)
    if ops is None or axis not in (-1, x.ndim - 1):
        return F.softmax(x, axis)
    return ops.ernie_softmax(x)


def gelu(x):
    """`paddle.nn.functional.gelu`, exact (erf) form, compiled."""
    ops = _compiled(x)
    return F.gelu(x) if ops is None else ops.ernie_gelu(x)


def dropout(x, p=0.5, axis=None, training=True, mode="upscale_in_train"):
    """`paddle.nn.functional.dropout` with compiled masks for the common case (float32, no axis, upscale_in_train)."""
    ops = _compiled(x)
    if ops is None or not training or axis is not None or mode != "upscale_in_train" or not 0 < p < 1:
        return F.dropout(x, p=p, axis=axis, training=training, mode=mode)
    seed = int(paddle.randint(0, 2 ** 31 - 1, [1]).item())
    return ops.ernie_dropout(x, float(p), seed)[0]


class _StraightThrough(PyLayer):
    """Quantize-dequantize x onto ±scale with 2^(bits-1) - 1 levels; the gradient passes straight through."""

    @staticmethod
    def forward(ctx, x, scale: float, bits: int):
        return encoder_ops().ernie_fake_quant_dequant(x, scale, bits)

    @staticmethod
    def backward(ctx, grad):
        return grad


def fake_quant(quantizer: nn.Layer, x):
    """`quantizer(x)`, compiled for Paddle's abs-max (weights) and moving-average abs-max (activations)
    quantizers on a float32 CPU input; the moving average advances only in training mode, as Paddle's,
    with this step's max|x| over the global batch under data parallelism (ernie_qat.quant.observers)."""
    if _compiled(x) is None or type(quantizer) not in (FakeQuantAbsMax, FakeQuantMovingAverageAbsMax,
                                                       GlobalBatchMovingAverageAbsMax) \
            or quantizer._reduce_type is not None:
        return quantizer(x)
    if isinstance(quantizer, FakeQuantMovingAverageAbsMax):
        if quantizer.training:
            update_moving_average(quantizer, batch_max(encoder_ops().ernie_abs_max(x)))
        return _StraightThrough.apply(x, float(quantizer._scale.item()), quantizer._quant_bits)
    scale = encoder_ops().ernie_abs_max(x)
    if quantizer._scale is not None:  # recorded as Paddle's forward records it
        with paddle.no_grad():
            quantizer._scale.set_value(scale)
    return _StraightThrough.apply(x, float(scale.item()), quantizer._quant_bits)


class FastLinear(nn.Layer):
    """nn.Linear (same weight [in, out] and bias [out]) with the GEMV bias gradient in training."""

    def __init__(self, layer: nn.Linear):
        super().__init__()
        self.weight, self.bias, self.name = layer.weight, layer.bias, layer.name

    def forward(self, x):
        if self.training:
            return linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias, name=self.name)


class FastQuantizedLinear(nn.Layer):
    """PaddleSlim's QuantizedLinear (same weight, bias and quantizer sublayers) on the fast ops in training."""

    def __init__(self, layer: QuantizedLinear):
        super().__init__()
        self.weight, self.bias, self.name = layer.weight, layer.bias, layer.name
        self._fake_quant_weight, self._fake_quant_input = layer._fake_quant_weight, layer._fake_quant_input
        self._act_preprocess, self._weight_preprocess = layer._act_preprocess, layer._weight_preprocess

    def forward(self, x):
        if self._act_preprocess is not None:
            x = self._act_preprocess(x)
        weight = self.weight if self._weight_preprocess is None else self._weight_preprocess(self.weight)
        if not self.training:
            return F.linear(self._fake_quant_input(x), self._fake_quant_weight(weight), self.bias, name=self.name)
        return linear(fake_quant(self._fake_quant_input, x), fake_quant(self._fake_quant_weight, weight), self.bias)


class FastLayerNorm(nn.Layer):
    """nn.LayerNorm (same weight and bias) on the compiled kernel in training."""

    def __init__(self, layer: nn.LayerNorm):
        super().__init__()
        self.weight, self.bias = layer.weight, layer.bias
        self._normalized_shape, self._epsilon = layer._normalized_shape, layer._epsilon

    def forward(self, x):
        norm = layer_norm if self.training else F.layer_norm
        return norm(x, self._normalized_shape, self.weight, self.bias, self._epsilon)


class FastSoftmax(nn.Layer):
    """nn.Softmax on the compiled kernel in training."""

    def __init__(self, layer: nn.Softmax):
        super().__init__()
        self._axis = layer._axis

    def forward(self, x):
        return softmax(x, self._axis) if self.training else F.softmax(x, self._axis)


class FastGELU(nn.Layer):
    """The encoder layers' exact GELU activation on the compiled kernel in training."""

    def forward(self, x):
        return gelu(x) if self.training else F.gelu(x)


class FastDropout(nn.Layer):
    """nn.Dropout with compiled masks (other masks than Paddle's: see the module docstring)."""

    def __init__(self, layer: nn.Dropout):
        super().__init__()
        self.p, self.axis, self.mode = layer.p, layer.axis, layer.mode

    def forward(self, x):
        return dropout(x, self.p, self.axis, self.training, self.mode)


FAST_LAYERS = {nn.Linear: FastLinear, QuantizedLinear: FastQuantizedLinear, nn.LayerNorm: FastLayerNorm,
               nn.Softmax: FastSoftmax}


def install_fast_ops(model: nn.Layer, fast_dropout: bool = False) -> nn.Layer:
    """Replace `model`'s sublayers (not `model` itself) by their fast equivalents, in place; returns `model`."""
    replacements = {**FAST_LAYERS, **({nn.Dropout: FastDropout} if fast_dropout else {})}
    for name, layer in list(model.named_sublayers()):
        fast = replacements.get(type(layer))
        if fast is not None:
            replace_sublayer(model, name, fast(layer))
        if getattr(layer, "activation", None) is F.gelu:
            layer.activation = FastGELU()
    return model


class FastCPUOps(ModelTransform):
    """Training-only: the student's layers on the compiled CPU kernels (applied after every other transform)."""
    name, role, order = "fast_cpu_ops", TRAINING, 90

    def __init__(self, fast_dropout: bool = False):
        self.fast_dropout = fast_dropout

    def prepare(self, model):
        return install_fast_ops(model, self.fast_dropout)


@TRANSFORMS.register("fast_cpu_ops", role=TRAINING)
def build_fast_cpu_ops(cfg) -> "FastCPUOps | None":
    return FastCPUOps(cfg.train.fast_dropout) if encoder_ops() is not None else None
