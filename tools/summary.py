"""Compare an FP32 and an INT8 export on a labelled split, measured on the spot; `make demo` ends with it.

    python tools/summary.py --fp32 deploy/mr_fp32 --int8 deploy/mr_int8 --data mr:test \
        [--next runs/mr_minilm_fp32 "visualdl --logdir runs/"] [--json summary.json]

Prints accuracy and macro-F1 of both predictors, their argmax agreement, the folders' sizes and the batch-1
latency of each (one text of median length, p50 of 40 calls after warm-up, in turns; a second or two), then
the lines given with --next.
"""
import argparse
from pathlib import Path

from ernie_qat import cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fp32", required=True, help="an FP32 deployment folder (tools/export.py --precision fp32)")
    parser.add_argument("--int8", required=True, help="an INT8 deployment folder")
    parser.add_argument("--data", required=True, help="labelled TSV/CSV/JSONL, or dataset:split (e.g. mr:test)")
    parser.add_argument("--threads", type=cli.positive_int, help="predictor threads (default: the usable cores)")
    parser.add_argument("--next", nargs="*", default=[], metavar="LINE", help="paths or commands to list last")
    parser.add_argument("--json", metavar="FILE", help="also write the numbers here")
    args = cli.parse_args(parser)

    from ernie_qat.atomic import write_json
    from ernie_qat.benchmark.summary import compare, format_summary
    folders = {"fp32": Path(args.fp32), "int8": Path(args.int8)}
    summary = compare(folders, args.data, args.threads)
    if args.json:
        write_json(Path(args.json), summary)
    print(format_summary(summary, folders, args.next))


if __name__ == "__main__":
    cli.run(main)
