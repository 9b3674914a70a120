"""Post-training quantization of a fine-tuned FP32 classifier: `quantize_post_training(model, cfg, stats)`.

The result is the fake-quantized model in PaddleSlim's QAT form, so it is evaluated, saved,
reloaded and exported like a QAT checkpoint:
1. OCS (if `ocs_expand_ratio` > 0) splits the encoder Linear layers (ernie_qat.ptq.ocs);
2. each weight is rounded onto its `weight_bits` grid over the range `weight_range` gives it,
   per tensor or per output channel (ernie_qat.ptq.ranges, aciq);
3. PaddleSlim fake-quant layers wrap the Linear layers, their input scales set from calibration
   (ernie_qat.ptq.calibrate) by `activation_range`.
The checkpoint records `quant.method: ptq`; ernie_qat.ptq.transform rebuilds that form on reload.
"""
from typing import Dict

import numpy as np

from ernie_qat.config import ConfigError, PTQConfig
from ernie_qat.ptq import aciq  # noqa: F401  (registers the ACIQ ranges)
from ernie_qat.ptq.calibrate import InputStats
from ernie_qat.ptq.ocs import OCSLinear, OCSTransform
from ernie_qat.ptq.ranges import RANGES, quant_range
from ernie_qat.ptq.uniform import fake_quantize
from ernie_qat.ptq.transform import PTQTransform


def check_ptq_config(cfg: PTQConfig) -> None:
    """Raises ConfigError for a range method that is not registered or not symmetric where it must be."""
    for key in ("weight_range", "activation_range"):
        RANGES.lookup(getattr(cfg, key), f"ptq.{key}")
    if cfg.activation_range == "minmax":
        raise ConfigError("`ptq.activation_range`: Paddle's activation quantizers are symmetric; "
                          "use absmax or an ACIQ range")


def quantize_post_training(model, cfg: PTQConfig, stats: Dict[str, InputStats]):
    """Quantize the FP32 `model` in place as `cfg` says; `stats` from `calibrate` on the same model."""
    check_ptq_config(cfg)
    axis = 1 if cfg.granularity == "per_channel" else None
    if cfg.ocs_expand_ratio > 0:
        model = OCSTransform(cfg.ocs_expand_ratio).prepare(model)
    for name in stats:
        linear = _linear_at(model, name)
        weight = linear.weight.numpy()
        low, high = quant_range(cfg.weight_range, weight, cfg.weight_bits, axis, "ptq.weight_range")
        linear.weight.set_value(fake_quantize(weight, low, high, cfg.weight_bits))
    model = PTQTransform(cfg).prepare(model)
    for name, layer_stats in stats.items():
        scale = np.array([activation_clip(layer_stats, cfg)], np.float32)
        _linear_at(model, name)._fake_quant_input._scale.set_value(scale)
    return model


def _linear_at(model, name: str):
    """The (possibly fake-quant wrapped) Linear that computes the encoder layer `name`, OCS-split or not."""
    layer = dict(model.named_sublayers())[name]
    return layer.linear if isinstance(layer, OCSLinear) else layer


def activation_clip(stats: InputStats, cfg: PTQConfig) -> float:
    """The symmetric input range ±clip of one layer: `activation_range` on the sample, never past max|x|."""
    if cfg.activation_range == "absmax":
        return stats.absmax
    return min(float(np.max(quant_range(cfg.activation_range, stats.sample, cfg.activation_bits, key="ptq.activation_range")[1])), stats.absmax)
