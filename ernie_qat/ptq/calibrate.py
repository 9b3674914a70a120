"""Calibration: what the inputs of the encoder's Linear layers look like on real batches."""
from dataclasses import dataclass, field
from typing import Dict, Iterable, List

import numpy as np
import paddle
from paddle import nn
from paddle.nn.quant.quant_layers import QuantizedLinear

from ernie_qat.ptq.ocs import OCSLinear


@dataclass
class InputStats:
    """One layer's inputs: the exact max|x| and a uniform sample of values for distribution fits."""
    absmax: float = 0.0
    samples: List[np.ndarray] = field(default_factory=list)

    @property
    def sample(self) -> np.ndarray:
        return np.concatenate(self.samples)


def encoder_layers(model) -> list:
    """(name, layer) of the encoder's Linear layers in model order, or of what replaced them in a quantized
    model under the Linear layer's name: a fake-quant QuantizedLinear (QAT, PTQ), an OCSLinear (OCS)."""
    layers = []
    for name, layer in model.named_sublayers():
        if (name.startswith("net.ernie.encoder.") and isinstance(layer, (nn.Linear, QuantizedLinear, OCSLinear))
                and not (layers and name.startswith(layers[-1][0] + "."))):  # not an OCSLinear's inner layer
            layers.append((name, layer))
    return layers


@paddle.no_grad()
def calibrate(model, batches: Iterable[dict], sample_size: int, seed: int = 0) -> Dict[str, InputStats]:
    """Run `batches` (input_ids, token_type_ids tensors [B, L]) through the model in eval mode.

    Returns:
        encoder Linear name -> InputStats of the layer's input (in a quantized model, before its fake
        quantization and OCS's channel split), `sample_size` values kept per batch.
    """
    rng = np.random.default_rng(seed)
    layers = encoder_layers(model)
    stats = {name: InputStats() for name, _ in layers}

    def observer(name):
        def record(layer, inputs):
            values = inputs[0].numpy().ravel()
            stats[name].absmax = max(stats[name].absmax, float(np.abs(values).max()))
            stats[name].samples.append(rng.choice(values, size=min(sample_size, values.size), replace=False))
        return record

    hooks = [layer.register_forward_pre_hook(observer(name)) for name, layer in layers]
    model.eval()
    try:
        for batch in batches:
            model(batch["input_ids"], batch["token_type_ids"])
    finally:
        for hook in hooks:
            hook.remove()
    return stats
