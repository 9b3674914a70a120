"""Reordering ERNIE's inner dimensions keeps the model and leaves no int8 weight pair that overflows int16."""
import numpy as np
import paddle
from paddlenlp.transformers import ErnieConfig, ErnieForSequenceClassification

from ernie_qat.models.classifier import TextClassifier
from ernie_qat.quant.int16_pairs import levels, pair_int8_weights, pairing_order

INT16_MAX = 32767


def worst_pair_sums(weight: np.ndarray) -> np.ndarray:
    """|u1·w1 + u2·w2| of vpmaddubsw for each neighbour pair (2i, 2i + 1) and column, at the worst u8 inputs."""
    lv = levels(weight)
    first, second = lv[0::2], lv[1::2]
    same_sign = np.sign(first) == np.sign(second)
    return np.where(same_sign, 255 * (np.abs(first) + np.abs(second)), 255 * np.maximum(np.abs(first), np.abs(second)))


def tiny_classifier() -> TextClassifier:
    paddle.seed(0)
    config = ErnieConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64, num_labels=3,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = TextClassifier(ErnieForSequenceClassification(config))
    model.eval()
    return model


def quantized_readers(ernie):
    """Every Linear weight the INT8 predictor quantizes, by what its rows are."""
    for layer in ernie.encoder.layers:
        attention = layer.self_attn
        yield from (attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight, layer.linear1.weight,
                    attention.out_proj.weight, layer.linear2.weight)


def test_pairs_stop_overflowing_and_the_model_keeps_its_outputs():
    model = tiny_classifier()
    ernie = model.net.ernie
    rng = np.random.default_rng(0)
    for weight in quantized_readers(ernie):  # ranges set by outliers, some in neighbouring rows, as in BERT
        values = rng.normal(0, 0.02, weight.shape).astype(np.float32)
        column, top = rng.integers(values.shape[1]), 0.2
        values[0:6, column] = top * np.array([1.0, 0.9, 0.95, 0.8, -1.0, -0.9])
        weight.set_value(paddle.to_tensor(values))
    assert max(worst_pair_sums(w.numpy()).max() for w in quantized_readers(ernie)) > INT16_MAX
    ids = paddle.to_tensor(rng.integers(5, 100, size=(4, 12)))
    types = paddle.zeros_like(ids)
    before = model(ids, types).numpy()

    assert pair_int8_weights(ernie) == 0

    for weight in quantized_readers(ernie):
        assert worst_pair_sums(weight.numpy()).max() <= INT16_MAX
    np.testing.assert_allclose(model(ids, types).numpy(), before, rtol=1e-5, atol=1e-5)


def test_pairing_order_avoids_clashes_where_it_can_and_counts_the_rest():
    free = np.zeros((4, 4), bool)  # only 0-1, 1-2 and 2-3 may be neighbours: one way to pair all four
    for a, b in ((0, 1), (1, 2), (2, 3)):
        free[a, b] = free[b, a] = True
    order, left = pairing_order(~free)
    assert left == 0 and sorted(order) == [0, 1, 2, 3]
    assert {frozenset(order[0:2]), frozenset(order[2:4])} == {frozenset((0, 1)), frozenset((2, 3))}

    order, left = pairing_order(np.ones((6, 6), bool))  # everything clashes: three pairs left
    assert left == 3 and sorted(order) == list(range(6))


def test_layers_of_another_shape_are_left_in_their_order():
    model = tiny_classifier()
    ernie = model.net.ernie
    ernie.encoder.layers[1].linear1 = paddle.nn.Sequential(ernie.encoder.layers[1].linear1)  # no `weight` (like OCS)
    before = {name: p.numpy().copy() for name, p in model.named_parameters()}
    assert pair_int8_weights(ernie) is None
    assert all(np.array_equal(p.numpy(), before[name]) for name, p in model.named_parameters())
