"""Quantization-aware training: PaddleSlim's dygraph QAT as a structural model transform.

Encoder Linear layers get abs-max weight fake-quantization (per tensor by default, per output
channel with `weight_quantize_type: channel_wise_abs_max`) and moving-average abs-max activation
fake-quantization, as configured in `quant:`; the pooler and classifier are quantized on request.
A registered quantizer layer (ernie_qat.quant.quantizers) replaces PaddleSlim's for weights or
activations, built per layer from its spec. `onnx_format` stays False: its models read correctly
in both the FP32 and the oneDNN INT8 predictor (../shared/STACK.md, pitfall 9). Per tensor is the
default because Paddle 2.6's INT8 pass mis-scales per-channel fc weights (ernie_qat.quant.onednn).

INT8 export takes 8-bit activations from PaddleSlim's quantizer and 8-bit weights from PaddleSlim's,
or per-tensor weights from a registered quantizer whose output lies on an 8-bit grid
(`int8_weight`: lsq at 2..8 bits, ternary): those are saved quantized, behind PaddleSlim's 8-bit
weight fake-quant with the grid's range pinned, so INT8 computes the trained low-bit weights.
Per-tensor weights are stored as int8 (ernie_qat.quant.int8_storage); per-channel ones as float32.
With `quantize_embeddings` the word table is trained on int8 levels per row and stored as int8 too
(ernie_qat.quant.embedding); with `quantize_attention` the inputs of the attention matmuls get moving-average
quantizers as well, and INT8 runs both matmuls on int8 (ernie_qat.quant.attention).
"""
import copy
import logging
import warnings
from typing import Dict

import paddleslim
from paddle.nn.quant.quant_layers import (FakeQuantAbsMax, FakeQuantMovingAverageAbsMax, MAOutputScaleLayer,
                                          QuantizedLinear)

from ernie_qat.config import QuantConfig
from ernie_qat.models.classifier import INPUT_SPEC, replace_sublayer
from ernie_qat.quant.int16_pairs import pair_int8_weights
from ernie_qat.quant.attention import QuantizedAttention
from ernie_qat.quant.embedding import QuantizedEmbedding, quantize_rows, ternary_rows
from ernie_qat.quant.int8_storage import store_int8_embeddings, store_int8_weights
from ernie_qat.quant.lowbit import TernaryQuantizer
from ernie_qat.quant.onednn import pin_trained_scales
from ernie_qat.quant.quantizers import QUANTIZER_LAYERS, QuantizerSpec, build_quantizer, quantizer_parameters
from ernie_qat.quant.saved_model import opened_model
from ernie_qat.train.hooks import STRUCTURAL, TRANSFORMS, ModelTransform, ParamGroup


class QATTransform(ModelTransform):
    """`prepare(model)` wraps the model's Linear layers in fake-quant layers, in place; `convert` exports them."""
    name, order, quantizes = "qat", 20, True

    def __init__(self, cfg: QuantConfig):
        self.cfg = cfg
        for key in ("weight_quantizer", "activation_quantizer"):
            if getattr(cfg, key):
                QUANTIZER_LAYERS.lookup(getattr(cfg, key), f"quant.{key}")
        self.qat = paddleslim.QAT(config={
            "weight_quantize_type": cfg.weight_quantize_type, "activation_quantize_type": cfg.activation_quantize_type,
            "weight_bits": cfg.weight_bits, "activation_bits": cfg.activation_bits, "moving_rate": cfg.moving_rate,
            "quantizable_layer_type": ["Linear"], "onnx_format": False})

    def prepare(self, model):
        reference = self.cfg.scope == "reference"
        model.net.ernie.pooler.dense.skip_quant = not (self.cfg.quantize_pooler or reference)
        model.net.classifier.skip_quant = not self.cfg.quantize_classifier
        self.qat.quantize(model)
        _drop_output_observers(model)
        embeddings = model.net.ernie.embeddings
        if reference or self.cfg.quantize_attention:
            make_quantizer = self._activation_quantizer if reference else self._attention_quantizer
            for encoder_layer in model.net.ernie.encoder.layers:
                encoder_layer.self_attn = QuantizedAttention(encoder_layer.self_attn, make_quantizer)
        if reference:  # the TI reference's word table
            weights = QUANTIZER_LAYERS.get(self.cfg.weight_quantizer)
            rows = ternary_rows if weights and issubclass(weights, TernaryQuantizer) else quantize_rows
            embeddings.word_embeddings = QuantizedEmbedding(embeddings.word_embeddings, rows)
        elif self.cfg.quantize_embeddings:
            embeddings.word_embeddings = QuantizedEmbedding(embeddings.word_embeddings)
        for layer in model.sublayers():
            if isinstance(layer, QuantizedLinear):
                self._use_registered_quantizers(layer)
        return model

    def _activation_quantizer(self):
        """The registered activation quantizer of the config (the reference scope's `clipped_absmax` by default)."""
        cfg = self.cfg
        name = cfg.activation_quantizer or "clipped_absmax"
        return build_quantizer(name, QuantizerSpec("activation", cfg.activation_bits, moving_rate=cfg.moving_rate),
                               None, "quant.activation_quantizer")

    def _attention_quantizer(self):
        """A quantizer of an attention matmul's input (`quantize_attention`): the registered activation quantizer if
        one is configured, else a moving-average abs-max one, whose range INT8 export keeps (ernie_qat.quant.attention)."""
        cfg = self.cfg
        if cfg.activation_quantizer:
            return self._activation_quantizer()
        return FakeQuantMovingAverageAbsMax(moving_rate=cfg.moving_rate, quant_bits=cfg.activation_bits)

    def _use_registered_quantizers(self, layer: QuantizedLinear) -> None:
        """Replace PaddleSlim's quantizers of `layer` by the configured registered ones, built for its shapes."""
        cfg = self.cfg
        if cfg.weight_quantizer:
            spec = QuantizerSpec("weight", cfg.weight_bits, cfg.weight_quantize_type == "channel_wise_abs_max",
                                 tuple(layer.weight.shape), cfg.moving_rate)
            layer._fake_quant_weight = build_quantizer(cfg.weight_quantizer, spec, layer.weight, "quant.weight_quantizer")
        if cfg.activation_quantizer or cfg.scope == "reference":
            layer._fake_quant_input = self._activation_quantizer()

    def param_groups(self, model):
        params = quantizer_parameters(model)
        return [ParamGroup(params, weight_decay=False, lr_scale=self.cfg.quantizer_lr_scale)] if params else []

    def int8_blocker(self):
        cfg = self.cfg
        bits = f"W{cfg.weight_bits}A{cfg.activation_bits}"
        if cfg.scope == "reference":
            return ("it is quantized in the TI reference's scope (`quant.scope: reference`): activations, the "
                    "attention matmuls' inputs among them, with a range per batch, which Paddle's INT8 predictor does "
                    "not run as trained (its activation ranges are fixed); evaluate it in fake quantization, or train "
                    "in our scope, where `quant.quantize_attention` quantizes the attention matmuls with fixed ranges")
        if cfg.activation_quantizer:
            return (f"its activations use the registered quantizer `{cfg.activation_quantizer}`: Paddle's INT8 "
                    "predictor quantizes an activation with one fixed range to -127..127 steps, which neither "
                    "dynamic_absmax (a range per batch) nor lsq (clipped to -2^(b-1)..2^(b-1)-1 steps) reproduces; "
                    "evaluate it in fake quantization, or train with PaddleSlim's 8-bit activation quantizer "
                    "(`quant.activation_quantizer: \"\"`)")
        if cfg.activation_bits != 8:
            return (f"it is quantized to {bits}: Paddle's INT8 predictor runs 8-bit activations only; evaluate it "
                    "in fake quantization")
        if not cfg.weight_quantizer:
            if cfg.weight_bits != 8:
                return (f"it is quantized to {bits} with PaddleSlim's weight quantizer, whose low-bit weights are "
                        "not exported to INT8 (the registered lsq and ternary weight quantizers are); evaluate it "
                        "in fake quantization")
            return None
        if not hasattr(QUANTIZER_LAYERS.lookup(cfg.weight_quantizer, "quant.weight_quantizer"), "int8_weight"):
            return (f"its weight quantizer `{cfg.weight_quantizer}` has no INT8 form (no `int8_weight`, "
                    "ernie_qat.quant.quantizers); evaluate it in fake quantization")
        if cfg.weight_quantize_type != "abs_max":
            return (f"its {bits} weights (`{cfg.weight_quantizer}`) are quantized per output channel, and Paddle "
                    "2.6's oneDNN INT8 pass reads per-channel fc weight scales along the wrong axis "
                    "(ernie_qat.quant.onednn); train with `quant.weight_quantize_type: abs_max` to export them, "
                    "or evaluate it in fake quantization")
        return None

    def convert(self, model, prefix: str) -> bool:
        """Write `prefix.pdmodel` / `prefix.pdiparams` with fake-quant ops for the INT8 predictor."""
        model = copy.deepcopy(model)  # to_static rewrites the layer it is given (STACK.md, pitfall 8)
        model.eval()
        per_tensor = self.cfg.weight_quantize_type == "abs_max"
        ranges = _weights_on_int8_grid(model) if per_tensor else {}
        tables = set()
        embeddings = model.net.ernie.embeddings
        if isinstance(embeddings.word_embeddings, QuantizedEmbedding):
            embeddings.word_embeddings = embeddings.word_embeddings.plain()
            tables.add(embeddings.word_embeddings.weight.name)
        if per_tensor:
            unpaired = pair_int8_weights(model.net.ernie, ranges)
            if unpaired is None:
                warnings.warn("the encoder's layers are not plain Linear layers (OCS?): their dimensions keep their "
                              "order, and weight pairs may overflow int16 in oneDNN's int8 GEMM on CPUs without VNNI "
                              "(ernie_qat.quant.int16_pairs)", stacklevel=2)
            elif unpaired:
                warnings.warn(f"{unpaired} neighbouring weight pairs can overflow int16 in oneDNN's int8 GEMM on CPUs "
                              "without VNNI (ernie_qat.quant.int16_pairs)", stacklevel=2)
        deprecation = logging.getLogger("paddle.static.io")  # PaddleSlim reloads the model the deprecated way
        level = deprecation.level
        deprecation.setLevel(logging.ERROR)
        try:
            self.qat.save_quantized_model(model, prefix, input_spec=INPUT_SPEC)
        finally:
            deprecation.setLevel(level)
        if per_tensor:
            with opened_model(prefix) as saved:
                pin_trained_scales(saved, ranges)
                store_int8_weights(saved)
                store_int8_embeddings(saved, tables)
                saved.save(prefix)
        else:
            warnings.warn("per-channel weights: Paddle 2.6's oneDNN INT8 pass quantizes fc weights with scales read "
                          "along the wrong axis, so the INT8 model differs from the trained one; "
                          "`quant.weight_quantize_type: abs_max` exports exactly", stacklevel=2)
        return True


def _weights_on_int8_grid(model) -> Dict[str, float]:
    """Store each weight whose quantizer has an `int8_weight` quantized, behind PaddleSlim's 8-bit abs-max weight
    fake-quant (its saved op, pinned by ernie_qat.quant.onednn); returns their INT8 ranges by parameter name.

    The names are those of `model`'s own parameters (a deep copy renames them), which the saved program keeps.
    """
    ranges = {}
    for layer in model.sublayers():
        if isinstance(layer, QuantizedLinear) and hasattr(layer._fake_quant_weight, "int8_weight"):
            quantized, ranges[layer.weight.name] = layer._fake_quant_weight.int8_weight(layer.weight)
            layer.weight.set_value(quantized)
            layer._fake_quant_weight = FakeQuantAbsMax(name=layer.weight.name, quant_bits=8, quant_on_weight=True)
    return ranges


def _drop_output_observers(model) -> None:
    """Unwrap the output-scale observers PaddleSlim puts around every layer.

    Export drops the scales they record (ernie_qat.quant.onednn), and they cost a reduction over
    every layer's output each step: a QAT step 3.86 s with them, 3.61 s without (FP32: 3.3 s).
    """
    observed = [name for name, layer in model.named_sublayers() if isinstance(layer, MAOutputScaleLayer)]
    layers = dict(model.named_sublayers())
    for name in sorted(observed, key=lambda n: n.count("."), reverse=True):  # innermost first: outer names stay valid
        replace_sublayer(model, name, layers[name]._layer)


@TRANSFORMS.register("qat", section="quant", role=STRUCTURAL)
def build_qat(cfg) -> "QATTransform | None":
    return QATTransform(cfg.quant) if cfg.quant.method == "qat" else None
