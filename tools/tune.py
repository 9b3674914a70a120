"""Search learning rate, epochs, warm-up and batch size with Optuna (TPE, median pruning), each trial a training run.

    python tools/tune.py --config configs/r52_minilm_fp32.yaml --trials 10 [-o data.max_seq_len=64]
        [--output runs/r52_minilm_fp32_tune] [--metric macro_f1] [--lr 1e-5 1e-4] [--epochs 2 8]
        [--warmup 0 0.2] [--batch-sizes 16 32 64]

The study is OUTPUT/study.db: run the same command again after Ctrl-C (or a crash) and the search continues,
the interrupted trial resuming from its checkpoint; a larger --trials extends a finished search. Trials run one
at a time in OUTPUT/trials/<n> (their output in <n>.log). At the end: OUTPUT/best.yaml (train it with
`python tools/train.py --config OUTPUT/best.yaml`), search.png, curves.png and trials.csv; the best trial's own
checkpoint is printed. `--again N...` runs finished trials once more with their values, as new trials (for
trials a defect ended). More: ernie_qat/tune.py, docs/tuning.md.
"""
import argparse
import json
from pathlib import Path

from ernie_qat import cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_config_args(parser)
    parser.add_argument("--trials", type=cli.positive_int, required=True, help="finished trials to reach")
    parser.add_argument("--output", help="the search's folder (default: the config's train.output_dir + _tune)")
    parser.add_argument("--metric", default="macro_f1", choices=["accuracy", "macro_f1", "mcc"],
                        help="dev metric to maximize, and to choose each trial's checkpoint by (default macro_f1)")
    parser.add_argument("--lr", type=float, nargs=2, default=[1e-5, 1e-4], metavar=("LOW", "HIGH"),
                        help="learning rate range, searched on a log scale (default 1e-5 1e-4)")
    parser.add_argument("--epochs", type=int, nargs=2, default=[2, 8], metavar=("LOW", "HIGH"),
                        help="epochs range (default 2 8)")
    parser.add_argument("--warmup", type=float, nargs=2, default=[0.0, 0.2], metavar=("LOW", "HIGH"),
                        help="warm-up ratio range (default 0 0.2)")
    parser.add_argument("--batch-sizes", type=cli.positive_int, nargs="+", default=[16, 32, 64],
                        help="batch sizes to choose from (default 16 32 64)")
    parser.add_argument("--again", type=int, nargs="+", default=[], metavar="N",
                        help="finished trials to run once more with their values, as new trials")
    args = cli.parse_args(parser)

    from ernie_qat.tune import SearchSpace, tune
    space = SearchSpace(tuple(args.lr), tuple(args.epochs), tuple(args.warmup), tuple(args.batch_sizes))
    output = Path(args.output or cli.config_from_args(args).train.output_dir.rstrip("/") + "_tune")
    best = tune(args.config, args.override, args.trials, output, space, args.metric, args.again)
    print(json.dumps(best, indent=1))
    print(f"train the best config: python tools/train.py --config {best['best_config']}")


if __name__ == "__main__":
    cli.run(main)
