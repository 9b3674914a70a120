"""Where a Paddle Inference predictor's time goes on one batch shape: Paddle ops and oneDNN kernels.

Three measurements of the same predictor and inputs (`profile_predictor`):
- wall time: the median of unprofiled `logits` calls;
- Paddle's profiler: every op the predictor runs, by type, with calls and ms per run, split into
  shape inference (`infer_shape`), input preparation (`prepare_data`) and the kernel call (`compute`);
- oneDNN's verbose log, switched on during those same profiled calls (libdnnl's `dnnl_set_verbose`), so
  each primitive's time is part of its op's: every
  primitive executed, by kind, implementation (`x64:gemm_s8s8s32:jit` is oneDNN's int8 GEMM without
  VNNI; `brgemm:avx512_core_vnni` with it) and data types, with ms per run. f32 matmuls or inner
  products in an INT8 run are ops left in FP32; reorders are conversions between layouts or types.
Profiling slows ops down a little (the verbose log prints a line per primitive inside its op), so per-op
times are upper bounds; the wall time is not profiled.

Example:
    report = profile_predictor(Predictor("deploy/mr_int8", threads=2), batch=1, seq_len=64)
    print(format_report(report))
"""
import contextlib
import ctypes
import glob
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import numpy as np

from ernie_qat.benchmark.inference import random_inputs, text_table
from ernie_qat.errors import UserError

STAGES = ("infer_shape", "prepare_data", "compute")  # Paddle's profiler events inside each op


def profile_predictor(predictor, batch: int, seq_len: int, runs: int = 10, warmup: int = 5, seed: int = 0) -> dict:
    """Wall time, Paddle ops and oneDNN primitives of `predictor.logits` on random [batch, seq_len] ids.

    Returns {"batch", "seq_len", "threads", "precision", "runs", "wall_ms" (median), "ops": rows of
    {op, calls, ms, infer_shape_ms, prepare_data_ms, compute_ms} per run, "primitives": rows of
    {kind, implementation, data_types, calls, ms} per run, "ops_ms", "primitives_ms" (their sums)}.
    """
    ids, types = random_inputs(np.random.default_rng(seed), batch, seq_len, len(predictor.tokenizer.vocab))
    call = lambda: predictor.logits(ids, types)  # noqa: E731
    for _ in range(warmup):
        call()
    wall = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        wall.append(time.perf_counter() - start)
    with onednn_verbose() as verbose_lines:  # the same calls, so the primitives' time is part of the ops'
        ops = paddle_op_times(call, runs)
    primitives = onednn_primitive_times(verbose_lines, runs)
    return {"batch": batch, "seq_len": seq_len, "threads": predictor.threads, "precision": predictor.precision,
            "runs": runs, "wall_ms": float(np.median(wall)) * 1e3, "ops": ops, "primitives": primitives,
            "ops_ms": sum(r["ms"] for r in ops), "primitives_ms": sum(r["ms"] for r in primitives)}


def paddle_op_times(call: Callable[[], object], runs: int) -> List[dict]:
    """Per op type, over `runs` calls of `call` under Paddle's profiler: calls and ms per run, split into STAGES."""
    import paddle.profiler as profiler
    with tempfile.TemporaryDirectory() as tmp:
        prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU],
                                 on_trace_ready=profiler.export_chrome_tracing(tmp))
        with contextlib.redirect_stdout(sys.stderr):  # the profiler announces its trace file
            prof.start()
            for _ in range(runs):
                call()
                prof.step()
            prof.stop()
        traces = glob.glob(os.path.join(tmp, "*.json"))
        if not traces:
            raise UserError("Paddle's profiler wrote no trace: cannot time the predictor's ops")
        events = json.loads(Path(traces[0]).read_text())
    events = events["traceEvents"] if isinstance(events, dict) else events
    ops = sorted((e for e in events if e.get("cat") == "Operator"), key=lambda e: e["ts"])
    starts = [e["ts"] for e in ops]
    totals = defaultdict(lambda: dict.fromkeys(("calls", "ms", *(f"{s}_ms" for s in STAGES)), 0.0))
    for op in ops:
        row = totals[op_type(op["name"])]
        row["calls"] += 1
        row["ms"] += op["dur"] / 1e3
    for inner in (e for e in events if e.get("cat") == "OperatorInner"):
        stage = op_type(inner["name"])
        index = int(np.searchsorted(starts, inner["ts"], side="right")) - 1
        if stage in STAGES and index >= 0 and inner["ts"] <= ops[index]["ts"] + ops[index]["dur"]:
            totals[op_type(ops[index]["name"])][f"{stage}_ms"] += inner["dur"] / 1e3
    rows = [{"op": name, **{k: v / runs for k, v in row.items()}} for name, row in totals.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def op_type(event_name: str) -> str:
    """"fc[83.2 us]" -> "fc": the profiler appends each event's duration to its name."""
    return event_name.split("[", 1)[0]


def onednn_primitive_times(verbose_lines: List[str], runs: int) -> List[dict]:
    """Per (kind, implementation, data types) of the primitives in oneDNN's log of `runs` calls: calls and ms per run."""
    totals: Dict[tuple, list] = defaultdict(lambda: [0, 0.0])
    for line in verbose_lines:
        fields = line.split(",")
        if fields[0] != "onednn_verbose" or "exec" not in fields[:3]:
            continue
        at = fields.index("exec")  # "onednn_verbose,exec,cpu,..." (v3.2) or "onednn_verbose,primitive,exec,cpu,..."
        kind, implementation, memory = fields[at + 2], fields[at + 3], fields[at + 5]
        entry = totals[(kind, implementation, data_types(memory))]
        entry[0] += 1
        entry[1] += float(fields[-1])
    rows = [{"kind": k, "implementation": i, "data_types": d, "calls": n / runs, "ms": ms / runs}
            for (k, i, d), (n, ms) in totals.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def data_types(memory_field: str) -> str:
    """"src_s8::blocked:ab::f0 wei_s8::... bia_f32::... dst_f32::..." -> "src s8, wei s8, bia f32, dst f32"."""
    parts = []
    for descriptor in memory_field.split():
        name, _, rest = descriptor.partition("_")
        if rest and not name.startswith("diff"):
            parts.append(f"{name} {rest.split(':', 1)[0]}")
    return ", ".join(parts)


@contextlib.contextmanager
def onednn_verbose() -> Iterator[List[str]]:
    """oneDNN's verbose log (level 1: executed primitives with their times) of the calls inside the block.

    Yields a list that holds the log's lines once the block ends. oneDNN writes them to the process's
    standard output, which is captured into a temporary file meanwhile; verbose mode is switched on and
    off around the block through libdnnl's C API.
    """
    dnnl = _libdnnl()
    libc = ctypes.CDLL(None)
    lines: List[str] = []
    with tempfile.TemporaryFile() as capture:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(capture.fileno(), 1)
        try:
            dnnl.dnnl_set_verbose(1)
            yield lines
        finally:
            dnnl.dnnl_set_verbose(0)
            libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
            capture.seek(0)
            lines.extend(capture.read().decode(errors="replace").splitlines())


def _libdnnl() -> ctypes.CDLL:
    """The oneDNN library Paddle runs (paddle/libs/libdnnl.so.*): loading it again returns the same library."""
    import paddle
    found = sorted(glob.glob(str(Path(paddle.__file__).parent / "libs" / "libdnnl.so*")))
    if not found:
        raise UserError(f"no libdnnl.so in {Path(paddle.__file__).parent / 'libs'}: this Paddle build does not "
                        "ship oneDNN as a library, so its kernels cannot be profiled")
    return ctypes.CDLL(found[0])


OP_COLUMNS = [("op", "{}"), ("calls", "{:.0f}"), ("ms", "{:.3f}"), ("infer_shape_ms", "{:.3f}"),
              ("prepare_data_ms", "{:.3f}"), ("compute_ms", "{:.3f}")]
PRIMITIVE_COLUMNS = [("kind", "{}"), ("implementation", "{}"), ("data_types", "{}"), ("calls", "{:.0f}"),
                     ("ms", "{:.3f}")]


def format_report(report: dict) -> str:
    """The two tables of `profile_predictor`'s report and a summary line, as plain text (times in ms per run)."""
    head = (f"{report['precision']} b{report['batch']} s{report['seq_len']} t{report['threads']}: "
            f"wall {report['wall_ms']:.2f} ms (median of {report['runs']} unprofiled calls); under the profilers: "
            f"Paddle ops {report['ops_ms']:.2f} ms, of which oneDNN primitives {report['primitives_ms']:.2f} ms")
    return "\n".join([head, "", "Paddle ops, per run:", *text_table(OP_COLUMNS, report["ops"]), "",
                      "oneDNN primitives, per run:", *text_table(PRIMITIVE_COLUMNS, report["primitives"])])
