"""The frozen teacher of knowledge distillation: a training-only model transform.

`Teacher` loads a fine-tuned checkpoint, gives it forward taps, and runs it once per step, in
evaluation mode (no dropout) and without gradients, on the student's batch (`on_batch`). It
leaves its `Outputs`, mapped onto the student's layers, in the student's `taps.teacher`: entry
i of each per-layer list is the teacher's tensor for student layer i (hidden_states: entry 0
is the embeddings). Loss terms (ernie_qat.distill.losses) and Teacher Intervention
(ernie_qat.distill.intervention) read them there. Nothing of the teacher is saved or exported.
"""
from pathlib import Path
from typing import FrozenSet, List

import paddle

from ernie_qat.config import ConfigError, DistillConfig, layer_list
from ernie_qat.distill.intervention import teacher_fields
from ernie_qat.distill.losses import DistillationLoss
from ernie_qat.models.taps import Outputs, TapsTransform, forward_outputs, taps_of
from ernie_qat.train.hooks import TRAINING, TRANSFORMS, ModelTransform, PluginError


def uniform_layer_map(student_layers: int, teacher_layers: int) -> List[int]:
    """Teacher layer (1-based) for student layers 1..L: layer j takes teacher layer ⌈j·L_t/L_s⌉, so the
    last layers match (TinyBERT's uniform map when L_t is a multiple of L_s)."""
    return [-(-j * teacher_layers // student_layers) for j in range(1, student_layers + 1)]


def parse_layer_map(text: str, student_layers: int, teacher_layers: int) -> List[int]:
    """`distill.layer_map` ("" = uniform) as a list of teacher layers (1-based) for student layers 1..L."""
    layers = layer_list(text, "distill.layer_map")
    if layers is None:
        return uniform_layer_map(student_layers, teacher_layers)
    if len(layers) != student_layers or not all(1 <= layer <= teacher_layers for layer in layers):
        raise ConfigError(f"`distill.layer_map` {text!r}: expected {student_layers} teacher layers (one per student "
                          f"layer), each in 1..{teacher_layers}")
    return layers


class Teacher(ModelTransform):
    """Training-only: runs the teacher on each batch and puts its outputs in the student's `taps.teacher`."""
    name, role, order = "teacher", TRAINING, 90  # after the forward taps (80)

    def __init__(self, cfg: DistillConfig, needs: FrozenSet[str]):
        self.cfg, self.needs = cfg, needs
        self.model = None
        self.layer_map: List[int] = []

    def prepare(self, model):
        from ernie_qat.train.checkpoint import load_checkpoint  # the checkpoint module imports the plugin registries
        folder = Path(self.cfg.teacher).expanduser()
        if not folder.is_dir():
            raise PluginError(f"`distill.teacher` {folder}: {'is not a folder' if folder.exists() else 'does not exist'}"
                              "; give the checkpoint folder of a fine-tuned run (e.g. runs/NAME/checkpoints/best)")
        teacher = TapsTransform().prepare(load_checkpoint(folder)[0])
        teacher.eval()
        for param in teacher.parameters():
            param.stop_gradient = True
        self._check_compatible(teacher, model, folder)
        self.layer_map = parse_layer_map(self.cfg.layer_map, model.net.config.num_hidden_layers,
                                         teacher.net.config.num_hidden_layers)
        self.model = teacher
        return model

    def _check_compatible(self, teacher, student, folder: Path) -> None:
        """Raises PluginError unless the teacher has the student's classes (names and order), vocabulary, and
        the width and heads of the tensors the configured terms compare."""
        needed = {"vocab_size": ("vocabulary", ""), "num_labels": ("classes", "")}
        if self.needs & {"hidden_states", "attention_outputs", "attention_contexts", "attention_projections"}:
            needed["hidden_size"] = ("hidden size", " (to distill from a wider teacher, compare the logits and "
                                     "attention maps only: `distill.hidden_weight: 0`, "
                                     "`distill.attention_output_weight: 0`, and no CI or OI intervention)")
        if self.needs & {"attention_scores", "attention_probs"}:  # [B, heads, L, L]
            needed["num_attention_heads"] = ("attention heads", " (set `distill.attention_score_weight: 0` and "
                                             "intervene no MI)")
        t, s = teacher.net.config, student.net.config
        differ = [f"{what}: teacher {getattr(t, key)}, student {getattr(s, key)}{hint}"
                  for key, (what, hint) in needed.items() if getattr(t, key) != getattr(s, key)]
        if differ:
            raise PluginError(f"`distill.teacher` {folder} cannot teach this student: " + "; ".join(differ))
        if student.labels is not None and teacher.labels != student.labels:
            raise PluginError(f"`distill.teacher` {folder} was trained on the labels {teacher.labels}, this data has "
                              f"{student.labels}: its logits would teach the wrong classes; give a teacher trained "
                              "on this data's labels")

    def on_batch(self, model, batch: dict, step: int) -> None:
        with paddle.no_grad():
            outputs = forward_outputs(self.model, batch, self.needs)
        taps_of(model).teacher = self.mapped(outputs)

    def mapped(self, outputs: Outputs) -> Outputs:
        """The teacher's outputs indexed by student layer (see the module docstring)."""
        picked = {"logits": outputs.logits}
        for name in self.needs:
            layers = getattr(outputs, name)
            if name == "hidden_states":
                picked[name] = [layers[0]] + [layers[t] for t in self.layer_map]
            else:
                picked[name] = [layers[t - 1] for t in self.layer_map]
        return Outputs(**picked)


@TRANSFORMS.register("teacher", role=TRAINING)
def build_teacher(cfg) -> "Teacher | None":
    if not cfg.distill.teacher:
        return None
    return Teacher(cfg.distill, DistillationLoss(cfg.distill).needs | teacher_fields(cfg.distill))
