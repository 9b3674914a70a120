"""Inference benchmark on the CPU: Paddle FP32 vs oneDNN INT8, with ONNX Runtime as an optional peer.

Models are deployment folders (tools/export.py) or random-weight synthetic ones of a named shape,
built and exported here once and cached under `cache_dir()/bench/<shape>`. Latency is per
`logits` call on random token ids without padding; throughput is sequences/s at the p50 latency.
Tokenization is timed apart (`tokenize_ms`: the deployed tokenizer on random words of that batch and
length), the same for every engine of a model.

Besides latency, each engine's size on disk (the model files it loads) and, measured in a fresh
process (ernie_qat.benchmark.footprint) because a process's peak memory only grows, its load time and its peak
resident memory: after the imports (baseline) and after loading and one call at the largest batch
and sequence length of the run (peak); the table shows the engine's own share, peak - baseline.
Loading a Predictor includes what `Predictor()` does: the manifest's checksums, the tokenizer, the
model checks, creating the Paddle predictor and one check call; an ONNX Runtime session, its creation.
The child imports Paddle for every engine, so ONNX Runtime baselines include it too.

Example:
    dirs = synthetic_deploy_dirs("minilm")
    rows = run_benchmark({"minilm": dirs}, batches=[8], seq_lens=[128], threads_list=[2], runs=20, warmup=5)
    print(format_table(rows))
"""
import functools
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import paddle

import ernie_qat
from ernie_qat.atomic import write_json
from ernie_qat.deploy import MODEL_PREFIX, DeployError, Predictor, WordPieceTokenizer, read_deploy_config
from ernie_qat.env import cache_dir
from ernie_qat.plots import pyplot, write_png

SHAPES = {  # hidden, layers, heads, FFN, vocab
    "ernie-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                       vocab_size=30522),
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                   vocab_size=30522),
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=1000),
}
MAX_POSITIONS = 512
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CALIBRATION_BATCHES, CALIBRATION_SHAPE = 4, (4, 64)  # train-mode forwards that set the activation scales
ENGINES = ("paddle-fp32", "paddle-int8", "ort-fp32", "ort-int8")
ONNX_OPSET = 13
SETTLE_S = 0.3  # pause before an engine's turn in `time_in_turns`: longer than OpenMP's 200 ms spin
ROUNDS = 2  # turns each engine gets per cell in `time_in_turns` unless told otherwise


class BenchmarkError(DeployError):
    """A benchmark request cannot run (bad shape, sequence too long, ...)."""


def _synthetic(shape: str) -> dict:
    """What a cached synthetic folder must record to be reused (deploy.yaml's `synthetic`)."""
    return {"shape": shape, **SHAPES[shape], "quantize_embeddings": True, "ernie_qat_version": ernie_qat.__version__}


def _deploy_info(precision: str, shape: str, quantization) -> dict:
    return {"precision": precision, "max_seq_len": MAX_POSITIONS, "quantization": quantization, "checkpoint": None,
            "synthetic": _synthetic(shape)}


def synthetic_deploy_dirs(shape: str, workdir: Optional[Path] = None) -> Dict[str, Path]:
    """{"fp32": dir, "int8": dir} of a random-weight 2-label ERNIE classifier of a named shape.

    Cached under `workdir` (default `cache_dir()/bench/<shape>`) and reused while its deploy.yaml is
    of this version's format and records the same shape and package version. The INT8 export is QAT's
    with the word table on int8 levels (`quant.quantize_embeddings`), the smallest INT8 folder; its
    activation scales come from a few train-mode forwards on random ids.
    """
    if shape not in SHAPES:
        raise BenchmarkError(f"unknown shape `{shape}`; expected one of {list(SHAPES)}")
    workdir = Path(workdir) if workdir else cache_dir() / "bench" / shape
    dirs = {p: workdir / p for p in ("fp32", "int8")}
    if all(_cached_as(d, _synthetic(shape)) for d in dirs.values()):
        return dirs
    import dataclasses
    from paddlenlp.transformers import ErnieConfig, ErnieForSequenceClassification, ErnieTokenizer
    from ernie_qat.config import QuantConfig
    from ernie_qat.data.loader import LabelVocab
    from ernie_qat.export import write_deploy_folder
    from ernie_qat.models.classifier import TextClassifier
    from ernie_qat.quant.qat import QATTransform

    workdir.mkdir(parents=True, exist_ok=True)
    filler = [f"tok{i}" for i in range(SHAPES[shape]["vocab_size"] - len(SPECIAL_TOKENS))]
    (workdir / "vocab.txt").write_text("\n".join(SPECIAL_TOKENS + filler) + "\n")
    tokenizer = ErnieTokenizer(str(workdir / "vocab.txt"))
    paddle.seed(0)
    config = ErnieConfig(**SHAPES[shape], max_position_embeddings=MAX_POSITIONS, type_vocab_size=2, num_labels=2,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = TextClassifier(ErnieForSequenceClassification(config))
    model.eval()
    labels = LabelVocab(["0", "1"])
    write_deploy_folder(dirs["fp32"], model.save_inference_model, tokenizer, labels, _deploy_info("fp32", shape, None))
    quant = QuantConfig(method="qat", quantize_embeddings=True)  # the smallest INT8 folder: int8 word table
    qat = QATTransform(quant)
    qat.prepare(model).train()
    rng = np.random.default_rng(0)
    with paddle.no_grad():
        for _ in range(CALIBRATION_BATCHES):
            ids, types = random_inputs(rng, *CALIBRATION_SHAPE, SHAPES[shape]["vocab_size"])
            model(paddle.to_tensor(ids), paddle.to_tensor(types))
    model.eval()
    write_deploy_folder(dirs["int8"], functools.partial(qat.convert, model), tokenizer, labels,
                        _deploy_info("int8", shape, dataclasses.asdict(quant)))
    return dirs


def _cached_as(folder: Path, synthetic: dict) -> bool:
    """Whether `folder` is a deployment folder of this version's format recording `synthetic`."""
    try:
        return read_deploy_config(folder).get("synthetic") == synthetic
    except DeployError:  # missing, or of an older format
        return False


def random_inputs(rng: np.random.Generator, batch: int, seq_len: int, vocab_size: int):
    """(input_ids, token_type_ids) int64 [batch, seq_len]: ids past the special tokens, no padding."""
    ids = rng.integers(len(SPECIAL_TOKENS), vocab_size, size=(batch, seq_len), dtype=np.int64)
    return ids, np.zeros_like(ids)


def latency_stats(seconds: Sequence[float], batch: int) -> dict:
    """p50/p90/p99 latency (ms) of call durations in seconds, and throughput (sequences/s at p50)."""
    p50, p90, p99 = (float(np.percentile(np.array(seconds) * 1e3, q)) for q in (50, 90, 99))
    return {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "throughput": batch * 1e3 / p50}


def call_seconds(fn, args, runs: int, warmup: int = 0) -> List[float]:
    """Durations in seconds of `runs` calls of fn(*args), after `warmup` untimed ones."""
    for _ in range(warmup):
        fn(*args)
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(*args)
        seconds.append(time.perf_counter() - start)
    return seconds


def time_callable(fn, args, batch: int, runs: int, warmup: int) -> dict:
    """`latency_stats` of `runs` calls of fn(*args) after `warmup`."""
    return latency_stats(call_seconds(fn, args, runs, warmup), batch)


def time_in_turns(calls: Dict[str, tuple], batch: int, runs: int, warmup: int, rounds: int = ROUNDS,
                  settle_s: float = SETTLE_S) -> Dict[str, dict]:
    """`latency_stats` of each {name: (fn, args)}, timed in `rounds` rounds that give every fn its turn, in
    an order rotated each round. A turn is a pause of `settle_s`, `warmup` untimed calls, then its share
    of the `runs` timed calls.

    Engines compared this way see the same minutes of a shared VM whose speed drifts (seen here: one
    predictor 2x slower an hour later). The pause lets the previous engine's thread pool stop spinning
    (Intel OpenMP spins 200 ms after a parallel region, ONNX Runtime's pool spins too) and the untimed
    calls bring the engine's weights back into cache, so a turn runs as a process serving one model would.
    """
    names = list(calls)
    seconds = {name: [] for name in names}
    for round_ in range(rounds):
        share = runs // rounds + (round_ < runs % rounds)
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            time.sleep(settle_s)
            seconds[name] += call_seconds(*calls[name], runs=share, warmup=warmup)
    return {name: latency_stats(s, batch) for name, s in seconds.items()}


def time_predictor(predictor: Predictor, batch: int, seq_len: int, runs: int = 20, warmup: int = 5,
                   seed: int = 0) -> dict:
    """Latency percentiles (ms) and throughput (sequences/s) of `predictor.logits` on random [batch, seq_len] ids."""
    ids, types = random_inputs(np.random.default_rng(seed), batch, seq_len, len(predictor.tokenizer.vocab))
    return time_callable(predictor.logits, (ids, types), batch, runs, warmup)


def random_texts(tokenizer, rng: np.random.Generator, batch: int, seq_len: int) -> List[str]:
    """`batch` texts of seq_len - 2 random whole-word vocabulary entries each: with [CLS] and [SEP],
    seq_len tokens for a vocabulary whose words are single tokens (the synthetic ones), about that for others."""
    words = [w for w in tokenizer.vocab if not w.startswith(("[", "##")) and w.isalnum()]
    return [" ".join(rng.choice(words, size=max(seq_len - 2, 1))) for _ in range(batch)]


def time_tokenizer(deploy_dir, batches: Sequence[int], seq_lens: Sequence[int], runs: int = 20,
                   warmup: int = 5) -> Dict[tuple, float]:
    """{(batch, seq_len): p50 ms} to tokenize a batch of `random_texts` as `Predictor.predict` does
    (`WordPieceTokenizer.encode`), with the tokenizer of a deployment folder."""
    tokenizer = WordPieceTokenizer.from_folder(deploy_dir)
    max_seq_len = read_deploy_config(deploy_dir)["max_seq_len"]
    times = {}
    for batch in batches:
        for seq_len in seq_lens:
            texts = random_texts(tokenizer, np.random.default_rng(0), batch, seq_len)
            times[batch, seq_len] = time_callable(tokenizer.encode, (texts, None, max_seq_len), batch, runs,
                                                  warmup)["p50_ms"]
    return times


def model_size_mb(deploy_dir) -> float:
    """Size of model.pdiparams + model.pdmodel on disk, in MB (10^6 bytes): the files the predictor loads
    (an int8-weight folder keeps its int8 weights and their ranges in the same two files)."""
    return sum((Path(deploy_dir) / f"{MODEL_PREFIX}{s}").stat().st_size for s in (".pdiparams", ".pdmodel")) / 1e6


def ort_available() -> Optional[str]:
    """None if onnxruntime and paddle2onnx import, else the reason they do not."""
    try:
        import onnxruntime  # noqa: F401
        import paddle2onnx  # noqa: F401
    except Exception as exc:  # noqa: BLE001 -- a broken install is as absent as a missing one
        return f"ONNX Runtime columns skipped: {type(exc).__name__}: {exc}"
    return None


def _bert_fusion(src: Path, dst: Path, num_heads: int, hidden_size: int) -> str:
    """ORT's BERT fusion (`optimizer.optimize_model`); returns a description of the fused operators."""
    import onnxruntime as ort
    from onnxruntime.transformers.optimizer import optimize_model
    try:
        optimized = optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                                   opt_level=1)
        how = "opt_level=1"
    except ImportError:  # opt_level >= 1 imports torch only to pick a GPU provider: run its CPU step ourselves
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(dst.with_suffix(".basic.onnx"))
        ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"],
                             disabled_optimizers=["ConstantSharing"])
        optimized = optimize_model(options.optimized_model_filepath, model_type="bert", num_heads=num_heads,
                                   hidden_size=hidden_size, opt_level=0)
        Path(options.optimized_model_filepath).unlink()
        how = "ORT basic + opt_level=0"
    optimized.save_model_to_file(str(dst))
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    return f"bert-fusion[{how}; " + ",".join(f"{k}={v}" for k, v in sorted(fused.items())) + "]"


def onnx_models(fp32_dir) -> dict:
    """Convert an FP32 deployment folder to ONNX (paddle2onnx), BERT-fuse and dynamically quantize it.

    Returns {"fp32": path, "int8": path, "ort_fp32_path": how, "ort_path": how (INT8), "notes": [...]},
    cached by the source files' path, size and mtime under `cache_dir()/bench/onnx`.
    """
    import paddle2onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    fp32_dir = Path(fp32_dir)
    files = [fp32_dir / f"{MODEL_PREFIX}{s}" for s in (".pdmodel", ".pdiparams")]
    key = hashlib.sha1(json.dumps([[str(f.resolve()), f.stat().st_mtime_ns, f.stat().st_size]
                                   for f in files]).encode()).hexdigest()[:16]
    out = cache_dir() / "bench" / "onnx" / key
    info_file = out / "info.json"
    if info_file.exists():
        return json.loads(info_file.read_text())
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "model.onnx"
    paddle2onnx.export(str(files[0]), str(files[1]), str(raw), opset_version=ONNX_OPSET, verbose=False)
    synthetic = read_deploy_config(fp32_dir).get("synthetic") or {}
    notes, fp32, how = [], raw, "paddle2onnx"
    try:
        fused = _bert_fusion(raw, out / "model.opt.onnx", synthetic.get("num_attention_heads", 0),
                             synthetic.get("hidden_size", 0))
        if _relative_logit_diff(raw, out / "model.opt.onnx") > 1e-3:
            notes.append(f"{fused} changed the logits; using the unfused graph")
        else:
            fp32, how = out / "model.opt.onnx", f"paddle2onnx+{fused}"
    except Exception as exc:  # noqa: BLE001 -- any fusion failure falls back to the plain graph
        notes.append(f"BERT fusion failed ({type(exc).__name__}: {str(exc)[:200]}); using the unfused graph")
    int8, int8_how = out / "model.int8.onnx", how
    try:  # fused ops have no inferred output types: tell the quantizer they are float
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": 1})
    except Exception as exc:  # noqa: BLE001 -- fall back to quantizing the plain graph
        if fp32 == raw:
            raise
        notes.append(f"quantize_dynamic failed on the fused graph ({type(exc).__name__}: {str(exc)[:200]}); "
                     "quantized the unfused graph")
        int8_how = "paddle2onnx"
        quantize_dynamic(str(raw), str(int8), weight_type=QuantType.QInt8)
    info = {"fp32": str(fp32), "int8": str(int8), "ort_fp32_path": how, "notes": notes,
            "ort_path": f"{int8_how}+quantize_dynamic(QInt8)"}
    write_json(info_file, info)
    return info


def ort_runner(path, threads: int):
    """fn(input_ids, token_type_ids) -> logits of an ONNX Runtime CPU session (`threads` intra-op threads)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda ids, types: session.run(None, dict(zip(names, (ids, types))))[0]


def load_engine(engine: str, path, threads: int):
    """(fn(input_ids, token_type_ids) -> logits, vocabulary size) of one of ENGINES: a Predictor on a
    deployment folder (paddle-fp32, paddle-int8), or an ONNX Runtime session on an .onnx file (ort-fp32,
    ort-int8; vocabulary size None: the file has none)."""
    if engine.startswith("paddle"):
        predictor = Predictor(path, precision=engine.split("-")[1], threads=threads)
        return predictor.logits, len(predictor.tokenizer.vocab)
    return ort_runner(path, threads), None


def _relative_logit_diff(a: Path, b: Path) -> float:
    """max |logits_a - logits_b| / max |logits_a| of two ONNX models on random ids."""
    ids, types = random_inputs(np.random.default_rng(1), 2, 16, 100)
    outs = [ort_runner(p, 1)(ids, types) for p in (a, b)]
    return float(np.abs(outs[0] - outs[1]).max() / max(np.abs(outs[0]).max(), 1e-6))


def run_benchmark(models: Dict[str, Dict[str, Path]], batches: Sequence[int], seq_lens: Sequence[int],
                  threads_list: Sequence[int], runs: int = 20, warmup: int = 5, ort: bool = False,
                  memory: bool = True, progress: bool = False, rounds: int = ROUNDS) -> List[dict]:
    """Time every (model, engine, threads, batch, seq_len); returns one row (dict) each.

    `models` maps a name to {"fp32": dir, "int8": dir} (either may be missing; a quantized export may
    serve as "fp32": its fake-quant graph then runs in FP32). `ort` adds ort-fp32 / ort-int8 rows for
    models whose "fp32" folder is a plain FP32 export. Row keys: model, engine, threads, batch, seq_len,
    p50_ms, p90_ms, p99_ms, throughput (sequences/s), speedup (vs paddle-fp32 p50), tokenize_ms (p50 of
    tokenizing `random_texts` of that batch and length, apart from the model's time), size_mb (model
    files on disk), load_s, rss_mb, peak_rss_mb, baseline_rss_mb (`measure_engine`, one child process
    per (model, engine, threads), at the largest batch and seq_len; all None unless `memory`), path,
    and ort_path on ONNX Runtime rows. One predictor or session per (engine, threads). The engines of one
    model are loaded together and take turns in each cell (`time_in_turns`: `rounds` rounds, --warmup untimed
    calls starting each turn), so their ratios come from the same minutes.
    """
    from tqdm import tqdm
    from ernie_qat.benchmark.footprint import MEMORY_KEYS, measure_engine
    ort_note = ort_available() if ort else None
    if ort_note:
        print(ort_note, file=sys.stderr)
    plan = []  # (model, engine, dir or onnx path, ort_path)
    for name, dirs in models.items():
        for precision in [p for p in ("fp32", "int8") if p in dirs]:
            limit = read_deploy_config(dirs[precision])["max_seq_len"]
            if max(seq_lens) > limit:
                raise BenchmarkError(f"sequence length {max(seq_lens)} exceeds `{dirs[precision]}`'s "
                                     f"max_seq_len {limit}")
            plan.append((name, f"paddle-{precision}", dirs[precision], None))
        if ort and not ort_note and "fp32" in dirs:
            if read_deploy_config(dirs["fp32"]).get("quantization"):
                print(f"{name}: no plain FP32 export to convert; ONNX Runtime rows skipped", file=sys.stderr)
                continue
            try:
                info = onnx_models(dirs["fp32"])
            except Exception as exc:  # noqa: BLE001 -- a peer engine failing must not sink the benchmark
                print(f"{name}: ONNX conversion failed ({type(exc).__name__}: {exc}); ONNX Runtime rows skipped",
                      file=sys.stderr)
                continue
            for note in info["notes"]:
                print(f"{name}: {note}", file=sys.stderr)
            plan.append((name, "ort-fp32", info["fp32"], info["ort_fp32_path"]))
            plan.append((name, "ort-int8", info["int8"], info["ort_path"]))
    tokenize_ms = {name: time_tokenizer(dirs.get("fp32") or dirs["int8"], batches, seq_lens, runs, warmup)
                   for name, dirs in models.items()}
    rows = []
    with tqdm(total=len(plan) * len(threads_list) * len(batches) * len(seq_lens), disable=not progress,
              file=sys.stderr, desc="benchmark") as steps:  # closed on an error too: its message starts a line
        for threads in threads_list:
            for name in models:
                engines = [(engine, path, ort_path) for model, engine, path, ort_path in plan if model == name]
                onnx_vocab = _vocab_size(models[name]["fp32"]) if "fp32" in models[name] else None
                loading = {engine: dict.fromkeys(MEMORY_KEYS) for engine, _, _ in engines}
                if memory:  # before this process loads the engines: each child has the machine to itself
                    for engine, path, _ in engines:
                        steps.set_postfix_str(f"{name} {engine} t{threads} load time and memory")
                        loading[engine] = measure_engine(engine, path, threads, max(batches), max(seq_lens),
                                                         None if engine.startswith("paddle") else onnx_vocab)
                runners, vocab, size = {}, {}, {}
                for engine, path, _ in engines:
                    runners[engine], vocab[engine] = load_engine(engine, path, threads)
                    vocab[engine] = vocab[engine] or onnx_vocab
                    size[engine] = (model_size_mb(path) if engine.startswith("paddle")
                                    else Path(path).stat().st_size / 1e6)
                for batch in batches:
                    for seq_len in seq_lens:
                        steps.set_postfix_str(f"{name} t{threads} b{batch} s{seq_len}")
                        calls = {engine: (runners[engine], random_inputs(np.random.default_rng(0), batch, seq_len,
                                                                         vocab[engine]))
                                 for engine, _, _ in engines}
                        stats = time_in_turns(calls, batch, runs, warmup, rounds)
                        for engine, path, ort_path in engines:
                            rows.append({"model": name, "engine": engine, "threads": threads, "batch": batch,
                                         "seq_len": seq_len, **stats[engine],
                                         "tokenize_ms": tokenize_ms[name][batch, seq_len], "size_mb": size[engine],
                                         **loading[engine], "path": str(path),
                                         **({"ort_path": ort_path} if ort_path else {})})
                            steps.update()
                runners = None  # free this model's engines before the next one
    key = lambda r: (r["model"], r["threads"], r["batch"], r["seq_len"])  # noqa: E731
    base = {key(r): r["p50_ms"] for r in rows if r["engine"] == "paddle-fp32"}
    for r in rows:
        r["speedup"] = base[key(r)] / r["p50_ms"] if key(r) in base else None
    order = {e: i for i, e in enumerate(ENGINES)}
    rows.sort(key=lambda r: (*key(r), order[r["engine"]]))
    return rows


def _vocab_size(deploy_dir) -> int:
    return sum(1 for _ in open(Path(deploy_dir) / "vocab.txt", encoding="utf-8"))


TABLE_COLUMNS = [("model", "{}"), ("engine", "{}"), ("threads", "{}"), ("batch", "{}"), ("seq_len", "{}"),
                 ("p50_ms", "{:.1f}"), ("p90_ms", "{:.1f}"), ("p99_ms", "{:.1f}"), ("throughput", "{:.1f}"),
                 ("speedup", "{:.2f}x"), ("tokenize_ms", "{:.1f}"), ("size_mb", "{:.1f}"), ("load_s", "{:.2f}"), ("rss_mb", "{:.0f}")]


def text_table(columns: Sequence[tuple], rows: Sequence[dict]) -> List[str]:
    """Lines of a plain-text table: `columns` are (key, format) pairs; a missing or None value shows as "-"."""
    cells = [[name for name, _ in columns]]
    cells += [[fmt.format(r[name]) if r.get(name) is not None else "-" for name, fmt in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "-" * len(lines[0]))
    return lines


def format_table(rows: Sequence[dict]) -> str:
    """Plain-text table: latency in ms, throughput in sequences/s, speedup vs paddle-fp32, tokenization in ms,
    size on disk in MB, load time in s and the engine's peak resident memory in MB (peak - baseline; "-" when
    not measured)."""
    paths = sorted({r["ort_path"] for r in rows if r.get("ort_path")})
    return "\n".join(text_table(TABLE_COLUMNS, rows) + [f"ort path: {p}" for p in paths])


def plot(rows: Sequence[dict], png_path) -> None:
    """Grouped bars of p50 latency (ms) per (model, batch, seq_len) and engine; one subplot per thread count."""
    plt = pyplot()
    threads = sorted({r["threads"] for r in rows})
    engines = [e for e in ENGINES if any(r["engine"] == e for r in rows)]
    groups = sorted({(r["model"], r["batch"], r["seq_len"]) for r in rows})
    fig, axes = plt.subplots(len(threads), 1, figsize=(max(6.0, 1.2 * len(groups) * len(engines) / 2 + 2),
                                                       3.5 * len(threads)), squeeze=False)
    width = 0.8 / len(engines)
    for ax, t in zip(axes[:, 0], threads):
        p50 = {(r["model"], r["batch"], r["seq_len"], r["engine"]): r["p50_ms"] for r in rows if r["threads"] == t}
        for k, engine in enumerate(engines):
            xs = [i + (k - (len(engines) - 1) / 2) * width for i in range(len(groups))]
            ax.bar(xs, [p50.get((*g, engine), 0.0) for g in groups], width, label=engine)
        ax.set_xticks(range(len(groups)), [f"{m}\nb{b} s{s}" for m, b, s in groups])
        ax.set_ylabel("p50 latency (ms)")
        ax.set_title(f"{t} thread{'s' if t > 1 else ''}")
        ax.legend(fontsize="small")
    write_png(fig, png_path, dpi=100)
