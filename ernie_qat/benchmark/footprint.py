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
    measured = run_child(MEMORY_CHILD, args, threads,
                         f"{engine} on `{path}`, OMP_NUM_THREADS={threads}: measuring its load time and memory")
    return {"load_s": measured["load_s"], "rss_mb": measured["peak_rss_mb"] - measured["baseline_rss_mb"],
            "peak_rss_mb": measured["peak_rss_mb"], "baseline_rss_mb": measured["baseline_rss_mb"]}


def run_child(code: str, args: dict, omp_threads: int, what: str) -> dict:
    """Run `code` in a fresh Python process with OMP_NUM_THREADS=omp_threads; it reads `args` from the JSON file
    sys.argv[1] and writes its results as JSON to sys.argv[2], which are returned.

    Raises:
        BenchmarkError: the child failed: "`what` in a child process failed", quoting the end of its stderr.
    """
    with tempfile.TemporaryDirectory() as tmp:
        arguments, out = Path(tmp) / "args.json", Path(tmp) / "measured.json"
        arguments.write_text(json.dumps(args))
        result = subprocess.run([sys.executable, "-c", code, str(arguments), str(out)],
                                env={**os.environ, "OMP_NUM_THREADS": str(omp_threads)}, capture_output=True,
                                text=True, errors="replace")
        if result.returncode != 0 or not out.exists():
            output = (result.stderr.strip() or result.stdout.strip()).splitlines()
            tail = "\n".join("    " + line for line in output[-8:])
            status = (f"killed by signal {-result.returncode}" if result.returncode < 0
                      else f"exit code {result.returncode}")
            raise BenchmarkError(f"{what} in a child process failed ({status}); the child's stderr ends with:\n"
                                 f"{tail or '(nothing)'}")
        return json.loads(out.read_text())


def _measure_engine_child() -> None:
    """`measure_engine`'s child: sys.argv[1] its arguments (JSON file), sys.argv[2] the file to write the results to."""
    args = json.loads(Path(sys.argv[1]).read_text())
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
    return process_memory_mb("VmHWM")


def process_memory_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmHWM: the peak resident memory, VmRSS: the resident memory now) in MB
    (10^6 bytes). Raises BenchmarkError off Linux."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024 / 1e6  # kB
    raise BenchmarkError(f"/proc/self/status has no {field} line: memory is measured on Linux only")
