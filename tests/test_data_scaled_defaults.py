"""Defaults that scale with the data: `train.epochs: auto` and `train.class_weights: balanced`."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from ernie_qat.config import ConfigError, load_config
from ernie_qat.data.batching import collate, encode
from ernie_qat.data.loader import LabelVocab, read_examples
from ernie_qat.plugins import build_plugins
from ernie_qat.train.class_weights import balanced_class_weights
from ernie_qat.train.epochs import MAX_EPOCHS, MIN_EPOCHS, auto_epochs, resolve_epochs
from ernie_qat.train.trainer import build_student, fit, make_optimizer, train_step


def test_auto_epochs_takes_the_larger_need_within_bounds():
    # steps: 3,200 examples at batch 32 are 100 steps per epoch; 600 steps take 6 epochs; classes need 1
    assert auto_epochs([1600, 1600], 32)[0] == 6
    # classes: 52 classes, median 17 examples: 100 visits take ceil(100 / 17) = 6 epochs; 5,286 examples are
    # 166 steps per epoch, and 600 steps take 4
    sizes = [2840, 1596] + [17] * 50
    assert auto_epochs(sizes, 32) == (6, "600 steps take 4 epochs of 166; seeing the median class (17 examples, "
                                          "52 classes) 100 times takes 6; bounds [2, 10]")
    assert auto_epochs([500_000, 500_000], 32)[0] == MIN_EPOCHS
    assert auto_epochs([3, 4], 32)[0] == MAX_EPOCHS
    assert auto_epochs([6, 6], 1)[0] == 10  # batch 1: 12 steps per epoch, 50 epochs for 600 steps: capped


def test_resolve_epochs_keeps_a_number_and_counts_labels_for_auto():
    assert resolve_epochs(3, ["a", "b"], 32) == (3, "")
    assert resolve_epochs("auto", ["pos"] * 1600 + ["neg"] * 1600, 32)[0] == 6


@pytest.mark.parametrize("value, match", [
    ("Auto", r"`train.epochs`: expected int or `auto`, got 'Auto' \(str\)"),
    ("1.5", r"`train.epochs`: expected int or `auto`, got 1.5 \(float\)"),
    ("0", r"`train.epochs` must be in \[1, inf\], got 0"),
])
def test_epochs_is_a_number_or_auto(toy_task, value, match):
    assert load_config(toy_task["config"], ["train.epochs=auto"]).train.epochs == "auto"
    with pytest.raises(ConfigError, match=match):
        load_config(toy_task["config"], [f"train.epochs={value}"])


def test_balanced_class_weights_are_n_over_k_times_count():
    weights = balanced_class_weights([0, 0, 0, 1, 2, 2], 3)  # n = 6, k = 3, counts 3, 1, 2
    np.testing.assert_allclose(weights, [6 / (3 * 3), 6 / (3 * 1), 6 / (3 * 2)], rtol=1e-6)
    assert weights.dtype == np.float32
    with pytest.raises(ValueError, match="class 1 of 3 has no training example"):
        balanced_class_weights([0, 2], 3)
    with pytest.raises(ConfigError, match=r"`train.class_weights` must be one of \['none', 'balanced'\]"):
        load_config(None, ["data.dataset=mr", "train.class_weights=inverse"])


def test_the_training_loss_is_the_class_weighted_mean(toy_task):
    cfg = load_config(toy_task["config"], ["model.dropout=0"])
    examples = read_examples(toy_task["dir"] / "train.tsv")
    labels = LabelVocab.from_examples(examples)
    plugins = build_plugins(cfg)
    model, tokenizer = build_student(cfg, plugins, labels)
    optimizer, _ = make_optimizer(model, cfg.train, 10)
    items = encode(examples[:8], tokenizer, cfg.data.max_seq_len, labels)
    batch = {k: paddle.to_tensor(v) for k, v in collate(items, model.pad_token_id).items()}
    weights = np.array([0.25, 3.0], dtype=np.float32)
    classifier = model.net.classifier.weight
    classifier.set_value(paddle.randn(classifier.shape) * 10)  # logits far from uniform: the weights matter
    model.train()
    logits = model(batch["input_ids"], batch["token_type_ids"]).numpy()
    loss, _ = train_step(model, optimizer, batch, plugins, 0, None, paddle.to_tensor(weights))

    y = batch["labels"].numpy()
    nll = -F.log_softmax(paddle.to_tensor(logits), axis=-1).numpy()[np.arange(len(y)), y]
    assert loss == pytest.approx(float((weights[y] * nll).sum() / weights[y].sum()), rel=1e-5)
    assert loss != pytest.approx(float(nll.mean()), rel=1e-2)


def test_a_run_with_auto_epochs_and_balanced_weights(toy_task, capsys):
    # 256 examples at batch 128: 2 steps per epoch, 300 epochs for 600 steps: 10 epochs, 20 steps
    results = fit(load_config(toy_task["config"], ["train.epochs=auto", "train.batch_size=128",
                                                   "train.class_weights=balanced"]))
    assert results["steps"] == 20
    assert "train.epochs: auto = 10 (600 steps take 300 epochs of 2;" in capsys.readouterr().err
