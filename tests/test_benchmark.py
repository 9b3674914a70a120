"""Inference benchmark on the tiny synthetic shape: exports load, timings are well formed, the CLI writes its files.

Nothing here asserts speed: the machine may be busy.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from ernie_qat.benchmark.footprint import MEMORY_KEYS, _peak_rss_mb
from ernie_qat.benchmark.inference import (BenchmarkError, model_size_mb, random_inputs, random_texts,
                                           run_benchmark, synthetic_deploy_dirs, time_in_turns,
                                           time_predictor)
from ernie_qat.benchmark.machine import cpu_summary
from ernie_qat.deploy import Predictor

ROW_KEYS = {"model", "engine", "threads", "batch", "seq_len", "p50_ms", "p90_ms", "p99_ms", "throughput",
            "speedup", "tokenize_ms", "size_mb", *MEMORY_KEYS}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return synthetic_deploy_dirs("tiny", tmp_path_factory.mktemp("bench") / "tiny")


def test_synthetic_exports_load_and_agree(tiny_dirs):
    assert synthetic_deploy_dirs("tiny", tiny_dirs["fp32"].parent) == tiny_dirs  # cached
    fp32 = Predictor(tiny_dirs["fp32"], threads=1)
    int8 = Predictor(tiny_dirs["int8"], threads=1)
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    ids, types = random_inputs(np.random.default_rng(0), 32, 24, len(fp32.tokenizer.vocab))
    a, b = fp32.logits(ids, types), int8.logits(ids, types)
    assert a.shape == b.shape == (32, 2)
    # Random weights give near-tied logits: demand agreement where the FP32 margin exceeds the INT8 error.
    error = np.abs(a - b).max()
    assert error < 0.5 * np.abs(a).max()
    clear = np.abs(a[:, 0] - a[:, 1]) > 2 * error
    assert clear.sum() >= 8 and (a.argmax(1) == b.argmax(1))[clear].all()
    assert model_size_mb(tiny_dirs["fp32"]) > 0


def test_time_predictor(tiny_dirs):
    stats = time_predictor(Predictor(tiny_dirs["int8"], threads=1), batch=2, seq_len=16, runs=5, warmup=1)
    assert 0 < stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"]
    assert stats["throughput"] > 0


def test_time_in_turns_gives_each_engine_its_turn():
    calls = []
    engines = {name: (calls.append, (name,)) for name in ("a", "b", "c")}
    stats = time_in_turns(engines, batch=4, runs=5, warmup=1, rounds=2, settle_s=0)
    # round 1: 1 warm-up + 3 timed calls each, a-b-c; round 2: 1 + 2, rotated to b-c-a
    assert calls == ["a"] * 4 + ["b"] * 4 + ["c"] * 4 + ["b"] * 3 + ["c"] * 3 + ["a"] * 3
    assert set(stats) == {"a", "b", "c"}
    assert all(0 < s["p50_ms"] <= s["p99_ms"] and s["throughput"] == 4e3 / s["p50_ms"] for s in stats.values())


def test_random_texts_have_the_benchmarked_length(tiny_dirs):
    predictor = Predictor(tiny_dirs["int8"], threads=1)
    texts = random_texts(predictor.tokenizer, np.random.default_rng(0), batch=3, seq_len=16)
    assert len(texts) == 3 and len(set(texts)) == 3
    assert [len(item.input_ids) for item in predictor.encode(texts)] == [16] * 3  # the tiny vocabulary's words


def assert_measured(rows):
    """Load time and memory are measured, and are the same in every row of an engine."""
    for r in rows:
        assert r["load_s"] > 0 and r["rss_mb"] > 0 and r["peak_rss_mb"] >= r["baseline_rss_mb"] > 0, r
        assert r["rss_mb"] == pytest.approx(r["peak_rss_mb"] - r["baseline_rss_mb"])
        assert all(q[k] == r[k] for q in rows if q["engine"] == r["engine"] for k in MEMORY_KEYS)


def test_run_benchmark_rows(tiny_dirs):
    ballast = np.ones(64 * 2**20)  # 512 MiB: this process's peak now exceeds a child's whole peak
    parent_peak = _peak_rss_mb()
    rows = run_benchmark({"tiny": tiny_dirs}, batches=[1, 2], seq_lens=[8], threads_list=[1], runs=2, warmup=1)
    del ballast
    assert [r["engine"] for r in rows] == ["paddle-fp32", "paddle-int8"] * 2
    assert all(ROW_KEYS <= set(r) for r in rows)
    assert all(r["speedup"] == 1.0 for r in rows if r["engine"] == "paddle-fp32")
    assert [(r["batch"], r["seq_len"]) for r in rows] == [(1, 8), (1, 8), (2, 8), (2, 8)]
    assert [r["size_mb"] for r in rows[:2]] == [model_size_mb(tiny_dirs["fp32"]), model_size_mb(tiny_dirs["int8"])]
    assert all(r["tokenize_ms"] > 0 for r in rows)
    assert rows[0]["tokenize_ms"] == rows[1]["tokenize_ms"]  # one tokenizer per model, batch and length
    assert_measured(rows)
    # The child's own peak, not its parent's (getrusage's ru_maxrss reports the parent's after vfork + exec).
    assert all(r["peak_rss_mb"] < parent_peak for r in rows)


def test_child_failure_names_the_engine(tiny_dirs, tmp_path):
    damaged = shutil.copytree(tiny_dirs["fp32"], tmp_path / "damaged")
    params = damaged / "model.pdiparams"
    data = bytearray(params.read_bytes())
    data[-1] ^= 0xFF
    params.write_bytes(bytes(data))
    expected = (r"(?s)paddle-fp32 on `.*damaged`, OMP_NUM_THREADS=1: measuring its load time and memory in a "
                r"child process failed \(exit code 2\); the child's stderr ends with:\n.*model\.pdiparams` is damaged")
    with pytest.raises(BenchmarkError, match=expected):
        run_benchmark({"bad": {"fp32": damaged}}, batches=[1], seq_lens=[8], threads_list=[1], runs=1, warmup=0)


def test_run_benchmark_onnxruntime(tiny_dirs, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("paddle2onnx")
    monkeypatch.setenv("ERNIE_QAT_HOME", str(tmp_path))  # the ONNX files are cached there
    rows = run_benchmark({"tiny": tiny_dirs}, batches=[2], seq_lens=[8], threads_list=[1], runs=2, warmup=1, ort=True)
    assert [r["engine"] for r in rows] == ["paddle-fp32", "paddle-int8", "ort-fp32", "ort-int8"]
    assert all(r["ort_path"] for r in rows if r["engine"].startswith("ort"))
    assert "quantize_dynamic" in rows[-1]["ort_path"]
    assert_measured(rows)


def test_cli_writes_json_and_png(tmp_path):
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "benchmark.py"), "--shape", "tiny", "--batch", "1", "--seq-len", "16",
         "--threads", "1", "--runs", "3", "--rounds", "3", "--warmup", "1", "--no-ort", "--json", str(out_json),
         "--png", str(out_png)],
        capture_output=True, timeout=300, env={**os.environ, "ERNIE_QAT_HOME": str(tmp_path / "home")})
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    report = json.loads(out_json.read_text())
    assert [r["engine"] for r in report["rows"]] == ["paddle-fp32", "paddle-int8"]
    assert report["machine"]["cores"] >= 1 and report["machine"]["versions"]["paddlepaddle"]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"paddle-int8" in result.stdout and b"rss_mb" in result.stdout
    assert report["settings"]["memory"] is True and report["settings"]["rounds"] == 3
    assert_measured(report["rows"])


def test_cli_real_export_and_user_errors(tiny_dirs, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark.py"), *map(str, args)],
                              capture_output=True, timeout=300)
    out_json = tmp_path / "bench.json"
    result = run("--model", tiny_dirs["int8"], "--batch", "1", "--seq-len", "8", "--threads", "1", "--runs", "1",
                 "--warmup", "0", "--no-ort", "--no-memory", "--json", out_json)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    rows = json.loads(out_json.read_text())["rows"]  # an INT8 export is also timed with its graph in FP32
    assert [(r["engine"], r["path"]) for r in rows] == [("paddle-fp32", str(tiny_dirs["int8"])),
                                                        ("paddle-int8", str(tiny_dirs["int8"]))]
    assert all(r[k] is None for r in rows for k in MEMORY_KEYS)  # --no-memory: no child processes
    assert [line.split()[-2:] for line in result.stdout.decode().splitlines()[2:4]] == [["-", "-"]] * 2
    for args in (["--model", tmp_path], ["--model", tiny_dirs["int8"], "--seq-len", "600"],
                 ["--model", tiny_dirs["fp32"], "--fp32-model", tiny_dirs["fp32"]]):
        result = run(*args, "--no-ort")
        assert result.returncode == 2 and b"error: " in result.stderr and b"Traceback" not in result.stderr, args
    result = run("--model", tiny_dirs["int8"], "--runs", "2", "--rounds", "3", "--no-ort")
    assert result.returncode == 2 and b"--rounds 3 exceeds --runs 2" in result.stderr


def test_traffic_replays_every_text_in_order_for_each_engine(tiny_dirs, tmp_path):
    tokenizer = Predictor(tiny_dirs["int8"], threads=1).tokenizer
    rng = np.random.default_rng(0)
    texts = [text for length in (4, 9, 17, 30, 12) for text in random_texts(tokenizer, rng, batch=6, seq_len=length)]
    data = tmp_path / "traffic.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": "a"}) + "\n" for t in texts))
    out_json = tmp_path / "traffic.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "benchmark.py"), "--traffic", str(data), "--model", str(tiny_dirs["int8"]),
         "--fp32-model", str(tiny_dirs["fp32"]), "--threads", "1", "2", "--clients", "1", "2", "--no-ort",
         "--limit", "25", "--json", str(out_json)], capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    report = json.loads(out_json.read_text())
    assert report["mode"] == "traffic" and report["settings"]["limit"] == 25
    assert [(r["engine"], r["threads"], r["clients"]) for r in report["rows"]] == [
        ("paddle-int8", 1, 1), ("paddle-fp32", 1, 1), ("paddle-int8", 2, 1), ("paddle-fp32", 2, 1),
        ("paddle-int8", 2, 2), ("paddle-fp32", 2, 2)]  # 2 clients on 1 thread: not measured
    for row in report["rows"]:
        assert row["texts"] == 25 and 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["throughput"] > 0 and row["load_s"] > 0 and row["rss_mb"] > 0
    assert b"p99_ms" in result.stdout


def test_traffic_needs_one_model_per_split(tiny_dirs, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark.py"), "--traffic", "a.jsonl",
                             "--traffic", "b.jsonl", "--model", str(tiny_dirs["int8"])], capture_output=True, timeout=60)
    assert result.returncode == 2 and b"give one --model (and optionally one --fp32-model) per --traffic" in result.stderr


@pytest.mark.parametrize("flags, expected", [
    (["avx", "avx2", "fma"], "EPYC (AVX2)"),
    (["avx2", "avx512f", "avx512_vnni"], "EPYC (AVX-512; avx512_vnni)"),
    (["avx2", "avx512f", "amx_int8", "avx512_vnni"], "EPYC (AVX-512; amx_int8 avx512_vnni)"),
    (["avx"], "EPYC (no AVX2)"),
])
def test_cpu_summary_names_the_vector_width_and_int8_instructions(flags, expected):
    assert cpu_summary({"cpu": "EPYC", "cpu_flags": flags}) == expected
