"""Order an ERNIE encoder's inner dimensions so that no int8 GEMM can saturate on CPUs without VNNI.

Without VNNI (AVX2, AVX-512 without VNNI), oneDNN's int8 GEMM shifts the s8 activations to u8
(x + 128, compensated exactly later) and multiplies them with the s8 weights by `vpmaddubsw`, which
adds each two neighbouring products along the reduction (K) dimension, k = 2i and 2i + 1, into a
saturating int16. Two same-sign weight levels with |w1| + |w2| >= 129 overflow it when both
activations are large: measured on MR, 2.5% of the tokens of one MiniLM FFN got outputs off by up
to 3.6, and a simulation of the int16 pairs reproduces the INT8 predictor's output to float
rounding (docs/int8_parity.md). With |w1| + |w2| <= 128 no pair can overflow: 255 * 128 < 32767.

The reduction dimensions can be reordered without changing the model: the hidden dimension
everywhere (embeddings, LayerNorms, every Linear's rows or columns), each layer's FFN dimension and
the dimensions inside each attention head. `pair_int8_weights` chooses orders in which neighbouring
rows of every quantized weight that reads them never hold such a pair (a matching on the rows that
are compatible), and permutes the parameters in place. Exact in integer arithmetic, so the INT8
predictor runs the trained model; an FP32 run changes only by float summation order.

Example:
    unpaired = pair_int8_weights(model.net.ernie, ranges)  # before saving the inference graph
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle

PAIR_LIMIT = 128  # |w1| + |w2| of same-sign levels that int16 holds for any u8 activations: 255 * 128 < 32767
LEVELS = 127


def levels(weight: np.ndarray, weight_range: Optional[float] = None) -> np.ndarray:
    """int8 levels [K, N] of a per-tensor quantized weight [K, N] (range: max |W| unless given)."""
    weight_range = weight_range or float(np.abs(weight).max()) or 1.0
    return np.clip(np.round(weight / weight_range * LEVELS), -LEVELS, LEVELS)


def conflicts(readers: Sequence[np.ndarray]) -> np.ndarray:
    """[K, K] bool: rows i and j may not be neighbours, for weights' levels [K, N_r] that share rows."""
    size = len(readers[0])
    clash = np.zeros((size, size), bool)
    for lv in readers:
        positive, negative = np.clip(lv, 0, None), np.clip(-lv, 0, None)
        for side in (positive, negative):
            # a + b >= limit needs max(a, b) >= limit / 2: only rows holding such a level can clash
            for i in np.flatnonzero(side.max(1) >= PAIR_LIMIT / 2):
                row = (side[i] + side >= PAIR_LIMIT).any(1)
                clash[i] |= row
                clash[:, i] |= row
    return clash


def pairing_order(clash: np.ndarray) -> Tuple[np.ndarray, int]:
    """(order, unpaired): a permutation of range(K) whose neighbours (2i, 2i + 1) do not clash where avoidable,
    and the number of clashing neighbour pairs left."""
    size = len(clash)
    free = ~clash
    np.fill_diagonal(free, False)
    degree = free.sum(1)
    partner = np.full(size, -1)
    for i in np.argsort(degree, kind="stable"):  # the most constrained rows first, each with its least wanted partner
        if partner[i] >= 0:
            continue
        options = np.flatnonzero(free[i] & (partner < 0))
        if len(options):
            j = options[np.argmin(degree[options])]
            partner[i], partner[j] = j, i
    if (partner < 0).sum() > size % 2:
        partner = _maximum_matching(free, partner)
    order, seen = [], set()
    for i in range(size):
        if i not in seen and partner[i] >= 0:
            order += [i, partner[i]]
            seen.update((i, partner[i]))
    order += [i for i in range(size) if partner[i] < 0]
    order = np.array(order)
    left = int(sum(clash[a, b] for a, b in zip(order[0::2], order[1::2])))
    return order, left


def _maximum_matching(free: np.ndarray, greedy: np.ndarray) -> np.ndarray:
    """Partners of a maximum matching of the `free` graph (networkx), if it pairs more rows than `greedy`."""
    import networkx as nx
    graph = nx.Graph()
    graph.add_nodes_from(range(len(free)))
    graph.add_edges_from(zip(*np.nonzero(np.triu(free, 1))))
    partner = np.full(len(free), -1)
    for a, b in nx.max_weight_matching(graph, maxcardinality=True):
        partner[a], partner[b] = b, a
    return partner if (partner >= 0).sum() > (greedy >= 0).sum() else greedy


def pair_int8_weights(ernie, ranges: Optional[Dict[str, float]] = None) -> Optional[int]:
    """Reorder `ernie`'s (a PaddleNLP ErnieModel, QAT-wrapped or not) hidden, FFN and per-head dimensions in
    place so that no quantized Linear has a saturating neighbour pair; returns the pairs that could not be
    avoided, or None, changing nothing, if an encoder layer is not made of Linear layers of the usual shapes
    (for example OCS's split-channel layers, ernie_qat.ptq.ocs).

    Args:
        ranges: INT8 ranges of weights by parameter name, for weights not quantized by their max |W|.
    """
    ranges = ranges or {}
    layers = list(ernie.encoder.layers)
    if not all(_plain_layer(layer) for layer in layers):
        return None

    def lv(linear):
        return levels(linear.weight.numpy(), ranges.get(linear.weight.name))

    unpaired = 0
    readers = [lv(getattr(layer.self_attn, name)) for layer in layers for name in ("q_proj", "k_proj", "v_proj")]
    readers += [lv(layer.linear1) for layer in layers]
    if hasattr(ernie.pooler.dense, "_fake_quant_weight"):  # quant.quantize_pooler
        readers.append(lv(ernie.pooler.dense))
    order, left = pairing_order(conflicts(readers))
    unpaired += left
    _permute_hidden(ernie, order)
    for layer in layers:
        order, left = pairing_order(conflicts([lv(layer.linear2)]))
        unpaired += left
        _permute(layer.linear1.weight, order, axis=1)
        _permute(layer.linear1.bias, order)
        _permute(layer.linear2.weight, order, axis=0)
        attention = layer.self_attn
        head_size = attention.head_dim
        out_levels = lv(attention.out_proj)
        order = []
        for head in range(attention.num_heads):
            dims = np.arange(head * head_size, (head + 1) * head_size)
            head_order, left = pairing_order(conflicts([out_levels[dims]]))
            unpaired += left
            order.append(dims[head_order])
        order = np.concatenate(order)
        _permute(attention.v_proj.weight, order, axis=1)
        _permute(attention.v_proj.bias, order)
        _permute(attention.out_proj.weight, order, axis=0)
    return unpaired


def _plain_layer(layer) -> bool:
    """Whether an encoder layer's Linear layers hold `weight` [in, out] of the shapes an ERNIE layer has."""
    attention = layer.self_attn
    linears = [attention.q_proj, attention.k_proj, attention.v_proj, attention.out_proj, layer.linear1, layer.linear2]
    if not all(isinstance(getattr(linear, "weight", None), paddle.Tensor) for linear in linears):
        return False
    hidden, ffn = layer.norm1.weight.shape[0], layer.linear1.weight.shape[1]
    shapes = [list(linear.weight.shape) for linear in linears]
    return shapes == [[hidden, hidden]] * 4 + [[hidden, ffn], [ffn, hidden]]


def _permute_hidden(ernie, order: np.ndarray) -> None:
    """Reorder the hidden dimension: what writes it (columns) and what reads it (rows)."""
    embedding_parameters = ernie.embeddings.parameters()  # tables [rows, H] and the LayerNorm's [H]
    writers: List = [p for p in embedding_parameters if len(p.shape) == 2]
    vectors = [p for p in embedding_parameters if len(p.shape) == 1]
    readers = [ernie.pooler.dense.weight]
    for layer in ernie.encoder.layers:
        attention = layer.self_attn
        readers += [attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight, layer.linear1.weight]
        writers += [attention.out_proj.weight, layer.linear2.weight]
        vectors += [attention.out_proj.bias, layer.linear2.bias, layer.norm1.weight, layer.norm1.bias,
                    layer.norm2.weight, layer.norm2.bias]
    for weight in writers:
        _permute(weight, order, axis=1)
    for weight in readers:
        _permute(weight, order, axis=0)
    for vector in vectors:
        _permute(vector, order)


def _permute(parameter, order: np.ndarray, axis: int = 0) -> None:
    parameter.set_value(paddle.to_tensor(np.take(parameter.numpy(), order, axis=axis)))
