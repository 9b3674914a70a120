"""ERNIE text classifiers: built from a built-in name, a model directory, a PaddleNLP name or at random.

`TextClassifier` wraps PaddleNLP's `ErnieForSequenceClassification` with a forward of
(input_ids, token_type_ids) -> logits that builds the attention mask from padding itself: the
same signature for training, QAT wrapping and Paddle Inference export.
"""
from pathlib import Path

from paddle import nn
from paddlenlp.transformers import ErnieConfig, ErnieForSequenceClassification, ErnieTokenizer
from paddlenlp.utils.log import logger as paddlenlp_logger

from ernie_qat.config import ModelConfig

paddlenlp_logger.set_level("WARNING")  # PaddleNLP logs every file it saves or loads at INFO
NEG_INF = -1e4  # additive attention mask for padding, as PaddleNLP uses


class ModelError(ValueError):
    """A model could not be found or loaded; the message says what to do instead."""


class TextClassifier(nn.Layer):
    """logits [B, C] = classifier(ERNIE(input_ids [B, L], token_type_ids [B, L]))."""

    def __init__(self, net: ErnieForSequenceClassification):
        super().__init__()
        self.net = net
        self.pad_token_id = net.config.pad_token_id

    def forward(self, input_ids, token_type_ids):
        mask = (input_ids == self.pad_token_id).astype("float32").unsqueeze([1, 2]) * NEG_INF  # [B, 1, 1, L]
        return self.net(input_ids, token_type_ids=token_type_ids, attention_mask=mask)

    def save(self, folder) -> None:
        """Write PaddleNLP files (config.json, model_state.pdparams) that `from_pretrained` loads."""
        self.net.save_pretrained(str(folder))


def build_classifier(cfg: ModelConfig, num_labels: int):
    """Returns (TextClassifier, tokenizer) for `num_labels` classes.

    Raises:
        ModelError: unknown name, missing files, or a PaddleNLP name that cannot be downloaded.
    """
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
        return TextClassifier(ErnieForSequenceClassification(config)), tokenizer
    source = _resolve(cfg.name_or_path)
    try:
        net = ErnieForSequenceClassification.from_pretrained(source, num_labels=num_labels, **dropout)
        tokenizer = ErnieTokenizer.from_pretrained(source)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot load ERNIE model `{cfg.name_or_path}`: {exc}\n"
                         "PaddleNLP names need the model hub, which is unreachable from this machine; "
                         "pass a local model directory instead (`model.name_or_path`).") from None
    return TextClassifier(net), tokenizer


def load_classifier(folder):
    """Load a (TextClassifier, tokenizer) saved by a training run's checkpoint."""
    if not (Path(folder) / "config.json").exists():
        raise ModelError(f"`{folder}` is not a checkpoint folder (no config.json)")
    folder = str(folder)
    return TextClassifier(ErnieForSequenceClassification.from_pretrained(folder)), ErnieTokenizer.from_pretrained(folder)


def _resolve(name_or_path: str) -> str:
    from ernie_qat.models.builtin import BUILTIN_MODELS
    if name_or_path in BUILTIN_MODELS:
        return str(BUILTIN_MODELS[name_or_path]())
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists() and not (path / "model_config.json").exists():
            raise ModelError(f"`{path}` is not a PaddleNLP model directory (no config.json)")
        return str(path)
    if name_or_path in ErnieForSequenceClassification.pretrained_init_configuration:
        return name_or_path
    raise ModelError(f"`model.name_or_path`: `{name_or_path}` is neither a directory, a built-in model "
                     f"({', '.join(BUILTIN_MODELS)}, random) nor a PaddleNLP ERNIE name")
