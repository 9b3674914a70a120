"""Deterministic fault injection, for the reliability tests (tests/test_faults.py, tests/test_distributed.py).

With `ERNIE_QAT_FAULT=<point>[#<n>][@<rank>][:<SIGNAL>]` in the environment, this process sends itself
SIGNAL (default SIGKILL) the n-th time (default the first) it passes `point`; with `@<rank>`, only the
process of that rank under `paddle.distributed.launch` does (its `PADDLE_TRAINER_ID`; a single process
is rank 0). Without the variable, `reach` does nothing. The points:

    checkpoint.written  save_checkpoint: its files are written, not yet the manifest completing them
    folder.staged       atomic_folder: the new folder is written beside its target, not yet moved in
    folder.aside        atomic_folder: the old target is moved aside, the new one not yet moved in
    folder.swapped      atomic_folder: the new folder is in place, the old one not yet deleted
    train.backward      trainer: a step's backward ran; not yet its all-reduce (data parallel) nor its update
"""
import collections
import os
import signal

ENV = "ERNIE_QAT_FAULT"
_passes: collections.Counter = collections.Counter()


def reach(point: str) -> None:
    """Mark that this process passed `point`; raise the configured signal if it is the chosen pass."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    where, _, signal_name = spec.partition(":")
    where, _, rank = where.partition("@")
    name, _, nth = where.partition("#")
    if name != point or (rank and rank != os.environ.get("PADDLE_TRAINER_ID", "0")):
        return
    _passes[point] += 1
    if _passes[point] == int(nth or 1):
        os.kill(os.getpid(), getattr(signal, signal_name or "SIGKILL"))
