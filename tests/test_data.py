"""Data files, label vocabulary, tokenization, bucketing and padding."""
import json

import numpy as np
import pytest
from paddlenlp.transformers import ErnieTokenizer

from ernie_qat.data.batching import collate, encode, eval_batches, train_batches
from ernie_qat.data.loader import DataError, Example, LabelVocab, read_examples


def test_reads_tsv_csv_jsonl_alike(tmp_path):
    (tmp_path / "a.tsv").write_text('label\ttext\ttext_pair\npos\tit\'s "good"\tyes\nneg\tbad\t\n')
    (tmp_path / "a.csv").write_text('label,text,text_pair\npos,"it\'s ""good""",yes\nneg,bad,\n', encoding="utf-8-sig")
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "it's \"good\"", "text_pair": "yes", "label": "pos"})
                                      + "\n\n" + json.dumps({"text": "bad", "label": "neg"}) + "\n")
    results = [[(e.text, e.text_pair, e.label) for e in read_examples(tmp_path / f"a.{ext}")]
               for ext in ("tsv", "csv", "jsonl")]
    assert results[0] == results[1] == results[2] == [("it's \"good\"", "yes", "pos"), ("bad", None, "neg")]


def test_jsonl_text_may_hold_unicode_line_separators(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "a\u2028b", "label": "x"}, ensure_ascii=False) + "\n")
    assert read_examples(tmp_path / "a.jsonl")[0].text == "a\u2028b"


@pytest.mark.parametrize("name, content, message", [
    ("a.tsv", b"label\ttext\npos\tfine\nneg\t\n", r"a.tsv:3: missing or empty `text`"),
    ("a.tsv", b"label\ttext\npos\tfine\n\tno label\n", r"a.tsv:3: missing `label`"),
    ("a.tsv", b"label\ttext\npos\tfine\tmore\n", r"a.tsv:2: 3 fields, header has 2"),
    ("a.tsv", b"label\tsentence\npos\tfine\n", r"a.tsv:1: header \['label', 'sentence'\] has no `text` column"),
    ("a.csv", b"label,text\npos,ok\npos,caf\xe9\n", r"a.csv:3: not valid UTF-8 \(byte 0xe9\)"),
    ("a.jsonl", b'{"text": "ok", "label": "x"}\n{"text": "ok"\n', r"a.jsonl:2: invalid JSON"),
    ("a.jsonl", b'["ok", "x"]\n', r"a.jsonl:1: expected a JSON object, got an array"),
    ("a.jsonl", b'{"text": "ok", "label": "x"}\n3\n', r"a.jsonl:2: expected a JSON object, got a number"),
    ("a.jsonl", b"null\n", r"a.jsonl:1: expected a JSON object, got null"),
    ("a.jsonl", b'{"text": "a", "text": "b", "label": "x"}\n', r"a.jsonl:1: invalid JSON: duplicate key \"text\""),
    pytest.param("a.jsonl", b"[" * 100000 + b"\n", r"a.jsonl:1: invalid JSON: maximum recursion depth exceeded",
                 id="jsonl-deeply-nested"),
    ("a.jsonl", b'{"text": {"a": 1}, "label": "x"}\n', r"a.jsonl:1: `text` must be a string, got an object"),
    ("a.jsonl", b'{"text": 5, "label": "x"}\n', r"a.jsonl:1: `text` must be a string, got a number"),
    ("a.jsonl", b'{"text": "a", "text_pair": [], "label": "x"}\n',
     r"a.jsonl:1: `text_pair` must be a string, got an array"),
    ("a.jsonl", b'{"text": "a", "label": true}\n', r"a.jsonl:1: `label` must be a string or a number, got a boolean"),
    ("a.jsonl", b'{"text": "a", "label": {}}\n', r"a.jsonl:1: `label` must be a string or a number, got an object"),
    ("a.jsonl", b'{"text": "a", "label": "x"}\r\n\xef\xbb\xbf{"text": "b"}\n',
     r"a.jsonl:2: invalid JSON: Unexpected UTF-8 BOM"),
    ("a.csv", b'label,text\npos,"unterminated\nneg,bad\nneg,worse\n',
     r"a.csv:2: unterminated quote: the quoted field starting in this record runs to the end of the file"),
    ("a.csv", b'label,text\npos,fine\npos,"not closed\nneg,"then" more\n',
     r'a.csv:3: text after a closing quote on line 4: double a quote inside a quoted field \(""\), '
     r"or close the quote left open"),
    pytest.param("a.csv", b'label,text\npos,"' + b"x" * 140000 + b'"\n', r"a.csv:2: a field is longer than 131072 "
                 r"characters, the csv module's limit; is a quote unterminated\?", id="csv-huge-field"),
    pytest.param("a.tsv", b"label\ttext\npos\t" + b"x" * 140000 + b"\n", r"a.tsv:2: a field is longer than 131072 "
                 r"characters, the csv module's limit$", id="tsv-huge-field"),
    ("a.csv", b'label,text\npos,"two\nlines"\nneg,\n', r"a.csv:4: missing or empty `text`"),
    ("a.csv", b"label,text,label\npos,a,b\n",
     r"a.csv:1: header \['label', 'text', 'label'\] repeats column\(s\) \['label'\]"),
    ("a.tsv", b"label\ttext\rpos\tok\r\xff\n", r"a.tsv:3: not valid UTF-8 \(byte 0xff\)"),
    ("a.jsonl", b'{"text": "ok", "label": "x"}\r{"text": "\xff"}\n', r"a.jsonl:1: not valid UTF-8"),
    ("a.jsonl", b"", r"a.jsonl: no examples"),
    ("a.tsv", b"label\ttext\n\n", r"a.tsv: no examples"),
    ("a.csv", b"\xef\xbb\xbflabel,text\r\n", r"a.csv: no examples"),
    ("a.xml", b"<a/>", r"a.xml: unknown data format `.xml`"),
])
def test_bad_files_fail_with_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_examples(tmp_path / name)


def test_numeric_jsonl_labels_and_odd_characters_are_read_as_text(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 2.5, "text_pair": null}\n')
    assert [(e.text, e.text_pair, e.label) for e in read_examples(tmp_path / "a.jsonl")] == \
        [("a", None, "1"), ("b", None, "2.5")]
    (tmp_path / "a.csv").write_bytes(b"text,label\r\na\x00b,x\rc\tc,\xef\xbb\xbfy\r\n")
    assert [(e.text, e.label, e.where) for e in read_examples(tmp_path / "a.csv")] == \
        [("a\x00b", "x", f"{tmp_path / 'a.csv'}:2"), ("c\tc", "\ufeffy", f"{tmp_path / 'a.csv'}:3")]


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.tsv: cannot read"):
        read_examples(tmp_path / "nope.tsv")


def test_label_vocab_round_trip_and_unknown_label(tmp_path):
    examples = [Example("t", None, label, f"f:{i}") for i, label in enumerate(["b", "a", "b"])]
    vocab = LabelVocab.from_examples(examples)
    assert vocab.labels == ["a", "b"] and vocab.index(examples[0]) == 1
    vocab.save(tmp_path)
    assert LabelVocab.load(tmp_path).labels == ["a", "b"]
    with pytest.raises(DataError, match=r"dev.tsv:7: unknown label 'c'; the model knows \['a', 'b'\]"):
        vocab.index(Example("t", None, "c", "dev.tsv:7"))


def test_encode_truncates_and_pairs(toy_task):
    tokenizer = ErnieTokenizer(str(toy_task["vocab"]))
    examples = [Example("good " * 50, None, "pos", "x:1"), Example("bad movie", "the plot", "neg", "x:2")]
    labels = LabelVocab(["neg", "pos"])
    items = encode(examples, tokenizer, 16, labels)
    assert len(items[0].input_ids) == 16 and items[0].input_ids[-1] == tokenizer.sep_token_id
    assert items[1].token_type_ids == [0, 0, 0, 0, 1, 1, 1] and [x.label for x in items] == [1, 0]


def test_collate_pads_to_longest():
    from ernie_qat.data.batching import Encoded
    batch = collate([Encoded([2, 7, 3], [0, 0, 0], 1), Encoded([2, 3], [0, 0], 0)], pad_token_id=0)
    np.testing.assert_array_equal(batch["input_ids"], [[2, 7, 3], [2, 3, 0]])
    assert batch["input_ids"].dtype == np.int64 and batch["labels"].tolist() == [1, 0]


def test_train_batches_cover_each_example_once_are_bucketed_and_seeded():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 128, size=1000).tolist()
    batches = train_batches(lengths, batch_size=32, bucket_batches=10, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert batches == train_batches(lengths, 32, 10, seed=1, epoch=0)
    assert batches != train_batches(lengths, 32, 10, seed=1, epoch=1)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    unbucketed = train_batches(lengths, 32, 1, seed=1, epoch=0)
    assert padded < 0.8 * sum(len(b) * max(lengths[i] for i in b) for b in unbucketed)


def test_eval_batches_sorted_by_length():
    batches = eval_batches([5, 1, 3, 2], batch_size=2)
    assert batches == [[1, 3], [2, 0]]
