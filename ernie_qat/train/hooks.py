"""The plugin contract: every method plugs into training, reloading and export through these kinds.

- `ModelTransform` rewrites the model. Its `role` says what it is: STRUCTURAL transforms (QAT, PTQ,
  OCS) change what is trained, are recorded by the run's config, re-applied on every reload and
  run at export (`convert`); TRAINING transforms (a teacher, the forward taps, the compiled CPU
  kernels) exist only while training and are never saved nor exported. Transforms apply in their
  declared `order` (structural first), never in import order.
- `LossTerm` adds a weighted loss computed from the forward's `Outputs` (hidden states and
  attention tensors when it `needs` them).
- `Intervention` replaces a tensor at a named point of the student's forward while `active(step)`
  (ernie_qat.models.taps lists the points).
- `StepStrategy` decides how one optimizer step uses the forward/backward closure (SAM calls it twice).

All are `Plugin`s: optional `setup(model)` once before training (before a resume restores later
weights), `on_batch(model, batch, step)` once per step before the forward (a teacher runs there; it
may return logs of the step, such as the stage a method is in),
`on_evaluate(model, step, metrics)` after each evaluation, `param_groups(model)` for parameters
that need their own optimizer treatment (a quantizer's step sizes: no weight decay),
`schedule_restarts(total_steps)` for a method in stages whose later stage starts its learning-rate
schedule over (Teacher Intervention's second step), and `optimizer_restarts(total_steps)` for one
whose later stage starts with a new optimizer's state (TI's second step as the reference code runs it).

Each kind has one registry of builders `Config -> plugin | [plugins] | None`; a builder registered with a
`section` makes its name a valid value of `<section>.method` (ernie_qat.config takes the allowed
names from here). Method modules register themselves; `ernie_qat.methods` imports them all, and
this module imports no method, so loading a checkpoint never imports every method.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple

import paddle

from ernie_qat.errors import UserError
from ernie_qat.registry import Registry

STRUCTURAL, TRAINING = "structural", "training"


class PluginError(UserError):
    """Plugins that cannot work together, or one that broke the contract (for example a step
    strategy that never called the closure)."""


@dataclass
class ParamGroup:
    """Parameters with their own optimizer settings: `lr_scale` multiplies the scheduled learning rate."""
    params: List[paddle.Tensor]
    weight_decay: bool = True
    lr_scale: float = 1.0


class Plugin:
    """Base of every plugin kind; each hook does nothing unless overridden."""
    name = "plugin"

    def setup(self, model: paddle.nn.Layer) -> None:
        """Called once on the transformed model before training starts (and before a resume restores weights)."""

    def on_batch(self, model: paddle.nn.Layer, batch: dict, step: int) -> Optional[Dict[str, object]]:
        """Called once per step with the batch, before the step strategy runs the closure. May return logs
        of this step: numbers, or a text naming the plugin's stage (the console announces each change)."""

    def on_evaluate(self, model: paddle.nn.Layer, step: int, metrics: Dict[str, float]) -> None:
        """Called after each dev evaluation with its metrics."""

    def param_groups(self, model: paddle.nn.Layer) -> List[ParamGroup]:
        """Parameters needing their own optimizer settings; the rest keep the defaults."""
        return []

    def schedule_restarts(self, total_steps: int) -> Dict[int, float]:
        """{step: warm-up ratio}: at each step the learning-rate schedule starts over (warm-up over that
        share of the stage, then linear decay to the next restart or the end)."""
        return {}

    def optimizer_restarts(self, total_steps: int) -> Set[int]:
        """Steps before whose update the optimizer's state starts over: moments 0 and update counts as a new
        optimizer has them (the learning-rate schedule follows `schedule_restarts`, not this)."""
        return set()


class ModelTransform(Plugin):
    """Rewrites the model: `prepare` before training or on reload, `convert` at export."""
    role = STRUCTURAL
    order = 50            # lower applies first; structural transforms always precede training ones
    quantizes = False     # whether the converted graph carries INT8 scales

    def prepare(self, model: paddle.nn.Layer) -> paddle.nn.Layer:
        """Rewrite `model` (in place or not); returns the model to train."""
        return model

    def convert(self, model: paddle.nn.Layer, prefix: str) -> bool:
        """What export runs: write `model`'s inference graph as prefix.pdmodel/.pdiparams and return
        True, or return False to leave it to an earlier transform (and finally the FP32 graph)."""
        return False

    def int8_blocker(self) -> Optional[str]:
        """Why Paddle's INT8 predictor cannot run this transform's result as trained, or None."""
        return None


class LossTerm(Plugin):
    """`term(model, outputs, batch, step) -> (weighted scalar loss, floats logged as loss/<name>/<key>)`."""
    name = "loss"
    needs: FrozenSet[str] = frozenset()   # Outputs fields beyond logits, e.g. {"hidden_states"}

    def __call__(self, model, outputs, batch: dict, step: int) -> Tuple[paddle.Tensor, Dict[str, float]]:
        raise NotImplementedError


class Intervention(Plugin):
    """Replaces the tensor at `point` of the listed encoder layers (None: all) while `active(step)`.

    `replace(tensor, layer)` gets the student's tensor and returns the one the forward goes on
    with; the forward receives it as a fresh leaf (detached), so no gradient reaches what it
    replaced. Returning `tensor` itself detaches it (for example the Q/K or V inputs, points
    `attention.qk_input`, `attention.v_input`). Loss terms still see the student's own tensor.
    Points: ernie_qat.models.taps.POINTS.
    """
    point = "attention.output"
    layers: Optional[Sequence[int]] = None

    def active(self, step: int) -> bool:
        return True

    def replace(self, tensor: paddle.Tensor, layer: int) -> paddle.Tensor:
        raise NotImplementedError


class StepStrategy(Plugin):
    """One optimizer step. `closure()` runs forward, loss terms and backward (it zeroes nothing)
    and returns the total loss; a strategy must call it at least once. Returns floats to log."""
    name = "default"

    def step(self, model, optimizer, closure: Callable[[], paddle.Tensor], step: int) -> Dict[str, float]:
        closure()
        optimizer.step()
        return {}


@dataclass
class Plugins:
    """What one run uses: transforms (in their declared order), loss terms, interventions, one step
    strategy, and the weight of the ground-truth cross-entropy (0: the loss terms alone)."""
    transforms: List[ModelTransform] = field(default_factory=list)
    loss_terms: List[LossTerm] = field(default_factory=list)
    interventions: List[Intervention] = field(default_factory=list)
    step_strategy: StepStrategy = field(default_factory=StepStrategy)
    ground_truth_weight: float = 1.0

    def ordered_transforms(self) -> List[ModelTransform]:
        """The transforms in the order they apply: structural first, then by declared `order`."""
        return sorted(self.transforms, key=lambda t: (t.role != STRUCTURAL, t.order))

    def all(self) -> List[Plugin]:
        """Every plugin, in the order their hooks are called."""
        return [*self.ordered_transforms(), *self.loss_terms, *self.interventions, self.step_strategy]

    @property
    def needs(self) -> FrozenSet[str]:
        """The Outputs fields some loss term asked for."""
        return frozenset().union(*(term.needs for term in self.loss_terms))


TRANSFORMS = Registry("model transform")
LOSS_TERMS = Registry("loss term")
INTERVENTIONS = Registry("intervention")
STEP_STRATEGIES = Registry("optimizer-step strategy")
REGISTRIES = (TRANSFORMS, LOSS_TERMS, INTERVENTIONS, STEP_STRATEGIES)
