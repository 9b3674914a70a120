"""Evaluate a checkpoint on the config's dev and test splits, or on one labelled file.

    python tools/eval.py --config configs/r8_minilm_fp32.yaml --checkpoint runs/r8_minilm_fp32/checkpoints/best
"""
import argparse
import json

from ernie_qat import cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_args(parser)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint folder written by tools/train.py")
    parser.add_argument("--data", help="a labelled TSV/CSV/JSONL file instead of the config's splits")
    args = parser.parse_args()
    cfg = cli.config_from_args(args)
    from ernie_qat.train.trainer import evaluate_checkpoint
    print(json.dumps(evaluate_checkpoint(args.checkpoint, cfg, args.data), indent=1))


if __name__ == "__main__":
    cli.run(main)

