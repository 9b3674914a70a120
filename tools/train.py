"""Fine-tune an ERNIE classifier as a config describes.

    python tools/train.py --config configs/r8_minilm_fp32.yaml [-o train.learning_rate=3e-5] [--resume]
"""
import argparse
import json

from ernie_qat import cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_args(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue from output_dir/checkpoints/last if it exists")
    args = parser.parse_args()
    cfg = cli.config_from_args(args)
    from ernie_qat.plugins import build_plugins
    from ernie_qat.train.trainer import fit
    results = fit(cfg, build_plugins(cfg), resume=args.resume)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    cli.run(main)
