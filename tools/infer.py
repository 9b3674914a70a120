"""Predict labels with an exported model; JSONL out, one record per input line.

    python tools/infer.py --model deploy/r8_int8 --input texts.txt [--output preds.jsonl]
    echo "oil prices rose" | python tools/infer.py --model deploy/r8_int8 --input -
    python tools/infer.py --model deploy/r8_int8 --input test.jsonl --eval
    python tools/infer.py --model deploy/r8_int8 --input r8:test --eval     # a built-in dataset's split

Input: a labelled or unlabelled .tsv/.csv/.jsonl file (columns `text`, optional `text_pair`,
`label`), or plain text with one text per line (any other suffix, or `-` for stdin; an empty
file gives no records).
Plain text: bytes that are not UTF-8 are replaced by U+FFFD and the record gets
`"decode_error": true`. A text that is empty or has no tokens (only control characters or NUL
bytes), or on which the model outputs NaN or infinity, gets `"label": null` and an `"error"`.
Texts longer than the export's max_seq_len tokens are truncated and get `"truncated": true`.
--output is checked before the model is loaded and written whole or not at all: a failed run
leaves an earlier file there as it was.
--eval (labelled input) prints accuracy, macro-F1 and MCC as JSON, over the examples that got a
prediction (`without_prediction` counts the others); predictions are then written only with
--output.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

from ernie_qat import cli
from ernie_qat.atomic import WriteError, atomic_file

TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json")


def check_output(path: Path) -> None:
    """Raise WriteError naming `path` unless a file can be created in its folder (made if missing)."""
    if path.is_dir():
        raise WriteError(f"cannot write `{path}`: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path.parent).close()
    except OSError as exc:
        reason = "Not a directory" if isinstance(exc, FileExistsError) else exc.strerror  # mkdir met a file
        where = f" ({exc.filename})" if exc.filename else ""
        raise WriteError(f"cannot write `{path}`: {reason}{where}") from None


def read_plain_lines(data: bytes) -> list:
    """[(line number, stripped text, decode_error)] of plain-text bytes; none for empty bytes."""
    lines = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        lines.pop()  # the newline ending the last line, or the one empty line of no bytes
    rows = []
    for number, raw in enumerate(lines, 1):
        raw = raw.rstrip(b"\r")
        try:
            text, bad = raw.decode("utf-8-sig" if number == 1 else "utf-8"), False
        except UnicodeDecodeError:
            text, bad = raw.decode("utf-8", errors="replace"), True
        rows.append((number, text.strip(), bad))
    return rows


def to_record(number: int, prediction, gold, decode_error: bool) -> dict:
    """The JSONL record of one input line."""
    record = {"line": number, "label": prediction.label}
    if prediction.error:
        record["error"] = prediction.error
    else:
        record["probabilities"] = prediction.probabilities
    if prediction.truncated:
        record["truncated"] = True
    if decode_error:
        record["decode_error"] = True
    if gold is not None:
        record["gold"] = gold
    return record


def write_records(out, records: list) -> None:
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
    out.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a deployment folder written by tools/export.py")
    parser.add_argument("--input", required=True, help="input file, or - for stdin (plain text lines)")
    parser.add_argument("--output", help="JSONL predictions (default: stdout)")
    parser.add_argument("--eval", action="store_true", help="labelled input: print metrics")
    parser.add_argument("--precision", choices=["int8", "fp32"], help="default: the export's precision")
    parser.add_argument("--threads", type=cli.positive_int, help="default: the usable cores")
    parser.add_argument("--batch-size", type=cli.positive_int, default=32)
    args = cli.parse_args(parser)
    if args.output:
        check_output(Path(args.output))

    from ernie_qat.data.loader import DataError, read_examples
    from ernie_qat.data.sources import data_file
    from ernie_qat.deploy import NotQuantizedError, Predictor
    from ernie_qat.train.metrics import classification_metrics

    path = data_file(args.input)
    if args.input != "-" and path.suffix.lower() in TABLE_SUFFIXES:
        examples = read_examples(path, require_label=args.eval)
        rows = [(int(e.where.rsplit(":", 1)[1]), e.text, e.text_pair, e.label, False) for e in examples]
    else:
        if args.eval:
            raise DataError("--eval needs labelled input: a .tsv/.csv/.jsonl file with a `label` column")
        try:
            data = sys.stdin.buffer.read() if args.input == "-" else path.read_bytes()
        except OSError as exc:
            raise DataError(f"{args.input}: cannot read: {exc.strerror}") from None
        rows = [(n, text, None, None, bad) for n, text, bad in read_plain_lines(data)]

    try:
        predictor = Predictor(args.model, precision=args.precision, threads=args.threads, batch_size=args.batch_size)
    except NotQuantizedError:
        raise NotQuantizedError(f"`{args.model}` is an FP32 export without quantization scales; run it with "
                                "--precision fp32 (or without --precision)") from None
    predictions = predictor.predict([r[1] for r in rows], [r[2] for r in rows])
    records = [to_record(number, p, gold, bad) for (number, _, _, gold, bad), p in zip(rows, predictions)]

    if args.output:
        with atomic_file(args.output) as out:
            write_records(out, records)
    elif not args.eval:
        write_records(sys.stdout, records)
    if args.eval:
        labels = predictor.labels.labels
        unknown = sorted({r["gold"] for r in records} - set(labels))
        if unknown:
            raise DataError(f"{args.input}: labels {unknown} are unknown to the model, which knows {labels}")
        scored = [r for r in records if r["label"] is not None]
        if not scored:
            raise DataError(f"{args.input}: no example got a prediction (first: line {records[0]['line']}, "
                            f"{records[0]['error']})")
        metrics = classification_metrics([labels.index(r["gold"]) for r in scored],
                                         [labels.index(r["label"]) for r in scored])
        print(json.dumps({"examples": len(records), "without_prediction": len(records) - len(scored),
                          "precision": predictor.precision, **metrics}, indent=1, allow_nan=False))


if __name__ == "__main__":
    cli.run(main)
