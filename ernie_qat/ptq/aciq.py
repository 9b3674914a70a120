"""ACIQ clipping (Banner, Nahshan, Soudry 2019): clip at the MSE-optimal α of a fitted distribution.

For a Laplace(μ, b) fit, b = mean|x - μ| and α = c_M(bits) · b; for a Gaussian fit α = c_M(bits) · σ.
The range is symmetric, ±(|μ| + α), never wider than ±max|x| (clipping beyond the data only
coarsens the grid). Per-channel fits reduce over all axes but `axis`.
"""
from typing import Optional

import numpy as np

from ernie_qat.ptq.ranges import reduce_axes, register_range

# c_M for bits 2..8, from Banner et al.'s analysis.
ALPHA_LAPLACE = {2: 2.83, 3: 3.89, 4: 5.03, 5: 6.2, 6: 7.41, 7: 8.64, 8: 9.89}
ALPHA_GAUSS = {2: 1.71, 3: 2.15, 4: 2.55, 5: 2.93, 6: 3.28, 7: 3.61, 8: 3.92}


def aciq_alpha(x: np.ndarray, bits: int, distribution: str, axis: Optional[int] = None) -> np.ndarray:
    """The clipping half-width ±α around 0 for x (float64; per channel if `axis` is set)."""
    table = {"laplace": ALPHA_LAPLACE, "gauss": ALPHA_GAUSS}[distribution]
    if bits not in table:
        raise ValueError(f"ACIQ has constants for 2..8 bits, got {bits}")
    axes, keep = reduce_axes(x, axis), axis is not None
    x = x.astype(np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    spread = np.abs(x - mean).mean(axis=axes, keepdims=True) if distribution == "laplace" \
        else x.std(axis=axes, keepdims=True)
    alpha = np.abs(mean) + table[bits] * spread
    alpha = np.minimum(alpha, np.abs(x).max(axis=axes, keepdims=True))
    return alpha if keep else alpha.reshape(())


@register_range("aciq_laplace")
def aciq_laplace_range(x: np.ndarray, bits: int, axis: Optional[int] = None):
    alpha = aciq_alpha(x, bits, "laplace", axis)
    return -alpha, alpha


@register_range("aciq_gauss")
def aciq_gauss_range(x: np.ndarray, bits: int, axis: Optional[int] = None):
    alpha = aciq_alpha(x, bits, "gauss", axis)
    return -alpha, alpha
