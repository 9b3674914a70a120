"""Analyze checkpoints: per-layer weight and activation distributions (why a layer quantizes badly), and
how sharp their minimum is.

    python tools/analyze.py kurtosis --checkpoint runs/r8_minilm_fp32/checkpoints/best \
        [--compare runs/r8_kure/checkpoints/best] [--data r8:train] [--out docs/kurtosis/r8]
    python tools/analyze.py sharpness --checkpoint runs/mr_minilm_qat/checkpoints/best [--checkpoint DIR2 ...] \
        [--data mr:dev] [--rho 0.05] [--adaptive] [--landscape 21] [--out analysis/sharpness]
    python tools/analyze.py kernels --model deploy/mr_int8 | --shape minilm [--precision int8] \
        [--batch 1] [--seq-len 64] [--threads 2] [--runs 10] [--json FILE]

Writes to --out: `kurtosis.md` (a table: weight kurtosis and max|w|/σ of every encoder Linear
weight, and the kurtosis and max|x|/σ of its input on a few calibration batches, per model),
`kurtosis.json`, and `weights.png` / `activations.png` (histograms of the layers with the
heaviest tails, each model overlaid: before/after with --compare).
In a quantized checkpoint (QAT, low-bit, PTQ) a layer's stored weight and its input before fake
quantization are reported under the FP32 layer's name, so --compare's rows line up.

`sharpness` (ernie_qat.analysis.sharpness) measures, on the same fixed batches for every checkpoint
(the first `--batches` of the data in order, evaluation mode, fake-quantized where the checkpoint is
quantized), the loss increase within a ρ-ball: worst case by projected gradient ascent and the
average over random directions; writes `sharpness.md`, `sharpness.json` and, with --landscape N,
`landscape.png` (the loss along a random and the gradient direction, N points). `sharpness.json` is
written after each checkpoint; a checkpoint already in it with the same settings and the same files
(ernie_qat.atomic.folder_identity: its manifest's SHA-256) is kept, not measured again, so adding a
checkpoint to a finished comparison measures that one only.

`kernels` (ernie_qat.analysis.kernels) shows where a deployed predictor's time goes on one batch shape:
its wall time, Paddle's op profile (calls and ms per run of each op type, with shape inference,
input preparation and compute apart) and oneDNN's verbose log (each primitive kind, implementation
and data types, with calls and ms per run: the int8 GEMM's kernel, ops left in FP32, reorders).
--shape profiles the benchmark's random-weight model of that shape (tools/benchmark.py).
"""
import argparse
import json
from pathlib import Path

from ernie_qat import cli


def kurtosis_report(args) -> None:
    import numpy as np
    import paddle

    from ernie_qat.atomic import write_json, write_text
    from ernie_qat.analysis.kurtosis import activation_table, layer_weights, markdown, plot_histograms, weight_table
    from ernie_qat.config import RegularizerConfig
    from ernie_qat.data.batching import collate, encode
    from ernie_qat.data.loader import read_examples
    from ernie_qat.data.sources import data_file
    from ernie_qat.models.classifier import ModelError
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
        samples["weights"][label] = layer_weights(model, include)
        samples["activations"][label] = {n: s.sample for n, s in stats.items()}
        if not samples["weights"][label] or not samples["activations"][label]:
            raise ModelError(f"`{folder}` has no encoder Linear layers (plain, fake-quantized or OCS-split) to "
                             "analyze: nothing written")
        weights[label], activations[label] = weight_table(samples["weights"][label]), activation_table(stats)
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


def sharpness_report(args) -> None:
    import paddle
    import paddle.nn.functional as F

    from ernie_qat.analysis.sharpness import Sharpness, markdown, measure, plot_landscapes
    from ernie_qat.atomic import folder_identity, write_json, write_text
    from ernie_qat.data.batching import collate, encode
    from ernie_qat.data.loader import read_examples
    from ernie_qat.data.sources import data_file
    from ernie_qat.optim.sam import latent_weights
    from ernie_qat.train.checkpoint import load_checkpoint

    out = Path(args.out)
    settings = {"data": args.data, "batches": args.batches, "batch_size": args.batch_size, "steps": args.steps,
                "directions": args.directions, "rho": args.rho, "adaptive": args.adaptive, "eta": args.eta,
                "landscape": args.landscape}
    earlier = measured_before(out / "sharpness.json", settings)
    results, manifests = {}, {}

    def save_json():
        write_json(out / "sharpness.json", {**settings, "results": {
            name: {**r.to_dict(), "checkpoint_manifest": manifests[name]} for name, r in results.items()}})

    for folder in args.checkpoint:
        name = f"{Path(folder).resolve().parent.parent.name}/{Path(folder).name}"
        manifests[name] = folder_identity(folder)
        if earlier.get(name, {}).get("checkpoint_manifest") == manifests[name]:
            results[name] = Sharpness(**{k: v for k, v in earlier[name].items() if k != "checkpoint_manifest"})
            print(f"{name}: measured before with these settings (`{out}/sharpness.json`), kept")
            continue
        model, tokenizer, labels, cfg = load_checkpoint(folder)
        data = args.data or cfg.data.dev_file or f"{cfg.data.dataset}:dev"
        items = encode(read_examples(data_file(data)), tokenizer, cfg.data.max_seq_len, labels)
        items = items[:args.batches * args.batch_size]
        batches = [{k: paddle.to_tensor(v) for k, v in collate(items[s:s + args.batch_size], tokenizer.pad_token_id).items()}
                   for s in range(0, len(items), args.batch_size)]

        def loss_at():
            return sum(F.cross_entropy(model(b["input_ids"], b["token_type_ids"]), b["labels"]) for b in batches) / len(batches)

        results[name] = measure(loss_at, latent_weights(model), args.rho, args.steps, args.directions, args.adaptive,
                                args.eta, args.landscape)
        print(f"{name}: " + ", ".join(f"{k} {v:.5f}" for k, v in results[name].to_dict().items()
                                      if k in ("loss", "worst_case", "average")))
        save_json()  # after each checkpoint: a crash loses one at most
    text = markdown(results)
    write_text(out / "sharpness.md", text)
    save_json()
    if args.landscape:
        plot_landscapes(results, out / "landscape.png")
    print(text)
    print(f"wrote {out}/sharpness.md, sharpness.json" + (", landscape.png" if args.landscape else ""))


def measured_before(path: Path, settings: dict) -> dict:
    """{checkpoint name: result} of an earlier `sharpness.json` measured with the same settings, else {}."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(earlier, dict) or any(earlier.get(k) != v for k, v in settings.items()):
        return {}
    return earlier.get("results", {})


def kernels_report(args) -> None:
    from ernie_qat.analysis.kernels import format_report, profile_predictor
    from ernie_qat.atomic import write_json
    from ernie_qat.benchmark.inference import synthetic_deploy_dirs
    from ernie_qat.deploy import Predictor

    folder = args.model or synthetic_deploy_dirs(args.shape)[args.precision or "int8"]
    report = profile_predictor(Predictor(folder, precision=args.precision, threads=args.threads), args.batch,
                               args.seq_len, args.runs)
    print(format_report(report))
    if args.json:
        write_json(args.json, {"model": str(folder), **report})
        print(f"wrote {args.json}")


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
    sharp = commands.add_parser("sharpness", help="loss increase within a ρ-ball: worst case and random directions")
    sharp.add_argument("--checkpoint", required=True, action="append", help="a checkpoint folder (repeat to compare)")
    sharp.add_argument("--data", help="labelled data: a file or dataset:split (default: the run's dev split)")
    sharp.add_argument("--batches", type=cli.positive_int, default=4, help="fixed batches the loss is measured on")
    sharp.add_argument("--batch-size", type=cli.positive_int, default=32)
    sharp.add_argument("--rho", type=float, default=0.05, help="radius of the ball (global L2 norm)")
    sharp.add_argument("--adaptive", action="store_true", help="measure δ in ASAM's norm ‖δ/(|w|+η)‖")
    sharp.add_argument("--eta", type=float, default=0.01)
    sharp.add_argument("--steps", type=cli.positive_int, default=5, help="gradient-ascent steps of the worst case")
    sharp.add_argument("--directions", type=cli.positive_int, default=10, help="random directions of the average")
    sharp.add_argument("--landscape", type=cli.non_negative_int, default=0, help="points of the 1-D plots (0: none)")
    sharp.add_argument("--out", default="analysis/sharpness", help="output folder")
    kern = commands.add_parser("kernels", help="where a deployed predictor's time goes: Paddle ops, oneDNN kernels")
    source = kern.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a deployment folder from tools/export.py")
    source.add_argument("--shape", choices=["ernie-base", "minilm", "tiny"],
                        help="the benchmark's random-weight model of this shape")
    kern.add_argument("--precision", choices=["int8", "fp32"], help="default: the export's (--shape: int8)")
    kern.add_argument("--batch", type=cli.positive_int, default=1)
    kern.add_argument("--seq-len", type=cli.positive_int, default=64)
    kern.add_argument("--threads", type=cli.positive_int, default=2)
    kern.add_argument("--runs", type=cli.positive_int, default=10, help="calls per measurement")
    kern.add_argument("--json", metavar="PATH", help="write the report as JSON")
    args = cli.parse_args(parser)
    if args.command == "sharpness" and not (args.rho > 0 and args.eta >= 0):
        parser.error("--rho must be > 0 and --eta >= 0")
    {"kurtosis": kurtosis_report, "sharpness": sharpness_report, "kernels": kernels_report}[args.command](args)


if __name__ == "__main__":
    cli.run(main)
