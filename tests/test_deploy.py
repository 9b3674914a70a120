"""The predictor over a deployment folder and tools/infer.py on bad input: malformed or degenerate texts, damaged
folders, unusable output paths, bad integer options. One small FP32 export serves the whole module."""
import json
import math
import operator
import os
import shutil
import string
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paddle.base.proto.framework_pb2 import VarType
from paddlenlp.transformers import ErnieTokenizer

from conftest import ROOT, full_disk_at, make_toy_task, run_here, trained
from ernie_qat import __version__
from ernie_qat.atomic import MANIFEST, DamagedFileError
from ernie_qat.data.batching import CHARS_PER_TOKEN, encode_text
from ernie_qat.deploy import DeployError, Predictor
from ernie_qat.export import export

NO_TOKENS = "\x00\x00\x01\x02"  # the tokenizer drops NUL bytes and control characters: only [CLS] [SEP] remain


@pytest.fixture(scope="module")
def deploy(tmp_path_factory):
    """An FP32 export (with manifest) of a one-layer toy model trained for one epoch."""
    task = make_toy_task(tmp_path_factory.mktemp("toy"))
    checkpoint = trained(task, "fp32", "train.epochs=1", "model.random.num_hidden_layers=1")
    return export(checkpoint, task["dir"] / "deploy", "fp32")


@pytest.fixture(scope="module")
def predictor(deploy):
    return Predictor(deploy, threads=1, batch_size=4)


def run_infer(*args, stdin=b"", preexec_fn=None):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "infer.py"), *map(str, args)], input=stdin,
                          capture_output=True, timeout=300, preexec_fn=preexec_fn)


def assert_one_error_line(result, *words):
    assert result.returncode == 2, result.stderr
    assert b"Traceback" not in result.stderr
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and all(w in lines[0] for w in words), lines


# -- Predictor.predict -----------------------------------------------------------------------------------------


def test_predict_gives_one_prediction_per_text_in_order(predictor):
    assert predictor.predict([]) == []
    texts = ["the film was good", "", "  \t ", NO_TOKENS, "\ufffd", "bad " + "plot " * 100, "awful"]
    predictions = predictor.predict(texts)
    assert [p.error for p in predictions][1:5] == ["empty text", "empty text"] + [
        "no tokens: the tokenizer drops every character of the text (control characters, NUL bytes)"] * 2
    for p in predictions[1:5]:
        assert (p.label, p.probabilities, p.truncated) == (None, {}, False)
    assert [p.truncated for p in predictions] == [False] * 5 + [True, False]
    # Batched by length, yet each prediction is the one its text gets alone.
    for text, p in zip(texts, predictions):
        alone = predictor.predict([text])[0]
        assert alone.label == p.label and alone.error == p.error
        assert alone.probabilities == pytest.approx(p.probabilities, abs=1e-5)


def test_predict_gives_a_text_that_is_not_unicode_its_own_error(predictor):
    predictions = predictor.predict(["good \ud800 film", "good film"], [None, "\udfff"])
    assert [p.error for p in predictions] == ["the text is not valid Unicode (a lone surrogate)",
                                              "the text_pair is not valid Unicode (a lone surrogate)"]
    assert predictor.predict(["good \ud800 film", "good film"])[1] == predictor.predict(["good film"])[0]


def test_predict_rejects_what_is_not_a_list_of_texts(predictor):
    with pytest.raises(DeployError, match=r"`texts` must be a list of strings, got a dict"):
        predictor.predict({"good film": 1})
    with pytest.raises(DeployError, match=r"`texts` must be a list of strings, got a set"):
        predictor.predict({"good film", "bad film"})
    with pytest.raises(DeployError, match=r"3 texts but 1 text_pairs"):
        predictor.predict(["good film", "bad film", "nice"], ["x"])
    with pytest.raises(DeployError, match=r"`texts` must be a list of strings, got one str; pass \[text\]"):
        predictor.predict("good film")
    with pytest.raises(DeployError, match=r"`texts` must be a list of strings, got NoneType"):
        predictor.predict(None)
    with pytest.raises(DeployError, match=r"`texts\[1\]` must be a string, got bytes"):
        predictor.predict(["good", b"bad"])
    with pytest.raises(DeployError, match=r"`text_pairs\[0\]` must be a string, got int"):
        predictor.predict(["good"], [3])
    pair, empty_pair = predictor.predict(["good", "bad"], ["the film", ""])
    assert pair.error is None and empty_pair.error == "no tokens in text_pair"


def test_non_finite_model_output_gives_an_error_not_nan(predictor, monkeypatch):
    bad, awful = predictor.tokenizer.convert_tokens_to_ids(["bad", "awful"])
    real = predictor.logits

    def logits(input_ids, token_type_ids):
        out = real(input_ids, token_type_ids)
        out[(input_ids == bad).any(1)] = np.nan
        out[(input_ids == awful).any(1), 0] = np.inf
        return out

    monkeypatch.setattr(predictor, "logits", logits)
    predictions = predictor.predict(["good film", "bad film", "awful film", "nice"])
    assert [p.error for p in predictions] == [None, "the model's output is not finite",
                                              "the model's output is not finite", None]
    assert predictions[1].label is None and predictions[2].probabilities == {}


TEXTS = st.one_of(st.text(), st.sampled_from(["", " ", "\x00" * 100, "good film " * 50]),
                  st.builds(operator.mul, st.text(max_size=8), st.integers(0, 2000)))  # up to 16,000 characters


@settings(max_examples=40, deadline=None, database=None)
@given(texts=st.lists(TEXTS, max_size=20))
def test_any_list_of_strings_gets_one_finite_prediction_each(predictor, texts):
    predictions = predictor.predict(texts)
    assert len(predictions) == len(texts)
    for text, p in zip(texts, predictions):
        if not text.strip():
            assert p.error == "empty text"
        if p.error is None:
            assert p.label in predictor.labels.labels
            assert all(math.isfinite(v) for v in p.probabilities.values())
            assert sum(p.probabilities.values()) == pytest.approx(1.0)
        else:
            assert p.label is None and p.probabilities == {}


# -- Long texts ------------------------------------------------------------------------------------------------

WORDS = "Good film, GOOD Σ film; bad[SEP]film. "
LONG_TEXTS = [  # each across the first place a prefix may be cut (CHARS_PER_TOKEN * max_seq_len characters)
    ("x" + "o" * 150 + " film", None),  # a word over 100 characters: [UNK], never the pieces of a part of it
    (" " * (CHARS_PER_TOKEN * 4 - 4) + "[MASK]" + " good" * 10, None),  # a special token: never cut inside
    ("ab1" * 2000 + " good", None), ("x" * 120 + "_good", None),  # words of 6000 and 120 characters
    ("a\vb" * 100 + "a\x00" * 100 + "e\u0301" * 100, None),  # control characters, NUL, a combining accent
    (" \t\n\u3000 " * 300 + "good", None),  # whitespace runs
    ("中文好" * 300, None), (WORDS * 40, None), ("good,film;" * 200, None), ("film" * 40 + " good" * 40, None),
    (WORDS * 40, WORDS * 3), (WORDS, "中文" * 200), ("good", ""), ("", "film"),
    ("中文好" * 300, "x" * 300 + " film" * 50)]
PIECES = ["good", "FILM", "Σ", " ", "\t", "\v", ",", "[", "]", "[SEP]", "中", "e\u0301", "\x00", "_", "x" * 60]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A tokenizer whose vocabulary spells any lowercase word in word pieces, loaded as Predictor loads one (so that
    special tokens in a text are tokens)."""
    folder = tmp_path_factory.mktemp("tokenizer")
    letters = string.ascii_lowercase
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "film", "中", "文", ",", ".", "[", "]"]
    (folder / "vocab.txt").write_text("\n".join(words + list(letters) + [f"##{c}" for c in letters]) + "\n")
    ErnieTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    return ErnieTokenizer.from_pretrained(str(folder))


def assert_encoded_as_in_full(tokenizer, text, pair):
    for max_seq_len in (4, 8, 32):
        full = tokenizer(text, text_pair=pair, max_length=max_seq_len, truncation=True, return_attention_mask=False)
        length = len(tokenizer(text, text_pair=pair, return_attention_mask=False)["input_ids"])
        item = encode_text(tokenizer, max_seq_len, text, pair)
        assert (item.input_ids, item.token_type_ids) == (full["input_ids"], full["token_type_ids"]), (max_seq_len, text)
        assert item.truncated == (length > max_seq_len)


def test_long_texts_are_encoded_from_a_prefix_as_in_full(tokenizer):
    for text, pair in LONG_TEXTS:
        assert_encoded_as_in_full(tokenizer, text, pair)


@settings(max_examples=40, deadline=None, database=None)
@given(text=st.lists(st.sampled_from(PIECES), max_size=300).map("".join),
       pair=st.none() | st.lists(st.sampled_from(PIECES), max_size=100).map("".join))
def test_any_text_is_encoded_from_a_prefix_as_in_full(tokenizer, text, pair):
    assert_encoded_as_in_full(tokenizer, text, pair)


def test_a_5_mb_line_is_encoded_in_a_moment(predictor):
    lines = ["good film " * 500_000, "好" * 5_000_000, "0123456789abcdef" * 320_000]  # words, CJK, one huge word
    start = time.perf_counter()
    predictions = predictor.predict(lines)
    assert time.perf_counter() - start < 2
    assert [p.truncated for p in predictions] == [True, True, False]


# -- Predictor on damaged folders ------------------------------------------------------------------------------


def huge_first_tensor(data: bytes) -> bytes:
    """A .pdiparams whose first tensor header claims 2**40 elements (Paddle would allocate 4 TB for it)."""
    size = struct.unpack_from("<i", data, 16)[0]
    desc = VarType.TensorDesc.FromString(data[20:20 + size])
    desc.dims[:] = [2 ** 40]
    new = desc.SerializeToString()
    return data[:16] + struct.pack("<i", len(new)) + new + data[20 + size:]


DAMAGE = {  # file: (new content, None to delete it, or a function of the old content), error message
    "no deploy.yaml": ("deploy.yaml", None, "is not a deployment folder"),
    "malformed yaml": ("deploy.yaml", b"precision: [fp32", "deploy.yaml` is unreadable or not valid YAML"),
    "yaml not a mapping": ("deploy.yaml", b"- fp32\n", "deploy.yaml` must be a mapping, got list"),
    "no max_seq_len": ("deploy.yaml", b"format: 3\nprecision: fp32\n",
                       "`max_seq_len` must be an integer >= 8, got None"),
    "text max_seq_len": ("deploy.yaml", b"format: 3\nprecision: fp32\nmax_seq_len: '32'\n", "got '32'"),
    "no precision": ("deploy.yaml", b"format: 3\nmax_seq_len: 32\n", "`precision` must be one of"),
    "no format": ("deploy.yaml", b"precision: fp32\nmax_seq_len: 32\n", "`format` must be an integer, got None"),
    "older format": ("deploy.yaml", lambda data: data.replace(b"format: 3", b"format: 1"),
                     f"was written by ernie-qat {__version__} in deployment format 1, older than the formats [2, 3] "
                     f"that ernie-qat {__version__} reads; re-export it with tools/export.py"),
    "newer format": ("deploy.yaml", lambda data: data.replace(b"format: 3", b"format: 4"),
                     f"in deployment format 4, newer than the formats [2, 3] that ernie-qat {__version__} reads; "
                     "re-export it with tools/export.py of this version, or upgrade ernie-qat"),
    "unknown weights": ("deploy.yaml", lambda data: data.replace(b"weights: float32", b"weights: int4"),
                        "`weights` must be one of ['float32', 'int8'], got 'int4'"),
    "unknown embeddings": ("deploy.yaml", lambda data: data.replace(b"embeddings: float32", b"embeddings: int4"),
                           "`embeddings` must be one of ['float32', 'int8'], got 'int4'"),
    "no labels": ("labels.json", None, "labels.json` is missing or damaged"),
    "garbled labels": ("labels.json", b'["neg", "p', "labels.json` is missing or damaged"),
    "labels not names": ("labels.json", b"[1, 2]", "labels.json` must be a list of label names"),
    "three labels": ("labels.json", b'["a", "b", "c"]', "the model gives 2 scores per text, labels.json names 3"),
    "no vocab": ("vocab.txt", None, "cannot load the tokenizer"),
    "garbled tokenizer config": ("tokenizer_config.json", b"{", "cannot load the tokenizer"),
    "no model": ("model.pdmodel", None, "model.pdmodel` is missing or damaged"),
    "text model": ("model.pdmodel", b"hello world\n" * 50, "model.pdmodel` is missing or damaged"),  # Paddle: SIGSEGV
    "no params": ("model.pdiparams", None, "model.pdiparams` is missing or damaged"),
    "truncated params": ("model.pdiparams", lambda data: data[:-10], "runs past the end of the file"),
    "extended params": ("model.pdiparams", lambda data: data + b"\xff" * 100, "no tensor header at byte"),
    "huge tensor": ("model.pdiparams", huge_first_tensor, "runs past the end of the file"),  # Paddle allocates it
}


def damaged(deploy, tmp_path, name, change, keep_manifest=False):
    """A copy of `deploy` with file `name` changed; unless `keep_manifest`, without its manifest, as a format-2
    folder (format 3 needs its manifest)."""
    folder = tmp_path / "deploy"
    shutil.copytree(deploy, folder)
    path = folder / name
    if change is None:
        path.unlink()
    else:
        path.write_bytes(change(path.read_bytes()) if callable(change) else change)
    if not keep_manifest:
        without_manifest(folder)
    return folder


def without_manifest(folder):
    """Delete `folder`'s manifest and make it format 2, a format that loads without one."""
    (folder / MANIFEST).unlink()
    config = folder / "deploy.yaml"
    if config.exists():
        config.write_bytes(config.read_bytes().replace(b"format: 3", b"format: 2"))


@pytest.mark.parametrize("case", DAMAGE)
def test_damaged_folder_without_manifest_is_a_deploy_error(deploy, tmp_path, case):
    name, change, message = DAMAGE[case]
    folder = damaged(deploy, tmp_path, name, change)
    with pytest.raises(DeployError) as error:
        Predictor(folder, threads=1)
    assert message in str(error.value) and str(folder) in str(error.value)
    assert "tools/export.py" in str(error.value)


def test_format_3_folder_without_its_manifest_is_refused(deploy, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "deploy"
    shutil.copytree(deploy, folder)
    (folder / MANIFEST).unlink()
    message = (f"`{folder / MANIFEST}` is missing, so the folder's files cannot be checked; "
               "re-export it with tools/export.py")
    with pytest.raises(DeployError) as error:
        Predictor(folder, threads=1)
    assert str(error.value) == message
    code, out, err = run_here("infer.py", monkeypatch, capsys, "--model", folder, "--input", "-", stdin=b"good film\n")
    assert (code, out, err) == (2, "", f"error: {message}\n")


def test_format_2_folder_reads_as_float32_embeddings(deploy, tmp_path):
    folder = damaged(deploy, tmp_path, "deploy.yaml",
                     lambda data: data.replace(b"format: 3", b"format: 2").replace(b"embeddings: float32\n", b""))
    predictor = Predictor(folder, threads=1)
    assert predictor.deploy["format"] == 2 and predictor.deploy["embeddings"] == "float32"


def test_damaged_folder_with_manifest_names_the_file(deploy, tmp_path):
    with pytest.raises(DeployError, match=r"deployment folder `.*nowhere` does not exist"):
        Predictor(tmp_path / "nowhere")
    folder = damaged(deploy, tmp_path, "vocab.txt", None, keep_manifest=True)
    with pytest.raises(DamagedFileError, match=r"vocab.txt` is missing: the folder is incomplete"):
        Predictor(folder)
    nan_weights = lambda data: data[:-64] + b"\xff" * 64  # noqa: E731 - the last 16 float32 weights become NaN
    (folder / "vocab.txt").write_bytes((deploy / "vocab.txt").read_bytes())
    (folder / "model.pdiparams").write_bytes(nan_weights((deploy / "model.pdiparams").read_bytes()))
    with pytest.raises(DamagedFileError, match=r"model.pdiparams` is damaged: \d+ bytes, .*different checksum"):
        Predictor(folder)
    # Without a manifest (format 2) the NaN weights load; their predictions come back as errors, not NaN probabilities.
    without_manifest(folder)
    prediction, = Predictor(folder, threads=1).predict(["good film"])
    assert prediction.label is None and prediction.error == "the model's output is not finite"


# -- tools/infer.py --------------------------------------------------------------------------------------------


def test_infer_writes_one_record_per_line_atomically(deploy, tmp_path, monkeypatch, capsys):
    output = tmp_path / "new" / "preds.jsonl"
    lines = b"the film was good\n\n" + NO_TOKENS.encode() + b"\ncaf\xe9 was awful"
    code, out, err = run_here("infer.py", monkeypatch, capsys, "--model", deploy, "--input", "-", "--output", output,
                              stdin=lines)
    assert (code, out) == (0, ""), err
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3, 4]
    assert records[0]["label"] in ("pos", "neg") and set(records[0]["probabilities"]) == {"pos", "neg"}
    assert records[1] == {"line": 2, "label": None, "error": "empty text"}
    assert records[2]["label"] is None and records[2]["error"].startswith("no tokens: ")
    assert records[3]["decode_error"] is True and records[3]["label"] in ("pos", "neg")
    assert os.listdir(output.parent) == ["preds.jsonl"]  # no staging file left

    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    for source in (empty, "-"):  # an empty file, empty stdin: no records
        assert run_here("infer.py", monkeypatch, capsys, "--model", deploy, "--input", source)[:2] == (0, "")
    empty_table = tmp_path / "empty.tsv"
    empty_table.write_bytes(b"")
    code, _, err = run_here("infer.py", monkeypatch, capsys, "--model", deploy, "--input", empty_table, "--eval")
    assert code == 2 and err == f"error: {empty_table}: no examples\n"


def test_infer_eval_scores_the_texts_that_get_a_prediction(deploy, tmp_path, monkeypatch, capsys):
    data = tmp_path / "test.tsv"
    data.write_text(f"label\ttext\npos\tthe film was good\nneg\t{NO_TOKENS}\nneg\tbad plot\n")
    code, out, err = run_here("infer.py", monkeypatch, capsys, "--model", deploy, "--input", data, "--eval")
    assert code == 0, err
    metrics = json.loads(out)
    assert (metrics["examples"], metrics["without_prediction"]) == (3, 1) and 0 <= metrics["accuracy"] <= 100


def test_infer_int8_on_an_fp32_export_names_the_flag(deploy, monkeypatch, capsys):
    code, out, err = run_here("infer.py", monkeypatch, capsys, "--model", deploy, "--input", "-", "--precision", "int8",
                              stdin=b"good film\n")
    assert (code, out, err) == (2, "", f"error: `{deploy}` is an FP32 export without quantization scales; run it with "
                                       "--precision fp32 (or without --precision)\n")


def test_infer_checks_the_output_path_before_loading_the_model(tmp_path, monkeypatch, capsys):
    regular = tmp_path / "file.txt"
    regular.write_text("not a folder")
    unusable = [(regular / "preds.jsonl", "Not a directory"), (tmp_path, "it is a directory")]
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        unusable.append((locked / "preds.jsonl", "Permission denied"))
    else:
        unusable.append((f"/proc/{os.getpid()}/new/preds.jsonl", "No such file or directory"))
    for output, reason in unusable:  # a model that does not exist: the output is checked first
        code, out, err = run_here("infer.py", monkeypatch, capsys, "--model", tmp_path / "no_model", "--input", "-",
                                  "--output", output, stdin=b"good film\n")
        assert (code, out) == (2, "") and err.startswith(f"error: cannot write `{output}`: {reason}"), err
    result = run_infer("--model", tmp_path / "no_model", "--input", "-", "--output", regular / "preds.jsonl")
    assert_one_error_line(result, f"cannot write `{regular / 'preds.jsonl'}`", "Not a directory")


def test_infer_failed_write_keeps_the_previous_output(deploy, tmp_path):
    output = tmp_path / "preds.jsonl"
    output.write_text('{"line": 1, "label": "pos"}\n')
    result = run_infer("--model", deploy, "--input", "-", "--output", output, stdin=b"the film was good\n" * 100,
                       preexec_fn=full_disk_at(4096))
    assert_one_error_line(result, f"cannot write `{output}`", "File too large", "left as they were")
    assert output.read_text() == '{"line": 1, "label": "pos"}\n'
    assert os.listdir(tmp_path) == ["preds.jsonl"]


@pytest.mark.parametrize("tool, args", [
    ("infer.py", ["--model", "m", "--input", "-", "--batch-size", "0"]),
    ("infer.py", ["--model", "m", "--input", "-", "--threads", "-1"]),
    ("benchmark.py", ["--shape", "tiny", "--runs", "0"]),
    ("benchmark.py", ["--shape", "tiny", "--batch", "8", "0"]),
    ("benchmark.py", ["--shape", "tiny", "--warmup", "-1"]),
    ("analyze.py", ["kurtosis", "--checkpoint", "c", "--plots", "0"]),
    ("analyze.py", ["kurtosis", "--checkpoint", "c", "--batch-size", "x"]),
])
def test_integer_options_are_checked(tool, args, monkeypatch, capsys):
    code, _, err = run_here(tool, monkeypatch, capsys, *args)
    assert code == 2 and "expected a " in err and "integer" in err and "Traceback" not in err


def test_benchmark_accepts_zero_warmup(monkeypatch, capsys):
    # --png is refused with --train after parsing: the error is about it, not about --warmup 0
    code, _, err = run_here("benchmark.py", monkeypatch, capsys, "--train", "--warmup", "0", "--png", "x")
    assert code == 2 and "--png" in err and "argument --warmup" not in err
