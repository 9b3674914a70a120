"""Teacher Intervention (Kim et al., EACL 2023): the teacher's signal replaces the quantized student's.

While TI's first step runs (`distill.intervention_steps` = s optimizer steps), each intervened
encoder layer of the student goes on with one of the teacher's attention signals instead of its own:

    mi   attention probabilities (softmax, before dropout)   the Q and K inputs detached
    ci   attention context, the input of out_proj           the Q, K and V inputs detached
    oi   attention projection (out_proj's output, before dropout, residual and LayerNorm); Q, K, V detached

The residual path keeps its gradient, and loss terms still see the student's own tensors (the
taps record before they replace). `distill.intervention_schedule` gives each listed kind an
equal share of s in order: the default "oi,ci,mi,mi,mi,mi" is the paper's gradual TI (OI for
s/6, CI until s/3, MI for the rest; s must give every listed kind a step); "mi" alone intervenes
MI throughout. The `stochastic` variant draws one entry of the list per step (the default list
draws MI 4 times in 6). After s steps comes TI's second step, plain distillation for the rest of
the budget (s must be below the run's steps), so a TI run takes as many steps as a plain KD run.
Each step logs its stage (`teacher_intervention`: the kind, or none), and the console says when it
changes. `distill.intervention_layers` counts the student's layers from 1, as `distill.layer_map` does.
Step 1 has its own learning-rate schedule (warm-up `distill.intervention_warmup_ratio`, decay to
0 at s), step 2 starts over with `train.warmup_ratio`, as the reference code's two runs do. With
`distill.intervention_fresh_optimizer` step 2 also starts with a new optimizer's state (moments 0,
update counts reset), as the reference's second run does; by default the moments carry over.
Evaluation runs the student alone: no intervention applies outside the training forward.
"""
import random
from typing import Dict, List, Optional, Set

from ernie_qat.config import ConfigError, DistillConfig, layer_list
from ernie_qat.models.taps import taps_of
from ernie_qat.train.hooks import INTERVENTIONS, Intervention

# kind -> (the teacher's Outputs field, the point it replaces, the points it detaches)
KINDS = {
    "mi": ("attention_probs", "attention.probs", ("attention.qk_input",)),
    "ci": ("attention_contexts", "attention.context", ("attention.qk_input", "attention.v_input")),
    "oi": ("attention_projections", "attention.projection", ("attention.qk_input", "attention.v_input")),
}


def scheduled_kinds(cfg: DistillConfig) -> List[str]:
    """`distill.intervention_schedule` as its list of kinds, in order."""
    kinds = [kind.strip() for kind in cfg.intervention_schedule.split(",")]
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        raise ConfigError(f"`distill.intervention_schedule` {cfg.intervention_schedule!r}: unknown kinds "
                          f"{unknown}; expected a comma-separated list of {', '.join(KINDS)}")
    return kinds


class Schedule:
    """Which kind of intervention acts at a step (None: none, from step s on)."""

    def __init__(self, cfg: DistillConfig, seed: int):
        self.kinds = scheduled_kinds(cfg)
        self.steps, self.stochastic, self.seed = cfg.intervention_steps, cfg.intervention == "stochastic", seed
        if not self.stochastic and self.steps < len(self.kinds):
            raise ConfigError(f"`distill.intervention_steps` {self.steps} is fewer than the {len(self.kinds)} kinds "
                              f"of `distill.intervention_schedule` {cfg.intervention_schedule!r}, so some would never "
                              f"act: give step 1 at least {len(self.kinds)} steps")

    def kind_at(self, step: int) -> Optional[str]:
        if step >= self.steps:
            return None
        if self.stochastic:  # each listed entry equally likely: a kind listed k times is drawn k times as often
            return random.Random(self.seed * 1_000_003 + step).choice(self.kinds)
        return self.kinds[step * len(self.kinds) // self.steps]

    def check_fits(self, total_steps: int) -> None:
        """Raises ConfigError unless step 1 ends inside the run, leaving steps for step 2 (plain distillation)."""
        if self.steps >= total_steps:
            raise ConfigError(f"`distill.intervention_steps` {self.steps} is not below the run's {total_steps} steps: "
                              "Teacher Intervention's step 2 (plain distillation) would never run; lower it, or "
                              "train longer (`train.epochs`, `train.max_steps`)")


class TeacherIntervention(Intervention):
    """One point of TI: the teacher's tensor replaces the student's (`field` set) or the student's is
    detached, in the layers listed, at the steps where the schedule's kind is one of `kinds`."""

    def __init__(self, point: str, kinds: List[str], field: Optional[str], schedule: Schedule,
                 layers: Optional[List[int]], stages: Dict[int, float], fresh_optimizer: bool):
        self.name = f"ti:{point}"
        self.point, self.kinds, self.field, self.schedule = point, kinds, field, schedule
        self.layers, self.stages, self.fresh_optimizer = layers, stages, fresh_optimizer
        self.taps = None

    def setup(self, model) -> None:
        self.taps = taps_of(model)
        if self.layers is not None and not all(0 <= i < self.taps.num_layers for i in self.layers):
            raise ConfigError(f"`distill.intervention_layers` {[i + 1 for i in self.layers]}: the student's encoder "
                              f"layers are 1..{self.taps.num_layers}")

    def on_batch(self, model, batch: dict, step: int) -> Dict[str, str]:
        """The stage this step is in, logged (and announced when it changes): the kind, or step 2."""
        return {"teacher_intervention": self.schedule.kind_at(step) or "none (step 2: plain distillation)"}

    def active(self, step: int) -> bool:
        return self.schedule.kind_at(step) in self.kinds

    def replace(self, tensor, layer: int):
        return tensor if self.field is None else getattr(self.taps.teacher, self.field)[layer]

    def schedule_restarts(self, total_steps: int) -> Dict[int, float]:
        self.schedule.check_fits(total_steps)
        return self.stages  # every TI point reports the same two stages

    def optimizer_restarts(self, total_steps: int) -> Set[int]:
        return {self.schedule.steps} if self.fresh_optimizer else set()


@INTERVENTIONS.register("teacher_intervention")
def build_teacher_intervention(cfg) -> Optional[List[TeacherIntervention]]:
    distill = cfg.distill
    if distill.intervention == "none":
        return None
    schedule = Schedule(distill, cfg.train.seed)
    layers = layer_list(distill.intervention_layers, "distill.intervention_layers")
    layers = None if layers is None else [layer - 1 for layer in layers]  # 1-based in the config, as `layer_map`
    stages = {0: distill.intervention_warmup_ratio, distill.intervention_steps: cfg.train.warmup_ratio}
    used = set(schedule.kinds)
    points = {}  # point -> (kinds acting on it, teacher field or None)
    for kind in KINDS:
        field, replaced, detached = KINDS[kind]
        if kind in used:
            points.setdefault(replaced, ([], field))[0].append(kind)
            for point in detached:
                points.setdefault(point, ([], None))[0].append(kind)
    return [TeacherIntervention(point, kinds, field, schedule, layers, stages, distill.intervention_fresh_optimizer)
            for point, (kinds, field) in points.items()]


def teacher_fields(cfg: DistillConfig) -> set:
    """The teacher outputs the configured intervention replaces the student's with."""
    if cfg.intervention == "none":
        return set()
    return {KINDS[kind][0] for kind in scheduled_kinds(cfg)}
