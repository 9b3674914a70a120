"""Sharpness-aware minimization (Foret et al. 2021) and ASAM (Kwon et al. 2021) as an optimizer-step strategy.

One step around the configured optimizer (AdamW):
  1. gradient g at the weights w (the closure: forward, loss terms, backward);
  2. ascend to w + ε: SAM ε = ρ·g/‖g‖, ASAM ε = ρ·T²g/‖Tg‖ with T = |w| + η (norms global over
     the perturbed parameters);
  3. gradient at w + ε: the same batch, the same dropout masks (the random state is replayed),
     quantizer statistics frozen (no observer moves on this pass);
  4. put back w exactly (a saved copy, not w + ε − ε) and let the optimizer step with that gradient
     (its gradient clipping applies to it).
Only the latent float weights are perturbed: a quantizer's learned step sizes and its observers
are not. Loss terms are part of both passes' loss; a teacher runs once per step (`on_batch`),
not again for the second pass. Defaults from the papers: ρ = 0.05 (SAM), 0.5 and η = 0.01 (ASAM).
"""
import time
from typing import Dict, List, Sequence, Tuple

import paddle

from ernie_qat.config import SAMConfig
from ernie_qat.quant.quantizers import frozen_statistics, quantizer_parameters
from ernie_qat.train.hooks import STEP_STRATEGIES, StepStrategy

DEFAULT_RHO = {False: 0.05, True: 0.5}  # SAM, ASAM


def ascent(weights: Sequence[paddle.Tensor], grads: Sequence[paddle.Tensor], rho: float, adaptive: bool = False,
           eta: float = 0.01) -> Tuple[List[paddle.Tensor], float]:
    """ε for each weight, ρ·g/‖g‖ (SAM) or ρ·T²g/‖Tg‖ with T = |w| + η (ASAM), and the norm it divides by
    (‖g‖ or ‖Tg‖, global over all of them)."""
    if adaptive:
        scales = [w.abs() + eta for w in weights]
        scaled = [t * g for t, g in zip(scales, grads)]
        norm = paddle.sqrt(sum((s * s).sum() for s in scaled))
        return [rho * t * s / (norm + 1e-12) for t, s in zip(scales, scaled)], float(norm)
    norm = paddle.sqrt(sum((g * g).sum() for g in grads))
    return [rho * g / (norm + 1e-12) for g in grads], float(norm)


def latent_weights(model) -> List[paddle.Tensor]:
    """The trainable parameters SAM perturbs: all but the quantizers' own (step sizes)."""
    skip = {id(p) for p in quantizer_parameters(model)}
    return [p for p in model.parameters() if not p.stop_gradient and id(p) not in skip]


class SAM(StepStrategy):
    """The step of the module docstring; logs the ascent pass's loss, the norm ε divides by and the time ratio
    to a plain step (the first pass plus the optimizer update)."""
    name = "sam"

    def __init__(self, cfg: SAMConfig):
        self.rho = cfg.rho or DEFAULT_RHO[cfg.adaptive]
        self.adaptive, self.eta = cfg.adaptive, cfg.eta

    def step(self, model, optimizer, closure, step: int) -> Dict[str, float]:
        return self.sharpness_step(model, optimizer, closure)

    def sharpness_step(self, model, optimizer, closure, frozen: Sequence[paddle.Tensor] = ()) -> Dict[str, float]:
        """The SAM step; `frozen` parameters are not updated (their gradients are dropped before the update)."""
        started = time.perf_counter()
        random_state = paddle.get_rng_state()
        closure()
        first_pass = time.perf_counter() - started
        weights = [w for w in latent_weights(model) if w.grad is not None]
        grads = [w.grad for w in weights]
        with paddle.no_grad():
            saved = [w.clone() for w in weights]
            epsilons, grad_norm = ascent(weights, grads, self.rho, self.adaptive, self.eta)
            for w, e in zip(weights, epsilons):
                w.set_value(w + e)
        optimizer.clear_grad()
        paddle.set_rng_state(random_state)  # the same dropout masks as the first pass
        with frozen_statistics(model):
            ascent_loss = float(closure())
        with paddle.no_grad():
            for w, original in zip(weights, saved):
                w.set_value(original)
        for param in frozen:
            param.clear_gradient(False)  # no gradient: the optimizer skips it (no moment or decay update)
        update = time.perf_counter()
        optimizer.step()
        finished = time.perf_counter()
        plain = first_pass + (finished - update)
        return {"ascent_loss": ascent_loss, "grad_norm": grad_norm, "time_vs_plain": (finished - started) / plain}


@STEP_STRATEGIES.register("sam", section="optimizer")
def build_sam(cfg) -> "SAM | None":
    return SAM(cfg.optimizer.sam) if cfg.optimizer.method == "sam" else None
