"""The training loop: fine-tune an ERNIE classifier as a config describes.

Read `fit` top to bottom: set-up, then one loop whose phases run in a fixed order (batch,
plugins' `on_batch`, forward/backward/step through the step strategy, schedule, log,
evaluate/checkpoint). Methods from papers plug in through the contract of
ernie_qat.train.hooks, never by editing this loop.

Outputs in `train.output_dir` (written by rank 0 only): config.yaml, metrics.jsonl,
checkpoints/{last,best}/, results.json.
"""
import json
import math
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import paddle
import paddle.nn.functional as F
from paddlenlp.transformers import LinearDecayWithWarmup
from tqdm import tqdm

from ernie_qat.config import Config, TrainConfig
from ernie_qat.data.batching import collate, encode, train_batches
from ernie_qat.data.loader import LabelVocab
from ernie_qat.data.sources import load_splits
from ernie_qat.env import cpu_settings
from ernie_qat.errors import UserError
from ernie_qat.models.classifier import build_classifier
from ernie_qat.models.taps import forward_outputs, taps_of
from ernie_qat.plugins import build_plugins
from ernie_qat.train.checkpoint import load_checkpoint, restore_training, save_checkpoint
from ernie_qat.train.evaluate import evaluate
from ernie_qat.train.hooks import ParamGroup, PluginError, Plugins
from ernie_qat.train.parallel import topology, unwrap


class RunExistsError(UserError):
    """The output folder already holds a run and resuming was not asked for."""


def fit(cfg: Config, plugins: Optional[Plugins] = None, resume: bool = False) -> dict:
    """Train, evaluate on dev as configured, and test the best checkpoint.

    Args:
        plugins: what the run uses; by default every plugin the config enables (`build_plugins`).
        resume: continue from `output_dir/checkpoints/last` if it exists (else start afresh).

    Returns:
        results.json's content: best dev metrics, test metrics, steps and wall time.
    """
    plugins = plugins or build_plugins(cfg)
    topo = topology()
    wall_start = time.time()
    tc = cfg.train
    out = Path(tc.output_dir)
    last_dir, best_dir = out / "checkpoints" / "last", out / "checkpoints" / "best"
    if last_dir.exists() and not resume:
        raise RunExistsError(f"`train.output_dir` {out} already holds a run: pass --resume to continue it, "
                             "or choose another output_dir")
    if topo.writes:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.yaml")
        print(cpu_settings(), file=sys.stderr)

    # ---- data, model (transforms in their declared order), plugins' set-up, optimizer
    paddle.seed(tc.seed)
    splits = load_splits(cfg.data, tc.seed)
    labels = LabelVocab.from_examples(splits["train"])
    model, tokenizer = build_classifier(cfg.model, labels)
    model.net.ernie.embeddings.word_embeddings.weight.stop_gradient = tc.freeze_word_embeddings
    for transform in plugins.ordered_transforms():
        model = transform.prepare(model)
    if plugins.interventions:
        taps_of(model).interventions = plugins.interventions
    for plugin in plugins.all():
        plugin.setup(model)
    data = {name: encode(examples, tokenizer, cfg.data.max_seq_len, labels) for name, examples in splits.items()}
    lengths = [len(x.input_ids) for x in data["train"]]
    steps_per_epoch = math.ceil(len(lengths) / tc.batch_size)
    total_steps = tc.max_steps or tc.epochs * steps_per_epoch
    eval_every = tc.eval_every or steps_per_epoch
    optimizer, schedule = make_optimizer(model, tc, total_steps,
                                         [g for plugin in plugins.all() for g in plugin.param_groups(model)])
    state = {"step": 0, "best_metric": None, "best_step": None, "train_seconds": 0.0}
    if resume and last_dir.exists():
        state = restore_training(last_dir, model, optimizer)
    if topo.world_size > 1:  # gradients are all-reduced across the ranks in backward
        paddle.distributed.init_parallel_env()
        model = paddle.DataParallel(model)
    metrics_log = _open_log(out / "metrics.jsonl", state["step"]) if topo.writes else None

    def log(record: dict) -> None:
        if metrics_log is not None:
            metrics_log.write(json.dumps(record) + "\n")
            metrics_log.flush()

    def checkpoint(folder: Path, with_optimizer: bool) -> None:
        if topo.writes:
            save_checkpoint(folder, model, tokenizer, labels, cfg, state, optimizer if with_optimizer else None)

    # ---- the loop
    step = state["step"]
    progress = tqdm(total=total_steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
                    disable=not topo.writes,
                    mininterval=1.0 if sys.stderr.isatty() else 30.0)  # a log file gets a line per 30 s
    window = {"loss": 0.0, "examples": 0, "steps": 0, "start": time.time()}
    window_logs: Dict[str, float] = {}
    while step < total_steps:
        epoch, offset = divmod(step, steps_per_epoch)
        for indices in train_batches(lengths, tc.batch_size, cfg.data.bucket_batches, tc.seed, epoch)[offset:]:
            # batch (this rank's share)
            indices = topo.shard(indices)
            batch = {k: paddle.to_tensor(v) for k, v in
                     collate([data["train"][i] for i in indices], unwrap(model).pad_token_id).items()}
            paddle.seed(tc.seed * 1_000_003 + step)  # dropout masks depend on the step alone: exact resume
            started = time.time()

            # plugins' per-batch work, forward, loss terms, backward and optimizer step
            loss, step_logs = train_step(model, optimizer, batch, plugins, step)
            window_logs.update(step_logs)
            schedule.step()
            step += 1
            state["train_seconds"] += time.time() - started

            # log
            window["loss"] += loss
            window["examples"] += len(indices)
            window["steps"] += 1
            if step % tc.log_every == 0 or step == total_steps:
                speed = window["examples"] / (time.time() - window["start"])
                record = {"step": step, "epoch": epoch, "split": "train", "loss": window["loss"] / window["steps"],
                          "lr": optimizer.get_lr(), "examples_per_s": speed, **window_logs}
                log(record)
                progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", ex_s=f"{speed:.1f}")
                window = {"loss": 0.0, "examples": 0, "steps": 0, "start": time.time()}
            progress.update(1)

            # evaluate and checkpoint
            if step % eval_every == 0 or step == total_steps:
                dev = evaluate(model, data["dev"], tc.eval_batch_size)
                for plugin in plugins.all():
                    plugin.on_evaluate(model, step, dev)
                log({"step": step, "epoch": epoch, "split": "dev", **dev})
                if topo.writes:
                    progress.write(f"step {step}: dev " + _format(dev))
                if state["best_metric"] is None or dev[tc.select_metric] > state["best_metric"]:
                    state["best_metric"], state["best_step"] = dev[tc.select_metric], step
                    checkpoint(best_dir, with_optimizer=False)
                state["step"] = step
                checkpoint(last_dir, with_optimizer=True)
            if step >= total_steps:
                break
    progress.close()
    if metrics_log is not None:
        metrics_log.close()
    if not topo.writes:
        return {"best_step": state["best_step"], "steps": step}

    # ---- final evaluation of the best checkpoint
    best_model = load_checkpoint(best_dir)[0]
    results = {"best_step": state["best_step"], "steps": step, "train_seconds": round(state["train_seconds"], 1),
               "wall_seconds_this_process": round(time.time() - wall_start, 1), "environment": cpu_settings(),
               "dev": evaluate(best_model, data["dev"], tc.eval_batch_size)}
    if "test" in data:
        results["test"] = evaluate(best_model, data["test"], tc.eval_batch_size)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


def make_optimizer(model, tc: TrainConfig, total_steps: int, groups: Sequence[ParamGroup] = ()):
    """(AdamW, its schedule): linear warm-up and decay, global-norm clipping; no decay on biases, norms and
    the parameters of groups that ask for none; a group's `lr_scale` multiplies the scheduled rate."""
    schedule = LinearDecayWithWarmup(tc.learning_rate, total_steps, tc.warmup_ratio)
    no_decay = {p.name for n, p in model.named_parameters() if "bias" in n or "norm" in n}
    for group in groups:
        for param in group.params:
            param.optimize_attr["learning_rate"] = group.lr_scale
            if not group.weight_decay:
                no_decay.add(param.name)
    return paddle.optimizer.AdamW(
        learning_rate=schedule, parameters=[p for p in model.parameters() if not p.stop_gradient],
        weight_decay=tc.weight_decay, apply_decay_param_fun=lambda name: name not in no_decay,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(tc.max_grad_norm) if tc.max_grad_norm > 0 else None), schedule


def train_step(model, optimizer, batch: dict, plugins: Plugins, step: int) -> Tuple[float, Dict[str, float]]:
    """One optimizer step on `batch` (input_ids, token_type_ids [B, L], labels [B] tensors).

    Plugins' `on_batch` run first; then the step strategy calls the closure, which runs the
    forward (interventions of `step` apply; the outputs loss terms need are recorded),
    cross-entropy plus the loss terms, and backward.

    Returns:
        (loss of the first closure call, logs: loss terms' values of the first call as
        `loss/<term>/<key>`, the strategy's as `step/<key>`).

    Raises:
        PluginError: the step strategy never called the closure.
    """
    model.train()
    for plugin in plugins.all():
        plugin.on_batch(model, batch, step)
    losses, first_logs = [], {}

    def closure() -> paddle.Tensor:
        outputs = forward_outputs(model, batch, plugins.needs, step)
        loss = F.cross_entropy(outputs.logits, batch["labels"])
        logs = {}
        for term in plugins.loss_terms:
            extra, term_logs = term(model, outputs, batch, step)
            loss = loss + extra
            logs.update({f"loss/{term.name}/{key}": value for key, value in term_logs.items()})
        loss.backward()
        if not losses:
            first_logs.update(logs)
        losses.append(loss)
        return loss

    strategy = plugins.step_strategy
    strategy_logs = strategy.step(model, optimizer, closure, step) or {}
    if not losses:
        raise PluginError(f"the optimizer-step strategy `{strategy.name}` ({type(strategy).__name__}) returned "
                          "without calling the closure: no forward or backward ran at this step.\n"
                          "HINT: `step(model, optimizer, closure, step)` must call `closure()` before "
                          "`optimizer.step()`")
    optimizer.clear_grad()
    return float(losses[0]), {**first_logs, **{f"step/{key}": value for key, value in strategy_logs.items()}}


def _open_log(path: Path, step: int):
    """metrics.jsonl for appending, without records past `step` (left by a run that crashed)."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))
    return open(path, "a")


def _format(metrics: Dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" if k == "loss" else f"{k}={v:.2f}" for k, v in metrics.items())
