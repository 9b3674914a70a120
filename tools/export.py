"""Export a checkpoint as a Paddle Inference deployment folder, optionally verified on labelled data.

    python tools/export.py --checkpoint runs/r8_minilm_qat/checkpoints/best --output deploy/r8_int8 \
        [--precision int8|fp32] [--verify DATA_FILE|r8:test]

--verify runs the exported model (oneDNN, INT8 if exported so) and the trained dygraph model on
the data and exits 1 if their argmax agrees on fewer than 99% of examples or accuracy drops by
more than 0.5 points.
"""
import argparse
import json
import sys

from ernie_qat import cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint folder written by tools/train.py")
    parser.add_argument("--output", required=True, help="the deployment folder to write")
    parser.add_argument("--precision", default="int8", choices=["int8", "fp32"])
    parser.add_argument("--verify", metavar="DATA", help="labelled TSV/CSV/JSONL, or dataset:split (e.g. r8:test), "
                                                         "to check the export on")
    parser.add_argument("--threads", type=int, help="predictor threads for --verify (default: usable cores)")
    args = parser.parse_args()
    from ernie_qat.export import MAX_METRIC_DROP, MIN_AGREEMENT, export, verify
    folder = export(args.checkpoint, args.output, args.precision)
    print(f"exported {args.precision} model to {folder}")
    if args.verify:
        report = verify(folder, args.verify, threads=args.threads)
        print(json.dumps({"examples": report.examples, "agreement": report.agreement,
                          "max_abs_logit_diff": report.max_abs_logit_diff, "accuracy_drop": report.accuracy_drop,
                          "trained": report.trained, "exported": report.exported}, indent=1))
        if not report.passed:
            print(f"error: verification failed: agreement {report.agreement:.2f}% (needs >= {MIN_AGREEMENT}), "
                  f"accuracy drop {report.accuracy_drop:.2f} points (allowed <= {MAX_METRIC_DROP})", file=sys.stderr)
            sys.exit(1)
        print("verification passed")


if __name__ == "__main__":
    cli.run(main)
