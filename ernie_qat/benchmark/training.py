"""Training-step benchmark on the CPU: Paddle FP32 / QAT / frozen word embeddings, with PyTorch as a reference.

A step is the toolkit's real one (`train_step` with `make_optimizer`'s AdamW, clipping and schedule)
on a random-weight classifier of a named shape (`ernie_qat.benchmark.inference.SHAPES`), 8 labels,
dropout 0.1, random token ids without padding. The PyTorch peer is the same network built from
`nn.TransformerEncoder` (post-LN, GELU) with AdamW and global-norm clipping; it lives outside the
package, in tools/torch_reference.py, imported only when the torch engine runs.

Paddle's math threads follow OMP_NUM_THREADS, read when the process starts; a thread count other
than the current one is therefore measured in a child process started with that value.

Example:
    rows = run_train_benchmark(["minilm"], batch=32, seq_len=128, threads=2, steps=3, warmup=1)
    print(format_train_table(rows))
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import paddle

from ernie_qat.benchmark.inference import (MAX_POSITIONS, SHAPES, BenchmarkError, random_inputs, text_table,
                                          time_callable)
from ernie_qat.env import cpu_settings

NUM_LABELS, DROPOUT = 8, 0.1
ENGINES = ("paddle-fp32", "paddle-qat", "paddle-fp32-frozen-emb", "paddle-fp32-fast-dropout", "paddle-qat-fast-dropout",
           "torch-fp32")


def _random_batch(shape: str, batch: int, seq_len: int, seed: int = 0):
    if shape not in SHAPES:
        raise BenchmarkError(f"unknown shape `{shape}`; expected one of {list(SHAPES)}")
    if seq_len > MAX_POSITIONS:
        raise BenchmarkError(f"sequence length {seq_len} exceeds the {MAX_POSITIONS} position embeddings")
    rng = np.random.default_rng(seed)
    ids, types = random_inputs(rng, batch, seq_len, SHAPES[shape]["vocab_size"])
    return ids, types, rng.integers(0, NUM_LABELS, size=batch, dtype=np.int64)


def paddle_step_timer(shape: str, batch: int, seq_len: int, qat: bool, freeze_word_embeddings: bool = False,
                      fast_dropout: bool = False):
    """A zero-arg callable running one toolkit training step; its `.model` and `.optimizer` are exposed.

    The schedule has no warm-up (TrainConfig(warmup_ratio=0)): the very first step updates the weights.
    """
    from paddlenlp.transformers import ErnieConfig, ErnieForSequenceClassification
    from ernie_qat.config import Config, QuantConfig, TrainConfig
    from ernie_qat.models.classifier import TextClassifier
    from ernie_qat.plugins import build_plugins
    from ernie_qat.train.trainer import make_optimizer, train_step

    ids, types, labels = _random_batch(shape, batch, seq_len)
    paddle.seed(0)
    config = ErnieConfig(**SHAPES[shape], max_position_embeddings=MAX_POSITIONS, type_vocab_size=2,
                         num_labels=NUM_LABELS, hidden_dropout_prob=DROPOUT, attention_probs_dropout_prob=DROPOUT)
    model = TextClassifier(ErnieForSequenceClassification(config))
    model.net.ernie.embeddings.word_embeddings.weight.stop_gradient = freeze_word_embeddings
    run = Config(quant=QuantConfig(method="qat" if qat else "none"),
                 train=TrainConfig(warmup_ratio=0.0, fast_dropout=fast_dropout))
    plugins = build_plugins(run)  # QAT if asked, and the training forward the trainer uses (taps, compiled kernels)
    for transform in plugins.ordered_transforms():
        model = transform.prepare(model)
    optimizer, schedule = make_optimizer(model, run.train, total_steps=10 ** 6)
    data = {"input_ids": paddle.to_tensor(ids), "token_type_ids": paddle.to_tensor(types),
            "labels": paddle.to_tensor(labels)}
    state = {"step": 0}

    def step() -> float:
        loss, _ = train_step(model, optimizer, data, plugins, state["step"])
        schedule.step()
        state["step"] += 1
        return loss

    step.model, step.optimizer = model, optimizer
    return step


def _torch_step_timer(shape: str, batch: int, seq_len: int, threads: Optional[int] = None):
    """The PyTorch step of tools/torch_reference.py, outside the package (None without torch or that file)."""
    tools = Path(__file__).resolve().parents[2] / "tools"
    if not (tools / "torch_reference.py").is_file():  # an installed package has no source checkout
        return None
    if str(tools) not in sys.path:
        sys.path.append(str(tools))
    from torch_reference import torch_step_timer
    return torch_step_timer(shape, batch, seq_len, threads)


def run_train_benchmark(shapes: Sequence[str], batch: int, seq_len: int, threads: int, steps: int = 5,
                        warmup: int = 2, with_torch: bool = True) -> List[dict]:
    """Time training steps per shape and engine (ENGINES; torch-fp32 only if `with_torch` and torch imports).

    Row keys: shape, engine, threads, batch, seq_len, step_s (median), p90_s, examples_per_s,
    ratio_vs_torch (step / torch step), ratio_vs_paddle_fp32, cpu_settings (of the measuring process).
    Runs in a child process when `threads` differs from this process's OMP_NUM_THREADS.
    """
    for shape in shapes:
        _random_batch(shape, 1, seq_len)  # validate before timing anything
    if os.environ.get("OMP_NUM_THREADS") != str(threads):
        return _run_in_child(list(shapes), batch, seq_len, threads, steps, warmup, with_torch)
    rows = []
    for shape in shapes:
        timers = {"paddle-fp32": lambda: paddle_step_timer(shape, batch, seq_len, qat=False),
                  "paddle-qat": lambda: paddle_step_timer(shape, batch, seq_len, qat=True),
                  "paddle-fp32-frozen-emb": lambda: paddle_step_timer(shape, batch, seq_len, qat=False,
                                                                      freeze_word_embeddings=True),
                  "paddle-fp32-fast-dropout": lambda: paddle_step_timer(shape, batch, seq_len, qat=False,
                                                                        fast_dropout=True),
                  "paddle-qat-fast-dropout": lambda: paddle_step_timer(shape, batch, seq_len, qat=True,
                                                                       fast_dropout=True),
                  "torch-fp32": lambda: _torch_step_timer(shape, batch, seq_len, threads) if with_torch else None}
        timed = {}
        for engine, make in timers.items():
            print(f"timing {shape} {engine}: {warmup} warm-up + {steps} steps", file=sys.stderr)
            run = make()
            if run is None:
                print("torch-fp32 skipped: PyTorch (or tools/torch_reference.py) does not import", file=sys.stderr)
                continue
            stats = time_callable(run, (), batch, steps, warmup)
            timed[engine] = stats
            run = None  # free this model before building the next
            rows.append({"shape": shape, "engine": engine, "threads": threads, "batch": batch, "seq_len": seq_len,
                         "step_s": stats["p50_ms"] / 1e3, "p90_s": stats["p90_ms"] / 1e3,
                         "examples_per_s": stats["throughput"], "cpu_settings": cpu_settings()})
        for row in rows[-len(timed):]:
            row["ratio_vs_torch"] = (row["step_s"] / (timed["torch-fp32"]["p50_ms"] / 1e3)
                                     if "torch-fp32" in timed else None)
            row["ratio_vs_paddle_fp32"] = row["step_s"] / (timed["paddle-fp32"]["p50_ms"] / 1e3)
    return rows


def _run_in_child(shapes, batch, seq_len, threads, steps, warmup, with_torch) -> List[dict]:
    """run_train_benchmark in a fresh interpreter with OMP_NUM_THREADS=threads (its stderr passes through)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        args = dict(shapes=shapes, batch=batch, seq_len=seq_len, threads=threads, steps=steps, warmup=warmup,
                    with_torch=with_torch)
        code = ("import json, sys; from ernie_qat.benchmark.training import run_train_benchmark as run; "
                "json.dump(run(**json.loads(sys.argv[1])), open(sys.argv[2], 'w'))")
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        result = subprocess.run([sys.executable, "-c", code, json.dumps(args), out], env=env)
        if result.returncode != 0:
            raise RuntimeError(f"the training benchmark with OMP_NUM_THREADS={threads} failed "
                               f"(exit code {result.returncode}; its error is printed above)")
        with open(out) as f:
            return json.load(f)


TABLE_COLUMNS = [("shape", "{}"), ("engine", "{}"), ("threads", "{}"), ("batch", "{}"), ("seq_len", "{}"),
                 ("step_s", "{:.3f}"), ("p90_s", "{:.3f}"), ("examples_per_s", "{:.1f}"),
                 ("ratio_vs_torch", "{:.2f}x"), ("ratio_vs_paddle_fp32", "{:.2f}x")]


def format_train_table(rows: Sequence[dict]) -> str:
    """Plain-text table: step time (s, median and p90), examples/s, step-time ratios to torch and paddle-fp32."""
    return "\n".join(text_table(TABLE_COLUMNS, rows)
                     + sorted({f"threads={r['threads']}: {r['cpu_settings']}" for r in rows}))
