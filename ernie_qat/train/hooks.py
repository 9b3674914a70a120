"""The training loop's three extension points.

- `LossTerm`: an extra weighted loss (regularizers, distillation), added to the task loss.
- `StepStrategy`: how one optimizer step uses the forward/backward closure (SAM calls it twice).
- `ModelTransform`: rewrites the model once before training (QAT wraps layers in fake-quant).

`Plugins` holds what one run uses; `build_plugins(cfg)` reads it from the config sections, and
each method module registers its builder in the matching table.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Protocol, Tuple

import paddle


class LossTerm(Protocol):
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


def build_plugins(cfg) -> Plugins:
    """The plugins the config enables, in registration order."""
    strategies = [s for s in (build(cfg) for build in STEP_STRATEGIES.values()) if s is not None]
    if len(strategies) > 1:
        raise ValueError(f"more than one optimizer-step strategy enabled: {strategies}")
    plugins = Plugins(
        transforms=[t for t in (build(cfg) for build in TRANSFORMS.values()) if t is not None],
        loss_terms=[t for t in (build(cfg) for build in LOSS_TERMS.values()) if t is not None])
    if strategies:
        plugins.step_strategy = strategies[0]
    return plugins
