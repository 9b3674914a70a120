"""Knowledge-distillation loss terms (TernaryBERT's, with TI's attention-output term): one loss term.

With teacher outputs T (ernie_qat.distill.teacher, mapped onto the student's layers) and the
student's own S, each weighted by its `distill.*_weight` (0 = off):

    logits     KL(softmax(T/τ) ‖ softmax(S/τ)) averaged over the batch: TernaryBERT's soft cross-entropy
               minus the teacher's entropy, so the same gradient, and 0 when the student agrees
    hidden     Σ over the L + 1 hidden states of the MSE over real tokens          [B, L, H]
    scores     Σ over layers of the MSE of pre-softmax attention scores over pairs of real tokens
               (a padded query or key is excluded)                                  [B, heads, L, L]
    outputs    Σ over layers of the MSE of the attention blocks' outputs (after the residual add and
               LayerNorm, as TI's reference; during OI the student's includes the teacher's projection)

TernaryBERT sums the per-layer MSEs the same way; it includes padded positions in the hidden
states and zeroes masked scores, where this term leaves padding out entirely. With
`distill.loss_normalization: positions` it does as the reference: each MSE is the mean over every
position of the batch, padding included (with `data.pad_to_max_seq_len`, batches padded to
max_seq_len as the reference's are), and the scores of padded keys (and any ≤ −100, as the
reference zeroes masked scores) are 0 in both models.
"""
from typing import Dict, List

import paddle
import paddle.nn.functional as F

from ernie_qat.config import ConfigError, DistillConfig
from ernie_qat.models.taps import taps_of
from ernie_qat.train.hooks import LOSS_TERMS, LossTerm
from ernie_qat.train.parallel import unwrap

# Outputs field of each per-layer term
LAYER_TERMS = {"hidden": "hidden_states", "scores": "attention_scores", "outputs": "attention_outputs"}
MASKED_SCORE = -100.0  # the reference zeroes attention scores at or below this (its masked ones)


def soft_kl(student_logits, teacher_logits, temperature: float) -> paddle.Tensor:
    """KL(softmax(t/τ) ‖ softmax(s/τ)) averaged over the batch; logits [B, C]."""
    teacher_log_p = F.log_softmax(teacher_logits / temperature, axis=-1)
    student_log_p = F.log_softmax(student_logits / temperature, axis=-1)
    return (teacher_log_p.exp() * (teacher_log_p - student_log_p)).sum(axis=-1).mean()


def masked_mse(student: List[paddle.Tensor], teacher: List[paddle.Tensor], weight: paddle.Tensor) -> paddle.Tensor:
    """Σ over layers of the mean squared difference where `weight` (broadcast to a layer's shape) is 1."""
    total = 0.0
    for s, t in zip(student, teacher):
        squared = (s - t) ** 2 * weight
        total = total + squared.sum() / (weight.expand(squared.shape).sum())
    return total


def positions_mse(student: List[paddle.Tensor], teacher: List[paddle.Tensor], keep=None) -> paddle.Tensor:
    """Σ over layers of the mean squared difference over every element; where `keep` (broadcast) is 0, or a value
    is ≤ −100, that value is 0 in both (the reference's zeroed masked attention scores)."""
    def zeroed(x):
        x = x if keep is None else x * keep
        return paddle.where(x <= MASKED_SCORE, paddle.zeros_like(x), x)

    total = 0.0
    for s, t in zip(student, teacher):
        if keep is not None:
            s, t = zeroed(s), zeroed(t)
        total = total + ((s - t) ** 2).mean()
    return total


class DistillationLoss(LossTerm):
    """`(Σ weight·term, logs of each unweighted term)` against the teacher's outputs in `taps.teacher`."""
    name = "distill"

    def __init__(self, cfg: DistillConfig):
        self.temperature = cfg.temperature
        self.weights = {"logits": cfg.logits_weight, "hidden": cfg.hidden_weight,
                        "scores": cfg.attention_score_weight, "outputs": cfg.attention_output_weight}
        self.needs = frozenset(field for term, field in LAYER_TERMS.items() if self.weights[term])
        self.all_positions = cfg.loss_normalization == "positions"

    def __call__(self, model, outputs, batch: dict, step: int):
        teacher = taps_of(model).teacher
        tokens = (batch["input_ids"] != unwrap(model).pad_token_id).astype("float32")  # [B, L]
        terms: Dict[str, paddle.Tensor] = {}
        if self.weights["logits"]:
            terms["logits"] = soft_kl(outputs.logits, teacher.logits, self.temperature)
        for term, field in LAYER_TERMS.items():
            if not self.weights[term]:
                continue
            student, taught = getattr(outputs, field), getattr(teacher, field)
            if self.all_positions:
                keys = tokens.unsqueeze([1, 2]) if term == "scores" else None  # [B, 1, 1, L]: padded keys zeroed
                terms[term] = positions_mse(student, taught, keys)
            else:
                masks = {"hidden": tokens.unsqueeze(-1), "outputs": tokens.unsqueeze(-1),
                         "scores": (tokens.unsqueeze(-1) * tokens.unsqueeze(-2)).unsqueeze(1)}  # [B, 1, L, L]
                terms[term] = masked_mse(student, taught, masks[term])
        loss = sum(self.weights[term] * value for term, value in terms.items())
        return loss, {term: float(value) for term, value in terms.items()}


@LOSS_TERMS.register("distill")
def build_distillation_loss(cfg) -> "DistillationLoss | None":
    """The loss term of a run with a teacher, unless every distillation weight is 0."""
    distill = cfg.distill
    if not distill.teacher:
        return None
    term = DistillationLoss(distill)
    if not any(term.weights.values()):
        if not distill.ground_truth_weight:
            raise ConfigError("`distill`: every loss weight is 0 (ground truth included): nothing would be trained")
        return None
    return term
