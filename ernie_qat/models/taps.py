"""The student's training forward: what plugins can read (`Outputs`) and replace (interventions).

`TapsTransform`, a training-only model transform, gives the encoder named points (`POINTS`):
each encoder layer becomes `EncoderLayer` and its self-attention `Attention` (the same computation
as Paddle's post-norm `TransformerEncoderLayer` and `MultiHeadAttention`, same sublayer and parameter
names, with the points in the middle of it), and a forward post-hook on the embeddings exposes
the first hidden state. At every point the forward
calls `Taps`, which (1) records the student's own tensor if a loss term asked for it, and (2)
hands it to the interventions active at this step, continuing with their result as a fresh
leaf. A teacher (ernie_qat.distill.teacher) leaves its `Outputs` on this step's batch in
`taps.teacher`, where loss terms and interventions read them. With nothing
asked and no intervention active, a point is a dictionary lookup: the numbers are the ones of
Paddle's forward, op for op. `forward_outputs(model, batch, needs)` runs the model and returns
the `Outputs` record; export keeps the logits-only `TextClassifier.forward`.
"""
import contextlib
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional

import paddle
from paddle import nn
from paddle.nn.layer.transformer import _convert_attention_mask

from ernie_qat.quant.attention import QUANTIZED
from ernie_qat.train.hooks import TRAINING, TRANSFORMS, Intervention, ModelTransform, PluginError
from ernie_qat.train.parallel import unwrap

# Points of encoder layer i (hidden: i = 0 embeddings, i = k output of layer k - 1).
POINTS = ("hidden",               # [B, L, H] hidden state
          "attention.qk_input",   # [B, L, H] input of the Q and K projections
          "attention.v_input",    # [B, L, H] input of the V projection
          "attention.scores",     # [B, heads, L, L] q·kᵀ/√d, before the padding mask
          "attention.probs",      # [B, heads, L, L] softmax of the masked scores, before dropout
          "attention.context",    # [B, L, H] heads merged: the input of out_proj
          "attention.projection",  # [B, L, H] output of out_proj (before dropout, the residual and LayerNorm)
          "attention.output")     # [B, L, H] the attention block's output: LayerNorm(input + dropout(projection))
# Outputs field -> the point it records.
OUTPUT_POINTS = {"hidden_states": "hidden", "attention_scores": "attention.scores",
                 "attention_probs": "attention.probs", "attention_contexts": "attention.context",
                 "attention_projections": "attention.projection", "attention_outputs": "attention.output"}


@dataclass
class Outputs:
    """What the training forward returns: logits [B, C] always, the rest only when asked for
    (lists over layers: hidden_states has L + 1 entries, the attention fields L)."""
    logits: paddle.Tensor
    hidden_states: Optional[List[paddle.Tensor]] = None
    attention_scores: Optional[List[paddle.Tensor]] = None
    attention_probs: Optional[List[paddle.Tensor]] = None
    attention_contexts: Optional[List[paddle.Tensor]] = None
    attention_projections: Optional[List[paddle.Tensor]] = None
    attention_outputs: Optional[List[paddle.Tensor]] = None


def fresh_leaf(tensor: paddle.Tensor) -> paddle.Tensor:
    """`tensor` cut from its graph as a new leaf that still takes a gradient.

    A plain `.detach()` (stop_gradient True) fed into QAT's straight-through quantizers made
    backward fail once an intervention was switched off ("No Output(X@GRAD)"); a leaf does not.
    """
    leaf = tensor.detach()
    leaf.stop_gradient = False
    return leaf


class Taps:
    """The points' dispatcher: recording first, then interventions; `session` scopes one forward."""

    def __init__(self, num_layers: int):
        self.num_layers = num_layers
        self.interventions: List[Intervention] = []
        self.teacher: Optional[Outputs] = None  # the teacher's outputs on this step's batch, per student layer
        self._active: List[Intervention] = []
        self._recording: Dict[str, Dict[int, paddle.Tensor]] = {}

    def __call__(self, point: str, layer: int, tensor: paddle.Tensor) -> paddle.Tensor:
        if point in self._recording:
            self._recording[point][layer] = tensor
        for intervention in self._active:
            if intervention.point == point and (intervention.layers is None or layer in intervention.layers):
                tensor = fresh_leaf(intervention.replace(tensor, layer))
        return tensor

    @contextlib.contextmanager
    def session(self, needs: FrozenSet[str] = frozenset(), step: Optional[int] = None):
        """Within the block, interventions active at `step` run (none if step is None) and the
        points behind `needs` are recorded; yields the dict the records land in."""
        unknown = set(needs) - set(OUTPUT_POINTS)
        if unknown:
            raise PluginError(f"unknown forward outputs {sorted(unknown)}; available: {sorted(OUTPUT_POINTS)}")
        self._recording = {OUTPUT_POINTS[name]: {} for name in needs}
        self._active = [] if step is None else [i for i in self.interventions if i.active(step)]
        try:
            yield self._recording
        finally:
            self._recording, self._active = {}, []


class Attention(nn.Layer):
    """Paddle's `MultiHeadAttention` forward for self-attention, with the taps of `POINTS`.

    Built from a MultiHeadAttention (or a QuantizedAttention, whose quantizers of Q, K, V and the
    probabilities it applies where that does, ernie_qat.quant.attention), it takes over its
    q/k/v/out projections (quantized or not) under the same names, so parameters, state-dict keys
    and the arithmetic are unchanged: x [B, L, H] -> out [B, L, H].
    """

    def __init__(self, attention: nn.MultiHeadAttention, taps: Taps, layer: int):
        super().__init__()
        self.num_heads, self.head_dim = attention.num_heads, attention.head_dim
        self.need_weights = False
        self.q_proj, self.k_proj = attention.q_proj, attention.k_proj
        self.v_proj, self.out_proj = attention.v_proj, attention.out_proj
        for name in QUANTIZED:  # identity where the attention quantizes nothing
            setattr(self, name, getattr(attention, name, None) or nn.Identity())
        self.softmax = nn.Softmax(axis=-1)
        self.dropout = nn.Dropout(attention.dropout, mode="upscale_in_train") if attention.dropout else None
        self.taps, self.layer = taps, layer

    def _split_heads(self, x):
        """[B, L, H] -> [B, heads, L, head_dim]."""
        return paddle.transpose(paddle.reshape(x, [0, 0, self.num_heads, self.head_dim]), [0, 2, 1, 3])

    def forward(self, query, key=None, value=None, attn_mask=None, cache=None):
        if cache is not None or (key is not None and key is not query):
            raise NotImplementedError("Attention taps support the encoder's self-attention only")
        tap, layer = self.taps, self.layer
        x, x_v = tap("attention.qk_input", layer, query), tap("attention.v_input", layer, query)
        q, k = self.q_quant(self._split_heads(self.q_proj(x))), self.k_quant(self._split_heads(self.k_proj(x)))
        v = self.v_quant(self._split_heads(self.v_proj(x_v)))
        scores = tap("attention.scores", layer, paddle.matmul(q * (self.head_dim ** -0.5), k, transpose_y=True))
        if attn_mask is not None:
            scores = scores + attn_mask
        probs = tap("attention.probs", layer, self.softmax(scores))
        if self.dropout is not None:
            probs = self.dropout(probs)
        context = paddle.transpose(paddle.matmul(self.probs_quant(probs), v), [0, 2, 1, 3])
        context = tap("attention.context", layer, paddle.reshape(context, [0, 0, context.shape[2] * context.shape[3]]))
        out = tap("attention.projection", layer, self.out_proj(context))
        return (out, probs) if self.need_weights else out


class EncoderLayer(nn.Layer):
    """Paddle's post-norm `TransformerEncoderLayer` forward with the points "attention.output" (the attention
    block's output, after the residual add and LayerNorm, so after any intervention before it) and "hidden"
    (the layer's output). It takes over the layer's sublayers under the same names: src [B, L, H] -> [B, L, H]."""

    def __init__(self, layer: nn.TransformerEncoderLayer, taps: Taps, index: int):
        super().__init__()
        if layer.normalize_before:
            raise PluginError("forward taps support post-norm encoder layers (ERNIE's) only")
        self.self_attn = Attention(layer.self_attn, taps, index)
        self.linear1, self.linear2, self.norm1, self.norm2 = layer.linear1, layer.linear2, layer.norm1, layer.norm2
        self.dropout, self.dropout1, self.dropout2 = layer.dropout, layer.dropout1, layer.dropout2
        self.activation = layer.activation
        self.taps, self.index = taps, index

    def forward(self, src, src_mask=None, cache=None, output_attentions=False):
        if cache is not None or output_attentions:
            raise NotImplementedError("forward taps run the encoder without a cache or attention outputs")
        src_mask = _convert_attention_mask(src_mask, src.dtype)
        attended = self.norm1(src + self.dropout1(self.self_attn(src, src, src, src_mask)))
        attended = self.taps("attention.output", self.index, attended)
        out = self.norm2(attended + self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(attended))))))
        return self.taps("hidden", self.index + 1, out)


class TapsTransform(ModelTransform):
    """Training-only: installs the points of `POINTS` on the student and gives it `.taps`."""
    name, role, order = "taps", TRAINING, 80

    def prepare(self, model):
        encoder_layers = model.net.ernie.encoder.layers
        taps = Taps(len(encoder_layers))
        model.net.ernie.embeddings.register_forward_post_hook(
            lambda layer, inputs, output: taps("hidden", 0, output))
        for index in range(len(encoder_layers)):
            encoder_layers[index] = EncoderLayer(encoder_layers[index], taps, index)
        model.taps = taps
        return model


def taps_of(model) -> Taps:
    """The `Taps` of a student prepared by `TapsTransform` (through a `paddle.DataParallel` wrapper too)."""
    taps = getattr(unwrap(model), "taps", None)
    if taps is None:
        raise PluginError("this model has no forward taps: build it with the training plugins (TapsTransform)")
    return taps


def forward_outputs(model, batch: dict, needs: FrozenSet[str] = frozenset(), step: Optional[int] = None) -> Outputs:
    """Run `model` (the student, or its DataParallel wrapper) on `batch`; interventions of `step` apply.

    A model without taps (no TapsTransform) gives logits only, and an error if more is needed.
    """
    if not needs and getattr(unwrap(model), "taps", None) is None:
        return Outputs(logits=model(batch["input_ids"], batch["token_type_ids"]))
    with taps_of(model).session(needs, step) as records:
        logits = model(batch["input_ids"], batch["token_type_ids"])
    fields = {name: [records[point][i] for i in sorted(records[point])]
              for name, point in OUTPUT_POINTS.items() if point in records}
    return Outputs(logits=logits, **fields)


@TRANSFORMS.register("taps", role=TRAINING)
def build_taps(cfg) -> TapsTransform:
    return TapsTransform()
