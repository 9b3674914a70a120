"""Tokenized examples, length-bucketed batch order, and dynamic padding.

Training batches are drawn from buckets of similar length so that little compute goes into
padding: each epoch shuffles the examples, sorts each run of `bucket_batches * batch_size`
of them by length, cuts batches, and shuffles the batches. The order depends only on
(seed, epoch), so a resumed run sees the same batches as an uninterrupted one.
"""
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np

from ernie_qat.data.loader import Example, LabelVocab


@dataclass
class Encoded:
    input_ids: List[int]
    token_type_ids: List[int]
    label: int  # -1 when unlabelled


def encode(examples: Sequence[Example], tokenizer, max_seq_len: int,
           labels: Optional[LabelVocab] = None) -> List[Encoded]:
    """Tokenize and truncate to `max_seq_len` tokens ([CLS] and [SEP] included)."""
    texts = [e.text for e in examples]
    pairs = [e.text_pair for e in examples]
    kwargs = dict(max_length=max_seq_len, truncation=True, return_attention_mask=False)
    if any(p is not None for p in pairs):
        out = [tokenizer(t, text_pair=p, **kwargs) for t, p in zip(texts, pairs)]
        ids, types = [o["input_ids"] for o in out], [o["token_type_ids"] for o in out]
    else:
        out = tokenizer(texts, **kwargs)
        ids, types = out["input_ids"], out["token_type_ids"]
    return [Encoded(i, t, labels.index(e) if labels is not None else -1)
            for i, t, e in zip(ids, types, examples)]


def train_batches(lengths: Sequence[int], batch_size: int, bucket_batches: int,
                  seed: int, epoch: int) -> List[List[int]]:
    """One epoch's batches of example indices, length-bucketed and shuffled by (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    bucket = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), bucket):
        chunk = sorted(order[start:start + bucket], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_batches(lengths: Sequence[int], batch_size: int) -> List[List[int]]:
    """Batches of example indices sorted by length (order does not affect metrics)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def collate(items: Sequence[Encoded], pad_token_id: int) -> dict:
    """Pad a batch to its longest sequence.

    Returns:
        input_ids, token_type_ids: int64 [B, L]; labels: int64 [B].
    """
    width = max(len(x.input_ids) for x in items)
    input_ids = np.full((len(items), width), pad_token_id, dtype=np.int64)
    token_type_ids = np.zeros((len(items), width), dtype=np.int64)
    for row, x in enumerate(items):
        input_ids[row, :len(x.input_ids)] = x.input_ids
        token_type_ids[row, :len(x.token_type_ids)] = x.token_type_ids
    return {"input_ids": input_ids, "token_type_ids": token_type_ids,
            "labels": np.array([x.label for x in items], dtype=np.int64)}


def batched_scores(score: Callable[[np.ndarray, np.ndarray], np.ndarray], items: Sequence[Encoded],
                   batch_size: int, pad_token_id: int) -> np.ndarray:
    """Scores [N, C] of `items` in their order; `score` maps padded (input_ids, token_type_ids) [B, L] to [B, C]."""
    out = None
    for indices in eval_batches([len(x.input_ids) for x in items], batch_size):
        batch = collate([items[i] for i in indices], pad_token_id)
        scores = score(batch["input_ids"], batch["token_type_ids"])
        if out is None:
            out = np.zeros((len(items), scores.shape[1]), dtype=np.float32)
        out[indices] = scores
    return out
