"""A saved Paddle inference model (`prefix.pdmodel` / `.pdiparams`) opened in static mode for editing.

Export rewrites the graph PaddleSlim saves (ernie_qat.quant.onednn, ernie_qat.quant.int8_storage). (The
predictor's rebuild of int8 weights at load reads the files with numpy instead: ernie_qat.quant.params_file.)

Example:
    with opened_model("deploy/r8_int8/model") as model:
        weight = model.tensor(model.block.ops[0].input("X")[0])
        model.save("deploy/r8_int8/model")
"""
import contextlib
from dataclasses import dataclass
from typing import Iterator, List

import numpy as np
import paddle


@dataclass
class OpenedModel:
    """The program, its feed and fetch targets, and the scope holding its persistable tensors.

    Its methods work only inside the `opened_model` block that made it (static mode, its scope).
    """
    program: paddle.static.Program
    scope: paddle.static.Scope
    executor: paddle.static.Executor
    feeds: List[str]
    fetches: list

    @property
    def block(self):
        return self.program.global_block()

    def tensor(self, name: str) -> np.ndarray:
        return np.array(self.scope.find_var(name).get_tensor())

    def set_tensor(self, name: str, value: np.ndarray) -> None:
        self.scope.var(name).get_tensor().set(value, paddle.CPUPlace())

    def save(self, prefix: str) -> None:
        paddle.static.save_inference_model(prefix, self._feed_vars(), self.fetches, self.executor,
                                           program=self.program)

    def _feed_vars(self):
        return [self.block.var(name) for name in self.feeds]


@contextlib.contextmanager
def opened_model(prefix: str) -> Iterator[OpenedModel]:
    """Load the model at `prefix` into a fresh scope, in static mode until the block ends."""
    paddle.enable_static()
    try:
        scope, executor = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
        with paddle.static.scope_guard(scope):
            program, feeds, fetches = paddle.static.load_inference_model(prefix, executor)
            yield OpenedModel(program, scope, executor, feeds, fetches)
    finally:
        paddle.disable_static()
