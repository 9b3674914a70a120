"""The deployment tokenizer: ERNIE's WordPiece on Hugging Face `tokenizers` (compiled), no PaddleNLP.

It gives the ids of PaddleNLP's `ErnieTokenizer` (the training tokenizer) for the same vocab.txt and
tokenizer_config.json, and cuts them as training does (`ernie_qat.data.batching.encode_text`):
[CLS] text [SEP] (pair [SEP]) in at most max_seq_len tokens, the longer of text and pair cut first, one
token at a time (a tie cuts the pair). Two rules make the ids ErnieTokenizer's rather than BERT's:
- a symbol (Unicode category S: `～`, `$`, `°`...) and a few other characters are words of their own, as
  punctuation is (paddlenlp's `_is_symbol`);
- characters are classed (control, space, accent, punctuation or symbol) by Python's `unicodedata` and
  `str.isspace`, as ErnieTokenizer classes them, not by the other Unicode tables compiled into
  `tokenizers`: an unassigned code point is dropped, U+2028 separates words, U+0AFE is an accent. The
  classes are built once per Unicode version and cached (`unicode_classes`).
Identity with ErnieTokenizer is tested on every built-in split, Chinese reviews and random Unicode text
(tests/test_tokenizer.py).

Example:
    tokenizer = WordPieceTokenizer.from_folder("deploy/mr_int8")
    tokenizer.encode(["a gripping film"], max_seq_len=128)[0].input_ids  # [101, 1037, 13940, 2143, 102]
"""
import functools
import json
import unicodedata
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordPiece

from ernie_qat.atomic import write_json
from ernie_qat.data.batching import CJK, Encoded, cut_patterns, first_pieces
from ernie_qat.env import cache_dir

VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                  "mask_token": "[MASK]"}
# ErnieTokenizer's words of their own besides punctuation and symbols (paddlenlp's _is_symbol)
OWN_WORD_CHARS = (0x00B2, 0x00BA, 0x3007, 0x00B5, 0x00D8, 0x014B, 0x01B1)
CLASSES_FORMAT = 1  # of the cached `unicode_classes`: raise it when their definition changes
MAX_CHARS_PER_WORD = 100  # longer words are [UNK] (WordPiece's max_input_chars_per_word)


class WordPieceTokenizer:
    """Text to ERNIE token ids, as PaddleNLP's ErnieTokenizer gives them.

    Args:
        vocab: token -> id, from a vocab.txt (one token per line, id = line number).
        lowercase: lowercase and strip accents (tokenizer_config.json's `do_lower_case`).
        special_tokens: `unk_token`, `sep_token`, `pad_token`, `cls_token`, `mask_token` -> their text.
    """

    def __init__(self, vocab: Dict[str, int], lowercase: bool = True, special_tokens: Optional[dict] = None):
        self.vocab = vocab
        tokens = {**SPECIAL_TOKENS, **(special_tokens or {})}
        missing = [token for token in tokens.values() if token not in vocab]
        if missing:
            raise ValueError(f"the vocabulary has no {missing}")
        self.unk_token_id, self.sep_token_id, self.pad_token_id, self.cls_token_id, self.mask_token_id = (
            vocab[tokens[key]] for key in SPECIAL_TOKENS)
        self._tokenizer = Tokenizer(WordPiece(vocab, unk_token=tokens["unk_token"],
                                              max_input_chars_per_word=MAX_CHARS_PER_WORD))
        classes = unicode_classes()
        self._tokenizer.normalizer = normalizers.Sequence([
            normalizers.Replace(Regex(classes["dropped"]), ""), normalizers.Replace(Regex(classes["space"]), " "),
            normalizers.BertNormalizer(clean_text=False, handle_chinese_chars=True, strip_accents=False,
                                       lowercase=False),
            *([normalizers.Lowercase(), normalizers.NFD(), normalizers.Replace(Regex(classes["accent"]), "")]
              if lowercase else [])])
        self._tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(" ", behavior="removed"),
            pre_tokenizers.Split(Regex(classes["own_word"]), behavior="isolated")])
        self._tokenizer.add_special_tokens(list(tokens.values()))
        self._cuts = cut_patterns("".join(tokens.values()), MAX_CHARS_PER_WORD)

    @classmethod
    def from_folder(cls, folder) -> "WordPieceTokenizer":
        """The tokenizer of a folder with vocab.txt and (optionally) tokenizer_config.json, as export writes them.

        Raises:
            OSError, ValueError: a file is missing or malformed.
        """
        folder = Path(folder)
        lines = (folder / VOCAB_FILE).read_text(encoding="utf-8").split("\n")  # not splitlines: \x1c... are tokens
        if lines and lines[-1] == "":
            lines.pop()
        vocab = {}
        for index, token in enumerate(lines):
            vocab.setdefault(token.rstrip("\r"), index)
        config_file = folder / CONFIG_FILE
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.exists() else {}
        if not isinstance(config, dict):
            raise ValueError(f"{config_file} must hold a JSON object")
        return cls(vocab, lowercase=bool(config.get("do_lower_case", True)),
                   special_tokens={key: config[key] for key in SPECIAL_TOKENS if isinstance(config.get(key), str)})

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> List[int]:
        return [self.vocab.get(token, self.unk_token_id) for token in tokens]

    def encode(self, texts: Sequence[str], text_pairs: Optional[Sequence[Optional[str]]] = None,
               max_seq_len: int = 512) -> List[Encoded]:
        """[CLS] text [SEP] (pair [SEP]) token ids of each text, cut to max_seq_len tokens (longest first)."""
        pairs = list(text_pairs) if text_pairs is not None else [None] * len(texts)
        return [self._encode(text, pair, max_seq_len) for text, pair in zip(texts, pairs)]

    def _encode(self, text: str, pair: Optional[str], max_seq_len: int) -> Encoded:
        first = self._first_ids(text, max_seq_len)
        second = self._first_ids(pair, max_seq_len) if pair is not None else None
        specials = 2 if second is None else 3
        room = max_seq_len - specials
        truncated = len(first) + len(second or ()) > room
        first, second = _longest_first(first, second, room)
        input_ids = [self.cls_token_id, *first, self.sep_token_id]
        token_type_ids = [0] * len(input_ids)
        if second is not None:
            input_ids += [*second, self.sep_token_id]
            token_type_ids += [1] * (len(second) + 1)
        return Encoded(input_ids, token_type_ids, -1, truncated)

    def _first_ids(self, text: str, count: int) -> List[int]:
        """The ids of `text`, or more than `count` of its first ones, tokenized from a prefix if the text is long
        (`ernie_qat.data.batching.first_pieces`: a 5 MB line in milliseconds)."""
        return first_pieces(self._ids, text, count, self._cuts)

    def _ids(self, text: str) -> List[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids


def _longest_first(first: List[int], second: Optional[List[int]], room: int):
    """(first, second) cut to `room` ids in all as PaddleNLP's longest_first does it: one id at a time from the longer,
    from the pair on a tie (here in closed form)."""
    if second is None:
        return first[:room], None
    excess = len(first) + len(second) - room
    if excess <= 0:
        return first, second
    gap = abs(len(first) - len(second))
    if gap >= excess:
        return (first[:len(first) - excess], second) if len(first) > len(second) else (first, second[:len(second) - excess])
    shorter = min(len(first), len(second))
    rest = excess - gap  # cut alternately from equal lengths, the pair first
    return first[:shorter - rest // 2], second[:shorter - (rest + 1) // 2]


def unicode_classes() -> Dict[str, str]:
    """Regex character classes (`tokenizers` syntax) of ErnieTokenizer's character kinds by Python's unicodedata:
    `dropped` (NUL, U+FFFD, control characters but tab and newlines), `space` (what `str.split` splits on, but
    dropped characters), `accent` (category Mn: stripped after NFD when lowercasing) and `own_word` (punctuation,
    symbols, OWN_WORD_CHARS, CJK characters). Built once per Unicode version (0.3 s) and cached."""
    return _unicode_classes(unicodedata.unidata_version)


@functools.lru_cache(maxsize=1)
def _unicode_classes(version: str) -> Dict[str, str]:
    path = cache_dir() / "tokenizer" / f"unicode-{version}-{CLASSES_FORMAT}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    categories = [unicodedata.category(chr(c)) for c in range(0x110000)]
    dropped = [c == 0xFFFD or (categories[c][0] == "C" and c not in (9, 10, 13)) for c in range(0x110000)]
    classes = {
        "dropped": _char_class(dropped.__getitem__),
        "space": _char_class(lambda c: not dropped[c] and chr(c).isspace()),
        "accent": _char_class(lambda c: categories[c] == "Mn"),
        # and CJK characters (BertNormalizer's own ranges miss U+2B820-U+2B91F)
        "own_word": _char_class(lambda c: categories[c][0] in "PS" or c in OWN_WORD_CHARS)[:-1] + CJK + "]",
    }
    try:
        write_json(path, classes)
    except OSError:
        pass  # a read-only cache costs the 0.3 s again next time
    return classes


def _char_class(member: Callable[[int], bool]) -> str:
    """`[...]` of the code points for which `member` holds, as ranges."""
    ranges: List[Tuple[int, int]] = []
    for code in range(0x110000):
        if member(code):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    return "[" + "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges) + "]"
