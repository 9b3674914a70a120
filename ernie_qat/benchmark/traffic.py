"""Real traffic: a split's texts replayed in their order and lengths, tokenization included, one text per call.

Each (engine, threads, clients) runs in a fresh process with OMP_NUM_THREADS set: it loads the engine (timed),
replays `warmup` texts untimed, then every text, each call timed from the text to its logits. `clients` threads
send texts at once, each with its own predictor (a `Predictor.clone()`, weights shared) or the one ONNX Runtime
session (thread-safe), with threads // clients math threads each. Paddle pads each text to its length bucket
(`Predictor.length_bucket`; warmed up at load); ONNX Runtime runs each text at its own length, its fastest. The
tokenizer is the same (ernie_qat.deploy.tokenizer). Memory is the process's resident memory after the replay, less
after the imports: every shape the traffic produced is in it.

Example:
    replay("paddle-int8", "deploy/mr_int8", texts, tokenizer_dir="deploy/mr_int8", threads=2, clients=1)
"""
import json
import sys
import threading
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from ernie_qat.atomic import write_json
from ernie_qat.benchmark.footprint import process_memory_mb, run_child
from ernie_qat.benchmark.inference import latency_stats, ort_runner

CHILD = ("from ernie_qat import cli; from ernie_qat.benchmark.traffic import _replay_child as m; cli.run(m)")
WARMUP_TEXTS = 20


def replay(engine: str, path, texts: Sequence[str], tokenizer_dir, threads: int, clients: int = 1,
           warmup: int = WARMUP_TEXTS, length_bucket: Optional[int] = None, executor: str = "auto") -> dict:
    """Latency and footprint of `engine` ("paddle-int8", "paddle-fp32": a deployment folder; "ort-int8",
    "ort-fp32": an .onnx file) on `texts`, measured in a child process (see the module's docstring).

    Returns {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput": texts/s, "texts", "load_s",
    "rss_mb": resident MB (10^6 bytes) after the replay less after the imports, "baseline_rss_mb"}, and for Paddle
    the predictor's "executor" and "length_bucket".

    Raises:
        BenchmarkError: the child failed, quoting the end of its stderr.
    """
    args = {"engine": engine, "path": str(path), "texts": list(texts), "tokenizer_dir": str(tokenizer_dir),
            "threads": threads, "clients": clients, "warmup": warmup, "length_bucket": length_bucket,
            "executor": executor}
    return run_child(CHILD, args, max(1, threads // clients),
                     f"{engine} on `{path}` ({threads} threads, {clients} clients): the replay")


def _replay_child() -> None:
    """`replay`'s child: sys.argv[1] its arguments (JSON file), sys.argv[2] the file to write the results to."""
    args = json.loads(Path(sys.argv[1]).read_text())
    if args["engine"].startswith("ort"):
        import onnxruntime  # noqa: F401 -- an import, counted in the baseline like paddle's
    from ernie_qat.deploy import Predictor, WordPieceTokenizer, read_deploy_config
    from ernie_qat.deploy.predictor import LENGTH_BUCKET
    baseline = process_memory_mb("VmRSS")
    per_client = max(1, args["threads"] // args["clients"])
    start = time.perf_counter()
    if args["engine"].startswith("paddle"):
        predictor = Predictor(args["path"], precision=args["engine"].split("-")[1], threads=per_client,
                              batch_size=1, warmup=True, executor=args["executor"],
                              length_bucket=args["length_bucket"] or LENGTH_BUCKET)
        calls = [_paddle_call(predictor if i == 0 else predictor.clone()) for i in range(args["clients"])]
        engine = {"executor": predictor.executor, "length_bucket": predictor.length_bucket}
    else:
        tokenizer = WordPieceTokenizer.from_folder(args["tokenizer_dir"])
        max_seq_len = read_deploy_config(args["tokenizer_dir"])["max_seq_len"]
        run = ort_runner(args["path"], per_client)
        calls = [_ort_call(tokenizer, max_seq_len, run)] * args["clients"]
        engine = {}
    load_s = time.perf_counter() - start
    texts = args["texts"]
    for text in texts[:args["warmup"]]:
        calls[0](text)
    seconds, wall = _replay(calls, texts)
    write_json(sys.argv[2], {  # throughput: texts answered per second of the whole replay, not at p50
        **latency_stats(seconds, batch=1), "mean_ms": float(np.mean(seconds) * 1e3), "throughput": len(texts) / wall,
        "texts": len(texts), "load_s": load_s, "rss_mb": process_memory_mb("VmRSS") - baseline,
        "baseline_rss_mb": baseline, **engine})


def _paddle_call(predictor):
    return lambda text: predictor.predict_logits(predictor.encode([text]))


def _ort_call(tokenizer, max_seq_len: int, run):
    def call(text):
        item = tokenizer.encode([text], max_seq_len=max_seq_len)[0]
        return run(np.array([item.input_ids], dtype=np.int64), np.array([item.token_type_ids], dtype=np.int64))
    return call


def _replay(calls: List, texts: Sequence[str]):
    """(seconds of each call, wall seconds of the whole replay): len(calls) threads take the texts in order."""
    seconds = [0.0] * len(texts)
    position = iter(range(len(texts)))
    lock = threading.Lock()

    def client(call):
        while True:
            with lock:
                index = next(position, None)
            if index is None:
                return
            start = time.perf_counter()
            call(texts[index])
            seconds[index] = time.perf_counter() - start

    threads = [threading.Thread(target=client, args=(call,)) for call in calls]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return seconds, time.perf_counter() - start
