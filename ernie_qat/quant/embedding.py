"""The word table trained on int8 levels with one range per row, as an INT8 export stores it.

`quant.quantize_embeddings: true` makes QAT look tokens up in the table rounded to
k = round(127·w/r), r = max |row| (ties away from zero), and dequantized to r·k/127, with
straight-through gradients to the float table. Export stores exactly those levels and ranges
(ernie_qat.quant.int8_storage.store_int8_embeddings): the word table, about half of ERNIE-base's
and three quarters of MiniLM's INT8 folder, then takes a quarter of its float size, and the
predictor runs the table that was trained. Rounding an already trained float table instead changes
the model (docs/int8_parity.md).

Example:
    model.net.ernie.embeddings.word_embeddings = QuantizedEmbedding(model.net.ernie.embeddings.word_embeddings)
"""
import paddle
import paddle.nn.functional as F
from paddle import nn

from ernie_qat.quant.lowbit import TERNARY_CLIP, twn

LEVELS = 127


def quantize_rows(table: paddle.Tensor) -> paddle.Tensor:
    """[..., H] rows on int8 levels with a range (max |row|) per row; gradients pass straight through."""
    ranges = table.abs().max(axis=-1, keepdim=True).detach()
    ranges = paddle.where(ranges == 0, paddle.ones_like(ranges), ranges)
    scaled = (LEVELS * (1.0 / ranges)) * table  # the float32 arithmetic of int8_storage._levels
    levels = paddle.clip(paddle.round(scaled), -LEVELS, LEVELS)  # ties away from zero
    quantized = ranges * levels / paddle.full([1], LEVELS, table.dtype)  # a true division, as the rebuild computes
    return quantized.detach() + (table - table.detach())  # exactly `quantized`; gradients straight to `table`


def ternary_rows(table: paddle.Tensor) -> paddle.Tensor:
    """[..., H] rows ternarized as the TI reference's embeddings: TWN of each row clamped to ±2.5
    (ernie_qat.quant.lowbit.twn); gradients pass straight through inside ±2.5."""
    clipped = paddle.clip(table, -TERNARY_CLIP, TERNARY_CLIP)
    return twn(table, axis=-1, clamp=TERNARY_CLIP) + (clipped - clipped.detach())


class QuantizedEmbedding(nn.Layer):
    """An nn.Embedding whose lookups read its table quantized per row (`rows`: `quantize_rows`, int8 levels, or
    `ternary_rows`); same parameter, same name. Rows are quantized independently, so a lookup quantizes the
    rows it reads, [B, L, H], not the whole [V, H] table: the same values and gradients, at a fraction of the
    work (MiniLM's 30,522-word table: 0.3-0.5 s of forward and backward a step, against 0.03 s for a 32 × 64
    batch's rows)."""

    def __init__(self, embedding: nn.Embedding, rows=quantize_rows):
        super().__init__()
        self.weight = embedding.weight
        self._padding_idx = embedding._padding_idx
        self.rows = rows

    def forward(self, ids):
        return self.rows(F.embedding(ids, self.weight, padding_idx=self._padding_idx))

    def plain(self) -> nn.Embedding:
        """An nn.Embedding holding the quantized table, for export."""
        vocab, hidden = self.weight.shape
        embedding = nn.Embedding(vocab, hidden, padding_idx=self._padding_idx)
        with paddle.no_grad():
            embedding.weight.set_value(self.rows(self.weight))
        return embedding
