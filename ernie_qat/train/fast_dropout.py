"""Dropout with compiled, multi-threaded masks: an opt-in (`train.fast_dropout`) CPU speed-up.

Paddle 2.6 draws CPU dropout masks one element at a time on one thread: 64 ms for the attention
probabilities of a MiniLM layer at batch 32 × 128 ([32, 12, 128, 128]). The `ernie_dropout`
kernel of `ernie_qat.train.kernels` draws them from a counter-based generator (SplitMix64) on all
cores, seeded from Paddle's generator, so runs stay reproducible under `paddle.seed` and
`--resume`. It is still `upscale_in_train` dropout with keep probability 1 - p (p resolved to
1/65536), but the masks differ from Paddle's, so results differ from runs without it as a change
of seed would. Where the kernels cannot be built, Paddle's dropout runs.
"""
import contextlib

import paddle
import paddle.nn.functional as F

from ernie_qat.train.kernels import encoder_ops

_paddle_dropout = F.dropout


def dropout(x, p=0.5, axis=None, training=True, mode="upscale_in_train", name=None):
    """`paddle.nn.functional.dropout` for the common case (float32, no axis, upscale_in_train); others fall back."""
    ops = encoder_ops()
    if (ops is None or not training or axis is not None or mode != "upscale_in_train" or not 0 < p < 1
            or x.dtype != paddle.float32):
        return _paddle_dropout(x, p=p, axis=axis, training=training, mode=mode, name=name)
    seed = int(paddle.randint(0, 2 ** 31 - 1, [1]).item())
    return ops.ernie_dropout(x, float(p), seed)[0]


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
