"""ERNIE text classifiers: built from a built-in name, a model directory, a PaddleNLP name or at random.

`TextClassifier` wraps PaddleNLP's `ErnieForSequenceClassification` with a forward of
(input_ids, token_type_ids) -> logits that builds the attention mask from padding itself: the
same signature for training, QAT wrapping and Paddle Inference export.
"""
import ast
import contextlib
import copy
import logging
import re
import sys
from pathlib import Path
from typing import Iterator, List, Optional

import numpy as np
import paddle
from paddle import nn
from paddle.static import InputSpec
from paddlenlp.transformers import ErnieConfig, ErnieForSequenceClassification, ErnieTokenizer
from paddlenlp.utils.log import logger as paddlenlp_logger

from ernie_qat import env
from ernie_qat.config import ModelConfig, load_config
from ernie_qat.data.loader import LabelVocab
from ernie_qat.errors import UserError

if not env.verbose():
    paddlenlp_logger.set_level("WARNING")  # PaddleNLP logs every file it saves or loads at INFO
NEG_INF = -1e4  # additive attention mask for padding, as PaddleNLP uses
WEIGHTS_FILE = "model_state.pdparams"
# The forward's inputs, for Paddle Inference export: int64 [batch, tokens] each.
INPUT_SPEC = [InputSpec([None, None], "int64", "input_ids"), InputSpec([None, None], "int64", "token_type_ids")]


class ModelError(UserError):
    """A model could not be found or loaded; the message says what to do instead."""


class TextClassifier(nn.Layer):
    """logits [B, C] = classifier(ERNIE(input_ids [B, L], token_type_ids [B, L])); `labels` names the C classes."""

    def __init__(self, net: ErnieForSequenceClassification, labels: Optional[List[str]] = None):
        super().__init__()
        self.net = net
        self.pad_token_id = net.config.pad_token_id
        self.labels = labels

    def forward(self, input_ids, token_type_ids):
        mask = (input_ids == self.pad_token_id).astype("float32").unsqueeze([1, 2]) * NEG_INF  # [B, 1, 1, L]
        if self.training:  # Paddle's CPU add of a [B, 1, 1, L] mask to [B, H, L, L] scores is 14x slower than same-shape
            batch, length = input_ids.shape
            mask = mask.expand([batch, self.net.config.num_attention_heads, length, length])
        return self.net(input_ids, token_type_ids=token_type_ids, attention_mask=mask)

    def save(self, folder) -> None:
        """Write config.json and model_state.pdparams (this layer's parameters, quantizer state included).

        Without a model transform these are the files PaddleNLP's `from_pretrained` loads.
        """
        self.net.config.save_pretrained(str(folder))
        paddle.save(self.net.state_dict(), str(Path(folder) / WEIGHTS_FILE))

    def save_inference_model(self, prefix: str) -> None:
        """Write the FP32 graph as prefix.pdmodel / prefix.pdiparams for Paddle Inference."""
        model = copy.deepcopy(self)  # to_static rewrites the layer it is given (STACK.md, pitfall 8)
        model.eval()
        paddle.jit.save(model, prefix, input_spec=INPUT_SPEC)

    def load_weights(self, folder) -> None:
        """Load model_state.pdparams written by `save` into a model of the same structure.

        Raises:
            ModelError: the file is unreadable, holds non-finite values or does not fit the model.
        """
        path = Path(folder) / WEIGHTS_FILE
        state = read_paddle_file(path)
        if not isinstance(state, dict):
            raise ModelError(f"`{path}` holds {type(state).__name__}, not model weights")
        broken = [name for name, value in state.items()
                  if hasattr(value, "numpy") and not np.isfinite(value.numpy()).all()]
        if broken:
            raise ModelError(f"`{path}`: {len(broken)} of {len(state)} tensors hold NaN or infinity "
                             f"(first: {broken[0]}); the model diverged or the file is damaged")
        missing, unexpected = self.net.set_state_dict(state)
        if missing or unexpected:
            raise ModelError(f"{folder}: weights do not fit the model: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")


def read_paddle_file(path: Path):
    """`paddle.load` of a weights or optimizer file; a missing, truncated or garbled file is a ModelError."""
    try:
        return paddle.load(str(path))
    except Exception as exc:  # paddle.load raises whatever its unpickler meets: EOFError, UnpicklingError, ...
        raise ModelError(f"`{path}` cannot be read ({type(exc).__name__}: {str(exc)[:200]}): the file is missing, "
                         "truncated or damaged; train or copy the checkpoint again") from None


def encoder_linears(model: TextClassifier) -> list:
    """(name, nn.Linear) of the encoder's Linear layers (attention projections and FFN), in model order."""
    return [(name, layer) for name, layer in model.named_sublayers()
            if isinstance(layer, nn.Linear) and name.startswith("net.ernie.encoder.")]


def replace_sublayer(root: nn.Layer, name: str, layer: nn.Layer) -> None:
    """Put `layer` at the dotted sublayer path `name` of `root`."""
    *path, attribute = name.split(".")
    parent = root
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, attribute, layer)


def build_classifier(cfg: ModelConfig, labels: LabelVocab):
    """Returns (TextClassifier, tokenizer) for the classes of `labels`.

    Raises:
        ModelError: unknown name, missing files, a PaddleNLP name that cannot be downloaded, or an
            earlier run's checkpoint that is quantized or was trained on other labels.
    """
    num_labels = len(labels)
    dropout = {"hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.dropout}
    if cfg.name_or_path == "random":
        tokenizer = ErnieTokenizer(cfg.random.vocab_file)
        shape = cfg.random
        config = ErnieConfig(vocab_size=len(tokenizer.vocab), hidden_size=shape.hidden_size,
                             num_hidden_layers=shape.num_hidden_layers,
                             num_attention_heads=shape.num_attention_heads,
                             intermediate_size=shape.intermediate_size,
                             max_position_embeddings=shape.max_position_embeddings,
                             type_vocab_size=2, num_labels=num_labels, **dropout)
        return TextClassifier(ErnieForSequenceClassification(config), labels.labels), tokenizer
    source = _resolve(cfg.name_or_path, labels)
    try:
        with _new_head_reported(cfg.name_or_path, num_labels):
            net = ErnieForSequenceClassification.from_pretrained(source, num_labels=num_labels, **dropout)
        tokenizer = ErnieTokenizer.from_pretrained(source)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot load ERNIE model `{cfg.name_or_path}`: {exc}\n"
                         "PaddleNLP names are downloaded from PaddleNLP's model hub; where it is unreachable, "
                         "pass a local model directory instead (`model.name_or_path`).") from None
    return TextClassifier(net, labels.labels), tokenizer


# PaddleNLP's warning after loading a model whose checkpoint lacks some of its weights
_NEWLY_INITIALIZED = re.compile(r"Some weights of \w+ were not initialized from the model checkpoint at .* and are "
                                r"newly initialized: (\[[^\]]*\])\n", re.DOTALL)


class _NewHeadFilter(logging.Filter):
    """Takes PaddleNLP's "Some weights of ... are newly initialized ... You should probably TRAIN this model"
    warning when the weights it names are the classifier head's alone: a new head is what fine-tuning starts
    from. A warning naming other weights (a checkpoint missing encoder weights) passes."""

    def __init__(self):
        super().__init__()
        self.new_head: List[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        match = _NEWLY_INITIALIZED.match(record.getMessage())
        names = ast.literal_eval(match.group(1)) if match else []
        if names and all(name.startswith("classifier.") for name in names):
            self.new_head = names
            return env.verbose()
        return True


@contextlib.contextmanager
def _new_head_reported(name_or_path: str, num_labels: int) -> Iterator[None]:
    """Within the block (a `from_pretrained`), PaddleNLP's warning about a new classifier head becomes one
    line of ours on stderr, written only if the head is new."""
    head_filter = _NewHeadFilter()
    paddlenlp_logger.logger.addFilter(head_filter)
    try:
        yield
    finally:
        paddlenlp_logger.logger.removeFilter(head_filter)
    if head_filter.new_head:
        print(f"model: a new classifier head for {num_labels} labels on the encoder of {name_or_path}",
              file=sys.stderr)


def _resolve(name_or_path: str, labels: LabelVocab) -> str:
    from ernie_qat.models.builtin import BUILTIN_MODELS
    if name_or_path in BUILTIN_MODELS:
        return str(BUILTIN_MODELS[name_or_path]())
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists() and not (path / "model_config.json").exists():
            raise ModelError(f"`{path}` is not a PaddleNLP model directory (no config.json)")
        _check_checkpoint_start(path, labels)
        return str(path)
    if name_or_path in ErnieForSequenceClassification.pretrained_init_configuration:
        return name_or_path
    raise ModelError(f"`model.name_or_path`: `{name_or_path}` is neither a directory, a built-in model "
                     f"({', '.join(BUILTIN_MODELS)}, random) nor a PaddleNLP ERNIE name")


def _check_checkpoint_start(path: Path, labels: LabelVocab) -> None:
    """A checkpoint of an earlier run is a valid start only if FP32 and trained on the same labels."""
    if (path / LabelVocab.FILE).exists() and LabelVocab.load(path).labels != labels.labels:
        raise ModelError(f"`{path}` was trained on labels {LabelVocab.load(path).labels}, "
                         f"this data has {labels.labels}")
    run_config = path / "config.yaml"
    if run_config.exists() and load_config(run_config).quant.method != "none":
        raise ModelError(f"`{path}` is a quantized checkpoint; start from an FP32 checkpoint")
