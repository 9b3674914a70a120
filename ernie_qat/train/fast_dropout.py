"""Dropout whose mask comes from NumPy's generator: an opt-in (`train.fast_dropout`) CPU speed-up.

Paddle 2.6 draws CPU dropout masks one element at a time on one thread: 64 ms for the attention
probabilities of a MiniLM layer at batch 32 × 128 ([32, 12, 128, 128]). Here the mask is a
16-bit uniform draw from NumPy's PCG64 compared with p (19 ms with the multiply), seeded from
Paddle's generator, so runs stay reproducible under `paddle.seed` and `--resume`. It is still
`upscale_in_train` dropout with keep probability 1 - p (p resolved to 1/65536), but the masks
differ from Paddle's, so results differ from runs without it as a change of seed would.
"""
import contextlib

import numpy as np
import paddle
import paddle.nn.functional as F

_LEVELS = 1 << 16


def dropout(x, p=0.5, axis=None, training=True, mode="upscale_in_train", name=None):
    """`paddle.nn.functional.dropout` for the common case (no axis, upscale_in_train); others fall back."""
    if not training or p == 0 or axis is not None or mode != "upscale_in_train" or not 0 < p < 1:
        return _paddle_dropout(x, p=p, axis=axis, training=training, mode=mode, name=name)
    seed = int(paddle.randint(0, 2 ** 31 - 1, [1]).item())
    draws = np.random.default_rng(seed).integers(0, _LEVELS, size=x.shape, dtype=np.uint16)
    keep = paddle.to_tensor(draws >= np.uint16(round(p * _LEVELS))).astype(x.dtype)
    return x * keep * (1.0 / (1.0 - p))


_paddle_dropout = F.dropout


@contextlib.contextmanager
def fast_dropout(enabled: bool = True):
    """Route `paddle.nn.functional.dropout` (nn.Dropout, attention dropout) through `dropout` while enabled."""
    if not enabled:
        yield
        return
    F.dropout = dropout
    try:
        yield
    finally:
        F.dropout = _paddle_dropout
