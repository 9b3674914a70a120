"""Custom quantizer layers for QAT, by name: the extension point for learned-step or ternary quantizers.

A quantizer layer is a `paddle.nn.Layer` class whose forward takes the float tensor (a weight or
an activation) and returns its quantized-dequantized value; PaddleSlim's `QAT` builds one per
quantized layer (`QAT(weight_quantize=cls, act_quantize=cls)`). Register a class with
`@register_quantizer("name")` and select it with `quant.weight_quantizer` /
`quant.activation_quantizer`.
"""
from paddle import nn

from ernie_qat.registry import Registry

QUANTIZER_LAYERS = Registry("quantizer")
register_quantizer = QUANTIZER_LAYERS.register


@register_quantizer("prequantized")
class PrequantizedWeights(nn.Layer):
    """Weight 'quantizer' of post-training quantized weights (ernie_qat.ptq): they already lie on their grid."""

    def forward(self, weight):
        return weight


def quantizer_layer(name: str, key: str):
    """The class registered as `name`, or None for ""; `key` names the config field in errors."""
    return QUANTIZER_LAYERS.lookup(name, key) if name else None
