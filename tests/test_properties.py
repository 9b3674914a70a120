"""Property-based tests (hypothesis): config files and `-o` overrides, and the TSV / CSV / JSONL readers."""
import copy
import csv
import dataclasses
import functools
import io
import json
import re
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ernie_qat.config import Config, ConfigError, load_config
from ernie_qat.data.loader import DataError, read_examples

# deadline=None: timings vary with machine load; database=None: no .hypothesis/ folder in the repository
FAST = settings(max_examples=50, deadline=None, database=None)

# -- config ------------------------------------------------------------------------------------------------


def field_values(kind, meta):
    """Values a config field of type `kind` accepts under its metadata (choices, range, `auto`)."""
    if meta.get("auto"):
        number = next(member for member in typing.get_args(kind) if member is not str)
        return st.just("auto") | field_values(number, {**meta, "auto": False})
    if meta.get("choices") is not None:
        return st.sampled_from(list(meta["choices"]))
    if kind is bool:
        return st.booleans()
    if kind is str:
        return st.text()
    high = meta.get("high")
    if kind is int:
        return st.integers(min_value=meta["low"], max_value=10 ** 12 if high is None else high)
    return st.floats(min_value=meta["low"], max_value=1e12 if high is None else high,
                     exclude_min=meta["low_open"], allow_nan=False)


def section_dicts(cls, full: bool):
    """Dicts of valid values for dataclass `cls`: every key if `full`, else any subset."""
    hints = typing.get_type_hints(cls)
    values = {f.name: section_dicts(hints[f.name], full) if dataclasses.is_dataclass(hints[f.name])
              else field_values(hints[f.name], f.metadata) for f in dataclasses.fields(cls)}
    return st.fixed_dictionaries(values) if full else st.fixed_dictionaries({}, optional=values)


# values of the switches that enable every method (quantizers that work at any bit width), so that any
# value of a method's settings is consistent
SWITCHED_ON = {"quant.method": ["qat", "ptq"], "quant.weight_quantizer": ["lsq", "dynamic_absmax"],
               "quant.activation_quantizer": ["", "lsq", "dynamic_absmax"], "regularizer.method": ["kurtosis"],
               "optimizer.method": ["squat"], "distill.intervention": ["scheduled", "stochastic"]}


def consistent(data: dict) -> dict:
    """`data` with the keys `check_config` requires: a dataset or training file, a random model's vocabulary,
    every method switched on (a teacher included), so that none of its settings is ignored, and the reference
    quantization scope with the only activation settings it takes."""
    data = copy.deepcopy(data)
    section = data.setdefault("data", {})
    if not section.get("dataset") and not section.get("train_file"):
        section["dataset"] = "mr"
    model = data.setdefault("model", {})
    if model.get("name_or_path") == "random" and not model.get("random", {}).get("vocab_file"):
        model.setdefault("random", {})["vocab_file"] = "vocab.txt"
    for key, on in SWITCHED_ON.items():
        section, name = key.split(".")
        if data.setdefault(section, {}).get(name) not in on:
            data[section][name] = on[0]
    if not data["distill"].get("teacher"):
        data["distill"]["teacher"] = "teacher"
    if data["quant"].get("scope") == "reference":  # it quantizes activations, the attention and the table its own way
        data["quant"]["quantize_attention"] = data["quant"]["quantize_embeddings"] = False
        if data["quant"]["activation_quantizer"] not in ("", "clipped_absmax"):
            data["quant"]["activation_quantizer"] = ""
    if not data.setdefault("train", {}).get("max_grad_norm", 1.0) > 0:  # gradient clipping, for train.grad_clip
        data["train"]["max_grad_norm"] = 1.0
    return data


def build(cls, data: dict):
    hints = typing.get_type_hints(cls)
    return cls(**{key: build(hints[key], value) if dataclasses.is_dataclass(hints[key]) else value
                  for key, value in data.items()})


class QuotingDumper(yaml.SafeDumper):
    """Writes every string double-quoted, as a careful person would: independent of ernie_qat's dumper."""


QuotingDumper.add_representer(str, lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text,
                                                                               style='"'))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """One folder for the module: hypothesis refuses function-scoped fixtures such as tmp_path."""
    return tmp_path_factory.mktemp("properties")


def write(folder: Path, name: str, content) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


@FAST
@given(section_dicts(Config, full=False).map(consistent))
def test_yaml_file_of_valid_values_loads_as_written(scratch, data):
    path = write(scratch, "cfg.yaml", yaml.dump(data, Dumper=QuotingDumper, allow_unicode=True))
    assert load_config(path) == build(Config, data)


@FAST
@given(section_dicts(Config, full=True).map(consistent))
@example(consistent({"train": {"output_dir": "5e-5"}, "data": {"test_file": ".inf"}, "ptq": {"checkpoint": "null"}}))
def test_saved_config_loads_back_equal(scratch, data):
    cfg = build(Config, data)
    path = scratch / "cfg.yaml"
    cfg.save(path)
    assert load_config(path) == cfg


YAML_PIECES = st.sampled_from(["train", "data", "epochs", "learning_rate", "dataset", "mr", ":", ": ", "{", "}", "[",
                               "]", ",", "-", "- ", "\n", "  ", "'", '"', "!!", "!!float", "!!bool", "!!int", "&a",
                               "*a", "#", "?", "|", ">", "%", "@", ".nan", ".inf", "1e5", "2001-02-30", "~", "\t"])


@FAST
@given(st.one_of(st.text(), st.lists(YAML_PIECES | st.text(max_size=3)).map("".join)))
@example("train: {learning_rate: .nan}\ndata: {dataset: mr}")
@example("a: !!bool 3")
def test_any_text_as_config_file_loads_or_is_a_config_error(scratch, text):
    try:
        load_config(write(scratch, "cfg.yaml", text))
    except ConfigError:
        pass


def dotted_fields(cls=Config, prefix=""):
    """(dotted key, type, metadata) of every leaf field."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from dotted_fields(hints[f.name], prefix + f.name + ".")
        else:
            yield prefix + f.name, hints[f.name], f.metadata


FIELDS = list(dotted_fields())
# enough for the consistency check whatever single key an override then changes (every method on)
BASE = ["data.dataset=mr", "data.train_file=train.tsv", "model.random.vocab_file=vocab.txt", "distill.teacher=teacher",
        *(f"{key}={on[0]}" for key, on in SWITCHED_ON.items())]
KEYS = st.sampled_from([name for name, _, _ in FIELDS] + ["train", "distill", "model.random", "train.epochs.x",
                                                           "nope", "train.nope", "", " train.epochs ", "a.b.c"])


@FAST
@given(st.one_of(st.text(), st.tuples(KEYS, st.text()).map("=".join)))
@example("train.learning_rate=.nan")
@example("train.epochs=" + "9" * 5000)
@example("model.dropout=!!float x")
def test_any_override_applies_or_is_a_config_error(item):
    try:
        load_config(None, BASE + [item])
    except ConfigError:
        pass


def override_text(kind, value) -> str:
    """How a user writes `value` after `-o key=`."""
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    return repr(value)


@st.composite
def overrides(draw):
    name, kind, meta = draw(st.sampled_from(FIELDS))
    if name in SWITCHED_ON:  # a switch stays on: BASE sets its method's settings
        return name, draw(st.sampled_from(SWITCHED_ON[name])), kind
    if name == "distill.teacher":
        return name, draw(st.text(min_size=1)), kind
    return name, draw(field_values(kind, meta)), kind


@FAST
@given(overrides())
@example(("train.output_dir", "a=b: 'c' \"d\" # é ☃", str))
@example(("data.test_file", "", str))
@example(("train.output_dir", " 5e-5 ", str))
@example(("train.learning_rate", 1e-05, float))
def test_override_of_a_valid_value_reads_back_equal(case):
    name, value, kind = case
    cfg = load_config(None, BASE + [f"{name}={override_text(kind, value)}"])
    assert functools.reduce(getattr, name.split("."), cfg) == value


# -- data readers ------------------------------------------------------------------------------------------

TEXTS = st.text(min_size=1).filter(str.strip)
PAIRS = st.none() | st.text()
LABELS = st.text(min_size=1)


def tsv_safe(text: str) -> bool:
    return not any(c in text for c in "\t\n\r")


@st.composite
def examples(draw, safe=lambda text: True, labels=LABELS):
    """(text, text_pair or None, label) triples, every string passing `safe`."""
    return draw(st.lists(st.tuples(TEXTS.filter(safe), PAIRS.filter(lambda p: p is None or safe(p)),
                                   labels.filter(lambda label: safe(str(label)))), min_size=1, max_size=8))


def read_back(path: Path) -> list:
    return [(e.text, e.text_pair, e.label) for e in read_examples(path)]


def expected(rows) -> list:
    return [(text, pair or None, str(label)) for text, pair, label in rows]


@FAST
@given(examples(safe=tsv_safe))
def test_tsv_round_trip(scratch, rows):
    lines = ["text\ttext_pair\tlabel"] + ["\t".join((text, pair or "", label)) for text, pair, label in rows]
    assert read_back(write(scratch, "a.tsv", "\n".join(lines) + "\n")) == expected(rows)


@FAST
@given(examples())
@example([('say "hi"\r\nnow', "a,b", "\ufeff")])
def test_csv_round_trip(scratch, rows):
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(["label", "text", "text_pair"])
    writer.writerows([label, text, pair or ""] for text, pair, label in rows)
    assert read_back(write(scratch, "a.csv", buffer.getvalue())) == expected(rows)


@FAST
@given(examples(labels=LABELS | st.integers()), st.booleans())
@example([("a\u2028b\nc", None, 3)], False)
def test_jsonl_round_trip(scratch, rows, ensure_ascii):
    lines = [json.dumps({"text": text, "text_pair": pair, "label": label}, ensure_ascii=ensure_ascii)
             for text, pair, label in rows]
    assert read_back(write(scratch, "a.jsonl", "\r\n".join(lines))) == expected(rows)


BYTE_PIECES = st.sampled_from([b"text", b"label", b"text_pair", b",", b"\t", b'"', b'""', b"\n", b"\r", b"\r\n",
                               b"\x00", b"\xef\xbb\xbf", b"\xff", b"\xc3", b"\xe2\x80\xa8", "é".encode(), b" ", b"a",
                               b"{", b"}", b"[", b"]", b":", b'"text"', b'"label"', b'"text_pair"', b"1", b"1.5",
                               b"null", b"true", b"\\u00e9", b"\\ud800"])
HEADERS = st.sampled_from([b"", b"text,label\n", b"label\ttext\n", b"text\ttext_pair\tlabel\r\n",
                           b'{"text": "a", "label": "b"}\n'])


@settings(max_examples=200, deadline=None, database=None)
@given(st.sampled_from(["a.tsv", "a.csv", "a.jsonl"]),
       st.tuples(HEADERS, st.lists(BYTE_PIECES | st.binary(max_size=6), max_size=40).map(b"".join)).map(b"".join))
@example("a.csv", b'text,label\n"open,x\nb,c\n')
@example("a.csv", b"text,label\n" + b"x" * 140000 + b",y\n")
@example("a.jsonl", b"[" * 100000)
@example("a.jsonl", b'{"text": "a", "text": "b"}')
def test_any_bytes_read_or_fail_with_data_error_at_a_line(scratch, name, content):
    path = write(scratch, name, content)
    lines = content.count(b"\n") + content.count(b"\r") + 1  # at least as many as any reader counts
    try:
        wheres = [e.where for e in read_examples(path)]
    except DataError as exc:
        if str(exc) == f"{path}: no examples":
            return
        wheres = [str(exc)]
    for where in wheres:
        match = re.match(re.escape(str(path)) + r":(\d+)(:|$)", where)
        assert match, where
        assert 1 <= int(match.group(1)) <= lines, where
