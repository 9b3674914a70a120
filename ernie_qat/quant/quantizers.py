"""Custom quantizer layers for QAT, by name: the extension point for learned-step or ternary quantizers.

A quantizer layer is a `paddle.nn.Layer` class whose forward takes the float tensor (a weight or
an activation) and returns its quantized-dequantized value; PaddleSlim's `QAT` builds one per
quantized layer (`QAT(weight_quantize=cls, act_quantize=cls)`). Register a class with
`@register_quantizer("name")` and select it with `quant.weight_quantizer` /
`quant.activation_quantizer`.
"""
import difflib
from typing import Callable, Dict

from ernie_qat.config import ConfigError

QUANTIZER_LAYERS: Dict[str, type] = {}


def register_quantizer(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        QUANTIZER_LAYERS[name] = cls
        return cls
    return add


def quantizer_layer(name: str, key: str):
    """The class registered as `name`, or None for ""; `key` names the config field in errors."""
    if not name:
        return None
    if name not in QUANTIZER_LAYERS:
        close = difflib.get_close_matches(name, list(QUANTIZER_LAYERS), n=1)
        hint = f"; did you mean `{close[0]}`?" if close else ""
        raise ConfigError(f"`{key}`: unknown quantizer `{name}`; registered: {sorted(QUANTIZER_LAYERS) or 'none'}{hint}")
    return QUANTIZER_LAYERS[name]
