"""Collect finished runs' results.json into one markdown table (test metrics and training time).

    python tools/report.py "FP32=runs/r8_minilm_fp32" "QAT=runs/r8_minilm_qat" [--split test] [--markdown FILE]
"""
import argparse
import json
from pathlib import Path

from ernie_qat import cli
from ernie_qat.atomic import write_text
from ernie_qat.errors import UserError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="LABEL=RUN_DIR", help="a label and a run folder (train.output_dir)")
    parser.add_argument("--split", default="test", choices=["dev", "test"])
    parser.add_argument("--markdown", metavar="FILE", help="also write the table here")
    args = cli.parse_args(parser)
    lines = [f"| run | {args.split} accuracy | macro-F1 | MCC | training time |", "|---|---|---|---|---|"]
    for item in args.runs:
        label, sep, folder = item.partition("=")
        path = Path(folder) / "results.json"
        if not sep or not path.exists():
            raise UserError(f"`{item}`: expected LABEL=RUN_DIR with RUN_DIR/results.json")
        results = json.loads(path.read_text())
        metrics = results[args.split]
        lines.append(f"| {label} | {metrics['accuracy']:.2f} | {metrics['macro_f1']:.2f} | {metrics['mcc']:.2f} "
                     f"| {results['train_seconds']:.0f} s |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.markdown:
        write_text(args.markdown, table)


if __name__ == "__main__":
    cli.run(main)
