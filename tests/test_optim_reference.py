"""The reference code's optimizer settings (issue 26's reference mode): BertAdam against its closed form and
against AdamW, per-parameter clipping, the optimizer restart at TI's step 2 with an exact resume across it,
and BertAdam learning the toy task."""
import json

import numpy as np
import paddle
import pytest
from paddle import nn

from conftest import Crash, CrashAt, trained
from ernie_qat.config import ConfigError, TrainConfig, load_config
from ernie_qat.optim.adam import AdamW, BertAdam
from ernie_qat.plugins import build_plugins
from ernie_qat.train.hooks import ParamGroup
from ernie_qat.train.trainer import fit, make_optimizer

B1, B2 = float(np.float32(0.9)), float(np.float32(0.999))  # the β the float32 kernel computes with
RNG = np.random.default_rng(0)
GRADS = [(RNG.normal(0, 1, (3, 2)), RNG.normal(0, 1, 2)) for _ in range(4)]  # (weight, bias) per step


def linear_run(tc: TrainConfig, grads=GRADS, groups=lambda layer: []):
    """A Linear(3, 2) trained by `make_optimizer(tc)` for 10 scheduled steps on the given gradients: (its weights
    and biases after each step, the rates scheduled, the optimizer)."""
    paddle.seed(0)
    layer = nn.Linear(3, 2)
    optimizer, schedule = make_optimizer(layer, tc, 10, groups(layer))
    weights, rates = [(layer.weight.numpy().astype("float64"), layer.bias.numpy().astype("float64"))], []
    for g_weight, g_bias in grads:
        loss = (layer.weight * paddle.to_tensor(g_weight, "float32")).sum() + \
            (layer.bias * paddle.to_tensor(g_bias, "float32")).sum()
        loss.backward()
        rates.append(schedule())
        optimizer.step()
        optimizer.clear_grad()
        schedule.step()
        weights.append((layer.weight.numpy().astype("float64"), layer.bias.numpy().astype("float64")))
    return weights, rates, optimizer


def test_bert_adam_is_adam_without_bias_correction_with_decoupled_decay():
    tc = TrainConfig(optimizer="bert_adam", learning_rate=0.1, warmup_ratio=0.0, weight_decay=0.1, max_grad_norm=0)
    # the bias: no decay (by its name) and a group with half the rate
    weights, rates, _ = linear_run(tc, groups=lambda layer: [ParamGroup([layer.bias], weight_decay=False, lr_scale=0.5)])
    assert rates == pytest.approx([0.1, 0.09, 0.08, 0.07])  # the linear decay over 10 steps
    for index, (decay, scale) in enumerate([(0.1, 1.0), (0.0, 0.5)]):
        w, m, v = weights[0][index], 0.0, 0.0
        for step, grads in enumerate(GRADS):
            g = grads[index]
            m, v = B1 * m + (1 - B1) * g, B2 * v + (1 - B2) * g * g
            w = w - rates[step] * scale * (m / (np.sqrt(v) + 1e-6) + decay * w)
            np.testing.assert_allclose(weights[step + 1][index], w, rtol=1e-6, atol=1e-7)


def test_bert_adam_updates_are_adamw_updates_times_the_bias_correction():
    updates = {}
    grads = [(g + np.sign(g), b + np.sign(b)) for g, b in GRADS[:3]]  # |g| ≥ 1: ε is below 1e-4 of √v
    for name in ("adamw", "bert_adam"):  # no decay: an update depends on the gradients alone
        tc = TrainConfig(optimizer=name, learning_rate=0.1, warmup_ratio=0.0, weight_decay=0.0, max_grad_norm=0)
        weights = linear_run(tc, grads=grads)[0]
        updates[name] = [weights[t + 1][0] - weights[t][0] for t in range(3)]
    for t in (1, 2, 3):
        ratio = updates["bert_adam"][t - 1] / updates["adamw"][t - 1]
        np.testing.assert_allclose(ratio, (1 - B1 ** t) / np.sqrt(1 - B2 ** t), rtol=1e-4)  # 3.16, 4.25, 4.95
    assert (1 - B1) / np.sqrt(1 - B2) == pytest.approx(3.1623, abs=1e-4)


def clipped_gradients(grad_clip: str):
    """The gradients (weight, bias) the optimizer used in one step, read back from the first moment m = (1 − β1)·g."""
    tc = TrainConfig(grad_clip=grad_clip, max_grad_norm=1.0, warmup_ratio=0.0)
    weight = np.full((3, 2), 3.0 / np.sqrt(6))  # norm 3
    bias = np.array([0.3, 0.4])                  # norm 0.5
    optimizer = linear_run(tc, grads=[(weight, bias)])[2]
    state = optimizer.state_dict()
    weight_g, bias_g = (next(v.numpy() for k, v in state.items() if k.startswith(p.name + "_moment1")) / (1 - B1)
                        for p in optimizer._parameter_list)
    return weight_g, bias_g, weight, bias


def test_per_parameter_clipping_clips_each_gradient_to_the_norm_alone():
    weight_g, bias_g, weight, bias = clipped_gradients("per_parameter")
    assert np.linalg.norm(weight_g) == pytest.approx(1.0, rel=1e-5)  # 3 -> 1
    np.testing.assert_allclose(weight_g, weight / 3, rtol=1e-5)
    np.testing.assert_allclose(bias_g, bias, rtol=1e-5)  # 0.5: left as it is
    weight_g, bias_g, weight, bias = clipped_gradients("global")  # as before: one norm over both, √9.25
    np.testing.assert_allclose(weight_g, weight / np.sqrt(9.25), rtol=1e-5)
    np.testing.assert_allclose(bias_g, bias / np.sqrt(9.25), rtol=1e-5)


@pytest.mark.parametrize("optimizer_class", [AdamW, BertAdam])
def test_a_restarted_optimizer_updates_as_a_new_one(optimizer_class):
    def step(optimizer, param, g):
        (param * paddle.to_tensor(g, "float32")).sum().backward()
        optimizer.step()
        optimizer.clear_grad()

    def new(weights):
        param = paddle.create_parameter([2], "float32", default_initializer=nn.initializer.Assign(weights))
        return param, optimizer_class(learning_rate=0.1, parameters=[param], weight_decay=0.1)

    param, used = new(np.array([0.5, -1.0], "float32"))
    for g in ([0.3, -0.2], [1.0, 0.5], [-0.4, 0.1]):
        step(used, param, np.array(g))
    saved = {k: v.numpy() for k, v in used.state_dict().items()}
    used.restart()
    state = used.state_dict()
    assert all(not state[k].numpy().any() for k in state if "_moment" in k)
    assert [state[k].item() for k in sorted(state) if "_pow_acc" in k] == \
        ([B1, B2] if optimizer_class is AdamW else [0.0, 0.0])  # βᵗ at t = 1, as a new AdamW has them
    weights, g = param.numpy(), np.array([0.2, 0.7])
    step(used, param, g)
    fresh, first = new(weights)
    step(first, fresh, g)
    np.testing.assert_array_equal(param.numpy(), fresh.numpy())
    # state loaded but not yet attached to a parameter (a resumed run before its first update) starts over too
    loaded_param, loaded = new(weights)
    loaded.set_state_dict({k.replace(param.name, loaded_param.name): v for k, v in saved.items()})
    loaded.restart()
    step(loaded, loaded_param, g)
    np.testing.assert_array_equal(loaded_param.numpy(), fresh.numpy())


def records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "examples_per_s"} for line in lines]


def test_ti_step_2_with_a_fresh_optimizer_and_a_resume_across_it(toy_task):
    teacher = trained(toy_task, "teacher", "train.max_steps=2")
    ti = [f"model.name_or_path={teacher}", f"distill.teacher={teacher}", "distill.intervention=scheduled",
          "distill.intervention_schedule=oi,mi", "distill.intervention_steps=4", "train.max_steps=8",
          "train.eval_every=2", "train.log_every=1"]

    def config(name, *overrides):
        return load_config(toy_task["config"], ti + [f"train.output_dir={toy_task['dir'] / name}", *overrides])

    fit(config("carried"))
    fit(config("fresh", "distill.intervention_fresh_optimizer=true"))
    carried, fresh = records(toy_task["dir"] / "carried"), records(toy_task["dir"] / "fresh")
    train = lambda rs: [r["loss"] for r in rs if r["split"] == "train"]  # noqa: E731
    # the update of step 5 (index 4 = s) is the first to differ: the loss logged at record 6 is its first effect
    assert train(fresh)[:5] == train(carried)[:5] and train(fresh)[5] != train(carried)[5]

    # killed at index 3 (the checkpoint of step 2 holds moments), then at index 5 (the checkpoint of step 4 = s:
    # the restart happens again on resuming, before any accumulator exists)
    cfg = config("resumed", "distill.intervention_fresh_optimizer=true")
    for crash, resume in ((3, False), (5, True)):
        plugins = build_plugins(cfg)
        plugins.loss_terms.append(CrashAt(crash))
        with pytest.raises(Crash):
            fit(cfg, plugins, resume=resume)
    fit(cfg, resume=True)
    assert records(toy_task["dir"] / "resumed") == fresh
    weights = [paddle.load(str(toy_task["dir"] / name / "checkpoints" / "last" / "model_state.pdparams"))
               for name in ("fresh", "resumed")]
    assert all(np.array_equal(weights[0][k].numpy(), weights[1][k].numpy()) for k in weights[0])


def test_reference_settings_are_checked(toy_task):
    with pytest.raises(ConfigError, match="`distill.intervention_fresh_optimizer: True` is a setting of Teacher "
                                          "Intervention, which this config does not enable"):
        load_config(toy_task["config"], ["distill.teacher=t", "distill.intervention_fresh_optimizer=true"])
    with pytest.raises(ConfigError, match="`train.grad_clip: per_parameter` is a setting of gradient clipping, which "
                                          r"this config does not enable.*set `train.max_grad_norm` > 0"):
        load_config(toy_task["config"], ["train.grad_clip=per_parameter", "train.max_grad_norm=0"])
    with pytest.raises(ConfigError, match=r"`train.optimizer` must be one of \['adamw', 'bert_adam'\]"):
        load_config(toy_task["config"], ["train.optimizer=adam"])


def test_bert_adam_with_per_parameter_clipping_learns_the_toy_task(toy_task):
    results = fit(load_config(toy_task["config"], ["train.optimizer=bert_adam", "train.grad_clip=per_parameter"]))
    assert results["test"]["accuracy"] > 90 and results["dev"]["accuracy"] > 90
