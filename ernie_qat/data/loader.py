"""Labelled text files (TSV, CSV, JSONL) read into examples, and the label vocabulary.

TSV and CSV files start with a header row naming the columns; JSONL files hold one object per
line. Columns: `text` (required), `text_pair` (optional, for sentence-pair tasks) and `label`
(required where labels are). Files are UTF-8 (a BOM is allowed). Every problem is reported as
`DataError` with the file and line number.
"""
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from ernie_qat.errors import UserError

FORMATS = {".tsv": "tsv", ".txt": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}


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
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8 (byte {raw[exc.start]:#x}); re-save the file as UTF-8") from None
    rows = _json_rows(text, path) if fmt == "jsonl" else _table_rows(text, path, fmt)
    examples = [_example(row, f"{path}:{line}", require_label) for line, row in rows]
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def _json_rows(text: str, path: Path):
    for line_no, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 may be inside text
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{line_no}: invalid JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
        yield line_no, row


def _table_rows(text: str, path: Path, fmt: str):
    dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}
    reader = csv.reader(io.StringIO(text, newline=""), **dialect)
    header = next(reader, None)
    if header is None:
        return
    if "text" not in header:
        raise DataError(f"{path}:1: header {header} has no `text` column")
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{reader.line_num}: {len(row)} fields, header has {len(header)}")
        yield reader.line_num, dict(zip(header, row))


def _example(row: dict, where: str, require_label: bool) -> Example:
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: missing or empty `text`")
    pair = row.get("text_pair") or None
    if pair is not None and not isinstance(pair, str):
        raise DataError(f"{where}: `text_pair` must be a string, got {pair!r}")
    label = row.get("label")
    if label is None or label == "":
        if require_label:
            raise DataError(f"{where}: missing `label`")
        label = None
    return Example(text=text, text_pair=pair, label=None if label is None else str(label), where=where)


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
