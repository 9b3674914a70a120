"""Load time and peak resident memory of an inference engine, measured in a fresh process.

A process's peak memory only grows, so the benchmarking process cannot measure one engine after
another: each (engine, threads) is loaded once more in a child process with OMP_NUM_THREADS set,
which reports its peak after the imports (baseline), the time to construct the engine, and its
peak after loading and one call (ernie_qat.benchmark.inference.load_engine).

Example:
    measure_engine("paddle-int8", "deploy/r8_int8", threads=2, batch=8, seq_len=128)["rss_mb"]
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ernie_qat.atomic import write_json
from ernie_qat.benchmark.inference import BenchmarkError, load_engine, random_inputs

MEMORY_KEYS = ("load_s", "rss_mb", "peak_rss_mb", "baseline_rss_mb")  # per engine, from `measure_engine`
MEMORY_CHILD = ("from ernie_qat import cli; from ernie_qat.benchmark.footprint import _measure_engine_child as m; "
                "cli.run(m)")  # a UserError (damaged folder, ...) ends its stderr as one `error: ...` line


def measure_engine(engine: str, path, threads: int, batch: int, seq_len: int, vocab: Optional[int] = None) -> dict:
    """Load time and peak memory of an engine (see `load_engine`), in a fresh process with OMP_NUM_THREADS=threads.

    Returns {"load_s": seconds to construct the engine, "peak_rss_mb": the process's peak resident
    memory after loading and one call on random [batch, seq_len] ids (below `vocab`, needed for ONNX
    Runtime; default: the predictor's vocabulary size), "baseline_rss_mb": its peak
    after the imports, before loading, "rss_mb": peak - baseline}, in MB (10^6 bytes).

    Raises:
        BenchmarkError: the child process failed, naming the engine and quoting the end of its stderr.
    """
    args = {"engine": engine, "path": str(path), "threads": threads, "batch": batch, "seq_len": seq_len,
            "vocab": vocab}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "measured.json"
        result = subprocess.run([sys.executable, "-c", MEMORY_CHILD, json.dumps(args), str(out)],
                                env={**os.environ, "OMP_NUM_THREADS": str(threads)}, capture_output=True,
                                text=True, errors="replace")
        if result.returncode != 0 or not out.exists():
            output = (result.stderr.strip() or result.stdout.strip()).splitlines()
            tail = "\n".join("    " + line for line in output[-8:])
            status = (f"killed by signal {-result.returncode}" if result.returncode < 0
                      else f"exit code {result.returncode}")
            raise BenchmarkError(f"{engine} on `{path}`, OMP_NUM_THREADS={threads}: measuring its load time and memory "
                                 f"in a child process failed ({status}); the child's stderr ends with:\n"
                                 f"{tail or '(nothing)'}")
        measured = json.loads(out.read_text())
    return {"load_s": measured["load_s"], "rss_mb": measured["peak_rss_mb"] - measured["baseline_rss_mb"],
            "peak_rss_mb": measured["peak_rss_mb"], "baseline_rss_mb": measured["baseline_rss_mb"]}


def _measure_engine_child() -> None:
    """`measure_engine`'s child: sys.argv[1] its arguments as JSON, sys.argv[2] the file to write the results to."""
    args = json.loads(sys.argv[1])
    if args["engine"].startswith("ort"):
        import onnxruntime  # noqa: F401 -- an import, counted in the baseline like paddle's
    baseline = _peak_rss_mb()
    start = time.perf_counter()
    run, vocab = load_engine(args["engine"], args["path"], args["threads"])
    load_s = time.perf_counter() - start
    run(*random_inputs(np.random.default_rng(0), args["batch"], args["seq_len"], vocab or args["vocab"]))
    write_json(sys.argv[2], {"load_s": load_s, "peak_rss_mb": _peak_rss_mb(), "baseline_rss_mb": baseline})


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM, Linux) in MB (10^6 bytes).

    Not getrusage's ru_maxrss: a process started by `subprocess` (vfork, then exec) inherits its
    parent's peak there (a child of a 435 MB parent reported 435 MB; its VmHWM, 11 MB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6  # kB
    raise BenchmarkError("/proc/self/status has no VmHWM line: peak memory is measured on Linux only")
