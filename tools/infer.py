"""Predict labels with an exported model; JSONL out, one record per input line.

    python tools/infer.py --model deploy/r8_int8 --input texts.txt [--output preds.jsonl]
    echo "oil prices rose" | python tools/infer.py --model deploy/r8_int8 --input -
    python tools/infer.py --model deploy/r8_int8 --input test.jsonl --eval
    python tools/infer.py --model deploy/r8_int8 --input r8:test --eval     # a built-in dataset's split

Input: a labelled or unlabelled .tsv/.csv/.jsonl file (columns `text`, optional `text_pair`,
`label`), or plain text with one text per line (any other suffix, or `-` for stdin).
Plain text: bytes that are not UTF-8 are replaced by U+FFFD and the record gets
`"decode_error": true`; an empty line gets `"label": null, "error": "empty text"`. Texts longer
than the export's max_seq_len tokens are truncated and get `"truncated": true`.
--eval (labelled input) prints accuracy, macro-F1 and MCC as JSON; predictions are then written
only with --output.
"""
import argparse
import json
import sys

from ernie_qat import cli

TABLE_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json")


def read_plain_lines(source) -> list:
    """[(line number, text or "", decode_error)] from a binary stream."""
    rows = []
    for number, raw in enumerate(source.read().split(b"\n"), 1):
        raw = raw.rstrip(b"\r")
        try:
            text, bad = raw.decode("utf-8-sig" if number == 1 else "utf-8"), False
        except UnicodeDecodeError:
            text, bad = raw.decode("utf-8", errors="replace"), True
        rows.append((number, text.strip(), bad))
    if rows and rows[-1][1] == "" and number > 1:
        rows.pop()  # the newline ending the last line
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a deployment folder written by tools/export.py")
    parser.add_argument("--input", required=True, help="input file, or - for stdin (plain text lines)")
    parser.add_argument("--output", help="JSONL predictions (default: stdout)")
    parser.add_argument("--eval", action="store_true", help="labelled input: print metrics")
    parser.add_argument("--precision", choices=["int8", "fp32"], help="default: the export's precision")
    parser.add_argument("--threads", type=int, help="default: the usable cores")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from ernie_qat.data.loader import DataError, read_examples
    from ernie_qat.data.sources import data_file
    from ernie_qat.deploy import Predictor
    from ernie_qat.train.metrics import classification_metrics

    predictor = Predictor(args.model, precision=args.precision, threads=args.threads, batch_size=args.batch_size)
    path = data_file(args.input)
    if args.input != "-" and path.suffix.lower() in TABLE_SUFFIXES:
        examples = read_examples(path, require_label=args.eval)
        rows = [(int(e.where.rsplit(":", 1)[1]), e.text, e.text_pair, e.label, False) for e in examples]
    else:
        if args.eval:
            raise DataError("--eval needs labelled input: a .tsv/.csv/.jsonl file with a `label` column")
        source = sys.stdin.buffer if args.input == "-" else open(path, "rb")
        rows = [(n, text, None, None, bad) for n, text, bad in read_plain_lines(source)]

    texts = [r for r in rows if r[1]]
    predictions = dict(zip((r[0] for r in texts),
                           predictor.predict([r[1] for r in texts], [r[2] for r in texts]) if texts else []))
    records = []
    for number, text, _, gold, bad in rows:
        record = {"line": number}
        if number in predictions:
            p = predictions[number]
            record.update(label=p.label, probabilities=p.probabilities)
            if p.truncated:
                record["truncated"] = True
        else:
            record.update(label=None, error="empty text")
        if bad:
            record["decode_error"] = True
        if gold is not None:
            record["gold"] = gold
        records.append(record)

    if args.output or not args.eval:
        out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()
    if args.eval:
        labels = predictor.labels
        gold = [labels.labels.index(r["gold"]) if r["gold"] in labels.labels else -1 for r in records]
        unknown = sorted({r["gold"] for r, g in zip(records, gold) if g < 0})
        if unknown:
            raise DataError(f"{args.input}: labels {unknown} are unknown to the model, which knows {labels.labels}")
        predicted = [labels.labels.index(r["label"]) for r in records]
        print(json.dumps({"examples": len(records), "precision": predictor.precision,
                          **classification_metrics(gold, predicted)}, indent=1))


if __name__ == "__main__":
    cli.run(main)
