"""SAM / ASAM and SQuAT optimizer steps (ernie_qat.optim): the closed form on a quadratic, the exact restore,
two closure calls with the same dropout masks, observers as one plain step leaves them, SQuAT's alternation,
and runs on the tiny model."""
import json

import numpy as np
import paddle
import pytest
from paddle import nn

from conftest import trained
from ernie_qat.config import ConfigError, SAMConfig, load_config
from ernie_qat.data.loader import LabelVocab
from ernie_qat.optim.sam import SAM, ascent
from ernie_qat.optim.squat import SQuAT, objective_at
from ernie_qat.plugins import build_plugins
from ernie_qat.quant.quantizers import is_quantizer, quantizer_parameters
from ernie_qat.train.trainer import build_student, make_optimizer, train_step

A = np.array([[3.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]])
W0 = np.array([1.0, -2.0, 0.5])


class Quadratic(nn.Layer):
    """L(w) = ½ wᵀAw (float64)."""

    def __init__(self):
        super().__init__()
        self.w = self.create_parameter([3], dtype="float64", default_initializer=nn.initializer.Assign(W0))
        self.a = paddle.to_tensor(A)

    def loss(self):
        return 0.5 * (self.w * paddle.matmul(self.a, self.w)).sum()


class RecordingSGD(paddle.optimizer.SGD):
    """SGD that records the weights it is about to update."""

    def step(self):
        self.seen = [p.numpy().copy() for p in self._parameter_list]
        super().step()


def quadratic_step(strategy, lr=0.1):
    model = Quadratic()
    optimizer = RecordingSGD(learning_rate=lr, parameters=model.parameters())
    calls = []

    def closure():
        loss = model.loss()
        loss.backward()
        calls.append(float(loss))
        return loss

    logs = strategy.step(model, optimizer, closure, 0)
    return model, optimizer, calls, logs


@pytest.mark.parametrize("adaptive", [False, True])
def test_one_step_on_a_quadratic_matches_the_closed_form(adaptive):
    rho, eta, lr = 0.05 if not adaptive else 0.5, 0.01, 0.1
    model, optimizer, calls, logs = quadratic_step(SAM(SAMConfig(rho=rho, adaptive=adaptive, eta=eta)), lr)
    g = A @ W0
    t = np.abs(W0) + eta if adaptive else np.ones(3)
    epsilon = rho * t * t * g / np.linalg.norm(t * g)
    expected = W0 - lr * (A @ (W0 + epsilon))
    np.testing.assert_allclose(model.w.numpy(), expected, rtol=1e-9)  # ‖·‖ + 1e-12 guards a zero gradient
    assert len(calls) == 2  # the closure, exactly twice
    assert calls[1] == pytest.approx(0.5 * (W0 + epsilon) @ A @ (W0 + epsilon), rel=1e-9)
    assert logs["ascent_loss"] == pytest.approx(calls[1]) and logs["grad_norm"] == pytest.approx(np.linalg.norm(t * g))
    assert np.array_equal(optimizer.seen[0], W0)  # bit-identical to the pre-ascent weights at the update


def test_asam_epsilon_matches_its_formula_and_sam_defaults():
    rng = np.random.default_rng(0)
    w = [rng.normal(size=(4, 3)), rng.normal(size=5)]
    g = [rng.normal(size=(4, 3)), rng.normal(size=5)]
    got, divided_by = ascent([paddle.to_tensor(x) for x in w], [paddle.to_tensor(x) for x in g], 0.5, adaptive=True,
                             eta=0.01)
    t = [np.abs(x) + 0.01 for x in w]
    norm = np.sqrt(sum(((ti * gi) ** 2).sum() for ti, gi in zip(t, g)))
    assert divided_by == pytest.approx(norm, rel=1e-6)
    for e, ti, gi in zip(got, t, g):
        np.testing.assert_allclose(e.numpy(), 0.5 * ti * ti * gi / norm, rtol=1e-6)
    assert SAM(SAMConfig()).rho == 0.05 and SAM(SAMConfig(adaptive=True)).rho == 0.5


def test_every_parameter_is_restored_bit_for_bit_in_float32(toy_task):
    """w + ε − ε is not w in float32; the saved copy is. Seen by the optimizer at its update."""
    cfg = load_config(toy_task["config"], ["optimizer.method=sam", "optimizer.sam.rho=0.5"])
    plugins = build_plugins(cfg)
    model = build_student(cfg, plugins, LabelVocab(["neg", "pos"]))[0]
    before = {name: p.numpy().copy() for name, p in model.named_parameters()}
    optimizer = RecordingSGD(learning_rate=0.1, parameters=model.parameters())
    ids = paddle.to_tensor([[2, 5, 17, 8, 3], [2, 11, 12, 13, 3]], dtype="int64")
    batch = {"input_ids": ids, "token_type_ids": paddle.zeros_like(ids), "labels": paddle.to_tensor([0, 1])}
    train_step(model, optimizer, batch, plugins, 0)
    for (name, _), seen in zip(model.named_parameters(), optimizer.seen):
        assert np.array_equal(seen, before[name]), name


def test_both_passes_see_the_same_dropout_masks():
    model = Quadratic()
    masks = []

    def closure():
        mask = paddle.nn.functional.dropout(paddle.ones([64]), 0.5, training=True)
        masks.append(mask.numpy())
        loss = model.loss() * (1 + 0 * mask.sum())
        loss.backward()
        return loss

    SAM(SAMConfig()).step(model, paddle.optimizer.SGD(0.1, parameters=model.parameters()), closure, 0)
    assert len(masks) == 2 and np.array_equal(masks[0], masks[1]) and 0 < masks[0].sum() < 128


def qat_student(toy_task, *overrides):
    cfg = load_config(toy_task["config"], ["quant.method=qat", "model.dropout=0.0", *overrides])
    plugins = build_plugins(cfg)
    paddle.seed(0)
    model = build_student(cfg, plugins, LabelVocab(["neg", "pos"]))[0]
    optimizer, schedule = make_optimizer(model, cfg.train, 100, [g for p in plugins.all() for g in p.param_groups(model)])
    schedule.step(10)  # past the warm-up: a learning rate above 0
    return model, optimizer, plugins


def batch_of(seed):
    rng = np.random.default_rng(seed)
    ids = paddle.to_tensor(np.concatenate([[[2]] * 4, rng.integers(5, 20, (4, 6)), [[3]] * 4], axis=1), dtype="int64")
    return {"input_ids": ids, "token_type_ids": paddle.zeros_like(ids), "labels": paddle.to_tensor([0, 1, 0, 1])}


def quantizer_state(model):
    return {f"{name}.{key}": value.numpy().copy() for name, layer in model.named_sublayers() if is_quantizer(layer)
            for key, value in layer.state_dict().items()}


def test_sam_with_qat_leaves_observer_statistics_as_one_plain_step_would(toy_task):
    plain, plain_optimizer, plain_plugins = qat_student(toy_task)
    sam, sam_optimizer, sam_plugins = qat_student(toy_task, "optimizer.method=sam", "optimizer.sam.rho=0.5")
    sam.set_state_dict(plain.state_dict())
    start = quantizer_state(plain)
    train_step(plain, plain_optimizer, batch_of(0), plain_plugins, 0)
    logs = train_step(sam, sam_optimizer, batch_of(0), sam_plugins, 0)[1]
    after_plain, after_sam = quantizer_state(plain), quantizer_state(sam)
    moved = [key for key in start if not np.array_equal(start[key], after_plain[key])]
    assert moved  # the observers did move on the plain step...
    for key in start:  # ...and SAM's ascent pass moved none of them further
        np.testing.assert_array_equal(after_sam[key], after_plain[key], err_msg=key)
    assert logs["step/time_vs_plain"] > 1.0 and logs["step/ascent_loss"] > 0


def test_squat_alternates_weights_and_step_sizes(toy_task):
    model, optimizer, plugins = qat_student(toy_task, "quant.weight_quantizer=lsq", "quant.weight_bits=4",
                                            "optimizer.method=squat", "optimizer.squat_period=2")
    assert isinstance(plugins.step_strategy, SQuAT)
    assert [objective_at(s, 2) for s in range(6)] == ["weights", "weights", "step_sizes", "step_sizes",
                                                      "weights", "weights"]
    step_sizes = {id(p) for p in quantizer_parameters(model)}

    def snapshot():
        return {name: p.numpy().copy() for name, p in model.named_parameters() if not p.stop_gradient}

    kinds = {name: id(p) in step_sizes for name, p in model.named_parameters()}
    for step in range(4):
        before = snapshot()
        logs = train_step(model, optimizer, batch_of(step), plugins, step)[1]
        after = snapshot()
        changed = {name for name in before if not np.array_equal(before[name], after[name])}
        trains_step_sizes = objective_at(step, 2) == "step_sizes"
        assert logs["step/trains_step_sizes"] == float(trains_step_sizes)
        assert changed and all(kinds[name] == trains_step_sizes for name in changed), (step, sorted(changed)[:3])


def test_squat_needs_learned_step_sizes(toy_task):
    with pytest.raises(ConfigError, match="`optimizer.method: squat` alternates weights and learned quantizer"):
        qat_student(toy_task, "optimizer.method=squat")


def test_sam_trains_the_tiny_model_end_to_end(toy_task, fp32_checkpoint):
    best = trained(toy_task, "sam", f"model.name_or_path={fp32_checkpoint}", "quant.method=qat",
                   "optimizer.method=sam", "optimizer.sam.adaptive=true", "train.max_steps=8", "train.log_every=4")
    records = [json.loads(line) for line in (best.parent.parent / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert len(train) == 2 and all(r["step/time_vs_plain"] > 1.0 for r in train)
    results = json.loads((best.parent.parent / "results.json").read_text())
    assert results["test"]["accuracy"] > 90
