"""SQuAT (Wang et al. 2022): sharpness- and quantization-aware training as alternating objectives.

This module is one reading of the paper, whose algorithm is not public in code: training
alternates between the sharpness objective on the weights — a SAM step (ernie_qat.optim.sam)
with the quantizers' learned step sizes frozen — and the quantization objective on the step
sizes — a plain step with the weights frozen. Each objective runs for `optimizer.squat_period`
steps before the other takes over, weights first. `objective_at` is the whole schedule: a closer
reading of the paper changes that one function.
"""
from typing import Dict

from ernie_qat.config import ConfigError, SAMConfig
from ernie_qat.optim.sam import SAM, latent_weights
from ernie_qat.quant.quantizers import quantizer_parameters
from ernie_qat.train.hooks import STEP_STRATEGIES, StepStrategy

WEIGHTS, STEP_SIZES = "weights", "step_sizes"


def objective_at(step: int, period: int) -> str:
    """Which parameters step `step` trains: `period` steps of weights, then `period` of step sizes, and so on."""
    return WEIGHTS if (step // period) % 2 == 0 else STEP_SIZES


class SQuAT(StepStrategy):
    """Alternates SAM steps on the weights and plain steps on the step sizes; logs which one ran."""
    name = "squat"

    def __init__(self, sam: SAMConfig, period: int):
        self.sam, self.period = SAM(sam), period

    def setup(self, model) -> None:
        if not quantizer_parameters(model):
            raise ConfigError("`optimizer.method: squat` alternates weights and learned quantizer step sizes, and this "
                              "model has none: set `quant.method: qat` with `quant.weight_quantizer: lsq`")

    def step(self, model, optimizer, closure, step: int) -> Dict[str, float]:
        step_sizes = quantizer_parameters(model)
        if objective_at(step, self.period) == WEIGHTS:
            return {**self.sam.sharpness_step(model, optimizer, closure, frozen=step_sizes), "trains_step_sizes": 0.0}
        closure()
        for weight in latent_weights(model):
            weight.clear_gradient(False)
        optimizer.step()
        return {"trains_step_sizes": 1.0}


@STEP_STRATEGIES.register("squat", section="optimizer")
def build_squat(cfg) -> "SQuAT | None":
    return SQuAT(cfg.optimizer.sam, cfg.optimizer.squat_period) if cfg.optimizer.method == "squat" else None
