"""The training loop: fine-tune an ERNIE classifier as a config describes.

Read `fit` top to bottom: set-up, then one loop whose phases run in a fixed order
(batch, forward/backward/step through the step strategy, schedule, log, evaluate/checkpoint).
Methods from papers plug in through `Plugins` (see hooks.py), never by editing this loop.

Outputs in `train.output_dir`: config.yaml, metrics.jsonl, checkpoints/{last,best}/, results.json.
"""
import json
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import paddle
import paddle.nn.functional as F
from paddlenlp.transformers import LinearDecayWithWarmup
from tqdm import tqdm

from ernie_qat.config import Config, TrainConfig
from ernie_qat.env import cpu_settings
from ernie_qat.data.batching import Encoded, batched_scores, collate, encode, train_batches
from ernie_qat.data.loader import LabelVocab, read_examples
from ernie_qat.data.sources import data_file, load_splits
from ernie_qat.models.classifier import build_classifier
from ernie_qat.plugins import build_plugins
from ernie_qat.train.checkpoint import load_checkpoint, restore_training, save_checkpoint
from ernie_qat.train.fast_dropout import fast_dropout
from ernie_qat.train.fast_ops import fast_cpu_ops
from ernie_qat.train.hooks import Plugins
from ernie_qat.train.metrics import classification_metrics


class RunExistsError(ValueError):
    """The output folder already holds a run and resuming was not asked for."""


def fit(cfg: Config, plugins: Optional[Plugins] = None, resume: bool = False) -> dict:
    """Train, evaluate on dev as configured, and test the best checkpoint.

    Args:
        resume: continue from `output_dir/checkpoints/last` if it exists (else start afresh).

    Returns:
        results.json's content: best dev metrics, test metrics, steps and wall time.
    """
    plugins = plugins or build_plugins(cfg)
    wall_start = time.time()
    tc = cfg.train
    out = Path(tc.output_dir)
    last_dir, best_dir = out / "checkpoints" / "last", out / "checkpoints" / "best"
    if last_dir.exists() and not resume:
        raise RunExistsError(f"`train.output_dir` {out} already holds a run: pass --resume to continue it, "
                             "or choose another output_dir")
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")
    print(cpu_settings(), file=sys.stderr)

    # ---- data, model, optimizer
    paddle.seed(tc.seed)
    splits = load_splits(cfg.data, tc.seed)
    labels = LabelVocab.from_examples(splits["train"])
    model, tokenizer = build_classifier(cfg.model, labels)
    model.net.ernie.embeddings.word_embeddings.weight.stop_gradient = tc.freeze_word_embeddings
    for transform in plugins.transforms:
        model = transform.prepare(model)
    for term in plugins.loss_terms:
        if hasattr(term, "setup"):
            term.setup(model)
    data = {name: encode(examples, tokenizer, cfg.data.max_seq_len, labels) for name, examples in splits.items()}
    lengths = [len(x.input_ids) for x in data["train"]]
    steps_per_epoch = math.ceil(len(lengths) / tc.batch_size)
    total_steps = tc.max_steps or tc.epochs * steps_per_epoch
    eval_every = tc.eval_every or steps_per_epoch
    optimizer, schedule = make_optimizer(model, tc, total_steps)
    state = {"step": 0, "best_metric": None, "best_step": None, "train_seconds": 0.0}
    if resume and last_dir.exists():
        state = restore_training(last_dir, model, optimizer)
    metrics_log = _open_log(out / "metrics.jsonl", state["step"])

    def log(record: dict) -> None:
        metrics_log.write(json.dumps(record) + "\n")
        metrics_log.flush()

    def checkpoint(folder: Path, with_optimizer: bool) -> None:
        save_checkpoint(folder, model, tokenizer, labels, cfg, state,
                        optimizer if with_optimizer else None)

    # ---- the loop
    step = state["step"]
    progress = tqdm(total=total_steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
                    mininterval=1.0 if sys.stderr.isatty() else 30.0)  # a log file gets a line per 30 s
    window = {"loss": 0.0, "examples": 0, "steps": 0, "start": time.time()}
    window_terms: Dict[str, float] = {}
    while step < total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        for indices in train_batches(lengths, tc.batch_size, cfg.data.bucket_batches, tc.seed, epoch)[offset:]:
            # batch
            batch = {k: paddle.to_tensor(v) for k, v in
                     collate([data["train"][i] for i in indices], model.pad_token_id).items()}
            paddle.seed(tc.seed * 1_000_003 + step)  # dropout masks depend on the step alone: exact resume
            started = time.time()

            # forward, extra loss terms, backward and optimizer step
            with fast_dropout(tc.fast_dropout):
                loss = train_step(model, optimizer, batch, plugins, step, window_terms)
            schedule.step()
            step += 1
            state["train_seconds"] += time.time() - started

            # log
            window["loss"] += float(loss)
            window["examples"] += len(indices)
            window["steps"] += 1
            if step % tc.log_every == 0 or step == total_steps:
                speed = window["examples"] / (time.time() - window["start"])
                record = {"step": step, "epoch": epoch, "split": "train", "loss": window["loss"] / window["steps"],
                          "lr": optimizer.get_lr(), "examples_per_s": speed, **window_terms}
                log(record)
                progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", ex_s=f"{speed:.1f}")
                window = {"loss": 0.0, "examples": 0, "steps": 0, "start": time.time()}
            progress.update(1)

            # evaluate and checkpoint
            if step % eval_every == 0 or step == total_steps:
                dev = evaluate(model, data["dev"], tc.eval_batch_size)
                log({"step": step, "epoch": epoch, "split": "dev", **dev})
                progress.write(f"step {step}: dev " + _format(dev))
                if state["best_metric"] is None or dev[tc.select_metric] > state["best_metric"]:
                    state["best_metric"], state["best_step"] = dev[tc.select_metric], step
                    checkpoint(best_dir, with_optimizer=False)
                state["step"] = step
                checkpoint(last_dir, with_optimizer=True)
            if step >= total_steps:
                break
    progress.close()
    metrics_log.close()

    # ---- final evaluation of the best checkpoint
    best_model = load_checkpoint(best_dir)[0]
    results = {"best_step": state["best_step"], "steps": step, "train_seconds": round(state["train_seconds"], 1),
               "wall_seconds_this_process": round(time.time() - wall_start, 1), "environment": cpu_settings(),
               "dev": evaluate(best_model, data["dev"], tc.eval_batch_size)}
    if "test" in data:
        results["test"] = evaluate(best_model, data["test"], tc.eval_batch_size)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


def make_optimizer(model, tc: TrainConfig, total_steps: int):
    """(AdamW, its schedule): no decay on biases and norms, linear warm-up and decay, global-norm clipping."""
    schedule = LinearDecayWithWarmup(tc.learning_rate, total_steps, tc.warmup_ratio)
    no_decay = {p.name for n, p in model.named_parameters() if "bias" in n or "norm" in n}
    return paddle.optimizer.AdamW(
        learning_rate=schedule, parameters=[p for p in model.parameters() if not p.stop_gradient],
        weight_decay=tc.weight_decay, apply_decay_param_fun=lambda name: name not in no_decay,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(tc.max_grad_norm) if tc.max_grad_norm > 0 else None), schedule


def train_step(model, optimizer, batch: dict, plugins: Plugins, step: int, term_logs: dict) -> paddle.Tensor:
    """One optimizer step on `batch` (input_ids, token_type_ids [B, L], labels [B] tensors).

    The closure runs forward, cross-entropy plus the loss terms (their logs go into `term_logs`)
    and backward; the step strategy decides how often to call it before stepping. Linear layers
    run the faster CPU ops of `ernie_qat.train.fast_ops`.
    """
    model.train()

    def closure() -> paddle.Tensor:
        logits = model(batch["input_ids"], batch["token_type_ids"])
        loss = F.cross_entropy(logits, batch["labels"])
        for term in plugins.loss_terms:
            extra, logs = term(model, logits, batch, step)
            loss = loss + extra
            term_logs.update({f"loss/{term.name}/{key}": value for key, value in logs.items()})
        loss.backward()
        return loss

    with fast_cpu_ops(model):
        loss = plugins.step_strategy.step(model, optimizer, closure)
    optimizer.clear_grad()
    return loss


@paddle.no_grad()
def predict_logits(model, items: List[Encoded], batch_size: int) -> np.ndarray:
    """Logits [N, C] of `model` (put in eval mode) for encoded examples, in their order."""
    model.eval()
    return batched_scores(lambda ids, types: model(paddle.to_tensor(ids), paddle.to_tensor(types)).numpy(),
                          items, batch_size, model.pad_token_id)


def evaluate(model, items: List[Encoded], batch_size: int) -> Dict[str, float]:
    """Mean cross-entropy and metrics of `model` on labelled encoded examples."""
    logits = predict_logits(model, items, batch_size)
    labels = np.array([x.label for x in items])
    loss = float(F.cross_entropy(paddle.to_tensor(logits), paddle.to_tensor(labels)))
    return {"loss": loss, **classification_metrics(labels, logits.argmax(axis=1))}


def evaluate_checkpoint(folder: Path, cfg: Config, split_file: Optional[str] = None) -> Dict[str, dict]:
    """Metrics of a saved checkpoint on the config's dev/test splits, or on one labelled file."""
    model, tokenizer, labels, _ = load_checkpoint(folder)
    splits = {split_file: read_examples(data_file(split_file))} if split_file else \
        {k: v for k, v in load_splits(cfg.data, cfg.train.seed).items() if k != "train"}
    return {name: evaluate(model, encode(examples, tokenizer, cfg.data.max_seq_len, labels), cfg.train.eval_batch_size)
            for name, examples in splits.items()}


def _open_log(path: Path, step: int):
    """metrics.jsonl for appending, without records past `step` (left by a run that crashed)."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))
    return open(path, "a")


def _format(metrics: Dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" if k == "loss" else f"{k}={v:.2f}" for k, v in metrics.items())
