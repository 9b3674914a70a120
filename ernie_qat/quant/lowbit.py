"""Low-bit quantizer layers for QAT: LSQ (learned step size), TWN ternary weights, dynamic max-abs activations.

Selected by name through the quantizer registry (`quant.weight_quantizer`, `quant.activation_quantizer`):

    lsq               v̂ = round(clip(v/s, -Qn, Qp))·s, signed, Qn = 2^(b-1), Qp = 2^(b-1) - 1 (Esser et al.
                      2020). The step size s is a parameter (per tensor, or per output channel: a column of
                      a Linear weight [in, out]); its gradient is scaled by g = 1/√(N·Qp), N = elements
                      per step size; s₀ = 2·mean|v|/√Qp, from the weight, or from the first batch for
                      activations. Rounding passes the gradient straight through inside the clip range.
    ternary           TWN as TernaryBERT uses it: Δ = 0.7·mean|W|, α = mean of |W| over |W| > Δ,
                      Ŵ = α·sign(W) where |W| > Δ, else 0 (per tensor, or per output channel); the
                      gradient passes straight through (zero where |W| > 2.5, TernaryBERT's clip).
    ternary_clamped   the same of W clamped to ±2.5 first, as the TernaryBERT and TI reference code does:
                      an outlier (MiniLM has |W| near 8) counts as 2.5 in Δ and α.
    dynamic_absmax    TernaryBERT's activation quantizer: b-bit symmetric, per tensor, the scale from
                      this batch's max|x|; straight-through gradient.
    clipped_absmax    the TI reference's activations: x clamped to ±2.5 first, then dynamic_absmax of
                      the clamped tensor; no gradient where |x| > 2.5 (`quant.scope: reference`).

Under data parallelism, what is taken from the batch (for activations lsq's first step size and its N;
dynamic_absmax's and clipped_absmax's max|x|) is the whole batch's, over every rank's shard
(`parallel.batch_max`, `batch_mean`, `batch_count`), as one process takes it.

Per-tensor lsq and ternary weights lie on an 8-bit grid and export to oneDNN INT8 (`int8_weight`,
ernie_qat.quant.quantizers): k·s is the int8 k with range 127·s (at 8 bits k = -128 clips to -127),
and ±α/0 the int8 ±1/0 with range 127·α. (±127 with range α is as exact on paper, but oneDNN's int8
kernels without VNNI add u8·s8 products in pairs into saturating int16, 2·255·127 > 2^15: on AVX2
that moved the tiny test model's logits by 19% of their maximum, ±1 by 8e-6.) Per-channel weights
do not export (Paddle 2.6's per-channel fc scales, ernie_qat.quant.onednn).

Written for this stack: Paddle 2.6's and PaddleSlim 2.6's own LSQ quanters crash on their first
forward or misplace per-channel scales (issue 12).
"""
import math
from typing import Tuple

import paddle
from paddle import nn

from ernie_qat.quant.quantizers import QuantizerSpec, register_quantizer
from ernie_qat.train.parallel import batch_count, batch_max, batch_mean

TERNARY_THRESHOLD = 0.7  # Δ = 0.7·mean|W| (TWN)
TERNARY_CLIP = 2.5  # TernaryBERT's: no gradient where |W| exceeds it; ternary_clamped clamps W to it
ACTIVATION_CLIP = 2.5  # the TI reference clamps every quantized activation to ±2.5


def twn(weight: paddle.Tensor, axis, clamp: float = 0.0) -> paddle.Tensor:
    """TWN's ternary value of `weight`, without gradient: Δ = 0.7·mean|W| and α = mean of |W| over |W| > Δ, each
    over `axis` (None: the whole tensor), α·sign(W) where |W| > Δ, else 0; |W| taken as min(|W|, clamp) if
    clamp > 0."""
    magnitude = weight.abs().clip(max=clamp) if clamp else weight.abs()
    kept = (magnitude > TERNARY_THRESHOLD * magnitude.mean(axis=axis, keepdim=True)).astype(weight.dtype)
    alpha = (magnitude * kept).sum(axis=axis, keepdim=True) / kept.sum(axis=axis, keepdim=True).clip(min=1.0)
    return (alpha * paddle.sign(weight) * kept).detach()


def straight_through(rounded: paddle.Tensor, value: paddle.Tensor) -> paddle.Tensor:
    """`rounded`'s value with the gradient of `value`."""
    return value + (rounded - value).detach()


def scaled_gradient(value: paddle.Tensor, scale: float) -> paddle.Tensor:
    """`value` itself, whose gradient is multiplied by `scale`."""
    return value * scale + (value - value * scale).detach()


def signed_levels(bits: int):
    """(Qn, Qp) of a signed b-bit grid: -Qn..Qp."""
    return 2 ** (bits - 1), 2 ** (bits - 1) - 1


@register_quantizer("lsq")
class LSQQuantizer(nn.Layer):
    """Learned step-size quantization of a weight or an activation (see the module docstring)."""

    def __init__(self, spec: QuantizerSpec, weight=None):
        super().__init__()
        self.qn, self.qp = signed_levels(spec.bits)
        self.per_channel = spec.per_channel and spec.role == "weight"
        self.of_activations = spec.role == "activation"  # whose N counts the whole batch's elements
        channels = spec.shape[-1] if self.per_channel else 1
        self.step = self.create_parameter([channels], default_initializer=nn.initializer.Constant(1.0))
        self.register_buffer("initialized", paddle.to_tensor(False))
        if weight is not None:
            self._initialize(weight)

    def _initialize(self, value: paddle.Tensor) -> None:
        magnitude = value.abs().reshape([-1, self.step.shape[0]])  # [elements per step size, step sizes]
        with paddle.no_grad():
            self.step.set_value((2 * batch_mean(magnitude) / math.sqrt(self.qp)).clip(min=1e-8))
            self.initialized.set_value(paddle.to_tensor(True))

    def forward(self, value: paddle.Tensor) -> paddle.Tensor:
        if not bool(self.initialized):
            self._initialize(value.detach())
        per_step = math.prod(value.shape) // self.step.shape[0]
        if self.of_activations:
            per_step = batch_count(per_step)
        step = scaled_gradient(self.step, 1.0 / math.sqrt(per_step * self.qp))
        levels = paddle.clip(value / step, -self.qn, self.qp)
        return straight_through(levels.round(), levels) * step

    def int8_weight(self, weight: paddle.Tensor) -> Tuple[paddle.Tensor, float]:
        """(Ŵ = k·s, its INT8 range 127·s); per tensor only."""
        if self.per_channel:
            raise ValueError("per-channel LSQ weights have no per-tensor INT8 range")
        with paddle.no_grad():
            return self(weight), 127.0 * float(self.step.numpy()[0])


@register_quantizer("ternary")
class TernaryQuantizer(nn.Layer):
    """TWN ternary weights (see the module docstring): three levels, 2 bits."""
    roles, bits = ("weight",), (2,)
    clamp = 0.0  # W clamped to ±clamp before Δ and α; 0: not clamped

    def __init__(self, spec: QuantizerSpec, weight=None):
        super().__init__()
        self.per_channel = spec.per_channel

    def forward(self, weight: paddle.Tensor) -> paddle.Tensor:
        axis = 0 if self.per_channel else None  # per output channel: over the rows of a column of [in, out]
        passing = (weight.abs() <= TERNARY_CLIP).astype(weight.dtype)
        return twn(weight, axis, self.clamp) + (weight - weight.detach()) * passing

    def int8_weight(self, weight: paddle.Tensor) -> Tuple[paddle.Tensor, float]:
        """(Ŵ ∈ {-α, 0, α}, its INT8 range 127·α: the int8 levels -1, 0, 1); per tensor only."""
        if self.per_channel:
            raise ValueError("per-channel ternary weights have no per-tensor INT8 range")
        with paddle.no_grad():
            ternary = self(weight)
        return ternary, 127.0 * float(ternary.abs().max())


@register_quantizer("ternary_clamped")
class ClampedTernaryQuantizer(TernaryQuantizer):
    """TWN ternary weights of W clamped to ±2.5 (the reference code's): Δ and α see an outlier as 2.5."""
    clamp = TERNARY_CLIP


@register_quantizer("dynamic_absmax")
class DynamicAbsMaxQuantizer(nn.Layer):
    """Symmetric b-bit fake quantization with this tensor's max|x| as the range; straight-through gradient."""

    def __init__(self, spec: QuantizerSpec, weight=None):
        super().__init__()
        self.qp = signed_levels(spec.bits)[1]

    def forward(self, value: paddle.Tensor) -> paddle.Tensor:
        scale = (batch_max(value.abs().max().detach()) / self.qp).clip(min=1e-8)
        return straight_through((value / scale).round() * scale, value)


@register_quantizer("clipped_absmax")
class ClippedAbsMaxQuantizer(nn.Layer):
    """Activations clamped to ±ACTIVATION_CLIP, then b-bit symmetric with the clamped tensor's max|x| as the range;
    straight-through gradient inside the clamp, none outside it."""
    roles = ("activation",)

    def __init__(self, spec: QuantizerSpec, weight=None):
        super().__init__()
        self.qp = signed_levels(spec.bits)[1]

    def forward(self, value: paddle.Tensor) -> paddle.Tensor:
        clipped = paddle.clip(value, -ACTIVATION_CLIP, ACTIVATION_CLIP)
        scale = (batch_max(clipped.abs().max().detach()) / self.qp).clip(min=1e-8)
        return straight_through((clipped / scale).round() * scale, clipped)
