"""Evaluate a checkpoint on its run's dev and test splits, or on one labelled file.

    python tools/eval.py --checkpoint runs/r8_minilm_fp32/checkpoints/best [--data FILE] [--config CFG]

The run's config is the one saved in the checkpoint unless --config is given.
"""
import argparse
import json
from pathlib import Path

from ernie_qat import cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_args(parser, required=False)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint folder written by tools/train.py")
    parser.add_argument("--data", help="a labelled TSV/CSV/JSONL file or dataset:split instead of the run's splits")
    args = cli.parse_args(parser)
    from ernie_qat.deploy import DEPLOY_FILE, DeployError
    if (Path(args.checkpoint) / DEPLOY_FILE).exists():
        raise DeployError(f"`{args.checkpoint}` is a deployment folder, not a checkpoint; evaluate it with "
                          f"tools/infer.py --model {args.checkpoint} --input DATA --eval")
    args.config = args.config or str(Path(args.checkpoint) / "config.yaml")
    cfg = cli.config_from_args(args)
    from ernie_qat.train.evaluate import evaluate_checkpoint
    print(json.dumps(evaluate_checkpoint(args.checkpoint, cfg, args.data), indent=1))


if __name__ == "__main__":
    cli.run(main)

