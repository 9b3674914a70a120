"""Quantizer layers by name, built from their config: the extension point for learned-step or ternary quantizers.

A quantizer layer is a `paddle.nn.Layer` whose forward takes the float tensor (a weight or an
activation) and returns its quantized-dequantized value. Register a class with
`@register_quantizer("name")` and select it with `quant.weight_quantizer` /
`quant.activation_quantizer`; QAT builds one per quantized Linear layer as
`cls(spec: QuantizerSpec, weight)` (`weight` None for activations), so bits, granularity and the
tensor's shape are known when it is built and any learnable parameter exists before the
optimizer does. Parameters of registered quantizers get no weight decay and the learning-rate
multiplier `quant.quantizer_lr_scale`.

Optional class attributes, checked with the config before any work: `roles`, the roles it quantizes
(default both, ("weight", "activation")), and `bits`, the bit widths it supports (default 2..8).

Optional: a weight quantizer whose per-tensor output lies on an 8-bit grid defines
`int8_weight(weight) -> (quantized weight, int8 range r)`, the range with which
round(Ŵ/r·127) is Ŵ's integer level (|level| ≤ 127). QAT then exports it to Paddle's oneDNN
INT8 predictor: the saved graph holds Ŵ behind PaddleSlim's 8-bit weight fake-quant with its
scale pinned to r (ernie_qat.quant.qat, ernie_qat.quant.onednn). Without it, INT8 export is refused.

Quantizers that keep running statistics (PaddleSlim's moving-average activation observers, or
a registered layer) update them only in training mode: `frozen_statistics(model)` switches them
to eval mode for an extra pass (SAM's ascent) that must not move them.
"""
import contextlib
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import paddle
from paddle import nn
from paddle.nn.quant.quant_layers import (FakeQuantAbsMax, FakeQuantChannelWiseAbsMax,
                                          FakeQuantMovingAverageAbsMax, MovingAverageAbsMaxScale)

from ernie_qat.registry import Registry

QUANTIZER_LAYERS = Registry("quantizer")
register_quantizer = QUANTIZER_LAYERS.register
PADDLE_QUANTIZERS = (FakeQuantAbsMax, FakeQuantChannelWiseAbsMax, FakeQuantMovingAverageAbsMax,
                     MovingAverageAbsMaxScale)


@dataclass(frozen=True)
class QuantizerSpec:
    """What a quantizer layer is built for."""
    role: str                  # "weight" or "activation"
    bits: int                  # 2..8
    per_channel: bool = False  # weights: one scale per output channel (a column of a Linear weight [in, out])
    shape: Tuple[int, ...] = ()  # the weight's shape; () for activations
    moving_rate: float = 0.9   # for quantizers keeping a moving average


ROLES = ("weight", "activation")
BITS = tuple(range(2, 9))


def quantizer_roles(layer: type) -> Tuple[str, ...]:
    """The roles a registered quantizer class takes (its `roles`, default both)."""
    return getattr(layer, "roles", ROLES)


def quantizer_bits(layer: type) -> Tuple[int, ...]:
    """The bit widths a registered quantizer class supports (its `bits`, default 2..8), ascending."""
    return tuple(sorted(getattr(layer, "bits", BITS)))


def build_quantizer(name: str, spec: QuantizerSpec, weight: Optional[paddle.Tensor], key: str) -> nn.Layer:
    """The quantizer registered as `name`, built for `spec`; `key` names the config field in errors."""
    return QUANTIZER_LAYERS.lookup(name, key)(spec, weight)


def is_quantizer(layer: nn.Layer) -> bool:
    return isinstance(layer, PADDLE_QUANTIZERS + tuple(QUANTIZER_LAYERS.values()))


def quantizer_parameters(model: nn.Layer) -> list:
    """Trainable parameters of the registered quantizer layers in `model` (step sizes and the like)."""
    registered = tuple(QUANTIZER_LAYERS.values())
    return [p for layer in model.sublayers() if isinstance(layer, registered)
            for p in layer.parameters(include_sublayers=False) if not p.stop_gradient]


@contextlib.contextmanager
def frozen_statistics(model: nn.Layer) -> Iterator[None]:
    """Within the block, `model`'s quantizers run as in evaluation, and their buffers are put back after it:
    no observer, running statistic or recorded scale (PaddleSlim's weight quantizers write max|W| on every
    forward) keeps anything from the block."""
    quantizers = [layer for layer in model.sublayers() if is_quantizer(layer)]
    switched = [layer for layer in quantizers if layer.training]
    saved = [(state, state.clone()) for layer in quantizers  # PaddleSlim keeps its scales as frozen parameters
             for state in [*layer.buffers(include_sublayers=False), *layer.parameters(include_sublayers=False)]
             if state.stop_gradient]
    for layer in switched:
        layer.training = False
    try:
        yield
    finally:
        for layer in switched:
            layer.training = True
        with paddle.no_grad():
            for state, value in saved:
                state.set_value(value)
