"""PaddleSlim's moving-average activation observers over the global batch, for data-parallel training.

PaddleSlim's activation fake-quant (`FakeQuantMovingAverageAbsMax`) keeps a moving average of each
step's max|x|: state = r·state + 1, accum = r·accum + max|x|, scale = accum / state. Under data
parallelism each rank sees only its shard, so its max, and soon its scale, would be its own, and
the checkpoint would depend on the rank that saved it. `GlobalBatchObservers`, a training-only
transform installed when several processes train, makes each step's max|x| the whole batch's
(the largest over the ranks, `parallel.batch_max`): every rank's state equals the others' and a
single process's on the same batches.

Paddle's own switch for this, `reduce_type="max"`, does not do it in Paddle 2.6.2: it all-reduces
the previous scale before the update, and each rank's accumulators still take their own shard's
max, so they drift apart; and it communicates in evaluation too, which rank 0 runs alone.
"""
import numpy as np
import paddle
from paddle.nn.quant.quant_layers import FakeQuantMovingAverageAbsMax

from ernie_qat.models.classifier import replace_sublayer
from ernie_qat.train.hooks import TRAINING, TRANSFORMS, ModelTransform
from ernie_qat.train.parallel import batch_max, topology


@paddle.no_grad()
def update_moving_average(observer: FakeQuantMovingAverageAbsMax, largest: paddle.Tensor) -> None:
    """Paddle's moving-average abs-max update of `observer` (state, accum, scale) in float32, with `largest`
    (a 0-D or [1] tensor) as this step's max|x|."""
    rate = np.float32(observer._moving_rate)
    state = rate * np.float32(observer._state.item()) + np.float32(1)
    accum = rate * np.float32(observer._accum.item()) + np.float32(largest.item())
    observer._state.set_value(np.array([state], np.float32))
    observer._accum.set_value(np.array([accum], np.float32))
    observer._scale.set_value(np.array([accum / state], np.float32))


class GlobalBatchMovingAverageAbsMax(FakeQuantMovingAverageAbsMax):
    """PaddleSlim's activation observer (same scale, state and accum parameters) whose training update takes
    max|x| over the global batch; it quantizes as in evaluation, with the updated scale."""

    def __init__(self, observer: FakeQuantMovingAverageAbsMax):
        super().__init__(moving_rate=observer._moving_rate, quant_bits=observer._quant_bits)
        self._scale, self._state, self._accum = observer._scale, observer._state, observer._accum

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        update_moving_average(self, batch_max(paddle.max(paddle.abs(x.detach()))))
        self.training = False  # Paddle's op, updating nothing more; its gradient passes straight through
        try:
            return super().forward(x)
        finally:
            self.training = True


class GlobalBatchObservers(ModelTransform):
    """Training-only: every PaddleSlim moving-average observer of the student becomes a global-batch one."""
    name, role, order = "global_batch_observers", TRAINING, 80  # before fast_cpu_ops (90), which keeps the observers

    def prepare(self, model):
        for name, layer in list(model.named_sublayers()):
            if type(layer) is FakeQuantMovingAverageAbsMax:
                replace_sublayer(model, name, GlobalBatchMovingAverageAbsMax(layer))
        return model


@TRANSFORMS.register("global_batch_observers", role=TRAINING)
def build_global_batch_observers(cfg) -> "GlobalBatchObservers | None":
    return GlobalBatchObservers() if cfg.quant.method != "none" and topology().world_size > 1 else None
