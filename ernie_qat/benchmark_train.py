"""Training-step benchmark on the CPU: Paddle FP32 / QAT / frozen word embeddings, with PyTorch as a reference.

A step is the toolkit's real one (`train_step` with `make_optimizer`'s AdamW, clipping and schedule)
on a random-weight classifier of a named shape (`ernie_qat.benchmark.SHAPES`), 8 labels, dropout
0.1, random token ids without padding. The PyTorch peer is the same network built from
`nn.TransformerEncoder` (post-LN, GELU) with AdamW and global-norm clipping.

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
from typing import List, Optional, Sequence

import numpy as np
import paddle

from ernie_qat.benchmark import MAX_POSITIONS, SHAPES, BenchmarkError, random_inputs, time_callable
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
    from ernie_qat.config import QuantConfig, TrainConfig
    from ernie_qat.models.classifier import TextClassifier
    from ernie_qat.quant.qat import QATTransform
    from ernie_qat.train.fast_dropout import fast_dropout as dropout_patch
    from ernie_qat.train.hooks import Plugins
    from ernie_qat.train.trainer import make_optimizer, train_step

    ids, types, labels = _random_batch(shape, batch, seq_len)
    paddle.seed(0)
    config = ErnieConfig(**SHAPES[shape], max_position_embeddings=MAX_POSITIONS, type_vocab_size=2,
                         num_labels=NUM_LABELS, hidden_dropout_prob=DROPOUT, attention_probs_dropout_prob=DROPOUT)
    model = TextClassifier(ErnieForSequenceClassification(config))
    model.net.ernie.embeddings.word_embeddings.weight.stop_gradient = freeze_word_embeddings
    if qat:
        model = QATTransform(QuantConfig(method="qat")).prepare(model)
    optimizer, schedule = make_optimizer(model, TrainConfig(warmup_ratio=0.0), total_steps=10 ** 6)
    data = {"input_ids": paddle.to_tensor(ids), "token_type_ids": paddle.to_tensor(types),
            "labels": paddle.to_tensor(labels)}
    plugins, state = Plugins(), {"step": 0, "logs": {}}

    def step() -> float:
        with dropout_patch(fast_dropout):
            loss = train_step(model, optimizer, data, plugins, state["step"], state["logs"])
        schedule.step()
        state["step"] += 1
        return float(loss)

    step.model, step.optimizer = model, optimizer
    return step


def torch_step_timer(shape: str, batch: int, seq_len: int, threads: Optional[int] = None):
    """The same step for an equivalent PyTorch model (None if torch does not import); `.model` is exposed."""
    try:
        import torch
        from torch import nn
    except Exception:  # noqa: BLE001 -- a broken install is as absent as a missing one
        return None
    if threads:
        torch.set_num_threads(threads)
    dims = SHAPES[shape]
    hidden, pad = dims["hidden_size"], 0

    class Classifier(nn.Module):
        """ERNIE's layout: embeddings + LayerNorm, post-LN encoder, tanh pooler on token 0, linear classifier."""

        def __init__(self):
            super().__init__()
            self.word, self.position = nn.Embedding(dims["vocab_size"], hidden), nn.Embedding(MAX_POSITIONS, hidden)
            self.token_type, self.norm = nn.Embedding(2, hidden), nn.LayerNorm(hidden, eps=1e-12)
            layer = nn.TransformerEncoderLayer(hidden, dims["num_attention_heads"], dims["intermediate_size"], DROPOUT,
                                               activation="gelu", layer_norm_eps=1e-12, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, dims["num_hidden_layers"], enable_nested_tensor=False)
            for block in self.encoder.layers:
                block.dropout = nn.Identity()  # ERNIE has no dropout after the FFN activation (act_dropout=0)
            self.pooler, self.classifier = nn.Linear(hidden, hidden), nn.Linear(hidden, NUM_LABELS)
            self.dropout = nn.Dropout(DROPOUT)

        def forward(self, input_ids, token_type_ids):
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
            x = self.encoder(self.dropout(self.norm(x)), src_key_padding_mask=input_ids == pad)
            return self.classifier(self.dropout(torch.tanh(self.pooler(x[:, 0]))))

    ids, types, labels = (torch.from_numpy(a) for a in _random_batch(shape, batch, seq_len))
    torch.manual_seed(0)
    model = Classifier()
    decay = [p for n, p in model.named_parameters() if not ("bias" in n or "norm" in n)]
    rest = [p for n, p in model.named_parameters() if "bias" in n or "norm" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                                  lr=5e-5)

    def step() -> float:
        model.train()
        loss = nn.functional.cross_entropy(model(ids, types), labels)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    step.model, step.optimizer = model, optimizer
    return step


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
                  "torch-fp32": lambda: torch_step_timer(shape, batch, seq_len, threads) if with_torch else None}
        timed = {}
        for engine, make in timers.items():
            print(f"timing {shape} {engine}: {warmup} warm-up + {steps} steps", file=sys.stderr)
            run = make()
            if run is None:
                print("torch-fp32 skipped: PyTorch does not import", file=sys.stderr)
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
        code = ("import json, sys; from ernie_qat.benchmark_train import run_train_benchmark as run; "
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
    cells = [[name for name, _ in TABLE_COLUMNS]]
    cells += [[fmt.format(r[name]) if r.get(name) is not None else "-" for name, fmt in TABLE_COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(c.rjust(w) if i >= 2 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines + sorted({f"threads={r['threads']}: {r['cpu_settings']}" for r in rows}))
