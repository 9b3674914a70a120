"""Kurtosis regularization (KURE, Shkolnik et al. 2020) and its ERNIE-aware targets.

Loss `λ · aggregate_over_tensors(gap²)` with Kurt[W] = mean(((W − μ)/σ)⁴) per weight tensor and
aggregate mean, sum or max. Targets:
- `fixed` (KURE): gap = Kurt[W] − K_T, K_T = 1.8 (a uniform distribution's kurtosis);
- `one_sided`: gap = max(Kurt[W] − K_T, 0), only kurtosis above K_T is penalised;
- `relative` (ERNIE-aware): gap = (Kurt[W] − r·K₀) / K₀ with K₀ the tensor's kurtosis when
  training starts and r = `relative_factor`: each tensor is asked for the same relative change
  of its own shape, and weighs the same in the loss whatever its kurtosis. Pre-trained encoders
  have a few FFN output weights with kurtosis in the hundreds or thousands (docs/kurtosis.md):
  under a fixed target their squared gaps (~10⁶) are the whole loss and its gradient.
λ ramps up linearly over `warmup_steps`.
"""
import re
from typing import Dict, List, Tuple

import paddle

from ernie_qat.config import ConfigError, RegularizerConfig
from ernie_qat.train.hooks import LOSS_TERMS, LossTerm


def kurtosis(weight: paddle.Tensor) -> paddle.Tensor:
    """Kurt[W] = mean(((W − mean W) / std W)⁴) over all elements (population std); a scalar tensor.

    The one definition of kurtosis in the toolkit (ernie_qat.analysis.kurtosis uses it too).
    """
    centered = weight - weight.mean()
    variance = (centered * centered).mean()
    return (centered ** 4).mean() / (variance * variance)


class KurtosisRegularizer(LossTerm):
    """A loss term: `(λ · loss, logs)`; logs hold the regularizer loss and each tensor's kurtosis."""

    name = "kurtosis"

    def __init__(self, cfg: RegularizerConfig):
        try:
            self.pattern = re.compile(cfg.include)
        except re.error as error:
            raise ConfigError(f"`regularizer.include`: not a regular expression: {error}") from None
        self.cfg = cfg
        self.start: Dict[str, float] = {}

    def tensors(self, model) -> List[Tuple[str, paddle.Tensor]]:
        """The (name, parameter) pairs the regularizer acts on."""
        chosen = [(name, p) for name, p in model.named_parameters() if self.pattern.search(name)]
        if not chosen:
            raise ConfigError(f"`regularizer.include` {self.cfg.include!r} matches no parameter of the model")
        return chosen

    def setup(self, model) -> None:
        """Record each tensor's kurtosis as training starts (before any resume restores later weights)."""
        with paddle.no_grad():
            self.start = {name: float(kurtosis(weight)) for name, weight in self.tensors(model)}

    def gap(self, name: str, value: paddle.Tensor) -> paddle.Tensor:
        """The signed distance of a tensor's kurtosis `value` from its target (see the module docstring)."""
        if self.cfg.target == "relative":
            return (value - self.cfg.relative_factor * self.start[name]) / self.start[name]
        gap = value - self.cfg.target_kurtosis
        return paddle.nn.functional.relu(gap) if self.cfg.target == "one_sided" else gap

    def weight_at(self, step: int) -> float:
        """λ at `step`: linear ramp from 0 over `warmup_steps`, then constant."""
        ramp = min(1.0, (step + 1) / self.cfg.warmup_steps) if self.cfg.warmup_steps else 1.0
        return self.cfg.weight * ramp

    def __call__(self, model, outputs, batch, step: int):
        penalties, logs = [], {}
        for name, weight in self.tensors(model):
            value = kurtosis(weight)
            gap = self.gap(name, value)
            penalties.append(gap * gap)
            logs[f"kurt/{name}"] = float(value)
        stacked = paddle.stack(penalties)
        loss = {"avg": stacked.mean, "sum": stacked.sum, "max": stacked.max}[self.cfg.aggregation]()
        logs["loss"] = float(loss)
        return self.weight_at(step) * loss, logs


@LOSS_TERMS.register("kurtosis", section="regularizer")
def build_kurtosis(cfg) -> "KurtosisRegularizer | None":
    return KurtosisRegularizer(cfg.regularizer) if cfg.regularizer.method == "kurtosis" else None
