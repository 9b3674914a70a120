"""How sharp a minimum is: the loss increase within a ρ-ball around the weights.

For weights w (the latent float weights, ernie_qat.optim.sam.latent_weights: a quantized model's
loss is that of its fake-quantized forward, in evaluation mode) and a fixed loss L on fixed batches:

    worst case    max over ‖δ‖ ≤ ρ of L(w + δ) − L(w), by projected gradient ascent: `steps` steps
                  of length ρ/steps·2 along the normalized gradient, each projected back on the ball
                  (a lower bound of the true maximum; SAM's ε is its one-step version)
    average       mean over `directions` random Gaussian directions of norm ρ of L(w + δ) − L(w)
    landscape     L(w + α·d) for α in [-2ρ, 2ρ] along a random and the gradient direction (unit norm)

Norms are global over all the weights. With `adaptive`, δ is measured in ASAM's scale-invariant
norm ‖δ / (|w| + η)‖, so that weights of different magnitudes are perturbed alike. The weights are
put back exactly (a saved copy) afterwards.
"""
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Sequence

import numpy as np
import paddle

from ernie_qat.plots import pyplot, write_png


Loss = Callable[[], paddle.Tensor]


@dataclass
class Sharpness:
    loss: float                   # L(w)
    worst_case: float             # max over the ball of L(w + δ) − L(w) found by gradient ascent
    average: float                # mean over random directions on the sphere of radius ρ
    average_std: float
    rho: float
    adaptive: bool
    landscape: Dict[str, List[List[float]]] = field(default_factory=dict)  # direction -> [[α, L], ...]

    def to_dict(self) -> dict:
        return asdict(self)


class _Perturbation:
    """Moves `weights` to w + δ and back; `scale` (|w| + η, or 1) maps the ball's coordinates to weights."""

    def __init__(self, weights: Sequence[paddle.Tensor], adaptive: bool, eta: float):
        self.weights = list(weights)
        self.saved = [w.clone() for w in self.weights]
        self.scale = [w.abs() + eta if adaptive else paddle.ones_like(w) for w in self.saved]

    def set(self, delta: Sequence[paddle.Tensor]) -> None:
        with paddle.no_grad():
            for w, w0, s, d in zip(self.weights, self.saved, self.scale, delta):
                w.set_value(w0 + s * d)

    def restore(self) -> None:
        with paddle.no_grad():
            for w, w0 in zip(self.weights, self.saved):
                w.set_value(w0)


def _norm(tensors: Sequence[paddle.Tensor]) -> float:
    return math.sqrt(sum(float((t * t).sum()) for t in tensors))


def _scaled(tensors: Sequence[paddle.Tensor], factor: float) -> List[paddle.Tensor]:
    return [t * factor for t in tensors]


def _value_and_grad(loss_at: Loss, perturbation: _Perturbation) -> (float, List[paddle.Tensor]):
    """L at the current weights and its gradient in the ball's coordinates (chain rule through `scale`)."""
    for w in perturbation.weights:
        w.clear_gradient(False)
    loss = loss_at()
    loss.backward()
    grads = [(w.grad if w.grad is not None else paddle.zeros_like(w)) * s
             for w, s in zip(perturbation.weights, perturbation.scale)]
    for w in perturbation.weights:
        w.clear_gradient(False)
    return float(loss), grads


def measure(loss_at: Loss, weights: Sequence[paddle.Tensor], rho: float = 0.05, steps: int = 5,
            directions: int = 10, adaptive: bool = False, eta: float = 0.01, landscape_points: int = 0,
            seed: int = 0) -> Sharpness:
    """The measures of the module docstring for the loss `loss_at()` of `weights` (each restored exactly)."""
    perturbation = _Perturbation(weights, adaptive, eta)
    rng = np.random.default_rng(seed)

    def random_direction(norm: float) -> List[paddle.Tensor]:
        d = [paddle.to_tensor(rng.standard_normal(w.shape).astype("float32")) for w in perturbation.weights]
        return _scaled(d, norm / _norm(d))

    try:
        with paddle.no_grad():
            base = float(loss_at())
        # worst case: projected gradient ascent from a small random start (the gradient may vanish at w)
        delta = random_direction(rho * 1e-3)
        for _ in range(steps):
            perturbation.set(delta)
            _, grads = _value_and_grad(loss_at, perturbation)
            delta = [d + g * (2 * rho / steps / (_norm(grads) + 1e-12)) for d, g in zip(delta, grads)]
            delta = _scaled(delta, min(1.0, rho / _norm(delta)))
        perturbation.set(delta)
        with paddle.no_grad():
            worst = float(loss_at()) - base
        increases = []
        for _ in range(directions):
            perturbation.set(random_direction(rho))
            with paddle.no_grad():
                increases.append(float(loss_at()) - base)
        landscape = {}
        if landscape_points:
            perturbation.restore()
            _, grads = _value_and_grad(loss_at, perturbation)
            alphas = np.linspace(-2 * rho, 2 * rho, landscape_points)
            for name, unit in (("random", random_direction(1.0)), ("gradient", _scaled(grads, 1 / (_norm(grads) + 1e-12)))):
                points = []
                for alpha in alphas:
                    perturbation.set(_scaled(unit, float(alpha)))
                    with paddle.no_grad():
                        points.append([float(alpha), float(loss_at())])
                landscape[name] = points
    finally:
        perturbation.restore()
    return Sharpness(loss=base, worst_case=worst, average=float(np.mean(increases)) if increases else 0.0,
                     average_std=float(np.std(increases)) if increases else 0.0, rho=rho, adaptive=adaptive,
                     landscape=landscape)


def markdown(results: Dict[str, Sharpness]) -> str:
    """One row per checkpoint."""
    first = next(iter(results.values()))
    ball = f"ρ = {first.rho}" + (" (adaptive, ‖δ/(|w|+η)‖)" if first.adaptive else " (‖δ‖₂)")
    lines = [f"Loss increase within the ball {ball}:", "",
             "| checkpoint | loss | worst case (gradient ascent) | average over random directions |",
             "|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r.loss:.4f} | {r.worst_case:.4f} | {r.average:.5f} ± {r.average_std:.5f} |")
    return "\n".join(lines) + "\n"


def plot_landscapes(results: Dict[str, Sharpness], path) -> None:
    """1-D loss landscapes along the random and the gradient direction, one line per checkpoint (PNG, atomic)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, direction in zip(axes, ("random", "gradient")):
        for name, r in results.items():
            points = np.array(r.landscape.get(direction, []))
            if len(points):
                ax.plot(points[:, 0], points[:, 1], marker=".", label=name)
        ax.set(title=f"along the {direction} direction", xlabel="α (distance from w)", ylabel="loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    write_png(fig, path)
