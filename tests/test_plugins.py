"""The plugin contract (ernie_qat.train.hooks) on the tiny model: hook order, outputs, interventions,
learnable quantizers, training-only transforms, and the errors of a broken plugin."""
import json

import numpy as np
import paddle
import pytest
from paddle import nn

from conftest import trained
from ernie_qat.config import load_config
from ernie_qat.data.loader import LabelVocab
from ernie_qat.export import export
from ernie_qat.models.classifier import build_classifier
from ernie_qat.models.taps import TapsTransform, forward_outputs
from ernie_qat.plugins import build_plugins
from ernie_qat.quant.quantizers import QUANTIZER_LAYERS, frozen_statistics
from ernie_qat.train.checkpoint import load_checkpoint
from ernie_qat.train.hooks import (TRAINING, Intervention, LossTerm, ModelTransform, PluginError, Plugins,
                                   StepStrategy)
from ernie_qat.train.trainer import fit


class Recorder:
    """Shared call log of the recording plugins: (plugin, hook, step)."""

    def __init__(self):
        self.calls = []


class RecordingTransform(ModelTransform):
    name, role, order = "rec_transform", TRAINING, 95

    def __init__(self, log):
        self.log = log

    def prepare(self, model):
        self.log.calls.append(("transform", "prepare", None))
        return model

    def setup(self, model):
        self.log.calls.append(("transform", "setup", None))

    def on_batch(self, model, batch, step):
        self.log.calls.append(("transform", "on_batch", step))

    def on_evaluate(self, model, step, metrics):
        assert "accuracy" in metrics
        self.log.calls.append(("transform", "on_evaluate", step))


class RecordingTerm(LossTerm):
    name = "rec"
    needs = frozenset({"hidden_states", "attention_scores"})

    def __init__(self, log):
        self.log, self.calls_this_step = log, {}

    def on_batch(self, model, batch, step):
        self.log.calls.append(("term", "on_batch", step))

    def __call__(self, model, outputs, batch, step):
        self.log.calls.append(("term", "call", step))
        assert len(outputs.hidden_states) == 3 and len(outputs.attention_scores) == 2  # 2 layers
        assert outputs.attention_probs is None  # not asked for
        call = self.calls_this_step.get(step, 0)
        self.calls_this_step[step] = call + 1
        return paddle.zeros([]), {"call": float(call), "step": float(step)}


class RecordingIntervention(Intervention):
    """Leaves layer 1's attention output as it is, on even steps only."""
    point, layers = "attention.output", [1]

    def __init__(self, log):
        self.log = log

    def active(self, step):
        return step % 2 == 0

    def replace(self, tensor, layer):
        self.log.calls.append(("intervention", f"replace layer {layer}", None))
        return tensor


class TwoPassStrategy(StepStrategy):
    """Calls the closure twice (as SAM does), the second time with frozen observers."""
    name = "two_pass"

    def __init__(self, log):
        self.log = log

    def step(self, model, optimizer, closure, step):
        self.log.calls.append(("strategy", "step", step))
        first = closure()
        optimizer.clear_grad()
        with frozen_statistics(model):
            second = closure()
        assert float(first) == pytest.approx(float(second), rel=1e-5)  # no dropout: the same loss
        optimizer.step()
        return {"passes": 2.0}


def test_a_recording_plugin_sees_every_hook_in_order(toy_task):
    cfg = load_config(toy_task["config"], ["train.max_steps=3", "train.eval_every=2", "train.log_every=1",
                                           "model.dropout=0.0"])
    log = Recorder()
    base = build_plugins(cfg)
    plugins = Plugins(transforms=[RecordingTransform(log), *base.transforms], loss_terms=[RecordingTerm(log)],
                      interventions=[RecordingIntervention(log)], step_strategy=TwoPassStrategy(log))
    assert [t.name for t in plugins.ordered_transforms()][-1] == "rec_transform"  # declared order, not list order
    fit(cfg, plugins)

    def step_calls(step, replace):
        per_pass = [("intervention", "replace layer 1", None)] * replace + [("term", "call", step)]
        return [("transform", "on_batch", step), ("term", "on_batch", step), ("strategy", "step", step),
                *per_pass, *per_pass]

    assert log.calls == [("transform", "prepare", None), ("transform", "setup", None),
                         *step_calls(0, replace=1), *step_calls(1, replace=0),
                         ("transform", "on_evaluate", 2),
                         *step_calls(2, replace=1), ("transform", "on_evaluate", 3),
                         # the last step intervened: dev also through the training forward of step 2 (one batch)
                         ("transform", "on_batch", 2), ("term", "on_batch", 2),
                         ("intervention", "replace layer 1", None)]
    records = [json.loads(line) for line in (toy_task["run"] / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert [r["loss/rec/call"] for r in train] == [0.0, 0.0, 0.0]  # the first pass's logs are kept
    assert [r["loss/rec/step"] for r in train] == [0.0, 1.0, 2.0]
    assert all(r["step/passes"] == 2.0 for r in train)


class LazyStrategy(StepStrategy):
    name = "lazy"

    def step(self, model, optimizer, closure, step):
        optimizer.step()
        return {}


def test_a_strategy_that_never_calls_the_closure_fails_clearly(toy_task):
    cfg = load_config(toy_task["config"], ["train.max_steps=2"])
    plugins = build_plugins(cfg)
    plugins.step_strategy = LazyStrategy()
    with pytest.raises(PluginError, match=r"strategy `lazy` \(LazyStrategy\) returned without calling the closure"):
        fit(cfg, plugins)


def _tiny_model(toy_task, seed=0):
    cfg = load_config(toy_task["config"], ["model.dropout=0.0"])
    paddle.seed(seed)
    model = build_classifier(cfg.model, LabelVocab(["neg", "pos"]))[0]
    model.eval()
    return model


def _batch():
    ids = paddle.to_tensor([[2, 5, 17, 8, 3, 0], [2, 11, 12, 13, 14, 3]], dtype="int64")
    return {"input_ids": ids, "token_type_ids": paddle.zeros_like(ids)}


def test_outputs_match_paddlenlp_hidden_states_and_attention_probabilities(toy_task):
    model = _tiny_model(toy_task)
    batch = _batch()
    mask = (batch["input_ids"] == 0).astype("float32").unsqueeze([1, 2]) * -1e4
    reference = model.net.ernie(batch["input_ids"], token_type_ids=batch["token_type_ids"], attention_mask=mask,
                                output_hidden_states=True, output_attentions=True, return_dict=True)
    TapsTransform().prepare(model)
    outputs = forward_outputs(model, batch, frozenset({"hidden_states", "attention_probs", "attention_scores",
                                                      "attention_outputs"}))
    assert len(outputs.hidden_states) == 3 and len(outputs.attention_outputs) == 2
    for got, want in zip(outputs.hidden_states, reference.hidden_states):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    for got, want in zip(outputs.attention_probs, reference.attentions):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert outputs.attention_scores[0].shape == [2, 2, 6, 6]
    np.testing.assert_array_equal(forward_outputs(model, batch).logits.numpy(), outputs.logits.numpy())
    with pytest.raises(PluginError, match="unknown forward outputs"):
        forward_outputs(model, batch, frozenset({"attention_maps"}))


class ReplaceProjection(Intervention):
    point, layers = "attention.projection", [0]

    def __init__(self, tensor, on_steps):
        self.tensor, self.on_steps = tensor, on_steps

    def active(self, step):
        return step in self.on_steps

    def replace(self, tensor, layer):
        return self.tensor


def test_an_intervention_replaces_exactly_what_a_manual_forward_replaces_and_switches_off(toy_task):
    batch = _batch()
    given = paddle.to_tensor(np.random.RandomState(0).randn(2, 6, 32).astype("float32"))
    manual = _tiny_model(toy_task)  # the same weights, with the tensor put in by a plain Paddle hook
    handle = manual.net.ernie.encoder.layers[0].self_attn.out_proj.register_forward_post_hook(
        lambda layer, inputs, output: given)
    expected = manual(batch["input_ids"], batch["token_type_ids"]).numpy()
    handle.remove()
    plain = manual(batch["input_ids"], batch["token_type_ids"]).numpy()
    assert np.abs(expected - plain).max() > 1e-3

    model = TapsTransform().prepare(_tiny_model(toy_task))
    model.taps.interventions = [ReplaceProjection(given, on_steps={3})]
    np.testing.assert_array_equal(forward_outputs(model, batch, step=3).logits.numpy(), expected)
    np.testing.assert_array_equal(forward_outputs(model, batch, step=4).logits.numpy(), plain)  # switched off
    np.testing.assert_array_equal(forward_outputs(model, batch).logits.numpy(), plain)  # evaluation: none

    model.train()  # backward with the intervention on, then off (the fresh-leaf rule keeps both working)
    layers = model.net.ernie.encoder.layers
    def reached(layer):
        grad = layer.self_attn.q_proj.weight.grad
        return grad is not None and float(grad.abs().sum()) > 0

    for step, reaches_layer_0 in ((3, False), (4, True), (3, False)):
        forward_outputs(model, batch, step=step).logits.sum().backward()
        assert reached(layers[1]) and reached(layers[0]) == reaches_layer_0  # nothing passes a replacement
        model.clear_gradients()


def test_the_attention_output_is_the_blocks_output_after_layernorm_and_after_an_intervention(toy_task):
    batch = _batch()
    given = paddle.to_tensor(np.random.RandomState(1).randn(2, 6, 32).astype("float32"))
    manual = _tiny_model(toy_task)  # a plain forward: norm1's outputs recorded, layer 0's projection replaced
    layers, recorded = manual.net.ernie.encoder.layers, {}
    for index, layer in enumerate(layers):
        layer.norm1.register_forward_post_hook(lambda _, inputs, output, index=index: recorded.update({index: output}))
    manual(batch["input_ids"], batch["token_type_ids"])
    plain = [recorded[i].numpy() for i in range(2)]
    layers[0].self_attn.out_proj.register_forward_post_hook(lambda layer, inputs, output: given)
    manual(batch["input_ids"], batch["token_type_ids"])
    replaced = [recorded[i].numpy() for i in range(2)]

    model = TapsTransform().prepare(_tiny_model(toy_task))
    model.taps.interventions = [ReplaceProjection(given, on_steps={3})]
    for step, want in ((None, plain), (3, replaced)):  # as OI replaces the projection: the loss sees the result
        got = forward_outputs(model, batch, frozenset({"attention_outputs"}), step=step).attention_outputs
        for layer in range(2):
            np.testing.assert_array_equal(got[layer].numpy(), want[layer])
    assert np.abs(replaced[0] - plain[0]).max() > 1e-3


class ScaledQuantizer(nn.Layer):
    """A learnable test quantizer: 8-bit fake quantization times a trained `alpha`, plus a `beta` with zero gradient."""

    def __init__(self, spec, weight):
        super().__init__()
        self.spec = spec
        self.alpha = self.create_parameter([1], default_initializer=nn.initializer.Constant(1.0))
        self.beta = self.create_parameter([1], default_initializer=nn.initializer.Constant(1.0))

    def forward(self, x):
        scale = x.abs().max().detach() / 127 + 1e-8
        return (x + ((x / scale).round() * scale - x).detach()) * self.alpha + 0.0 * self.beta


def test_a_learnable_quantizer_is_trained_without_weight_decay(toy_task, fp32_checkpoint, monkeypatch):
    monkeypatch.setitem(QUANTIZER_LAYERS, "scaled", ScaledQuantizer)
    checkpoint = trained(toy_task, "scaled", "quant.method=qat", "quant.weight_quantizer=scaled",
                         "quant.quantizer_lr_scale=10", "train.max_steps=3", "train.weight_decay=0.5",
                         "train.warmup_ratio=0", f"model.name_or_path={fp32_checkpoint}")
    model = load_checkpoint(checkpoint)[0]
    quantizers = [layer for layer in model.sublayers() if isinstance(layer, ScaledQuantizer)]
    assert len(quantizers) == 12 and quantizers[0].spec.shape == (32, 32) and quantizers[0].spec.bits == 8
    assert all(float(q.alpha) != 1.0 for q in quantizers)  # trained
    assert all(float(q.beta) == 1.0 for q in quantizers)  # zero gradient and no decay: untouched


def test_parameter_groups_set_decay_and_learning_rate(toy_task):
    from ernie_qat.train.hooks import ParamGroup
    from ernie_qat.train.trainer import make_optimizer
    cfg = load_config(toy_task["config"])
    model = _tiny_model(toy_task)
    special = model.net.classifier.weight
    optimizer, _ = make_optimizer(model, cfg.train, 10, [ParamGroup([special], weight_decay=False, lr_scale=0.5)])
    assert not optimizer._apply_decay_param_fun(special.name)
    assert optimizer._apply_decay_param_fun(model.net.ernie.encoder.layers[0].linear1.weight.name)
    assert special.optimize_attr["learning_rate"] == 0.5


def test_training_only_transforms_leave_no_trace_in_checkpoints_or_exports(toy_task, fp32_checkpoint):
    cfg = load_config(toy_task["config"])
    assert [t.name for t in build_plugins(cfg).ordered_transforms() if t.role == TRAINING] == ["taps", "fast_cpu_ops"]
    plain = _tiny_model(toy_task).net.state_dict()
    saved = paddle.load(str(fp32_checkpoint / "model_state.pdparams"))
    assert saved.keys() == plain.keys()
    model = load_checkpoint(fp32_checkpoint)[0]
    assert not hasattr(model, "taps")
    assert {type(layer).__name__ for layer in model.sublayers()}.isdisjoint({"Attention", "FastLinear", "FastGELU"})
    deploy = export(fp32_checkpoint, toy_task["dir"] / "deploy_fp32", "fp32")
    program = (deploy / "model.pdmodel").read_bytes()
    compiled_ops = [b"ernie_gelu", b"ernie_layer_norm", b"ernie_softmax", b"ernie_dropout", b"py_layer"]
    assert [op for op in compiled_ops if op in program] == []


def test_two_strategies_are_a_user_error(toy_task):
    from ernie_qat.train.hooks import STEP_STRATEGIES
    cfg = load_config(toy_task["config"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(STEP_STRATEGIES, "a", lambda cfg: StepStrategy())
        patch.setitem(STEP_STRATEGIES, "b", lambda cfg: StepStrategy())
        with pytest.raises(PluginError, match="more than one optimizer-step strategy"):
            build_plugins(cfg)


def test_frozen_statistics_keep_an_extra_pass_from_moving_the_observers(toy_task):
    from ernie_qat.config import QuantConfig
    from ernie_qat.quant.qat import QATTransform
    from paddle.nn.quant.quant_layers import FakeQuantMovingAverageAbsMax

    def observer_states(model):
        return [float(layer._scale) for layer in model.sublayers() if isinstance(layer, FakeQuantMovingAverageAbsMax)]

    batch, runs = _batch(), []
    for extra_pass in (False, True):
        model = QATTransform(QuantConfig(method="qat")).prepare(_tiny_model(toy_task))
        model.train()
        forward_outputs(model, batch)
        if extra_pass:
            with frozen_statistics(model):
                forward_outputs(model, {**batch, "input_ids": batch["input_ids"] * 2})
            assert all(layer.training for layer in model.sublayers())  # switched back
        runs.append(observer_states(model))
    assert len(runs[0]) == 12 and runs[0] == runs[1]


def test_the_readme_plugin_examples_register_and_a_config_accepts_them():
    import re
    from conftest import ROOT
    from ernie_qat.train.hooks import LOSS_TERMS
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Extension points"):]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    try:
        exec(compile(example, "README.md", "exec"), {})
        cfg = load_config(None, ["data.dataset=mr", "regularizer.method=hidden_norm"])
        assert [t.name for t in build_plugins(cfg).loss_terms] == ["hidden_norm"]
        assert "scaled" in QUANTIZER_LAYERS
    finally:  # the example's registrations stay out of the other tests
        LOSS_TERMS.pop("hidden_norm", None)
        LOSS_TERMS.sections.pop("hidden_norm", None)
        QUANTIZER_LAYERS.pop("scaled", None)
