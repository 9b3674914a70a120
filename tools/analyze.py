"""Analyze a checkpoint: per-layer weight and activation distributions (why a layer quantizes badly).

    python tools/analyze.py kurtosis --checkpoint runs/r8_minilm_fp32/checkpoints/best \
        [--compare runs/r8_kure/checkpoints/best] [--data r8:train] [--out docs/kurtosis/r8]

Writes to --out: `kurtosis.md` (a table: weight kurtosis and max|w|/σ of every encoder Linear
weight, and the kurtosis and max|x|/σ of its input on a few calibration batches, per model),
`kurtosis.json`, and `weights.png` / `activations.png` (histograms of the layers with the
heaviest tails, each model overlaid: before/after with --compare).
"""
import argparse
from pathlib import Path

from ernie_qat import cli


def kurtosis_report(args) -> None:
    import numpy as np
    import paddle

    from ernie_qat.atomic import write_json, write_text
    from ernie_qat.analysis.kurtosis import activation_table, markdown, plot_histograms, weight_table
    from ernie_qat.config import RegularizerConfig
    from ernie_qat.data.batching import collate, encode
    from ernie_qat.data.loader import read_examples
    from ernie_qat.data.sources import data_file
    from ernie_qat.ptq.calibrate import calibrate
    from ernie_qat.train.checkpoint import load_checkpoint

    include = RegularizerConfig().include
    checkpoints = {"model": args.checkpoint} if not args.compare else {"before": args.checkpoint, "after": args.compare}
    weights, activations, samples = {}, {}, {"weights": {}, "activations": {}}
    for label, folder in checkpoints.items():
        model, tokenizer, labels, cfg = load_checkpoint(folder)
        data = args.data or cfg.data.train_file or f"{cfg.data.dataset}:train"
        items = encode(read_examples(data_file(data)), tokenizer, cfg.data.max_seq_len, labels)
        order = np.random.default_rng(0).permutation(len(items))[:args.batches * args.batch_size]
        batches = [{k: paddle.to_tensor(v) for k, v in collate([items[i] for i in order[s:s + args.batch_size]],
                                                                  tokenizer.pad_token_id).items()}
                   for s in range(0, len(order), args.batch_size)]
        stats = calibrate(model, batches, sample_size=65536)
        weights[label], activations[label] = weight_table(model, include), activation_table(stats)
        samples["weights"][label] = {n: p.numpy() for n, p in model.named_parameters() if n in weights[label]}
        samples["activations"][label] = {n: s.sample for n, s in stats.items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    first = next(iter(checkpoints))
    for kind, table in (("weights", weights), ("activations", activations)):
        heaviest = sorted(table[first], key=lambda n: table[first][n]["kurtosis"], reverse=True)[:args.plots]
        plot_histograms(samples[kind], heaviest, out / f"{kind}.png", f"{kind}: heaviest tails ({first})")
    text = "## Weights\n\n" + markdown(weights) + "\n## Linear-layer inputs (activations)\n\n" + markdown(activations)
    write_text(out / "kurtosis.md", text)
    write_json(out / "kurtosis.json", {"checkpoints": checkpoints, "weights": weights, "activations": activations})
    print(text)
    print(f"wrote {out}/kurtosis.md, kurtosis.json, weights.png, activations.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    kurt = commands.add_parser("kurtosis", help="per-layer weight/activation kurtosis, max|x|/σ, histograms")
    kurt.add_argument("--checkpoint", required=True, help="a checkpoint folder")
    kurt.add_argument("--compare", help="a second checkpoint (e.g. after training) to put beside the first")
    kurt.add_argument("--data", help="labelled data for activations: a file or dataset:split (default: the run's train)")
    kurt.add_argument("--batches", type=cli.positive_int, default=4,
                      help="calibration batches for activation statistics")
    kurt.add_argument("--batch-size", type=cli.positive_int, default=32)
    kurt.add_argument("--plots", type=cli.positive_int, default=3, help="layers per histogram figure")
    kurt.add_argument("--out", default="analysis", help="output folder")
    args = parser.parse_args()
    kurtosis_report(args)


if __name__ == "__main__":
    cli.run(main)
