"""Hugging Face BERT checkpoint -> PaddleNLP ERNIE model directory.

ERNIE 1.0/2.0/3.0 use the BERT encoder layout, so a BERT checkpoint (`config.json`,
`model.safetensors`, `vocab.txt`) maps onto `paddlenlp.transformers.ErnieModel` one tensor at a
time: Linear weights are transposed (torch [out, in] -> Paddle [in, out]) and renamed; embeddings,
biases and LayerNorm parameters are copied. Weights are read with NumPy (no torch needed).
"""
import json
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from safetensors.numpy import load_file

from paddlenlp.transformers import ErnieConfig, ErnieModel, ErnieTokenizer

from ernie_qat.errors import UserError

# PaddleNLP's ERNIE sets every LayerNorm epsilon to 1e-12 (`ErniePretrainedModel._init_weights`)
# and ignores `ErnieConfig.layer_norm_eps`, so a checkpoint trained with another value cannot match.
PADDLE_LAYER_NORM_EPS = 1e-12
# HF `hidden_act` values meaning the same in `paddle.nn.functional` ("gelu": exact erf GELU in both).
SUPPORTED_ACTIVATIONS = ("gelu", "relu", "silu")
# Tensors of the BERT layout that are not encoder weights (a buffer; `cls.*` pre-training heads).
DROPPED_PREFIXES = ("embeddings.position_ids", "cls.")

# (HF module, Paddle module, kind); per layer, the names are under `encoder.layer.N.` / `encoder.layers.N.`.
_EMBEDDING_MODULES = [
    ("embeddings.word_embeddings", "embeddings.word_embeddings", "embedding"),
    ("embeddings.position_embeddings", "embeddings.position_embeddings", "embedding"),
    ("embeddings.token_type_embeddings", "embeddings.token_type_embeddings", "embedding"),
    ("embeddings.LayerNorm", "embeddings.layer_norm", "norm"),
]
_LAYER_MODULES = [
    ("attention.self.query", "self_attn.q_proj", "linear"),
    ("attention.self.key", "self_attn.k_proj", "linear"),
    ("attention.self.value", "self_attn.v_proj", "linear"),
    ("attention.output.dense", "self_attn.out_proj", "linear"),
    ("attention.output.LayerNorm", "norm1", "norm"),
    ("intermediate.dense", "linear1", "linear"),
    ("output.dense", "linear2", "linear"),
    ("output.LayerNorm", "norm2", "norm"),
]
_POOLER_MODULES = [("pooler.dense", "pooler.dense", "linear")]


class ConversionError(UserError):
    """The checkpoint does not have the BERT encoder layout, or uses a setting Paddle's ERNIE lacks."""


def convert_bert_checkpoint(src_dir, dst_dir) -> Path:
    """Convert the HF BERT checkpoint in `src_dir` into a PaddleNLP ERNIE directory `dst_dir`.

    `dst_dir` gets `config.json`, `model_state.pdparams` (embeddings, encoder, pooler) and the
    tokenizer files; it loads offline with `ErnieModel.from_pretrained(dst_dir)`,
    `ErnieForSequenceClassification.from_pretrained(dst_dir, num_classes=K)` (new classifier
    head) and `ErnieTokenizer.from_pretrained(dst_dir)`.

    Raises:
        FileNotFoundError: `config.json`, `model.safetensors` or `vocab.txt` is missing.
        ConversionError: missing, unexpected or wrongly shaped tensors, or an unsupported setting.
    """
    src, dst = Path(src_dir), Path(dst_dir)
    absent = [f for f in ("config.json", "model.safetensors", "vocab.txt") if not (src / f).is_file()]
    if absent:
        raise FileNotFoundError(f"{src} has no {', '.join(absent)} "
                                "(expected a Hugging Face BERT checkpoint with safetensors weights)")
    config = ernie_config_from_hf(json.loads((src / "config.json").read_text()))
    model = ErnieModel(config)
    expected = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    model.set_state_dict(map_state_dict(load_file(str(src / "model.safetensors")), expected,
                                        config.num_hidden_layers, source=str(src / "model.safetensors")))
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(dst))
    tokenizer_config = src / "tokenizer_config.json"
    do_lower_case = (json.loads(tokenizer_config.read_text()).get("do_lower_case", True)
                     if tokenizer_config.is_file() else True)
    ErnieTokenizer(str(src / "vocab.txt"), do_lower_case=do_lower_case,
                   model_max_length=config.max_position_embeddings).save_pretrained(str(dst))
    return dst


def ernie_config_from_hf(hf: dict) -> ErnieConfig:
    """An `ErnieConfig` with the architecture of a HF BERT `config.json` (as a dict)."""
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size")
    problems = [f"no {k}" for k in keys if k not in hf]
    act, eps = hf.get("hidden_act", "gelu"), hf.get("layer_norm_eps", 1e-12)
    if act not in SUPPORTED_ACTIVATIONS:
        problems.append(f"hidden_act={act!r} (supported: {', '.join(SUPPORTED_ACTIVATIONS)})")
    if not np.isclose(eps, PADDLE_LAYER_NORM_EPS, rtol=1e-6, atol=0):
        problems.append(f"layer_norm_eps={eps} (PaddleNLP's ERNIE always uses {PADDLE_LAYER_NORM_EPS})")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        problems.append(f"position_embedding_type={hf['position_embedding_type']!r} (ERNIE has 'absolute' only)")
    if problems:
        raise ConversionError("unsupported config.json: " + "; ".join(problems))
    return ErnieConfig(**{k: hf[k] for k in keys}, hidden_act=act, layer_norm_eps=eps,
                       pad_token_id=hf.get("pad_token_id", 0), initializer_range=hf.get("initializer_range", 0.02))


def name_map(num_layers: int) -> Dict[str, Tuple[str, bool]]:
    """HF BERT tensor name (no `bert.` prefix) -> (Paddle ERNIE name, transpose?) for `num_layers` layers."""
    modules = list(_EMBEDDING_MODULES)
    for i in range(num_layers):
        modules += [(f"encoder.layer.{i}.{h}", f"encoder.layers.{i}.{p}", kind) for h, p, kind in _LAYER_MODULES]
    modules += _POOLER_MODULES
    names = {}
    for hf, paddle, kind in modules:
        for param in ("weight",) if kind == "embedding" else ("weight", "bias"):
            names[f"{hf}.{param}"] = (f"{paddle}.{param}", kind == "linear" and param == "weight")
    return names


def map_state_dict(hf_state: Dict[str, np.ndarray], expected: Dict[str, tuple], num_layers: int,
                   source: str = "checkpoint") -> Dict[str, np.ndarray]:
    """Rename and transpose HF BERT tensors to Paddle ERNIE names.

    Args:
        hf_state: HF name -> array; names with or without a `bert.` prefix, LayerNorm parameters
            named `weight`/`bias` or (old) `gamma`/`beta`; Linear weights [out, in].
        expected: Paddle name -> shape, from `ErnieModel(config).state_dict()`; Linear weights [in, out].
        num_layers: encoder layers in the config.
        source: what to call the checkpoint in error messages.

    Returns:
        Paddle name -> float32 array, with exactly the keys of `expected`.

    Raises:
        ConversionError: naming the missing, unexpected, duplicated and wrongly shaped tensors.
    """
    names = name_map(num_layers)
    assert sorted(p for p, _ in names.values()) == sorted(expected), "name map out of date with ErnieModel"
    state, found, unexpected, duplicated, bad_shape = {}, set(), [], [], []
    for hf_name, value in hf_state.items():
        name = hf_name[len("bert."):] if hf_name.startswith("bert.") else hf_name
        if name.endswith("LayerNorm.gamma") or name.endswith("LayerNorm.beta"):
            name = name.rsplit(".", 1)[0] + (".weight" if name.endswith("gamma") else ".bias")
        if name.startswith(DROPPED_PREFIXES):
            continue
        if name not in names:
            unexpected.append(hf_name)
            continue
        if name in found:
            duplicated.append(hf_name)
            continue
        found.add(name)
        paddle_name, transpose = names[name]
        array = np.ascontiguousarray(value.T if transpose else value, dtype=np.float32)
        want = expected[paddle_name]
        if array.shape != want:
            bad_shape.append(f"{hf_name} {list(value.shape)}, expected {list(want[::-1] if transpose else want)}")
            continue
        state[paddle_name] = array
    missing = [name for name in names if name not in found]
    problems = [_listing(label, items) for label, items in (
        ("missing", missing), ("unexpected", unexpected), ("duplicated", duplicated), ("wrongly shaped", bad_shape))
        if items]
    if problems:
        raise ConversionError(f"{source} does not match the BERT encoder layout of its config.json: "
                              + "; ".join(problems))
    return state


def _listing(label: str, items: List[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
    return f"{len(items)} {label} tensor{'' if len(items) == 1 else 's'}: {shown}"
