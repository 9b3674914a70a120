"""The training loop: fine-tune an ERNIE classifier as a config describes.

Read `fit` top to bottom: set-up, then one loop whose phases run in a fixed order (batch,
optimizer restart at a plugin's stage boundary, plugins' `on_batch`, forward/backward/step through
the step strategy, schedule, log, evaluate/checkpoint). Methods from papers plug in through the
contract of ernie_qat.train.hooks, never by editing this loop.

Outputs in `train.output_dir` (written by rank 0 only, each atomically): config.yaml,
metrics.jsonl (train records; dev records, and `dev_intervened` ones while an intervention acts:
dev through the training forward, `training_forward`), visualdl/ (the same scalars for VisualDL, unless
`train.visualdl: false`), checkpoints/{last,best}/, results.json.

Nothing is lost on a fault: a resumed run (`resume=True`) reproduces the uninterrupted run's
losses and weights exactly, whether the process was killed mid-step or mid-save; SIGINT and
SIGTERM finish the current step and save it; a non-finite loss, gradient or dev loss stops
training before the update, leaving the last good checkpoint intact.

Under `python -m paddle.distributed.launch` every process runs this loop on its shard of each
batch (ernie_qat.train.parallel): gradients, losses and logs are the whole batch's on every rank,
rank 0 alone evaluates and writes while the others wait, and the ranks agree on every stop (a
signal, a non-finite value, a rank that died), so the guarantees above hold there too.
"""
import contextlib
import hashlib
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import paddle
import paddle.nn.functional as F
from paddlenlp.transformers import LinearDecayWithWarmup
from tqdm import tqdm

from ernie_qat import faults
from ernie_qat.atomic import append_jsonl, folder_identity, read_jsonl, write_json, write_jsonl
from ernie_qat.benchmark.machine import cpu_summary
from ernie_qat.config import Config, TrainConfig, differences, flat_dict, load_config
from ernie_qat.data.batching import batch_width, collate, encode, train_batches
from ernie_qat.data.loader import Example, LabelVocab
from ernie_qat.data.sources import load_splits
from ernie_qat.env import cpu_settings
from ernie_qat.errors import Stopped, UserError, stop_signals_handled_by
from ernie_qat.models.classifier import build_classifier
from ernie_qat.models.taps import forward_outputs, taps_of
from ernie_qat.optim.adam import OPTIMIZERS
from ernie_qat.plugins import build_plugins
from ernie_qat.train.checkpoint import (load_checkpoint, read_trainer_state, recover_checkpoints, restore_training,
                                        save_checkpoint)
from ernie_qat.train.class_weights import balanced_class_weights
from ernie_qat.train.epochs import resolve_epochs
from ernie_qat.train.evaluate import evaluate
from ernie_qat.train.hooks import ParamGroup, PluginError, Plugins
from ernie_qat.train.parallel import (RankLost, Shard, Topology, broadcast_state, lockstep, reduce_gradients,
                                      start, topology)
from ernie_qat.train.visualdl_log import VisualDLLog


RESUME_FREE_KEYS = ("train.output_dir",)  # config keys a resumed run may change: nothing else that shapes the run


class RunExistsError(UserError):
    """The output folder already holds a run and resuming was not asked for."""


class ResumeMismatchError(UserError):
    """`--resume` into a run whose config, labels or data differ from the ones given now."""


class NonFiniteError(UserError):
    """Training diverged: a loss or gradient is NaN or infinite."""


class TrainingInterrupted(Stopped):
    """SIGINT or SIGTERM stopped training after the current step was saved."""


def fit(cfg: Config, plugins: Optional[Plugins] = None, resume: bool = False) -> dict:
    """Train, evaluate on dev as configured, and test the best checkpoint.

    Args:
        plugins: what the run uses; by default every plugin the config enables (`build_plugins`).
        resume: continue from `output_dir/checkpoints/last` (recovered if a crash interrupted its save);
            without a checkpoint, say so and start afresh.

    Returns:
        results.json's content: best dev metrics, test metrics, steps and wall time.

    Raises:
        RunExistsError: the output folder holds a run and `resume` is False.
        ResumeMismatchError: resuming with another config (but RESUME_FREE_KEYS), labels or data.
        NonFiniteError: the loss, a gradient or the dev loss became NaN or infinite.
        TrainingInterrupted: SIGINT or SIGTERM; the current step was saved as `last`.
        RankLost: data parallel: another rank stopped; the last checkpoint is intact.
    """
    plugins = plugins or build_plugins(cfg)
    wall_start = time.time()
    tc = cfg.train
    out = Path(tc.output_dir)
    checkpoints = out / "checkpoints"
    last_dir, best_dir = checkpoints / "last", checkpoints / "best"
    if tc.batch_size < topology().world_size:
        raise UserError(f"`train.batch_size` {tc.batch_size} is the global batch, shared by the run's "
                        f"{topology().world_size} processes: each needs at least one example of it; raise it "
                        f"to {topology().world_size} or more, or start fewer processes")
    topo = start()
    resume = _resumable(checkpoints, resume, topo)

    # ---- data, model (transforms in their declared order), plugins' set-up, optimizer
    paddle.seed(tc.seed)
    splits = load_splits(cfg.data, tc.seed)
    labels = LabelVocab.from_examples(splits["train"])
    fingerprints = {name: data_fingerprint(examples) for name, examples in splits.items()}
    sources = source_identities(cfg)
    _check_same_inputs(topo, {"data": fingerprints, "sources": sources, "labels": labels.labels})
    if resume:
        _check_resumable(cfg, last_dir, labels, fingerprints, sources)
    steps_per_epoch = math.ceil(len(splits["train"]) / tc.batch_size)
    epochs, why = resolve_epochs(tc.epochs, [e.label for e in splits["train"]], tc.batch_size)
    if why and topo.writes:
        print(f"train.epochs: auto = {epochs} ({why})", file=sys.stderr)
    total_steps = tc.max_steps or epochs * steps_per_epoch
    eval_every = tc.eval_every or steps_per_epoch
    restarts = {k: v for plugin in plugins.all() for k, v in plugin.schedule_restarts(total_steps).items()}
    fresh_optimizer_at = {s for plugin in plugins.all() for s in plugin.optimizer_restarts(total_steps)}
    model, tokenizer = build_student(cfg, plugins, labels)
    if topo.writes:
        cfg.save(out / "config.yaml")  # creates the output folder
        print(cpu_settings(), file=sys.stderr)
    data = {name: encode(examples, tokenizer, cfg.data.max_seq_len, labels) for name, examples in splits.items()}
    lengths = [len(x.input_ids) for x in data["train"]]
    optimizer, schedule = make_optimizer(model, tc, total_steps,
                                         [g for plugin in plugins.all() for g in plugin.param_groups(model)], restarts)
    state = {"step": 0, "best_metric": None, "best_step": None, "train_seconds": 0.0, "data": fingerprints,
             "sources": sources}
    if resume:
        state = restore_training(last_dir, model, optimizer)
    if topo.world_size > 1:
        topo.barrier()  # ranks set up at their own pace, and a gloo collective waits 30 s at most
        broadcast_state(model)
    metrics_log = out / "metrics.jsonl"
    if topo.writes:  # records past the checkpoint, or half of one, left by a crash go
        write_jsonl(metrics_log, [r for r in read_jsonl(metrics_log) if r.get("step", math.inf) <= state["step"]])
    scalars = VisualDLLog(out / "visualdl", read_jsonl(metrics_log) if topo.writes else [], topo.writes and tc.visualdl)
    class_weights = paddle.to_tensor(balanced_class_weights([labels.index(e) for e in splits["train"]], len(labels))) \
        if tc.class_weights == "balanced" else None

    def log(record: dict) -> None:
        if topo.writes:
            append_jsonl(metrics_log, record)
            scalars.add(record)

    def checkpoint(folder: Path, with_optimizer: bool) -> None:
        if topo.writes:
            save_checkpoint(folder, model, tokenizer, labels, cfg, state, optimizer if with_optimizer else None)

    # ---- the loop
    step = state["step"]
    # the running means of the next train record: saved with `last`, so a resumed run logs the same values
    window = state.setdefault("window", _empty_window())
    stages: Dict[str, str] = {}  # the text logs of the last step
    window_start = time.time()
    with _deferred_signals() as signals, _rank_lost(last_dir, lambda: step), scalars, \
            tqdm(total=total_steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
                 disable=not topo.writes,
                 mininterval=1.0 if sys.stderr.isatty() else 30.0) as progress:  # a log file: a line per 30 s
        while step < total_steps:
            epoch, offset = divmod(step, steps_per_epoch)
            for indices in train_batches(lengths, tc.batch_size, cfg.data.bucket_batches, tc.seed, epoch)[offset:]:
                # batch: this rank's shard, padded as the whole batch is (batch statistics see the same tokens)
                shard = topo.shard(indices)
                width = batch_width(cfg.data, [lengths[i] for i in indices])
                batch = {k: paddle.to_tensor(v) for k, v in
                         collate([data["train"][i] for i in shard.indices], model.pad_token_id, width).items()}
                paddle.seed(topo.step_seed(tc.seed, step))  # dropout masks from (seed, rank, step) alone: exact resume
                started = time.time()
                if step in fresh_optimizer_at:  # also when resuming at that step: its checkpoint predates the restart
                    optimizer.restart()

                # plugins' per-batch work, forward, loss terms, backward and optimizer step
                try:
                    loss, step_logs = train_step(model, optimizer, batch, plugins, step,
                                                 shard if topo.world_size > 1 else None, class_weights)
                except NonFiniteError as exc:
                    raise _diverged(exc, step + 1, last_dir) from None
                window["logs"] = step_logs  # a record's logs are those of its own step
                for key, value in step_logs.items():  # a plugin's stage (a text) is announced when it changes
                    if isinstance(value, str) and value != stages.get(key) and topo.writes:
                        progress.write(f"step {step + 1}: {key} = {value}")
                    stages[key] = value
                schedule.step()
                step += 1
                state["train_seconds"] += time.time() - started

                # log
                window["loss"] += loss
                window["examples"] += len(indices)
                window["steps"] += 1
                if step % tc.log_every == 0 or step == total_steps:
                    speed = window["examples"] / (time.time() - window_start)
                    record = {"step": step, "epoch": epoch, "split": "train", "loss": window["loss"] / window["steps"],
                              "lr": optimizer.get_lr(), "examples_per_s": speed, **window["logs"]}
                    log(record)
                    progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", ex_s=f"{speed:.1f}")
                    state["window"] = window = _empty_window()
                    window_start = time.time()
                progress.update(1)

                # evaluate and checkpoint (rank 0; the others wait); after SIGINT or SIGTERM, save this step and stop
                if step % eval_every == 0 or step == total_steps:
                    dev = topo.from_rank0(lambda: evaluate(model, data["dev"], tc.eval_batch_size))
                    if not math.isfinite(dev["loss"]):
                        raise _diverged(NonFiniteError(f"the dev loss is {dev['loss']}"), step, last_dir)
                    for plugin in plugins.all():
                        plugin.on_evaluate(model, step, dev)
                    log({"step": step, "epoch": epoch, "split": "dev", **dev})
                    if topo.writes and any(intervention.active(step - 1) for intervention in plugins.interventions):
                        # the TI reference's view while step 1 trains: the student with the intervention on
                        log({"step": step, "epoch": epoch, "split": "dev_intervened", **evaluate(
                            model, data["dev"], tc.eval_batch_size, training_forward(model, plugins, step - 1))})
                    if topo.writes:
                        progress.write(f"step {step}: dev " + _format(dev))
                    if state["best_metric"] is None or dev[tc.select_metric] > state["best_metric"]:
                        state["best_metric"], state["best_step"] = dev[tc.select_metric], step
                        checkpoint(best_dir, with_optimizer=False)
                    state["step"] = step
                    checkpoint(last_dir, with_optimizer=True)
                    topo.barrier()
                stop = topo.largest(signals[0] if signals else 0)  # every rank stops at the same step
                if stop and step < total_steps:
                    if state["step"] != step:
                        state["step"] = step
                        checkpoint(last_dir, with_optimizer=True)
                    raise TrainingInterrupted(f"stopped by {signal.Signals(stop).name} at step {step} of "
                                              f"{total_steps}; saved {last_dir}", stop)
                if step >= total_steps:
                    break

    # ---- final evaluation of the best checkpoint (rank 0; the others wait for its results, and all end together)
    def final_results() -> dict:
        best_model = load_checkpoint(best_dir)[0]
        results = {"best_step": state["best_step"], "steps": step, "train_seconds": round(state["train_seconds"], 1),
                   "wall_seconds_this_process": round(time.time() - wall_start, 1), "environment": cpu_settings(),
                   "cpu": cpu_summary(), "dev": evaluate(best_model, data["dev"], tc.eval_batch_size)}
        if "test" in data:
            results["test"] = evaluate(best_model, data["test"], tc.eval_batch_size)
        write_json(out / "results.json", results)
        return results

    with _rank_lost(last_dir, lambda: step):
        results = topo.from_rank0(final_results)
        topo.finish()
    return results


def build_student(cfg: Config, plugins: Plugins, labels: LabelVocab):
    """(the model to train, its tokenizer): the classifier with every transform applied in order, the
    interventions installed and each plugin's `setup` done."""
    model, tokenizer = build_classifier(cfg.model, labels)
    model.net.ernie.embeddings.word_embeddings.weight.stop_gradient = cfg.train.freeze_word_embeddings
    for transform in plugins.ordered_transforms():
        model = transform.prepare(model)
    if plugins.interventions:
        taps_of(model).interventions = plugins.interventions
    for plugin in plugins.all():
        plugin.setup(model)
    return model, tokenizer


def make_optimizer(model, tc: TrainConfig, total_steps: int, groups: Sequence[ParamGroup] = (),
                   restarts: Optional[Dict[int, float]] = None):
    """(optimizer, its schedule): `train.optimizer` (ernie_qat.optim.adam), linear warm-up and decay, clipping to
    `train.max_grad_norm` (`train.grad_clip`: the global norm, or each parameter's own); no decay on biases,
    norms and the parameters of groups that ask for none; a group's `lr_scale` multiplies the scheduled rate.
    `restarts` {step: warm-up ratio} starts the schedule over at those steps (`staged_schedule`)."""
    schedule = staged_schedule(tc.learning_rate, total_steps, {0: tc.warmup_ratio, **(restarts or {})})
    no_decay = {p.name for n, p in model.named_parameters() if "bias" in n or "norm" in n}
    for group in groups:
        for param in group.params:
            param.optimize_attr["learning_rate"] = group.lr_scale
            if not group.weight_decay:
                no_decay.add(param.name)
    clip = {"global": paddle.nn.ClipGradByGlobalNorm, "per_parameter": paddle.nn.ClipGradByNorm}[tc.grad_clip]
    return OPTIMIZERS[tc.optimizer](
        learning_rate=schedule, parameters=[p for p in model.parameters() if not p.stop_gradient],
        weight_decay=tc.weight_decay, apply_decay_param_fun=lambda name: name not in no_decay,
        grad_clip=clip(tc.max_grad_norm) if tc.max_grad_norm > 0 else None), schedule


def staged_schedule(learning_rate: float, total_steps: int, stages: Dict[int, float]):
    """Linear warm-up then linear decay to 0, within each stage: `stages` maps each stage's first step
    to its warm-up ratio. One stage starting at 0 is PaddleNLP's LinearDecayWithWarmup itself."""
    if set(stages) == {0}:
        return LinearDecayWithWarmup(learning_rate, total_steps, stages[0])
    starts = sorted(s for s in stages if 0 <= s < total_steps)
    ends = starts[1:] + [total_steps]

    def factor(step: int) -> float:
        start, end = next((a, b) for a, b in zip(reversed(starts), reversed(ends)) if step >= a)
        local, length = step - start, end - start
        warmup = math.floor(stages[start] * length)
        if local < warmup:
            return local / max(1, warmup)
        return max(0.0, (length - local) / max(1, length - warmup))

    return paddle.optimizer.lr.LambdaDecay(learning_rate, factor)


def train_step(model, optimizer, batch: dict, plugins: Plugins, step: int, shard: Optional[Shard] = None,
               class_weights: Optional[paddle.Tensor] = None) -> Tuple[float, Dict[str, float]]:
    """One optimizer step on `batch` (input_ids, token_type_ids [B, L], labels [B] tensors).

    Plugins' `on_batch` run first; then the step strategy calls the closure, which runs the
    forward (interventions of `step` apply; the outputs loss terms need are recorded), the
    weighted cross-entropy with the labels (unless its weight is 0; its classes weighted by `class_weights` [C]
    if given, `train.class_weights`) plus the loss terms, and backward.
    Under data parallelism `batch` is this rank's `shard` of the global batch (None in a single process): batch
    statistics are the global batch's (`parallel.lockstep`), and after each backward the gradients, the loss and
    the loss terms' logs become the global batch's on every rank (`parallel.reduce_gradients`).

    Returns:
        (loss of the first closure call, logs: what plugins' `on_batch` returned, loss terms' values
        of the first call as `loss/<term>/<key>`, the strategy's as `step/<key>`).

    Raises:
        PluginError: the step strategy never called the closure.
        NonFiniteError: the loss or a gradient is NaN or infinite (raised before the update).
    """
    model.train()
    losses, first_logs, batch_logs = [], {}, {}

    def closure() -> paddle.Tensor:
        outputs = forward_outputs(model, batch, plugins.needs, step)
        loss, logs = None, {}
        if plugins.ground_truth_weight:
            loss = F.cross_entropy(outputs.logits, batch["labels"], weight=class_weights)
            if plugins.ground_truth_weight != 1:
                loss = plugins.ground_truth_weight * loss
        for term in plugins.loss_terms:
            extra, term_logs = term(model, outputs, batch, step)
            loss = extra if loss is None else loss + extra
            logs.update({f"loss/{term.name}/{key}": value for key, value in term_logs.items()})
        loss.backward()
        faults.reach("train.backward")
        if shard is not None:
            loss, logs = _whole_batch(model, loss, logs, shard.share)
        _check_finite(model, loss)
        if not losses:
            first_logs.update(logs)
        losses.append(loss)
        return loss

    strategy = plugins.step_strategy
    with lockstep(shard) if shard is not None else contextlib.nullcontext():  # every rank runs these forwards
        for plugin in plugins.all():
            batch_logs.update(plugin.on_batch(model, batch, step) or {})
        strategy_logs = strategy.step(model, optimizer, closure, step) or {}
    if not losses:
        raise PluginError(f"the optimizer-step strategy `{strategy.name}` ({type(strategy).__name__}) returned "
                          "without calling the closure: no forward or backward ran at this step.\n"
                          "HINT: `step(model, optimizer, closure, step)` must call `closure()` before "
                          "`optimizer.step()`")
    optimizer.clear_grad()
    return float(losses[0]), {**batch_logs, **first_logs,
                              **{f"step/{key}": value for key, value in strategy_logs.items()}}


def training_forward(model, plugins: Plugins, step: int):
    """batch -> logits [B, C] of the training forward at `step` (plugins' `on_batch`, such as a teacher, then
    the interventions active at `step`), without dropout when `model` is in eval mode."""
    def forward(batch: dict) -> paddle.Tensor:
        for plugin in plugins.all():
            plugin.on_batch(model, batch, step)
        return forward_outputs(model, batch, step=step).logits
    return forward


def _resumable(checkpoints: Path, resume: bool, topo: Topology) -> bool:
    """Whether the run continues from `checkpoints/last`, after rank 0 put back checkpoints whose save a crash
    interrupted. Raises RunExistsError for a run that `resume` does not ask for."""
    if not resume and ((checkpoints / "last").exists() or any(checkpoints.glob(".last.*"))):
        raise RunExistsError(f"`train.output_dir` {checkpoints.parent} already holds a run: pass --resume to "
                             "continue it, or choose another output_dir")
    if topo.writes:
        for name, copy in recover_checkpoints(checkpoints).items():
            print(f"recovered checkpoint `{name}` from a save a crash interrupted ({copy.name})", file=sys.stderr)
    found = topo.from_rank0(lambda: (checkpoints / "last").exists())  # once rank 0 has put it back
    if resume and not found:
        if topo.writes:
            print(f"--resume: no checkpoint in {checkpoints}: starting a fresh run", file=sys.stderr)
        return False
    if resume and not (checkpoints / "last").exists():
        raise UserError(f"rank {topo.rank} finds no `{checkpoints / 'last'}`, from which rank 0 resumes: on several "
                        "machines put `train.output_dir` on a file system they share, or copy it to every machine")
    return resume


def data_fingerprint(examples: Sequence[Example]) -> str:
    """A short hash of examples' texts and labels, in order: resuming on other data is refused."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.text, e.text_pair, e.label]).encode())
    return digest.hexdigest()[:16]


def source_identities(cfg: Config) -> Dict[str, str]:
    """{config key: identity} of the checkpoint folders the run reads (the starting model, the teacher):
    `folder_identity`, so that resuming after one of them changed is refused."""
    keys = {"model.name_or_path": cfg.model.name_or_path, "distill.teacher": cfg.distill.teacher}
    return {key: folder_identity(Path(path).expanduser()) for key, path in keys.items()
            if path and Path(path).expanduser().is_dir()}


def _check_resumable(cfg: Config, last_dir: Path, labels: LabelVocab, fingerprints: Dict[str, str],
                     sources: Dict[str, str]) -> None:
    """Raises ResumeMismatchError unless the run in `last_dir` had this config (but RESUME_FREE_KEYS),
    labels, data and source checkpoints."""
    saved = flat_dict(load_config(last_dir / "config.yaml").to_dict())
    now = flat_dict(cfg.to_dict())
    changed = differences(saved, now, RESUME_FREE_KEYS)
    saved_labels = LabelVocab.load(last_dir).labels
    if saved_labels != labels.labels:
        changed.append(f"labels: {saved_labels} -> {labels.labels}")
    state = read_trainer_state(last_dir)
    changed += [f"data: the {name} split's examples differ" for name, fingerprint in fingerprints.items()
                if name in state.get("data", {}) and state["data"][name] != fingerprint]
    changed += [f"{key}: the checkpoint at {now[key]} changed since the run started (its files differ)"
                for key, identity in state.get("sources", {}).items() if sources.get(key) != identity]
    if changed:
        raise ResumeMismatchError(f"cannot resume the run in {cfg.train.output_dir}: it was trained with another "
                                  "config or data, and continuing would mix the two:\n  " + "\n  ".join(changed) +
                                  "\nHINT: restore these values, or start a new run in another `train.output_dir`")


def _whole_batch(model, loss: paddle.Tensor, logs: Dict[str, float], share: float):
    """(loss, logs) of the global batch, every parameter's gradient made the global batch's too: one all-reduce."""
    params = [p for p in model.parameters() if p.grad is not None]
    values = reduce_gradients(params, share, [float(loss), *logs.values()])
    return paddle.to_tensor(values[0]), dict(zip(logs, values[1:]))


def _check_same_inputs(topo: Topology, inputs: dict) -> None:
    """Raises UserError on a rank whose data, labels or source checkpoints differ from rank 0's (a node of a
    data-parallel run with other files)."""
    rank0 = topo.from_rank0(lambda: inputs)
    differ = [key for key in inputs if inputs[key] != rank0[key]]
    if differ:
        raise UserError(f"rank {topo.rank} reads other {' and '.join(differ)} than rank 0 (the same paths hold other "
                        "files): every process of a data-parallel run, on every machine, needs the same data files "
                        "and checkpoints")


def _check_finite(model, loss: paddle.Tensor) -> None:
    """Raises NonFiniteError if the loss or any parameter's gradient holds NaN or infinity."""
    if not math.isfinite(float(loss)):
        raise NonFiniteError(f"the loss is {float(loss)}")
    named = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]
    if named and not bool(paddle.stack([paddle.isfinite(grad).all() for _, grad in named]).all()):
        name = next(name for name, grad in named if not bool(paddle.isfinite(grad).all()))
        raise NonFiniteError(f"the gradient of `{name}` holds NaN or infinity")


def _diverged(cause: NonFiniteError, step: int, last_dir: Path) -> NonFiniteError:
    """The error that stops a diverged run: what, at which step, and the checkpoint to go back to."""
    return NonFiniteError(f"training diverged at step {step}: {cause}; {_last_good(last_dir)}.\n"
                          "HINT: lower `train.learning_rate`, raise `train.warmup_ratio`, or keep "
                          "`train.max_grad_norm` > 0")


@contextlib.contextmanager
def _rank_lost(last_dir: Path, step: Callable[[], int]):
    """Within the block, RankLost (another rank of a data-parallel run stopped) also says the step and the
    checkpoint to go back to."""
    try:
        yield
    except RankLost as exc:
        raise RankLost(f"training stopped after step {step()}: {exc}; {_last_good(last_dir)}.\n"
                       "HINT: each rank's output is in the launcher's log folder (--log_dir, default ./log: "
                       "workerlog.<rank>); the rank that stopped first says why") from None


def _last_good(last_dir: Path) -> str:
    """Where a stopped run can continue from."""
    if not last_dir.exists():
        return "no checkpoint was saved before"
    saved = read_trainer_state(last_dir)["step"]
    return f"the last good checkpoint, {last_dir} (step {saved}), is intact: --resume continues from it"


def _empty_window() -> dict:
    return {"loss": 0.0, "examples": 0, "steps": 0, "logs": {}}


@contextlib.contextmanager
def _deferred_signals():
    """While the block runs, SIGINT and SIGTERM are recorded in the yielded list instead of stopping
    the process mid-step; a second SIGINT interrupts at once (KeyboardInterrupt)."""
    received: List[int] = []
    if threading.current_thread() is not threading.main_thread():  # only the main thread can take signals
        yield received
        return

    def record(signal_number, frame):
        if received and signal_number == signal.SIGINT:
            raise KeyboardInterrupt
        received.append(signal_number)

    with stop_signals_handled_by(record):
        yield received


def _format(metrics: Dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" if k == "loss" else f"{k}={v:.2f}" for k, v in metrics.items())
