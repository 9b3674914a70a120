"""Outlier Channel Splitting (Zhao et al. 2019): shrink a layer's weight range without changing its output.

For y = x @ W (W [in, out]), the input channel (row of W) holding the largest |w| is split:
the row is halved and a copy of the halved row appended, and x gets a copy of that input
channel, so y is unchanged while max|W| shrinks. Repeated for ceil(expand_ratio · in) splits
(a halved row may be split again). `OCSLinear` is the split layer: x [..., in] is expanded to
[..., in + k] with the duplicated channels, then its Linear [in + k, out] runs. `OCSTransform`
(config `ptq.ocs_expand_ratio` of a `quant.method: ptq` checkpoint) splits a model's encoder:
post-training quantization uses it, and it rebuilds the structure when an OCS checkpoint loads,
before the fake-quant wrapping (its declared order).
"""
import math
from typing import Tuple

import numpy as np
import paddle
from paddle import nn

from ernie_qat.models.classifier import encoder_linears, replace_sublayer
from ernie_qat.train.hooks import STRUCTURAL, TRANSFORMS, ModelTransform


def split_count(in_features: int, expand_ratio: float) -> int:
    return math.ceil(expand_ratio * in_features) if expand_ratio > 0 else 0


def split_channels(weight: np.ndarray, expand_ratio: float) -> Tuple[np.ndarray, np.ndarray]:
    """(weight [in + k, out], index [k]): the split weight and the input channel each new row copies."""
    rows = [row for row in weight.astype(np.float32)]
    source = list(range(len(rows)))
    peaks = [float(np.abs(row).max()) for row in rows]
    for _ in range(split_count(len(source), expand_ratio)):
        top = int(np.argmax(peaks))
        rows[top] = rows[top] * 0.5  # exact in binary floating point: both halves sum back to the row
        rows.append(rows[top].copy())
        source.append(source[top])
        peaks[top] *= 0.5
        peaks.append(peaks[top])
    return np.stack(rows), np.array(source[len(weight):], dtype=np.int64)


class OCSLinear(nn.Layer):
    """A Linear whose input channels `split_index` [k] are duplicated: x [..., in] -> y [..., out]."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, split_index: np.ndarray):
        super().__init__()
        self.linear = nn.Linear(*weight.shape)
        self.linear.weight.set_value(weight)
        self.linear.bias.set_value(bias)
        self.register_buffer("split_index", paddle.to_tensor(split_index, dtype="int64"))

    @classmethod
    def from_linear(cls, linear: nn.Linear, expand_ratio: float) -> "OCSLinear":
        """`linear` with ceil(expand_ratio · in) input channels split."""
        weight, index = split_channels(linear.weight.numpy(), expand_ratio)
        return cls(weight, linear.bias.numpy(), index)

    def forward(self, x):
        return self.linear(paddle.concat([x, paddle.index_select(x, self.split_index, axis=-1)], axis=-1))


class OCSTransform(ModelTransform):
    """Model transform splitting every encoder Linear layer (`ptq.ocs_expand_ratio` > 0); the output is unchanged."""
    name, order = "ocs", 10

    def __init__(self, expand_ratio: float):
        self.expand_ratio = expand_ratio

    def prepare(self, model):
        for name, linear in encoder_linears(model):
            replace_sublayer(model, name, OCSLinear.from_linear(linear, self.expand_ratio))
        return model


@TRANSFORMS.register("ocs", role=STRUCTURAL)
def build_ocs(cfg) -> "OCSTransform | None":
    return OCSTransform(cfg.ptq.ocs_expand_ratio) if cfg.quant.method == "ptq" and cfg.ptq.ocs_expand_ratio > 0 else None
