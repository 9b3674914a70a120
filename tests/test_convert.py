"""HF BERT -> PaddleNLP ERNIE conversion, checked against an independent NumPy BERT forward."""
import json
import logging
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from scipy.special import erf

import ernie_qat  # noqa: F401  (environment set-up before paddle)
import paddle
from paddlenlp.transformers import ErnieForSequenceClassification, ErnieModel, ErnieTokenizer
from paddlenlp.utils.log import logger as paddlenlp_logger

from ernie_qat.models.builtin import minilm_source_dir
from ernie_qat.models.convert import ConversionError, convert_bert_checkpoint

REPO = Path(__file__).resolve().parents[1]
SENTENCES = [
    "The movie was surprisingly good.",
    "Quarterly earnings rose by twelve percent, beating analysts' expectations for the third year in a row.",
    "Hello!",
    "She said the train to Boston would leave at noon, but it was delayed because of the storm.",
]


def numpy_bert(w, cfg, input_ids, token_type_ids, attention_mask):
    """BERT encoder + pooler in float64 from HF-named weights `w` and config dict `cfg`.

    Args: input_ids, token_type_ids, attention_mask: [B, L] (mask 1 = token, 0 = padding).
    Returns: sequence output [B, L, H], pooled output [B, H].
    """
    w = {k: v.astype(np.float64) for k, v in w.items()}
    eps, heads = cfg["layer_norm_eps"], cfg["num_attention_heads"]

    def layer_norm(x, prefix):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * w[prefix + ".weight"] + w[prefix + ".bias"]

    def linear(x, prefix):  # HF/torch weight layout [out, in]
        return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]

    batch, length = input_ids.shape
    x = (w["embeddings.word_embeddings.weight"][input_ids]
         + w["embeddings.position_embeddings.weight"][np.arange(length)][None]
         + w["embeddings.token_type_embeddings.weight"][token_type_ids])
    x = layer_norm(x, "embeddings.LayerNorm")
    additive_mask = (1.0 - attention_mask[:, None, None, :]) * -1e4  # [B, 1, 1, L], as PaddleNLP's ERNIE
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."

        def split_heads(t):  # [B, L, H] -> [B, heads, L, H / heads]
            return t.reshape(batch, length, heads, -1).transpose(0, 2, 1, 3)

        q, k, v = (split_heads(linear(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1]) + additive_mask
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, -1)
        x = layer_norm(x + linear(context, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        hidden = linear(x, p + "intermediate.dense")
        hidden = 0.5 * hidden * (1.0 + erf(hidden / np.sqrt(2.0)))
        x = layer_norm(x + linear(hidden, p + "output.dense"), p + "output.LayerNorm")
    return x, np.tanh(linear(x[:, 0], "pooler.dense"))


def paddle_forward(model_dir, input_ids, token_type_ids, attention_mask):
    model = ErnieModel.from_pretrained(str(model_dir))
    model.eval()  # from_pretrained returns a model in training mode (dropout on)
    with paddle.no_grad():
        seq, pooled = model(paddle.to_tensor(input_ids), token_type_ids=paddle.to_tensor(token_type_ids),
                            attention_mask=paddle.to_tensor(attention_mask))
    return seq.numpy(), pooled.numpy()


def max_diff_on_tokens(seq_a, seq_b, attention_mask):
    return float(np.abs(seq_a - seq_b)[attention_mask.astype(bool)].max())


@pytest.fixture
def no_network(monkeypatch):
    """Make every socket connection / DNS lookup in this process fail, and record the attempts."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if args and isinstance(args[0], socket.socket) else args)
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


# --- the real MiniLM checkpoint -------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    src = minilm_source_dir()
    return src, convert_bert_checkpoint(src, tmp_path_factory.mktemp("minilm"))


def test_minilm_matches_numpy_bert(minilm, no_network):
    src, dst = minilm
    cfg = json.loads((src / "config.json").read_text())
    tokenizer = ErnieTokenizer.from_pretrained(str(dst))
    batch = tokenizer(SENTENCES, padding=True, return_attention_mask=True, return_tensors="np")
    ids, types, mask = batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]
    assert mask.sum(1).min() < mask.shape[1], "batch should contain padding"
    assert tokenizer.convert_ids_to_tokens(ids[2][: mask[2].sum()].tolist()) == ["[CLS]", "hello", "!", "[SEP]"]

    ref_seq, ref_pooled = numpy_bert(load_file(str(src / "model.safetensors")), cfg, ids, types, mask.astype(np.float64))
    seq, pooled = paddle_forward(dst, ids, types, mask)
    seq_diff, pooled_diff = max_diff_on_tokens(seq, ref_seq, mask), float(np.abs(pooled - ref_pooled).max())
    print(f"MiniLM max abs diff: sequence {seq_diff:.2e}, pooled {pooled_diff:.2e}")
    assert seq_diff < 1e-4
    assert pooled_diff < 1e-4
    assert no_network == []


def test_minilm_loads_for_classification_without_missing_encoder_weights(minilm, no_network, monkeypatch):
    _, dst = minilm
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    monkeypatch.setattr(paddlenlp_logger.logger, "handlers", [handler])  # its own logger, not propagated
    model = ErnieForSequenceClassification.from_pretrained(str(dst), num_classes=3)
    assert model.classifier.weight.shape == [384, 3]
    newly_initialised = re.findall(r"newly initialized: \[([^\]]*)\]", "\n".join(messages))
    assert len(newly_initialised) == 1
    assert sorted(re.findall(r"'([^']+)'", newly_initialised[0])) == ["classifier.bias", "classifier.weight"]
    assert no_network == []


# --- a tiny random checkpoint written here ----------------------------------------------------

TINY_CONFIG = {
    "model_type": "bert", "vocab_size": 20, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 16, "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 16, "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0,
}
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"word{i}" for i in range(15)]


def tiny_weights(seed=0):
    """HF-named BERT weights for TINY_CONFIG (torch layouts: Linear [out, in])."""
    rng = np.random.default_rng(seed)
    h, f = TINY_CONFIG["hidden_size"], TINY_CONFIG["intermediate_size"]
    shapes = {
        "embeddings.word_embeddings.weight": (20, h), "embeddings.position_embeddings.weight": (16, h),
        "embeddings.token_type_embeddings.weight": (2, h),
        "pooler.dense.weight": (h, h), "pooler.dense.bias": (h,),
    }
    for n in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
        shapes.update({f"encoder.layer.0.{n}.weight": (h, h), f"encoder.layer.0.{n}.bias": (h,)})
    shapes.update({"encoder.layer.0.intermediate.dense.weight": (f, h), "encoder.layer.0.intermediate.dense.bias": (f,),
                   "encoder.layer.0.output.dense.weight": (h, f), "encoder.layer.0.output.dense.bias": (h,)})
    weights = {name: rng.normal(0, 0.5, shape).astype(np.float32) for name, shape in shapes.items()}
    for ln in ("embeddings.LayerNorm", "encoder.layer.0.attention.output.LayerNorm", "encoder.layer.0.output.LayerNorm"):
        weights[ln + ".weight"] = rng.normal(1, 0.2, (h,)).astype(np.float32)
        weights[ln + ".bias"] = rng.normal(0, 0.2, (h,)).astype(np.float32)
    return weights


def write_checkpoint(folder, weights, config=TINY_CONFIG):
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "vocab.txt").write_text("\n".join(TINY_VOCAB) + "\n")
    return folder


@pytest.mark.parametrize("prefix,old_layer_norm_names", [("", False), ("bert.", True)])
def test_tiny_checkpoint_matches_numpy_bert(tmp_path, no_network, prefix, old_layer_norm_names):
    weights = tiny_weights()
    stored = {}
    for name, value in weights.items():
        if old_layer_norm_names and ".LayerNorm." in name:
            name = name.replace(".weight", ".gamma").replace(".bias", ".beta")
        stored[prefix + name] = value
    stored[prefix + "embeddings.position_ids"] = np.arange(16, dtype=np.int64)[None]  # ignored buffer
    src = write_checkpoint(tmp_path / "hf", stored)
    dst = convert_bert_checkpoint(src, tmp_path / "ernie")

    ids = np.array([[2, 7, 9, 11, 5, 3], [2, 12, 3, 0, 0, 0]], dtype=np.int64)
    types = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)
    ref_seq, ref_pooled = numpy_bert(weights, TINY_CONFIG, ids, types, mask.astype(np.float64))
    seq, pooled = paddle_forward(dst, ids, types, mask)
    seq_diff, pooled_diff = max_diff_on_tokens(seq, ref_seq, mask), float(np.abs(pooled - ref_pooled).max())
    print(f"tiny checkpoint max abs diff: sequence {seq_diff:.2e}, pooled {pooled_diff:.2e}")
    assert seq_diff < 1e-5
    assert pooled_diff < 1e-5
    assert ErnieTokenizer.from_pretrained(str(dst)).convert_tokens_to_ids(["[CLS]", "word3"]) == [2, 8]
    assert no_network == []


def _drop(name):
    return lambda w: {k: v for k, v in w.items() if k != name}


def _put(name, shape):
    return lambda w: {**w, name: np.zeros(shape, np.float32)}


@pytest.mark.parametrize("edit,message", [
    (_drop("encoder.layer.0.intermediate.dense.bias"), r"1 missing tensor: encoder\.layer\.0\.intermediate\.dense\.bias"),
    (_put("encoder.layer.0.attention.self.distance_embedding.weight", (31, 4)),
     r"1 unexpected tensor: encoder\.layer\.0\.attention\.self\.distance_embedding\.weight"),
    (_put("encoder.layer.0.output.dense.weight", (8, 8)),
     r"1 wrongly shaped tensor: encoder\.layer\.0\.output\.dense\.weight \[8, 8\], expected \[8, 16\]"),
])
def test_wrong_layout_is_named(tmp_path, edit, message):
    src = write_checkpoint(tmp_path / "hf", edit(tiny_weights()))
    with pytest.raises(ConversionError, match=message):
        convert_bert_checkpoint(src, tmp_path / "ernie")


def test_missing_layers_are_counted_and_listed_briefly(tmp_path):
    src = write_checkpoint(tmp_path / "hf", tiny_weights(), {**TINY_CONFIG, "num_hidden_layers": 3})
    with pytest.raises(ConversionError, match=r"32 missing tensors: encoder\.layer\.1\.attention\.self\.query\.weight, "
                                              r".*\(22 more\)") as error:
        convert_bert_checkpoint(src, tmp_path / "ernie")
    assert "encoder.layer.2.output.LayerNorm.bias" not in str(error.value)


@pytest.mark.parametrize("change,message", [
    ({"layer_norm_eps": 1e-5}, r"layer_norm_eps=1e-05"),
    ({"hidden_act": "gelu_new"}, r"hidden_act='gelu_new'"),
])
def test_unsupported_config_is_rejected(tmp_path, change, message):
    src = write_checkpoint(tmp_path / "hf", tiny_weights(), {**TINY_CONFIG, **change})
    with pytest.raises(ConversionError, match=message):
        convert_bert_checkpoint(src, tmp_path / "ernie")


def test_cli_reports_missing_weights_in_one_line(tmp_path):
    src = write_checkpoint(tmp_path / "hf", tiny_weights())
    (src / "model.safetensors").unlink()
    result = subprocess.run([sys.executable, str(REPO / "tools" / "convert_checkpoint.py"), str(src),
                             str(tmp_path / "ernie")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: ") and "model.safetensors" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "ernie").exists()
