"""Training-step benchmark on the tiny shape: the timers really train, rows are well formed, the CLI writes JSON.

Nothing here asserts speed: the machine may be busy.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from ernie_qat.benchmark.training import (ENGINES, _torch_step_timer, format_train_table, paddle_step_timer,
                                          run_train_benchmark)

ROW_KEYS = {"shape", "engine", "threads", "batch", "seq_len", "step_s", "p90_s", "examples_per_s", "ratio_vs_torch",
            "ratio_vs_paddle_fp32"}


def _weights(model) -> dict:
    """Parameters by name, QAT's wrapper level (`._layer`) left out of the names."""
    return {name.replace("._layer", ""): p.numpy().copy() for name, p in model.named_parameters()}


@pytest.mark.parametrize("qat", [False, True])
def test_paddle_timer_updates_weights(qat):
    step = paddle_step_timer("tiny", batch=2, seq_len=8, qat=qat)
    before = _weights(step.model)
    assert np.isfinite(step())
    after = _weights(step.model)
    assert not np.array_equal(before["net.classifier.weight"], after["net.classifier.weight"])
    assert not np.array_equal(before["net.ernie.embeddings.word_embeddings.weight"],
                              after["net.ernie.embeddings.word_embeddings.weight"])
    quantized = [m for m in step.model.sublayers() if type(m).__name__ in ("QuantizedLinear", "FastQuantizedLinear")]
    assert bool(quantized) == qat


def test_frozen_embedding_timer_leaves_the_table():
    step = paddle_step_timer("tiny", batch=2, seq_len=8, qat=False, freeze_word_embeddings=True)
    before = _weights(step.model)
    step()
    step()
    after = _weights(step.model)
    key = "net.ernie.embeddings.word_embeddings.weight"
    assert np.array_equal(before[key], after[key])
    assert not np.array_equal(before["net.ernie.embeddings.position_embeddings.weight"],
                              after["net.ernie.embeddings.position_embeddings.weight"])


def test_rows_in_process():
    threads = int(os.environ["OMP_NUM_THREADS"])  # this process's count: no child process
    rows = run_train_benchmark(["tiny"], batch=2, seq_len=8, threads=threads, steps=2, warmup=1, with_torch=False)
    assert [r["engine"] for r in rows] == list(ENGINES[:-1])
    assert all(ROW_KEYS <= set(r) for r in rows)
    assert all(r["step_s"] > 0 and r["examples_per_s"] > 0 and r["ratio_vs_torch"] is None for r in rows)
    assert rows[0]["ratio_vs_paddle_fp32"] == 1.0
    assert "paddle-qat" in format_train_table(rows)


def test_torch_timer_and_row():
    torch = pytest.importorskip("torch")
    step = _torch_step_timer("tiny", batch=2, seq_len=8, threads=1)  # tools/torch_reference.py
    before = step.model.classifier.weight.detach().clone()
    assert np.isfinite(step())
    assert not torch.equal(before, step.model.classifier.weight)
    threads = int(os.environ["OMP_NUM_THREADS"])
    rows = run_train_benchmark(["tiny"], batch=2, seq_len=8, threads=threads, steps=1, warmup=0)
    assert [r["engine"] for r in rows] == list(ENGINES)
    assert rows[-1]["ratio_vs_torch"] == 1.0 and all(r["ratio_vs_torch"] > 0 for r in rows)


def test_cli_train_json(tmp_path):
    out = tmp_path / "out.json"
    threads = "1" if os.environ["OMP_NUM_THREADS"] != "1" else "2"  # exercise the child process
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "benchmark.py"), "--train", "--shape", "tiny", "--batch", "2",
         "--seq-len", "8", "--runs", "1", "--warmup", "1", "--threads", threads, "--json", str(out)],
        capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    report = json.loads(out.read_text())
    assert [r["engine"] for r in report["rows"]][:3] == list(ENGINES[:3])
    assert all(r["threads"] == int(threads) and f"OMP_NUM_THREADS={threads}" in r["cpu_settings"]
               for r in report["rows"])
    assert report["machine"]["versions"]["paddlepaddle"] and "CPU math" in report["cpu_settings"]
    assert b"paddle-fp32-frozen-emb" in result.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "benchmark.py"), "--train", "--png", "x.png"],
                         capture_output=True, timeout=120)
    assert bad.returncode == 2 and b"error: " in bad.stderr
