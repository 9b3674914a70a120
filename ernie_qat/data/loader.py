"""Labelled text files (TSV, CSV, JSONL) read into examples, and the label vocabulary.

TSV and CSV files start with a header row naming the columns; JSONL files hold one object per
line. Columns: `text` (required), `text_pair` (optional, for sentence-pair tasks) and `label`
(required where labels are); a JSONL `label` may also be a number, read as its text. Files are
UTF-8 (a BOM is allowed). Every problem is reported as `DataError` with the file and the line
where the record starts.
"""
import csv
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from ernie_qat.errors import UserError

FORMATS = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
_JSON_TYPES = ((bool, "a boolean"), ((int, float), "a number"), (str, "a string"), (list, "an array"),
               (dict, "an object"))


class DataError(UserError):
    """A data file is unreadable or malformed; the message names the file and line."""


@dataclass(frozen=True)
class Example:
    text: str
    text_pair: Optional[str]
    label: Optional[str]
    where: str  # "file:line", for error messages


def read_examples(path, require_label: bool = True) -> List[Example]:
    """Read every example of a TSV / CSV / JSONL file (format from the suffix).

    Raises:
        DataError: unknown suffix, undecodable bytes, missing field, malformed row, no examples.
    """
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown data format `{path.suffix}`; expected one of {sorted(FORMATS)}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = _line_of(raw[:exc.start], fmt)
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {raw[exc.start]:#x}); re-save the file as UTF-8") from None
    rows = _json_rows(text, path) if fmt == "jsonl" else _table_rows(text, path, fmt)
    examples = [_example(row, f"{path}:{line}", require_label) for line, row in rows]
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def _line_of(before: bytes, fmt: str) -> int:
    """The line number of the byte after `before`, counting line breaks as the format's reader does."""
    breaks = before.count(b"\n")
    if fmt != "jsonl":  # the csv module also ends a line at a lone \r
        breaks += before.count(b"\r") - before.count(b"\r\n")
    return breaks + 1


def _json_rows(text: str, path: Path):
    for line_no, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 may be inside text
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{line_no}: invalid JSON: {exc.msg} (column {exc.colno})") from None
        except (ValueError, RecursionError) as exc:  # duplicate key, too many digits, too deeply nested
            raise DataError(f"{path}:{line_no}: invalid JSON: {exc}") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{line_no}: expected a JSON object, got {_json_type(row)}")
        yield line_no, row


def _unique_keys(pairs) -> dict:
    repeated = _repeated(key for key, _ in pairs)
    if repeated:
        raise ValueError(f"duplicate key {json.dumps(repeated[0], ensure_ascii=False)}")
    return dict(pairs)


def _repeated(names) -> list:
    return sorted(name for name, count in Counter(names).items() if count > 1)


def _json_type(value) -> str:
    """The JSON name of `value`'s type, for messages."""
    if value is None:
        return "null"
    return next(name for kind, name in _JSON_TYPES if isinstance(value, kind))


def _table_rows(text: str, path: Path, fmt: str):
    dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, **dialect)
    records = _records(reader, path, fmt)
    _, header = next(records, (1, None))
    if header is None:
        return
    if "text" not in header:
        raise DataError(f"{path}:1: header {header} has no `text` column")
    repeated = _repeated(header)
    if repeated:
        raise DataError(f"{path}:1: header {header} repeats column(s) {repeated}")
    for line, row in records:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{line}: {len(row)} fields, header has {len(header)}")
        yield line, dict(zip(header, row))


def _records(reader, path: Path, fmt: str):
    """(first line, fields) of each record of a csv `reader`; a csv.Error is a DataError at its record's first line."""
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"{path}:{line}: {_csv_problem(str(exc), reader.line_num, fmt)}") from None
        yield line, row


def _csv_problem(message: str, last_line: int, fmt: str) -> str:
    """A csv.Error `message`, detected on line `last_line`, told in the user's terms."""
    if message == "unexpected end of data":
        return "unterminated quote: the quoted field starting in this record runs to the end of the file"
    if message.startswith("field larger than field limit"):
        hint = "; is a quote unterminated?" if fmt == "csv" else ""
        return f"a field is longer than {csv.field_size_limit()} characters, the csv module's limit{hint}"
    if message.endswith("expected after '\"'"):
        return (f"text after a closing quote on line {last_line}: double a quote inside a quoted field (\"\"), "
                "or close the quote left open")
    return f"malformed record ({message}, on line {last_line})"


def _example(row: dict, where: str, require_label: bool) -> Example:
    text = row.get("text")
    if text is not None and not isinstance(text, str):
        raise DataError(f"{where}: `text` must be a string, got {_json_type(text)}")
    if not text or not text.strip():
        raise DataError(f"{where}: missing or empty `text`")
    pair = row.get("text_pair")
    if pair is not None and not isinstance(pair, str):
        raise DataError(f"{where}: `text_pair` must be a string, got {_json_type(pair)}")
    label = row.get("label")
    if isinstance(label, bool) or not isinstance(label, (str, int, float, type(None))):
        raise DataError(f"{where}: `label` must be a string or a number, got {_json_type(label)}")
    if label is None or label == "":
        if require_label:
            raise DataError(f"{where}: missing `label`")
        label = None
    return Example(text=text, text_pair=pair or None, label=None if label is None else str(label), where=where)


class LabelVocab:
    """The ordered label names; index i is the classifier's output i."""

    FILE = "labels.json"

    def __init__(self, labels: Sequence[str]):
        self.labels = list(labels)
        self._index = {label: i for i, label in enumerate(self.labels)}

    @classmethod
    def from_examples(cls, examples: Sequence[Example]) -> "LabelVocab":
        return cls(sorted({e.label for e in examples}))

    def __len__(self) -> int:
        return len(self.labels)

    def index(self, example: Example) -> int:
        """The class id of `example`'s label. Raises DataError for a label unseen in training."""
        try:
            return self._index[example.label]
        except KeyError:
            raise DataError(f"{example.where}: unknown label {example.label!r}; "
                            f"the model knows {self.labels}") from None

    def save(self, folder) -> None:
        (Path(folder) / self.FILE).write_text(json.dumps(self.labels, ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, folder) -> "LabelVocab":
        return cls(json.loads((Path(folder) / cls.FILE).read_text()))
