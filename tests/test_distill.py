"""Knowledge distillation and Teacher Intervention (ernie_qat.distill) on the tiny model: losses vanish
when the student is the teacher, each intervention kind hands the teacher's signal on exactly, the
gradient paths TI cuts, TI's schedule and two-stage learning rate, ground truth off, students of other
depths, config errors, and runs that save and export nothing of the teacher."""
import json

import numpy as np
import paddle
import pytest

from conftest import trained
from ernie_qat.config import ConfigError, load_config
from ernie_qat.data.batching import Encoded, collate
from ernie_qat.data.loader import LabelVocab
from ernie_qat.distill.intervention import Schedule
from ernie_qat.distill.teacher import parse_layer_map, uniform_layer_map
from ernie_qat.models.taps import forward_outputs, taps_of
from ernie_qat.plugins import build_plugins
from ernie_qat.train.checkpoint import load_checkpoint
from ernie_qat.train.trainer import build_student, staged_schedule

ALL_TERMS = ["distill.logits_weight=1", "distill.hidden_weight=1", "distill.attention_score_weight=1",
             "distill.attention_output_weight=1"]


@pytest.fixture
def teacher(fp32_checkpoint):
    return fp32_checkpoint


def student(toy_task, teacher, *overrides):
    """(model, plugins, batch) of a run distilled from `teacher`, starting from it, dropout off."""
    cfg = load_config(toy_task["config"], [f"model.name_or_path={teacher}", f"distill.teacher={teacher}",
                                           "model.dropout=0.0", *overrides])
    plugins = build_plugins(cfg)
    model = build_student(cfg, plugins, LabelVocab(["neg", "pos"]))[0]
    ids = paddle.to_tensor([[2, 5, 17, 8, 3, 0, 0], [2, 11, 12, 13, 14, 9, 3]], dtype="int64")
    return model, plugins, {"input_ids": ids, "token_type_ids": paddle.zeros_like(ids),
                            "labels": paddle.to_tensor([0, 1], dtype="int64")}


def run_teacher(model, plugins, batch, step=0):
    for plugin in plugins.all():
        plugin.on_batch(model, batch, step)


def test_every_distillation_loss_vanishes_when_the_student_is_the_teacher(toy_task, teacher):
    model, plugins, batch = student(toy_task, teacher, *ALL_TERMS)
    model.train()
    run_teacher(model, plugins, batch)
    term = plugins.loss_terms[0]
    loss, logs = term(model, forward_outputs(model, batch, plugins.needs), batch, 0)
    assert set(logs) == {"logits", "hidden", "scores", "outputs"}
    assert all(abs(value) < 1e-6 for value in logs.values()), logs  # float32 noise: measured ≤ 2e-8
    # and they measure what they say: moving one attention weight moves scores, outputs, hidden states
    layer = model.net.ernie.encoder.layers[1].self_attn
    layer.q_proj.weight.set_value(layer.q_proj.weight * 3)
    _, logs = term(model, forward_outputs(model, batch, plugins.needs), batch, 0)
    assert logs["scores"] > 1e-3 and logs["hidden"] > 1e-6 and logs["outputs"] > 1e-6 and logs["logits"] > 0


def test_padding_is_left_out_of_the_per_layer_losses(toy_task, teacher):
    model, plugins, batch = student(toy_task, teacher, *ALL_TERMS)
    run_teacher(model, plugins, batch)
    term, outputs = plugins.loss_terms[0], forward_outputs(model, batch, plugins.needs)
    before = term(model, outputs, batch, 0)[1]
    padded = (batch["input_ids"] == 0).astype("float32")  # [B, L]: only the first sentence has padding
    outputs.hidden_states[1] = outputs.hidden_states[1] + 5.0 * padded.unsqueeze(-1)
    outputs.attention_scores[0] = outputs.attention_scores[0] + 5.0 * padded.unsqueeze([1, 2])  # padded keys
    after = term(model, outputs, batch, 0)[1]
    assert after["hidden"] == pytest.approx(before["hidden"], abs=1e-9)
    assert after["scores"] == pytest.approx(before["scores"], abs=1e-9)


def test_the_references_normalisation_averages_over_every_position_with_masked_scores_zeroed(toy_task, teacher):
    model, plugins, batch = student(toy_task, teacher, *ALL_TERMS, "distill.loss_normalization=positions")
    run_teacher(model, plugins, batch)
    term, outputs = plugins.loss_terms[0], forward_outputs(model, batch, plugins.needs)
    padded = (batch["input_ids"] == 0).astype("float32")  # [B, L]: the first sentence's last 2 positions
    shift = paddle.to_tensor(np.random.default_rng(0).normal(size=outputs.hidden_states[1].shape), "float32")
    outputs.hidden_states[1] = outputs.hidden_states[1] + shift
    outputs.attention_scores[0] = outputs.attention_scores[0] + 5.0 * padded.unsqueeze([1, 2])  # padded keys
    logs = term(model, outputs, batch, 0)[1]
    assert logs["hidden"] == pytest.approx(float((shift ** 2).mean()), rel=1e-4)  # padding counts: B·L·H
    assert logs["scores"] == pytest.approx(0.0, abs=1e-6)  # padded keys are 0 in both models
    outputs.attention_scores[0] = outputs.attention_scores[0] + 1.0  # every score, padded queries included
    keys = 1 - padded.numpy()[:, None, None, :]  # [B, 1, 1, L]: the squared differences left where keys are real
    assert term(model, outputs, batch, 0)[1]["scores"] == pytest.approx(float(np.broadcast_to(
        keys, outputs.attention_scores[0].shape).mean()), rel=1e-4)
    short = [Encoded([2, 5, 3], [0, 0, 0], 1)]  # with data.pad_to_max_seq_len, batches are as wide as max_seq_len
    assert collate(short, 0)["input_ids"].shape == (1, 3) and collate(short, 0, 32)["input_ids"].shape == (1, 32)


# kind -> (the projections perturbed in the student, one more that the intervention cannot hide)
KIND_CASES = {"mi": (["q_proj", "k_proj"], "v_proj"), "ci": (["q_proj", "k_proj", "v_proj"], "out_proj"),
              "oi": (["q_proj", "k_proj", "v_proj", "out_proj"], "linear1")}


@pytest.mark.parametrize("kind", list(KIND_CASES))
def test_each_intervention_kind_hands_on_the_teachers_signal_exactly(toy_task, teacher, kind):
    hidden_by_it, beyond = KIND_CASES[kind]
    model, plugins, batch = student(toy_task, teacher, "distill.intervention=scheduled",
                                    f"distill.intervention_schedule={kind}", "distill.intervention_steps=5")
    model.eval()
    run_teacher(model, plugins, batch)
    expected = taps_of(model).teacher.logits.numpy()
    rng = np.random.default_rng(0)

    def perturb(name):
        for layer in model.net.ernie.encoder.layers:
            sub = getattr(layer.self_attn, name, None) or getattr(layer, name)
            sub.weight.set_value(sub.weight + paddle.to_tensor(rng.normal(0, 0.5, sub.weight.shape), "float32"))

    for name in hidden_by_it:
        perturb(name)
    plain = forward_outputs(model, batch).logits.numpy()
    assert np.abs(plain - expected).max() > 1e-2  # the perturbed student disagrees...
    np.testing.assert_allclose(forward_outputs(model, batch, step=0).logits.numpy(), expected, atol=1e-5)  # ...TI hides it
    np.testing.assert_array_equal(forward_outputs(model, batch, step=5).logits.numpy(), plain)  # step 2: off
    perturb(beyond)
    assert np.abs(forward_outputs(model, batch, step=0).logits.numpy() - expected).max() > 1e-3


def test_mi_cuts_the_task_gradient_of_q_and_k_but_the_students_own_scores_still_train_them(toy_task, teacher):
    model, plugins, batch = student(toy_task, teacher, "distill.intervention=scheduled", "distill.intervention_schedule=mi",
                                    "distill.logits_weight=0", "distill.hidden_weight=0", "distill.attention_score_weight=1")
    model.train()
    attention = model.net.ernie.encoder.layers[1].self_attn
    attention.q_proj.weight.set_value(attention.q_proj.weight * 2)  # the student's scores differ from the teacher's
    run_teacher(model, plugins, batch)

    def gradients(with_scores_loss):
        model.clear_gradients()
        outputs = forward_outputs(model, batch, plugins.needs, step=0)
        loss = paddle.nn.functional.cross_entropy(outputs.logits, batch["labels"])
        if with_scores_loss:
            loss = loss + plugins.loss_terms[0](model, outputs, batch, 0)[0]
        loss.backward()
        grad = lambda p: 0.0 if p.grad is None else float(p.grad.abs().sum())  # noqa: E731
        return grad(attention.q_proj.weight), grad(attention.v_proj.weight), \
            grad(model.net.ernie.encoder.layers[0].linear2.weight)

    q, v, below = gradients(with_scores_loss=False)
    assert q == 0 and v > 0 and below > 0  # probabilities replaced: no task gradient into Q/K; V and below train
    q, v, below_with_scores = gradients(with_scores_loss=True)
    assert q > 0  # the attention-score loss on the student's own scores trains Q
    assert below_with_scores == pytest.approx(below, rel=1e-5)  # but does not pass Q/K's detached input


def test_gradual_schedule_and_two_stage_learning_rate():
    cfg = load_config(None, ["data.dataset=mr", "distill.teacher=t", "distill.intervention=scheduled"]).distill
    schedule = Schedule(cfg, seed=1)
    assert [schedule.kind_at(s) for s in (0, 9, 10, 19, 20, 59, 60, 500)] == \
        ["oi", "oi", "ci", "ci", "mi", "mi", None, None]  # OI for s/6, CI until s/3, MI until s = 60
    cfg.intervention = "stochastic"
    drawn = [Schedule(cfg, seed=1).kind_at(s) for s in range(60)]
    assert set(drawn) == {"oi", "ci", "mi"} and drawn == [Schedule(cfg, seed=1).kind_at(s) for s in range(60)]
    lr = staged_schedule(1.0, 100, {0: 0.1, 60: 0.1})
    rates = []
    for _ in range(100):
        rates.append(lr())
        lr.step()
    assert rates[0] == 0 and rates[6] == pytest.approx(1.0) and rates[59] == pytest.approx(1 / 54)
    assert rates[60] == 0 and rates[64] == pytest.approx(1.0) and rates[99] == pytest.approx(1 / 36)
    single = staged_schedule(1.0, 100, {0: 0.1})
    assert type(single).__name__ == "LinearDecayWithWarmup"


def test_layer_maps():
    assert uniform_layer_map(2, 4) == [2, 4] and uniform_layer_map(3, 12) == [4, 8, 12]
    assert uniform_layer_map(4, 6) == [2, 3, 5, 6] and uniform_layer_map(2, 2) == [1, 2]
    assert parse_layer_map("1,3", 2, 4) == [1, 3]
    with pytest.raises(ConfigError, match=r"expected 2 teacher layers .* each in 1..4"):
        parse_layer_map("1,5", 2, 4)
    with pytest.raises(ConfigError, match="comma-separated"):
        parse_layer_map("a,b", 2, 4)


def test_config_errors(toy_task, teacher):
    with pytest.raises(ConfigError, match="`distill.intervention: scheduled` is a setting of distillation"):
        load_config(toy_task["config"], ["distill.intervention=scheduled"])
    with pytest.raises(ConfigError, match="`distill.ground_truth_weight: 0.0` is a setting of distillation"):
        load_config(toy_task["config"], ["distill.ground_truth_weight=0"])
    cfg = load_config(toy_task["config"], [f"distill.teacher={teacher}", "distill.intervention=scheduled",
                                           "distill.intervention_schedule=oi,xi"])
    with pytest.raises(ConfigError, match=r"unknown kinds \['xi'\]"):
        build_plugins(cfg)
    cfg = load_config(toy_task["config"], [f"distill.teacher={teacher}", "distill.ground_truth_weight=0",
                                           "distill.logits_weight=0", "distill.hidden_weight=0",
                                           "distill.attention_score_weight=0"])
    with pytest.raises(ConfigError, match="every loss weight is 0"):
        build_plugins(cfg)
    with pytest.raises(ConfigError, match=r"intervention_layers` \[1, 7\]: the student's encoder layers are 1..2"):
        student(toy_task, teacher, "distill.intervention=scheduled", "distill.intervention_layers=1,7")


def test_ti_and_kd_run_end_to_end_without_ground_truth_and_save_nothing_of_the_teacher(toy_task, teacher, capsys):
    best = trained(toy_task, "ti", f"model.name_or_path={teacher}", f"distill.teacher={teacher}",
                   "quant.method=qat", "quant.weight_quantizer=ternary", "quant.weight_bits=2",
                   "distill.intervention=scheduled", "distill.intervention_steps=6", "distill.ground_truth_weight=0",
                   "distill.attention_output_weight=1", "train.max_steps=12", "train.eval_every=6", "train.log_every=1")
    records = [json.loads(line) for line in (best.parent.parent / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert {"loss/distill/logits", "loss/distill/hidden", "loss/distill/scores", "loss/distill/outputs"} <= set(train[0])
    # each step logs its stage, and the console announces each change: OI, CI, MI (4 steps), then step 2
    assert [r["teacher_intervention"] for r in train] == ["oi", "ci"] + ["mi"] * 4 + \
        ["none (step 2: plain distillation)"] * 6
    announced = [line.split(": ", 1)[0] for line in capsys.readouterr().out.splitlines() if "teacher_intervention" in line]
    assert announced == ["step 1", "step 2", "step 3", "step 7"]
    # while step 1 trains, dev is also evaluated as the reference does: the student with the intervention on
    assert [(r["step"], r["split"]) for r in records if r["split"].startswith("dev")] == \
        [(6, "dev"), (6, "dev_intervened"), (12, "dev")]
    first = train[0]  # no ground truth: the loss is the sum of the distillation terms (weights 1)
    assert first["loss"] == pytest.approx(sum(first[f"loss/distill/{k}"] for k in ("logits", "hidden", "scores", "outputs")),
                                          rel=1e-5)
    plain_qat = trained(toy_task, "qat", f"model.name_or_path={teacher}", "quant.method=qat",
                        "quant.weight_quantizer=ternary", "quant.weight_bits=2", "train.max_steps=2")
    saved = lambda folder: set(paddle.load(str(folder / "model_state.pdparams")))  # noqa: E731
    assert saved(best) == saved(plain_qat)
    model = load_checkpoint(best)[0]
    assert not hasattr(model, "taps")


def test_a_shallower_student_learns_from_a_deeper_teacher(toy_task, teacher):
    best = trained(toy_task, "shallow", f"distill.teacher={teacher}", "model.random.num_hidden_layers=1",
                   "distill.attention_output_weight=1", "train.max_steps=4")
    assert load_checkpoint(best)[0].net.config.num_hidden_layers == 1
    with pytest.raises(Exception, match=r"cannot teach this student: hidden size: teacher 32, student 16 \(to distill "
                                         r"from a wider teacher, .*`distill.hidden_weight: 0`"):
        trained(toy_task, "narrow", f"distill.teacher={teacher}", "model.random.hidden_size=16", "train.max_steps=2")
