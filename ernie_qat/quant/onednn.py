"""Make oneDNN's INT8 pass quantize exactly what per-tensor QAT simulated, with the trained scales.

Paddle 2.6's `compute_propagate_scales_mkldnn_pass` computes the per-output-channel scales of an
`fc` weight [in, out] by reading it as if it were [out, in]: channel c gets the max |w| of a
block of `in` consecutive values rather than of its column. Each channel is then quantized on a
grid unrelated to the one QAT trained it on (measured: 4.5% relative error after the first fc of
MiniLM, 96% argmax agreement with the QAT model on MR). The pass keeps a scale it has already
been given, and it takes one from any `fake_quantize_dequantize_moving_average_abs_max` op's
`InScale`. So each per-tensor weight fake-quant op of a saved QAT model is rewritten into that op
type with `InScale = max|W|`: the same arithmetic in the FP32 graph, and the trained scale in INT8.
A low-bit weight saved on its 8-bit grid gets that grid's range instead (`ranges`, by parameter
name; ernie_qat.quant.qat). Per-channel weight scales cannot be passed this way (the pass reads
one value per op).

The pass also quantizes every op whose output carries an `out_threshold` (the output scales
PaddleSlim records for all layers), among them the pooler and classifier that QAT left in float
and the attention's Q/K/V reshapes. Those attributes are dropped, so INT8 runs the Linear layers
QAT fake-quantized and nothing else.
"""
from typing import Dict, Optional

import numpy as np

from ernie_qat.quant.saved_model import OpenedModel

WEIGHT_OP = "fake_quantize_dequantize_abs_max"
PINNED_OP = "fake_quantize_dequantize_moving_average_abs_max"


def pin_trained_scales(model: OpenedModel, ranges: Optional[Dict[str, float]] = None) -> int:
    """Rewrite a saved QAT model's graph, opened for editing; returns the number of weights pinned.

    Args:
        ranges: INT8 ranges of weights by parameter name, pinned instead of their max|W|; each must be found.
    """
    ranges = ranges or {}
    block = model.block
    pinned = []
    for index, op in enumerate(block.ops):
        if op.has_attr("out_threshold"):
            op._remove_attr("out_threshold")
        if op.type != WEIGHT_OP or not block.var(op.input("X")[0]).persistable:
            continue
        weight, scale = op.input("X")[0], op.output("OutScale")[0]
        value = ranges[weight] if weight in ranges else np.abs(model.tensor(weight)).max()
        model.set_tensor(scale, np.array([value], np.float32))
        attrs = {"bit_length": op.attr("bit_length"), "moving_rate": 0.9, "is_test": True,
                 "round_type": op.attr("round_type") if op.has_attr("round_type") else 0}
        out = op.output("Out")[0]
        block._remove_op(index)
        block._insert_op(index, type=PINNED_OP, inputs={"X": [weight], "InScale": [scale]},
                         outputs={"Out": [out], "OutScale": [scale]}, attrs=attrs)
        pinned.append(weight)
    unseen = sorted(set(ranges) - set(pinned))
    if unseen:
        raise ValueError(f"no weight fake-quant op reads {unseen} in the saved model")
    return len(pinned)
