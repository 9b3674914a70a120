"""The form a post-training quantized checkpoint is stored, reloaded and exported in (`quant.method: ptq`).

`ernie_qat.ptq.quantize` rounds the weights and sets the activation scales; this structural
transform rebuilds the fake-quant wrapping around them on reload: PaddleSlim's QAT layers with
the 8-bit settings of `ptq:`. Where the weights are 8-bit symmetric per tensor, PaddleSlim's
abs-max weight quantizer reproduces their grid exactly and the model exports to oneDNN INT8;
otherwise the weights are used as stored (they already lie on their grid) and the model is
evaluated in fake quantization only.
"""
from paddle import nn
from paddle.nn.quant.quant_layers import QuantizedLinear

from ernie_qat.config import PTQConfig, QuantConfig
from ernie_qat.quant.qat import QATTransform
from ernie_qat.train.hooks import STRUCTURAL, TRANSFORMS, ModelTransform


def deployable(cfg: PTQConfig) -> bool:
    """Whether Paddle's oneDNN INT8 predictor runs these weights as quantized: 8-bit, symmetric, per tensor."""
    return (cfg.weight_bits == 8 and cfg.activation_bits == 8 and cfg.granularity == "per_tensor"
            and cfg.weight_range != "minmax")


def recorded_quant_config(cfg: PTQConfig) -> QuantConfig:
    """The `quant:` section a PTQ checkpoint records: method ptq and its bit widths (the rest is in `ptq:`)."""
    return QuantConfig(method="ptq", weight_bits=cfg.weight_bits, activation_bits=cfg.activation_bits)


class OnGrid(nn.Layer):
    """Weight 'quantizer' of weights that post-training quantization already put on their grid."""

    def forward(self, weight):
        return weight


class PTQTransform(ModelTransform):
    """Wraps the Linear layers in PaddleSlim's fake-quant layers as post-training quantization left them."""
    name, order, quantizes = "ptq", 20, True

    def __init__(self, cfg: PTQConfig):
        self.cfg = cfg
        self.qat = QATTransform(QuantConfig(method="qat", weight_bits=cfg.weight_bits,
                                            activation_bits=cfg.activation_bits))

    def prepare(self, model):
        model = self.qat.prepare(model)
        if not deployable(self.cfg):
            for layer in model.sublayers():
                if isinstance(layer, QuantizedLinear):
                    layer._fake_quant_weight = OnGrid()
        return model

    def convert(self, model, prefix: str) -> bool:
        return self.qat.convert(model, prefix)

    def int8_blocker(self):
        if self.cfg.weight_bits != 8 or self.cfg.activation_bits != 8:
            return self.qat.int8_blocker()
        if not deployable(self.cfg):
            return ("it holds post-training quantized weights that are not 8-bit symmetric per tensor (per-channel "
                    "or asymmetric ranges): Paddle's INT8 predictor cannot run them as quantized; evaluate it in "
                    "fake quantization")
        return None


@TRANSFORMS.register("ptq", section="quant", role=STRUCTURAL)
def build_ptq(cfg) -> "PTQTransform | None":
    return PTQTransform(cfg.ptq) if cfg.quant.method == "ptq" else None
