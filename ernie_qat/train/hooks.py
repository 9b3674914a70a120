"""The training loop's three extension points.

- `LossTerm`: an extra weighted loss (regularizers, distillation), added to the task loss.
- `StepStrategy`: how one optimizer step uses the forward/backward closure (SAM calls it twice).
- `ModelTransform`: rewrites the model once before training (QAT wraps layers in fake-quant).

`Plugins` holds what one run uses. Each method module registers a builder (Config -> plugin, or
None when the config leaves it off) in the matching table; `ernie_qat.plugins` builds them.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Protocol, Tuple

import paddle


class LossTerm(Protocol):
    """May also define `setup(model)`: called once on the model as training starts, before a resume
    restores its weights (a regularizer reads the starting weights there)."""
    name: str

    def __call__(self, model: paddle.nn.Layer, logits: paddle.Tensor, batch: dict,
                 step: int) -> Tuple[paddle.Tensor, Dict[str, float]]:
        """Returns (weighted scalar loss, floats to log as `loss/<name>/<key>`)."""


class ModelTransform(Protocol):
    def prepare(self, model: paddle.nn.Layer) -> paddle.nn.Layer:
        """Rewrite the model before training; returns the model to train."""


class StepStrategy:
    """One optimizer step. `closure()` zeroes nothing: it runs forward, loss terms and backward
    and returns the total loss. The default calls it once and steps."""

    def step(self, model: paddle.nn.Layer, optimizer, closure: Callable[[], paddle.Tensor]) -> paddle.Tensor:
        loss = closure()
        optimizer.step()
        return loss


@dataclass
class Plugins:
    transforms: List[ModelTransform] = field(default_factory=list)
    loss_terms: List[LossTerm] = field(default_factory=list)
    step_strategy: StepStrategy = field(default_factory=StepStrategy)


# Builders registered by method modules: each takes the Config and returns a plugin or None (disabled).
TRANSFORMS: Dict[str, Callable] = {}
LOSS_TERMS: Dict[str, Callable] = {}
STEP_STRATEGIES: Dict[str, Callable] = {}

