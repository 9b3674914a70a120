"""Benchmark CPU inference: Paddle FP32 vs oneDNN INT8, with ONNX Runtime INT8 as a peer; or, with
--train, training steps.

    python tools/benchmark.py --shape ernie-base --batch 8 --seq-len 128 --threads 2 --ort
    python tools/benchmark.py --model deploy/r8_int8 --fp32-model deploy/r8_fp32 --json bench.json --png bench.png
    python tools/benchmark.py --train --shape minilm --batch 32 --seq-len 128 --threads 2 --json train.json
    python tools/benchmark.py --traffic mr:test --model deploy/mr_int8 --fp32-model deploy/mr_fp32 --clients 1 2 --length-bucket 1 16

--model takes a deployment folder written by tools/export.py (repeatable). An INT8 export is also
timed at FP32 (its fake-quant graph runs in FP32) unless --fp32-model pairs it with an FP32 export
of the same model (the i-th --fp32-model pairs with the i-th --model). --shape adds a random-weight
model of a named shape (exported once, cached). ONNX Runtime rows need `onnxruntime` and a plain
FP32 export; they convert it with paddle2onnx, apply ORT's BERT fusion where it works, and quantize
with `quantize_dynamic`; the `ort_path` column says which path was used.

Latency is per batch in ms (p50/p90/p99 over --runs). The engines of a model take turns, --rounds rounds
per cell (default 2), so a machine whose speed drifts slows them alike (more rounds even out faster drift);
each turn starts with a 0.3 s pause and --warmup untimed runs. Throughput is sequences/s at
p50; speedup is against paddle-fp32 of the same model, threads, batch and sequence length. size_mb
is the model on disk (model.pdmodel + model.pdiparams; the .onnx file for ONNX Runtime). Each
predictor or session (model, engine, threads) is also loaded in a fresh process with OMP_NUM_THREADS
set to its threads: load_s is the time to construct it, rss_mb the resident memory it adds (peak
after loading and one call at the largest --batch and --seq-len, less the peak after the imports;
the JSON keeps both, peak_rss_mb and baseline_rss_mb, in MB of 10^6 bytes). --no-memory skips these
child processes (one per engine and thread count); the columns then show "-".

--traffic DATA replays a split's texts (DATA as tools/infer.py --input takes it; the i-th --traffic goes to the
i-th --model) in their order and real lengths, one text per call, tokenization included, with --clients
concurrent clients (default 1 2; threads // clients math threads each), for paddle-int8, paddle-fp32 (the
paired --fp32-model) and ONNX Runtime INT8/FP32 of the FP32 export: latency p50/p90/p99 per text, throughput
(texts/s), load time and resident memory after the replay, each in a fresh process
(ernie_qat/benchmark/traffic.py). --length-bucket and --executor compare the Paddle predictor's settings
(one row each); --limit N replays the first N texts only.

--train times one real training step (forward, backward, AdamW with clipping; random-weight model
of --shape, default minilm; 8 labels; dropout 0.1) for paddle-fp32, paddle-qat (PaddleSlim
fake-quant), paddle-fp32-frozen-emb (word-embedding table frozen), paddle-fp32-fast-dropout and
paddle-qat-fast-dropout (`train.fast_dropout`: compiled dropout masks) and, if `torch` imports
(requirements-torch.txt), an equivalent PyTorch model (tools/torch_reference.py) as torch-fp32.
Defaults: --batch 32, --seq-len 128, --threads 2, --runs 5 steps after --warmup 2. step_s is the
median step in seconds; ratios are step-time ratios (> 1: slower than torch / paddle-fp32). A thread
count other than this process's OMP_NUM_THREADS is measured in a child process with
OMP_NUM_THREADS set to it.
"""
import argparse
import sys
from importlib import metadata
from pathlib import Path

from ernie_qat import cli
from ernie_qat.atomic import write_json
from ernie_qat.benchmark.machine import int8_dot_product, machine_info

SHAPES = ["ernie-base", "minilm", "tiny"]


def collect_models(args, parser) -> dict:
    """{name: {"fp32": dir, "int8": dir}} from --model / --fp32-model / --shape."""
    from ernie_qat.benchmark.inference import BenchmarkError, synthetic_deploy_dirs
    from ernie_qat.deploy import read_deploy_config
    if len(args.fp32_model) > len(args.model):
        parser.error("each --fp32-model pairs with a --model given before it")
    models = {}
    for i, folder in enumerate(args.model):
        precision = read_deploy_config(folder)["precision"]
        dirs = {"fp32": Path(folder)} if precision == "fp32" else {"int8": Path(folder), "fp32": Path(folder)}
        if i < len(args.fp32_model):
            if precision == "fp32":
                raise BenchmarkError(f"--fp32-model {args.fp32_model[i]} pairs with `{folder}`, "
                                     "which is already an FP32 export")
            read_deploy_config(args.fp32_model[i])
            dirs["fp32"] = Path(args.fp32_model[i])
        name = Path(folder).resolve().name
        models[name if name not in models else f"{name}#{i + 1}"] = dirs
    for shape in dict.fromkeys(args.shape or []):
        print(f"preparing synthetic {shape} model (built and exported on first use, then cached)", file=sys.stderr)
        models[shape] = synthetic_deploy_dirs(shape)
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], metavar="DEPLOY_DIR",
                        help="a deployment folder from tools/export.py (repeatable)")
    parser.add_argument("--fp32-model", action="append", default=[], metavar="DEPLOY_DIR",
                        help="FP32 export paired with the INT8 --model of the same position (repeatable)")
    parser.add_argument("--shape", action="append", choices=SHAPES,
                        help="a random-weight model of this shape (repeatable; --train: default minilm)")
    parser.add_argument("--batch", nargs="+", type=cli.positive_int, help="default 1 8 32 (--train: 32)")
    parser.add_argument("--seq-len", nargs="+", type=cli.positive_int, help="default 64 128 (--train: 128)")
    parser.add_argument("--threads", nargs="+", type=cli.positive_int, help="default 1 2 (--train: 2)")
    parser.add_argument("--runs", type=cli.positive_int,
                        help="timed runs per configuration (default 20; --train: 5 steps)")
    parser.add_argument("--warmup", type=cli.non_negative_int,
                        help="untimed runs at the start of each turn (default 2; --train: 2 before them)")
    parser.add_argument("--rounds", type=cli.positive_int,
                        help="turns each engine gets per cell, sharing --runs (default 2; not with --train)")
    parser.add_argument("--ort", action=argparse.BooleanOptionalAction, default=True,
                        help="add ONNX Runtime rows (skipped with a note if onnxruntime is missing)")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                        help="measure load time and peak memory of each engine in a child process")
    parser.add_argument("--json", metavar="PATH", help="write rows and machine info as JSON")
    parser.add_argument("--png", metavar="PATH", help="write a p50 latency bar chart")
    parser.add_argument("--traffic", action="append", default=[], metavar="DATA",
                        help="replay this split's texts on the --model of the same position (repeatable)")
    parser.add_argument("--clients", nargs="+", type=cli.positive_int, help="--traffic: concurrent clients "
                        "(default 1 2)")
    parser.add_argument("--limit", type=cli.positive_int, help="--traffic: replay the first N texts only")
    parser.add_argument("--length-bucket", nargs="+", type=cli.positive_int,
                        help="--traffic: the Paddle predictor's length buckets to compare (default: the predictor's)")
    parser.add_argument("--executor", nargs="+", choices=["auto", "old", "new"], help="--traffic: Paddle Inference's "
                        "executors to compare (default auto: new at 1 thread, old at more)")
    parser.add_argument("--train", action="store_true",
                        help="time training steps (paddle FP32 / QAT / frozen embeddings, torch) instead of inference")
    args = cli.parse_args(parser)
    if args.train:
        return train_main(args, parser)
    if args.traffic:
        return traffic_main(args, parser)
    defaults = {"shape": [], "batch": [1, 8, 32], "seq_len": [64, 128], "threads": [1, 2], "runs": 20, "warmup": 2}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not args.model and not args.shape:
        parser.error("give at least one --model or --shape")

    from ernie_qat.benchmark.inference import ROUNDS, format_table, plot, run_benchmark
    if args.rounds is None:
        args.rounds = min(ROUNDS, args.runs)
    elif args.rounds > args.runs:
        parser.error(f"--rounds {args.rounds} exceeds --runs {args.runs}: every turn needs a timed run")

    machine = machine_info()
    if not int8_dot_product(machine):
        print("note: this CPU has no VNNI or AMX: oneDNN runs int8 layers through its GEMM fallback, about as fast "
              "as FP32 at small batches (docs/int8_speed.md)", file=sys.stderr)
    models = collect_models(args, parser)
    rows = run_benchmark(models, args.batch, args.seq_len, args.threads, args.runs, args.warmup, ort=args.ort,
                         memory=args.memory, progress=True, rounds=args.rounds)
    print(format_table(rows))
    if args.json:
        settings = {k: getattr(args, k) for k in ("batch", "seq_len", "threads", "runs", "warmup", "rounds", "ort",
                                                  "memory")}
        report = {"machine": machine, "settings": settings,
                  "models": {name: {p: str(d) for p, d in dirs.items()} for name, dirs in models.items()},
                  "rows": rows}
        write_json(args.json, report)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.png:
        plot(rows, args.png)
        print(f"wrote {args.png}", file=sys.stderr)


def traffic_main(args, parser) -> None:
    """--traffic: replay each split's texts on its model's engines, for every thread count and client count."""
    if len(args.traffic) != len(args.model) or args.shape or args.train:
        parser.error("--traffic replays real texts: give one --model (and optionally one --fp32-model) per --traffic")
    from ernie_qat.benchmark.inference import onnx_models, ort_available, text_table
    from ernie_qat.benchmark.traffic import replay
    from ernie_qat.data.loader import read_examples
    from ernie_qat.data.sources import data_file
    from ernie_qat.deploy.predictor import LENGTH_BUCKET
    threads_list, clients_list = args.threads or [1, 2], args.clients or [1, 2]
    models = collect_models(args, parser)
    no_ort = ort_available() if args.ort else "--no-ort"
    if no_ort and args.ort:
        print(f"note: {no_ort}", file=sys.stderr)
    buckets, executors = args.length_bucket or [LENGTH_BUCKET], args.executor or ["auto"]
    rows = []
    for data, (name, dirs) in zip(args.traffic, models.items()):
        texts = [e.text for e in read_examples(data_file(data), require_label=False)][:args.limit]
        runs = [(f"paddle-{p}", d, bucket, executor) for executor in executors for bucket in buckets
                for p, d in dirs.items() if not (p == "fp32" and dirs["fp32"] == dirs.get("int8"))]
        if not no_ort:
            onnx = onnx_models(dirs["fp32"])
            runs += [("ort-int8", onnx["int8"], None, None), ("ort-fp32", onnx["fp32"], None, None)]
        for threads in threads_list:
            for clients in [c for c in clients_list if c <= threads]:
                for engine, path, bucket, executor in runs:
                    print(f"{name} {data}: {engine}, {threads} threads, {clients} clients, {len(texts)} texts"
                          + (f", length bucket {bucket}, {executor} executor" if bucket else ""), file=sys.stderr)
                    measured = replay(engine, path, texts, dirs["fp32"], threads, clients, length_bucket=bucket,
                                      executor=executor or "auto")
                    rows.append({"model": name, "data": data, "engine": engine, "threads": threads,
                                 "clients": clients, "length_bucket": bucket, "executor": executor, **measured})
    columns = [("model", "{}"), ("data", "{}"), ("engine", "{}"), ("threads", "{}"), ("clients", "{}"),
               ("length_bucket", "{}"), ("executor", "{}"), ("p50_ms", "{:.2f}"), ("p90_ms", "{:.2f}"),
               ("p99_ms", "{:.2f}"), ("throughput", "{:.1f}"), ("load_s", "{:.2f}"), ("rss_mb", "{:.0f}")]
    print("\n".join(text_table(columns, rows)))
    if args.json:
        settings = {"traffic": args.traffic, "threads": threads_list, "clients": clients_list, "limit": args.limit,
                    "length_bucket": buckets, "executor": executors}
        report = {"mode": "traffic", "machine": machine_info(), "settings": settings,
                  "models": {name: {p: str(d) for p, d in dirs.items()} for name, dirs in models.items()},
                  "rows": rows}
        write_json(args.json, report)
        print(f"wrote {args.json}", file=sys.stderr)


def train_main(args, parser) -> None:
    """--train: time training steps for every shape, batch, sequence length and thread count."""
    if args.model or args.fp32_model or args.png or args.rounds:
        parser.error("--train times random-weight models of --shape; --model, --fp32-model, --png and --rounds "
                     "are for the inference benchmark")
    from ernie_qat.benchmark.training import format_train_table, run_train_benchmark
    from ernie_qat.env import cpu_settings
    shapes = list(dict.fromkeys(args.shape or ["minilm"]))
    batches, seq_lens, threads_list = args.batch or [32], args.seq_len or [128], args.threads or [2]
    runs, warmup = args.runs or 5, 2 if args.warmup is None else args.warmup
    machine = machine_info()
    try:
        machine["versions"]["torch"] = metadata.version("torch")
    except metadata.PackageNotFoundError:
        machine["versions"]["torch"] = None
    rows = [row for threads in threads_list for batch in batches for seq_len in seq_lens
            for row in run_train_benchmark(shapes, batch, seq_len, threads, runs, warmup)]
    print(format_train_table(rows))
    if args.json:
        settings = {"shapes": shapes, "batch": batches, "seq_len": seq_lens, "threads": threads_list, "runs": runs,
                    "warmup": warmup}
        report = {"mode": "train", "machine": machine, "cpu_settings": cpu_settings(), "settings": settings,
                  "rows": rows}
        write_json(args.json, report)
        print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    cli.run(main)
