"""Tokenized examples, length-bucketed batch order, and dynamic padding.

Training batches are drawn from buckets of similar length so that little compute goes into
padding: each epoch shuffles the examples, sorts each run of `bucket_batches * batch_size`
of them by length, cuts batches, and shuffles the batches. The order depends only on
(seed, epoch), so a resumed run sees the same batches as an uninterrupted one.
"""
import functools
import re
import string
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ernie_qat.data.loader import Example, LabelVocab


@dataclass
class Encoded:
    input_ids: List[int]
    token_type_ids: List[int]
    label: int  # -1 when unlabelled
    truncated: bool = False  # the text (and pair) had more than max_seq_len tokens, [CLS] and [SEP]s included


# BasicTokenizer._is_chinese_char's ranges: each such character is a word of its own
CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df\U0002a700-\U0002ceaf\U0002f800-\U0002fa1f"
CHARS_PER_TOKEN = 8  # the first prefix of a text tokenized: 8 characters per token that fits (English has 4 to 6)


def encode(examples: Sequence[Example], tokenizer, max_seq_len: int,
           labels: Optional[LabelVocab] = None) -> List[Encoded]:
    """Tokenize and truncate to `max_seq_len` tokens ([CLS] and [SEP] included)."""
    return [encode_text(tokenizer, max_seq_len, e.text, e.text_pair, labels.index(e) if labels is not None else -1)
            for e in examples]


def encode_text(tokenizer, max_seq_len: int, text: str, pair: Optional[str] = None, label: int = -1) -> Encoded:
    """[CLS] text [SEP] (pair [SEP]) as token ids cut to `max_seq_len` (longest first), exactly as the tokenizer cuts
    the whole text, but a long text's tokens are taken from a prefix (a 30 MB line: 0.02 s instead of 93)."""
    ids = [tokenizer.convert_tokens_to_ids(_first_tokens(tokenizer, t, max_seq_len))
           for t in (text, pair) if t is not None]
    out = tokenizer.prepare_for_model(*ids, max_length=max_seq_len, truncation=True, return_attention_mask=False)
    truncated = sum(map(len, ids)) + tokenizer.num_special_tokens_to_add(pair is not None) > max_seq_len
    return Encoded(out["input_ids"], out["token_type_ids"], label, truncated)


def _first_tokens(tokenizer, text: str, count: int) -> List[str]:
    """The tokens of `text`, or more than `count` of its first tokens (`first_pieces`), for a PaddleNLP tokenizer."""
    cuts = cut_patterns("".join(tokenizer.all_special_tokens), tokenizer.wordpiece_tokenizer.max_input_chars_per_word)
    return first_pieces(tokenizer.tokenize, text, count, cuts)


def first_pieces(tokenize: Callable[[str], list], text: str, count: int,
                 cuts: Tuple["re.Pattern", "re.Pattern"]) -> list:
    """`tokenize(text)`, or more than `count` of its first items.

    Those are the tokens of a prefix cut where the tokenizer ends a word whatever follows (`cut_patterns`): before a
    space, tab or newline, a CJK character (a word of its own) or an ASCII punctuation mark that no special token
    holds. The prefix is CHARS_PER_TOKEN * count characters or more, doubled until it has enough tokens. A run of ASCII
    letters and digits longer than WordPiece's max_input_chars_per_word is [UNK] however long it is, so it is
    shortened first.
    """
    cut_at, long_word = cuts
    size = CHARS_PER_TOKEN * count
    while True:
        cut = cut_at.search(text, size) if size < len(text) else None
        tokens = tokenize(long_word.sub(r"\1", text if cut is None else text[:cut.start()]))
        if cut is None or len(tokens) > count:
            return tokens
        size = 2 * cut.start()


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


@functools.lru_cache(maxsize=8)
def cut_patterns(special_tokens: str, max_word_chars: int) -> Tuple["re.Pattern", "re.Pattern"]:
    """(where `first_pieces` may cut a text, a run of ASCII letters and digits longer than a word can be) for a
    tokenizer whose special tokens hold the characters of `special_tokens`: built once, not per text."""
    marks = re.escape("".join(c for c in string.punctuation if c not in special_tokens))
    return (re.compile(f"[ \\t\\n\\r{marks}{CJK}]"),
            re.compile(f"([A-Za-z0-9]{{{max_word_chars + 1}}})[A-Za-z0-9]+"))


def batch_width(data_cfg, lengths: Sequence[int]) -> int:
    """Tokens a training batch is padded to: `data_cfg.max_seq_len` with `data_cfg.pad_to_max_seq_len` (the TI
    reference's batches), else the longest of its examples' `lengths`."""
    return data_cfg.max_seq_len if data_cfg.pad_to_max_seq_len else max(lengths)


def collate(items: Sequence[Encoded], pad_token_id: int, width: Optional[int] = None) -> dict:
    """Pad a batch to `width` tokens, by default to its longest sequence.

    Returns:
        input_ids, token_type_ids: int64 [B, L]; labels: int64 [B].
    """
    width = width or max(len(x.input_ids) for x in items)
    input_ids = np.full((len(items), width), pad_token_id, dtype=np.int64)
    token_type_ids = np.zeros((len(items), width), dtype=np.int64)
    for row, x in enumerate(items):
        input_ids[row, :len(x.input_ids)] = x.input_ids
        token_type_ids[row, :len(x.token_type_ids)] = x.token_type_ids
    return {"input_ids": input_ids, "token_type_ids": token_type_ids,
            "labels": np.array([x.label for x in items], dtype=np.int64)}


def batched_scores(score: Callable[[np.ndarray, np.ndarray], np.ndarray], items: Sequence[Encoded],
                   batch_size: int, pad_token_id: int,
                   width: Optional[Callable[[int], int]] = None) -> np.ndarray:
    """Scores [N, C] of `items` in their order; `score` maps padded (input_ids, token_type_ids) [B, L] to [B, C].
    Batches of similar length, each padded to its longest sequence, or to `width(longest)` if given."""
    out = None
    for indices in eval_batches([len(x.input_ids) for x in items], batch_size):
        longest = max(len(items[i].input_ids) for i in indices)
        batch = collate([items[i] for i in indices], pad_token_id, width(longest) if width else None)
        scores = score(batch["input_ids"], batch["token_type_ids"])
        if out is None:
            out = np.zeros((len(items), scores.shape[1]), dtype=np.float32)
        out[indices] = scores
    return out
