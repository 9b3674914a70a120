"""Uniform quantize-dequantize on a [low, high] range: the grid every PTQ method rounds onto.

Symmetric ranges (low == -high) use the 2^(b-1) - 1 positive and negative levels of Paddle's
INT8 kernels (±127 at 8 bits), so an 8-bit symmetric result is exactly what the oneDNN INT8
predictor computes; other ranges are asymmetric with 2^b levels and a zero point.
"""
import numpy as np


def fake_quantize(x: np.ndarray, low, high, bits: int) -> np.ndarray:
    """x rounded onto the `bits`-bit grid of [low, high] (scalars, or arrays broadcasting against x)."""
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    x = x.astype(np.float64)
    if np.array_equal(low, -high):
        levels = 2 ** (bits - 1) - 1
        scale = np.where(high > 0, high / levels, 1.0)
        q = np.clip(np.round(x / scale), -levels, levels) * scale
    else:
        scale = np.where(high > low, (high - low) / (2 ** bits - 1), 1.0)
        zero = np.round(-low / scale)
        q = (np.clip(np.round(x / scale) + zero, 0, 2 ** bits - 1) - zero) * scale
    return q.astype(np.float32)


def quantization_mse(x: np.ndarray, low, high, bits: int) -> float:
    """Mean squared error of `fake_quantize` on x."""
    return float(np.mean((fake_quantize(x, low, high, bits).astype(np.float64) - x) ** 2))
