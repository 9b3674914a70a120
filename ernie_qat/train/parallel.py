"""Data parallelism under `python -m paddle.distributed.launch`: ranks, shards, and what the ranks exchange.

A single process is rank 0 of 1 and communicates nothing. Under the launcher each process is one
rank (gloo on CPU, NCCL on GPUs) and a 2-process run computes what one process computes on the
same global batch, up to float rounding:

- Shards. Every rank reads the same deterministic batch order; each takes every world_size-th example
  of a batch, starting at its rank (`Topology.shard`). A batch with fewer examples than ranks (an
  epoch's last) is run whole by every rank. A rank's `share` is its examples over all ranks' examples.
- Gradients. After each backward, one all-reduce of one flat buffer makes every rank's gradient
  Σ_r share_r·g_r (`reduce_gradients`): for a loss that is a mean over examples, the gradient of its
  mean over the whole batch. The loss and the loss terms' logs travel in the same buffer, so every
  rank checks and logs the whole batch's values. SAM's two passes are two backwards: one all-reduce each.
- Batch statistics. Inside a training step (`lockstep`), what a quantizer takes from the batch is taken
  over every rank's shard (`batch_max`, `batch_mean`, `batch_count`), so its state is the same on every
  rank and a single process's.
- Rank 0's own work. Evaluation and checkpoints are rank 0's (`from_rank0`, `barrier`). Paddle 2.6's gloo
  collectives give up after 30 s, a limit Python cannot change, so the other ranks wait for rank 0 on
  Paddle's TCP store instead, polling it, with no time limit.
"""
import contextlib
import ctypes
import io
import itertools
import logging
import os
import pickle
import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable, Iterator, List, NoReturn, Sequence, TypeVar

import paddle
import paddle.distributed as dist

from ernie_qat.errors import UserError

T = TypeVar("T")
_RANK_SEED_STRIDE = 1 << 40  # keeps each rank's dropout seeds apart from every other rank's at any step
_POLL_SECONDS = 0.05
_started: List[bool] = []  # [True] once `start` set up the process group of a data-parallel run
_lockstep: List["Shard"] = []  # this rank's shard while every rank runs the same forwards (a training step)
_keys = itertools.count()  # names of the TCP store's entries: every rank draws them in the same order


class RankLost(UserError):
    """Another rank of a data-parallel run stopped (exited, was killed, or cannot be reached)."""
    exit_code = 1


@dataclass(frozen=True)
class Topology:
    rank: int = 0
    world_size: int = 1

    @property
    def writes(self) -> bool:
        """Whether this process writes checkpoints, logs and results (rank 0 only)."""
        return self.rank == 0

    def shard(self, indices: Sequence[int]) -> "Shard":
        """This rank's part of the batch `indices`: every world_size-th example, starting at rank; all of a batch
        smaller than the number of ranks."""
        if len(indices) < self.world_size:
            return Shard(list(indices), len(indices), self.world_size * len(indices))
        return Shard(list(indices[self.rank::self.world_size]), len(indices), len(indices))

    def step_seed(self, seed: int, step: int) -> int:
        """The random seed of `step` on this rank (dropout masks): from (seed, rank, step) alone, so a resumed run
        draws the masks an uninterrupted one draws; rank 0's is the single-process seed."""
        return seed * 1_000_003 + step + self.rank * _RANK_SEED_STRIDE

    def from_rank0(self, compute: Callable[[], T]) -> T:
        """`compute()` run by rank 0 alone and its result (picklable) given to every rank; the others wait for it
        on the TCP store, without a time limit. Raises RankLost on the others if rank 0's `compute` failed."""
        if self.world_size == 1:
            return compute()
        key = f"ernie_qat/{next(_keys)}"
        store = _store()
        if self.rank == 0:
            try:
                value = compute()
            except BaseException as exc:
                store.set(key, pickle.dumps(_Failed(f"{type(exc).__name__}: {exc}")))
                store.add(key + "/ready", 1)
                raise
            store.set(key, pickle.dumps(value))
            store.add(key + "/ready", 1)
            return value
        _wait_for(store, key + "/ready", 1)
        value = pickle.loads(bytes(_talk(lambda: store.get(key))))
        if isinstance(value, _Failed):
            raise RankLost(f"rank 0 stopped: {value.message}")
        return value

    def barrier(self) -> None:
        """Wait until every rank gets here (say, while rank 0 writes), on the TCP store, without a time limit."""
        if self.world_size == 1:
            return
        key = f"ernie_qat/{next(_keys)}"
        store = _store()
        _talk(lambda: store.add(key, 1))
        _wait_for(store, key, self.world_size)

    def finish(self) -> None:
        """The run's last exchange: the other ranks say they are done with the TCP store, and rank 0, which serves
        it, waits for them before it may exit."""
        if self.world_size == 1:
            return
        key = f"ernie_qat/{next(_keys)}"
        store = _store()
        if self.rank == 0:
            _wait_for(store, key, self.world_size - 1)
        else:
            _talk(lambda: store.add(key, 1))

    def largest(self, value: int) -> int:
        """The largest of the ranks' `value`s (each rank passes its own): an agreement, such as on a stop signal."""
        if self.world_size == 1:
            return value
        total = paddle.to_tensor([value], dtype="int64")
        _talk(lambda: dist.all_reduce(total, op=dist.ReduceOp.MAX))
        return int(total.item())


@dataclass(frozen=True)
class Shard:
    """One rank's part of a global batch."""
    indices: List[int]   # its examples
    batch: int           # examples in the global batch
    everyone: int        # examples over all ranks (the batch, or world_size copies of a batch run whole by each)

    @property
    def share(self) -> float:
        """Its weight in the batch's gradient, loss and logs: its examples over every rank's."""
        return len(self.indices) / self.everyone

    @property
    def fraction(self) -> float:
        """Its examples over the batch's (1 for a batch every rank runs whole)."""
        return len(self.indices) / self.batch


@dataclass(frozen=True)
class _Failed:
    message: str


def topology() -> Topology:
    """This process's rank and the number of processes (0 of 1 outside `paddle.distributed.launch`), as the
    launcher's environment says."""
    env = dist.ParallelEnv()
    return Topology(env.rank if env.world_size > 1 else 0, env.world_size)


def launcher_arguments() -> List[str]:
    """The launcher's arguments before the script (none outside the launcher), for a command that resumes the run;
    with several nodes its `--master` or `--ips` is to be added, as the run was started."""
    if topology().world_size == 1:
        return []
    nodes = os.environ.get("PADDLE_NNODES", "1")
    return ["-m", "paddle.distributed.launch", *([] if nodes == "1" else ["--nnodes", nodes]),
            "--nproc_per_node", os.environ.get("PADDLE_LOCAL_SIZE", "1")]


def start() -> Topology:
    """Set up this process's part of a data-parallel run (nothing in a single process): the process group, and a
    SIGTERM when the launcher dies, since the launcher starts its ranks in sessions of their own, where killing
    it alone would leave them training."""
    topo = topology()
    if topo.world_size > 1 and not _started:
        launcher = os.getppid()
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
            if os.getppid() != launcher:  # it died before prctl took effect
                os.kill(os.getpid(), signal.SIGTERM)
        with contextlib.redirect_stderr(io.StringIO()):  # its banner lists the FLAGS ernie_qat.env set on purpose
            dist.init_parallel_env()
        _started.append(True)
    return topo


def started() -> bool:
    """Whether `start` set up a data-parallel run's process group in this process."""
    return bool(_started)


def exit_rank(code: int) -> NoReturn:
    """End this rank with `code`, its work done and its files closed, skipping the interpreter's teardown: there,
    Paddle 2.6 destroys the gloo process group (an `atexit` hook), which sometimes aborts (SIGABRT) once the other
    ranks have gone, and the launcher then reports a run that wrote complete results as failed (exit code 250)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def broadcast_state(model: paddle.nn.Layer) -> None:
    """Give every rank rank 0's parameters and buffers (ranks build the same model from the same seed; this makes
    certain of it)."""
    if not _started:
        return
    with paddle.no_grad():
        for tensor in model.state_dict().values():
            _talk(lambda: dist.broadcast(tensor, src=0))


def reduce_gradients(params: Sequence[paddle.Tensor], share: float, values: Sequence[float]) -> List[float]:
    """Make each parameter's gradient, and each of `values`, the whole batch's: Σ over ranks of share·(the rank's),
    with one all-reduce of one flat buffer. Returns the reduced `values`."""
    grads = [p.grad for p in params]
    flat = paddle.concat([g.flatten() for g in grads] + [paddle.to_tensor(list(values), dtype=grads[0].dtype)])
    flat = flat * share
    _talk(lambda: dist.all_reduce(flat))
    offset = 0
    with paddle.no_grad():
        for grad in grads:
            grad.set_value(flat[offset:offset + grad.size].reshape(grad.shape))
            offset += grad.size
    return flat[offset:].tolist()


@contextlib.contextmanager
def lockstep(shard: Shard) -> Iterator[None]:
    """Marks forwards that every rank runs at once, each on its `shard` of one batch (a training step's): batch
    statistics in it (`batch_max`, `batch_mean`, `batch_count`) are the whole batch's. Evaluation, rank 0's alone,
    runs outside."""
    _lockstep.append(shard)
    try:
        yield
    finally:
        _lockstep.pop()


def batch_max(x: paddle.Tensor) -> paddle.Tensor:
    """The largest element of `x` (a 0-D or [1] tensor, no gradient) over every rank's inside `lockstep`; `x` itself
    otherwise."""
    if not (_started and _lockstep):
        return x
    x = x.clone()
    _talk(lambda: dist.all_reduce(x, op=dist.ReduceOp.MAX))
    return x


def batch_mean(x: paddle.Tensor) -> paddle.Tensor:
    """The mean of `x` [rows, k] over its rows (no gradient) -> [k]: over every rank's rows inside `lockstep`."""
    if not (_started and _lockstep):
        return x.mean(axis=0)
    total = paddle.concat([x.sum(axis=0), paddle.to_tensor([x.shape[0]], dtype=x.dtype)])
    _talk(lambda: dist.all_reduce(total))
    return total[:-1] / total[-1]


def batch_count(count: int) -> int:
    """The whole batch's number of elements of a kind of which this rank's shard holds `count` (elements of an
    activation: as many per example on every rank, each padded to the batch's width), inside `lockstep`."""
    if not (_started and _lockstep):
        return count
    return round(count / _lockstep[-1].fraction)


def unwrap(model: paddle.nn.Layer) -> paddle.nn.Layer:
    """The model inside a `paddle.DataParallel` wrapper, or `model` itself."""
    return model._layers if isinstance(model, paddle.DataParallel) else model


def _store():
    return paddle.base.core.create_or_get_global_tcp_store()


def _wait_for(store, key: str, count: int) -> None:
    """Poll `key`, a counter on the store, until it reaches `count`."""
    while _talk(lambda: store.add(key, 0)) < count:
        time.sleep(_POLL_SECONDS)


def _talk(call: Callable[[], T]) -> T:
    """`call()`, a collective or a store request; a failure of communication becomes RankLost."""
    try:
        return call()
    except (RuntimeError, OSError, ValueError) as exc:  # gloo raises RuntimeError, Paddle's store ValueError
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RankLost(f"another process of this data-parallel run stopped or cannot be reached ({detail})") from None
