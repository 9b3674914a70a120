"""Export a checkpoint as a Paddle Inference deployment folder, optionally verified on labelled data.

    python tools/export.py --checkpoint runs/r8_minilm_qat/checkpoints/best --output deploy/r8_int8 \
        [--precision int8|fp32] [--verify DATA_FILE|r8:test [--report FILE.json] [--min-agreement 99.5]]

--verify runs the exported model (oneDNN, INT8 if exported so) and the trained dygraph model on
the data before the folder takes the output's name; an INT8 export also runs in FP32 with graph
passes off, the float floor (an FP32 export is its own). It exits 1 without writing the folder if
the export's argmax disagrees with the trained model's on more than the floor's % of examples plus
100 − --min-agreement points (default 99.25: 0.75 points), accuracy drops by more than 0.5 points,
or a model outputs NaN or infinity. --report writes the verification's numbers (floor_agreement,
floor_max_abs_logit_diff, ...) as JSON, passed or not.
"""
import argparse
import json
import sys
import warnings

from ernie_qat import cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint folder written by tools/train.py")
    parser.add_argument("--output", required=True, help="the deployment folder to write")
    parser.add_argument("--precision", default="int8", choices=["int8", "fp32"])
    parser.add_argument("--verify", metavar="DATA", help="labelled TSV/CSV/JSONL, or dataset:split (e.g. r8:test), "
                                                         "to check the export on")
    parser.add_argument("--threads", type=cli.positive_int, help="predictor threads for --verify "
                                                                 "(default: usable cores)")
    parser.add_argument("--report", metavar="FILE", help="with --verify: write its numbers here as JSON")
    parser.add_argument("--min-agreement", type=cli.percentage, metavar="PERCENT",
                        help="with --verify: 100 - this is the %% of examples whose argmax may disagree "
                             "beyond the FP32 graph's disagreement (default 99.25)")
    args = cli.parse_args(parser)
    if (args.report or args.min_agreement is not None) and not args.verify:
        parser.error("--report and --min-agreement need --verify")
    from ernie_qat.atomic import write_json
    from ernie_qat.export import MIN_AGREEMENT, export, verified

    def show(report) -> None:
        print(json.dumps(report.summary(), indent=1))
        if args.report:
            write_json(args.report, report.summary())

    min_agreement = MIN_AGREEMENT if args.min_agreement is None else args.min_agreement
    check = verified(args.verify, args.threads, show, min_agreement) if args.verify else None
    with warnings.catch_warnings(record=True) as caution:  # said after the outcome they qualify, one line each
        warnings.simplefilter("always")
        folder = export(args.checkpoint, args.output, args.precision, check=check)
    print(f"exported {args.precision} model to {folder}" + (", verification passed" if args.verify else ""))
    after = ("--verify passed on this CPU" if args.verify else
             "check the export on the CPU that serves it with --verify")
    for warning in caution:
        print(f"warning: {warning.message}; {after}", file=sys.stderr)


if __name__ == "__main__":
    cli.run(main)
