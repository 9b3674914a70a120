"""Quantization ranges by name: the extension point for clipping methods.

A range method maps (x, bits, axis) to the (low, high) range x is quantized on: scalars for a
per-tensor range, or arrays shaped to broadcast against x with `axis` kept for per-channel ranges
(a Linear weight [in, out] is per output channel with axis=1). Register one with
`@register_range("name")`. Linear Quantization (LQ) is here: `absmax` (symmetric ±max|x|) and
`minmax` (asymmetric [min x, max x]); ACIQ clipping is in `aciq.py`.
"""
from typing import Optional

import numpy as np

from ernie_qat.registry import Registry

RANGES = Registry("range")
register_range = RANGES.register


def reduce_axes(x: np.ndarray, axis: Optional[int]) -> Optional[tuple]:
    """The axes a per-tensor (axis None) or per-channel (along `axis`) statistic reduces over."""
    return None if axis is None else tuple(a for a in range(x.ndim) if a != axis % x.ndim)


@register_range("absmax")
def absmax_range(x: np.ndarray, bits: int, axis: Optional[int] = None):
    high = np.abs(x).max(axis=reduce_axes(x, axis), keepdims=axis is not None)
    return -high, high


@register_range("minmax")
def minmax_range(x: np.ndarray, bits: int, axis: Optional[int] = None):
    axes, keep = reduce_axes(x, axis), axis is not None
    return np.minimum(x.min(axis=axes, keepdims=keep), 0.0), np.maximum(x.max(axis=axes, keepdims=keep), 0.0)


def quant_range(name: str, x: np.ndarray, bits: int, axis: Optional[int] = None, key: str = "range"):
    """(low, high) of x by the range method `name`; ConfigError naming `key` if it is not registered."""
    return RANGES.lookup(name, key)(x, bits, axis)
