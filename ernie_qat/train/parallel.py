"""Process topology of a run: which rank this process is, how many there are, the model behind a wrapper.

A single process is rank 0 of 1. Under `python -m paddle.distributed.launch` each process is one
rank; only rank 0 writes files, and each rank trains on its share of every batch.
"""
from dataclasses import dataclass
from typing import Sequence

import paddle


@dataclass(frozen=True)
class Topology:
    rank: int = 0
    world_size: int = 1

    @property
    def writes(self) -> bool:
        """Whether this process writes checkpoints, logs and results (rank 0 only)."""
        return self.rank == 0

    def shard(self, indices: Sequence[int]) -> list:
        """This rank's examples of a batch: every world_size-th, starting at rank."""
        return list(indices[self.rank::self.world_size])


def topology() -> Topology:
    """This process's rank and the number of processes (0 of 1 outside `paddle.distributed.launch`)."""
    world_size = paddle.distributed.get_world_size()
    return Topology(paddle.distributed.get_rank() if world_size > 1 else 0, world_size)


def unwrap(model: paddle.nn.Layer) -> paddle.nn.Layer:
    """The model inside a `paddle.DataParallel` wrapper, or `model` itself."""
    return model._layers if isinstance(model, paddle.DataParallel) else model
