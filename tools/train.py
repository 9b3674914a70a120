"""Fine-tune an ERNIE classifier as a config describes.

    python tools/train.py --config configs/r8_minilm_fp32.yaml [-o train.learning_rate=3e-5] [--resume]
    python -m paddle.distributed.launch --nproc_per_node 2 tools/train.py --config ...   # data parallel

Data parallel (docs/distributed.md): every process trains on its share of each batch, rank 0 writes.

Ctrl-C (or SIGTERM) finishes the current step, saves it and prints the command that resumes.
"""
import argparse
import json
import os
import shlex
import sys

from ernie_qat import cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_args(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue from output_dir/checkpoints/last (it must be the same config and data)")
    args = cli.parse_args(parser)
    cfg = cli.config_from_args(args)
    from ernie_qat.plugins import build_plugins
    from ernie_qat.train.parallel import launcher_arguments
    from ernie_qat.train.trainer import TrainingInterrupted, fit
    try:
        results = fit(cfg, build_plugins(cfg), resume=args.resume)
    except TrainingInterrupted as exc:
        command = sys.argv if args.resume else sys.argv + ["--resume"]
        launcher = launcher_arguments()  # under paddle.distributed.launch, resume under it
        nodes = " (on every node, with the --master or --ips it had)" if "--nnodes" in launcher else ""
        exc.args = (f"{exc}\nresume with: {shlex.join([os.path.basename(sys.executable), *launcher, *command])}"
                    f"{nodes}",)
        raise
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    cli.run(main)
