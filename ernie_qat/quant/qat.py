"""Quantization-aware training: PaddleSlim's dygraph QAT applied as the training loop's model transform.

Encoder Linear layers get per-channel abs-max weight fake-quantization and moving-average
abs-max activation fake-quantization (configurable in `quant:`); the pooler and classifier are
quantized on request. `onnx_format` stays False: its models read correctly in both the FP32 and
the oneDNN INT8 predictor (../shared/STACK.md, pitfall 9). Weights are per-tensor by default:
Paddle 2.6's INT8 pass mis-scales per-channel fc weights (ernie_qat.quant.onednn).
"""
import copy
import warnings

import paddleslim
from paddle.nn.quant.quant_layers import MAOutputScaleLayer

from ernie_qat.config import QuantConfig
from ernie_qat.models.classifier import INPUT_SPEC, replace_sublayer
from ernie_qat.quant.onednn import pin_trained_scales
from ernie_qat.quant.quantizers import quantizer_layer
from ernie_qat.train.hooks import TRANSFORMS


class QATTransform:
    """`prepare(model)` wraps the model's Linear layers in fake-quant layers, in place."""

    def __init__(self, cfg: QuantConfig):
        self.cfg = cfg
        self.qat = paddleslim.QAT(
            config={"weight_quantize_type": cfg.weight_quantize_type,
                    "activation_quantize_type": cfg.activation_quantize_type,
                    "weight_bits": cfg.weight_bits, "activation_bits": cfg.activation_bits,
                    "moving_rate": cfg.moving_rate, "quantizable_layer_type": ["Linear"],
                    "onnx_format": False},
            weight_quantize=quantizer_layer(cfg.weight_quantizer, "quant.weight_quantizer"),
            act_quantize=quantizer_layer(cfg.activation_quantizer, "quant.activation_quantizer"))

    def prepare(self, model):
        model.net.ernie.pooler.dense.skip_quant = not self.cfg.quantize_pooler
        model.net.classifier.skip_quant = not self.cfg.quantize_classifier
        self.qat.quantize(model)
        _drop_output_observers(model)
        return model

    def save_inference_model(self, model, prefix: str) -> None:
        """Write `prefix.pdmodel` / `prefix.pdiparams` with fake-quant ops for the INT8 predictor."""
        model = copy.deepcopy(model)  # to_static rewrites the layer it is given (STACK.md, pitfall 8)
        model.eval()
        self.qat.save_quantized_model(model, prefix, input_spec=INPUT_SPEC)
        if self.cfg.weight_quantize_type == "abs_max":
            pin_trained_scales(prefix)
        else:
            warnings.warn("per-channel weights: Paddle 2.6's oneDNN INT8 pass quantizes fc weights with scales read "
                          "along the wrong axis, so the INT8 model differs from the trained one (see --verify); "
                          "`quant.weight_quantize_type: abs_max` exports exactly", stacklevel=2)


def _drop_output_observers(model) -> None:
    """Unwrap the output-scale observers PaddleSlim puts around every layer.

    Export drops the scales they record (ernie_qat.quant.onednn), and they cost a reduction over
    every layer's output each step: a QAT step 3.86 s with them, 3.61 s without (FP32: 3.3 s).
    """
    observed = [name for name, layer in model.named_sublayers() if isinstance(layer, MAOutputScaleLayer)]
    layers = dict(model.named_sublayers())
    for name in sorted(observed, key=lambda n: n.count("."), reverse=True):  # innermost first: outer names stay valid
        replace_sublayer(model, name, layers[name]._layer)


def build_qat(cfg) -> "QATTransform | None":
    return QATTransform(cfg.quant) if cfg.quant.method == "qat" else None


TRANSFORMS["qat"] = build_qat
