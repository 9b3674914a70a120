"""Self-attention whose matmul inputs are fake-quantized (`quant.scope: reference`, `quant.quantize_attention`).

`QuantizedAttention` is Paddle's `MultiHeadAttention` forward for self-attention with a quantizer on
each input of the two attention matmuls: the Q and K outputs (of the projections, per head), the V
output, and the attention probabilities after dropout. It takes over the attention's projections
under the same names, so their checkpoint keys stay; the reference's quantizers hold no parameters,
the moving-average ones their ranges (`<quantizer>._scale`), which checkpoints keep beside them. The
training forward (ernie_qat.models.taps.Attention) applies the same quantizers at the same places.
x [B, L, H] -> out [B, L, H].

Two scopes use it. `quant.scope: reference` gives it the reference's quantizers (a range per batch), which
Paddle's INT8 predictor cannot reproduce, so such a model is evaluated in fake quantization only.
`quant.quantize_attention` gives it moving-average quantizers, whose ranges are fixed once trained: the
saved fake-quant ops carry them, and Paddle 2.6's oneDNN INT8 pass runs both matmuls on int8 inputs with
them, QKᵀ provided its fusion with the mask add is off (the predictor turns it off for such a folder).

On CPUs without VNNI, oneDNN's int8 GEMM shifts its first operand to u8 (x + 128) and adds neighbouring
products along the reduction into a saturating int16 (ernie_qat.quant.int16_pairs). With P first, two
probabilities near 1 beside two large values overflow it: on RT that departed the INT8 model from the
trained one on 1.5% of the test sentences, and a simulation of the saturating sums reproduced it. So the
context is computed as (Vᵀ·Pᵀ)ᵀ: V goes first, (v + 128) <= 255, and the probabilities of two neighbouring
keys sum to at most 1, so to at most 128 levels with a range >= 1 (the softmax's max), and 255 * 128 fits.
QKᵀ has no such bound (both are activations), but the same simulation found no overflowing pair on RT.
"""
from typing import Callable

import paddle
import paddle.nn.functional as F
from paddle import nn

QUANTIZED = ("q_quant", "k_quant", "v_quant", "probs_quant")  # the quantizers' attribute names


def probs_times_values(probs, values):
    """The attention context P·V, [B, heads, L, L] x [B, heads, L, head_dim] -> [B, L, heads, head_dim], computed
    as (Vᵀ·Pᵀ)ᵀ: the same numbers, but an int8 GEMM without VNNI then sums its int16 pairs exactly (see above)."""
    return paddle.transpose(paddle.matmul(values, probs, transpose_x=True, transpose_y=True), [0, 3, 1, 2])


class QuantizedAttention(nn.Layer):
    """Self-attention with `make_quantizer()` on Q, K, V and the attention probabilities (see the module docstring)."""

    def __init__(self, attention: nn.MultiHeadAttention, make_quantizer: Callable[[], nn.Layer]):
        super().__init__()
        self.num_heads, self.head_dim = attention.num_heads, attention.head_dim
        self.need_weights = False
        self.q_proj, self.k_proj = attention.q_proj, attention.k_proj
        self.v_proj, self.out_proj = attention.v_proj, attention.out_proj
        self.dropout = attention.dropout  # the probabilities' dropout rate, as MultiHeadAttention keeps it
        for name in QUANTIZED:
            setattr(self, name, make_quantizer())

    def _split_heads(self, x):
        """[B, L, H] -> [B, heads, L, head_dim]."""
        return paddle.transpose(paddle.reshape(x, [0, 0, self.num_heads, self.head_dim]), [0, 2, 1, 3])

    def forward(self, query, key=None, value=None, attn_mask=None, cache=None):
        if cache is not None or (key is not None and key is not query):
            raise NotImplementedError("quantized attention supports the encoder's self-attention only")
        q = self.q_quant(self._split_heads(self.q_proj(query)))
        k = self.k_quant(self._split_heads(self.k_proj(query)))
        v = self.v_quant(self._split_heads(self.v_proj(query)))
        scores = paddle.matmul(q * (self.head_dim ** -0.5), k, transpose_y=True)
        if attn_mask is not None:
            scores = scores + attn_mask
        probs = F.softmax(scores)
        if self.dropout:
            probs = F.dropout(probs, self.dropout, training=self.training, mode="upscale_in_train")
        context = probs_times_values(self.probs_quant(probs), v)
        out = self.out_proj(paddle.reshape(context, [0, 0, context.shape[2] * context.shape[3]]))
        return (out, probs) if self.need_weights else out
