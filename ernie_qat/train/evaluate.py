"""Evaluation: logits and metrics of a model on encoded examples, and of a saved checkpoint on its splits."""
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import paddle
import paddle.nn.functional as F

from ernie_qat.config import Config
from ernie_qat.data.batching import Encoded, batched_scores, encode
from ernie_qat.data.loader import read_examples
from ernie_qat.data.sources import data_file, load_splits
from ernie_qat.train.checkpoint import load_checkpoint
from ernie_qat.train.metrics import classification_metrics
from ernie_qat.train.parallel import unwrap


@paddle.no_grad()
def predict_logits(model, items: List[Encoded], batch_size: int,
                   forward: Optional[Callable[[dict], paddle.Tensor]] = None) -> np.ndarray:
    """Logits [N, C] of `model` (put in eval mode) for encoded examples, in their order; `forward` maps a batch
    {input_ids, token_type_ids: [B, L]} to logits [B, C] in place of the model's own forward."""
    model = unwrap(model)
    model.eval()
    forward = forward or (lambda batch: model(batch["input_ids"], batch["token_type_ids"]))
    return batched_scores(lambda ids, types: forward({"input_ids": paddle.to_tensor(ids),
                                                      "token_type_ids": paddle.to_tensor(types)}).numpy(),
                          items, batch_size, model.pad_token_id)


def evaluate(model, items: List[Encoded], batch_size: int,
             forward: Optional[Callable[[dict], paddle.Tensor]] = None) -> Dict[str, float]:
    """Mean cross-entropy and metrics of `model` (through `forward`, see predict_logits) on labelled encoded examples."""
    logits = predict_logits(model, items, batch_size, forward)
    labels = np.array([x.label for x in items])
    loss = float(F.cross_entropy(paddle.to_tensor(logits), paddle.to_tensor(labels)))
    return {"loss": loss, **classification_metrics(labels, logits.argmax(axis=1))}


def evaluate_checkpoint(folder: Path, cfg: Config, split_file: Optional[str] = None) -> Dict[str, dict]:
    """Metrics of a saved checkpoint on the config's dev/test splits, or on one labelled file."""
    model, tokenizer, labels, _ = load_checkpoint(folder)
    splits = {split_file: read_examples(data_file(split_file))} if split_file else \
        {k: v for k, v in load_splits(cfg.data, cfg.train.seed).items() if k != "train"}
    return {name: evaluate(model, encode(examples, tokenizer, cfg.data.max_seq_len, labels), cfg.train.eval_batch_size)
            for name, examples in splits.items()}
