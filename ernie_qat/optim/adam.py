"""The two Adam updates training can use (`train.optimizer`), both able to start their state over.

- `adamw`: Paddle's AdamW. With g the clipped gradient, t the parameter's update count, η the scheduled
  learning rate times the parameter's `lr_scale`, λ the weight decay (0 for biases, norms and groups
  without decay):
      m = β1·m + (1 − β1)·g,   v = β2·v + (1 − β2)·g²
      w −= η·λ·w + η·m̂/(√v̂ + ε),   m̂ = m/(1 − β1ᵗ), v̂ = v/(1 − β2ᵗ), ε = 1e-8
- `bert_adam`: the BertAdam of the TernaryBERT and TI reference code: the same without bias correction,
      w −= η·(m/(√v + ε) + λ·w),   ε = 1e-6
  so its first updates are (1 − β1ᵗ)/√(1 − β2ᵗ) times AdamW's: 3.2× at t = 1, 6.6× at t = 12 (the most),
  3.2× at t = 100, 1.3× at t = 1000.

BertAdam is Paddle's fused AdamW kernel with the powers β1ᵗ, β2ᵗ it keeps per parameter (accumulators
`beta1_pow_acc`, `beta2_pow_acc`) starting at 0 instead of β: the kernel scales the rate by
√(1 − β2ᵗ)/(1 − β1ᵗ) and ε by √(1 − β2ᵗ), both 1 when βᵗ = 0, and advances βᵗ by multiplying it
by β, so it stays 0. Its state is the one AdamW keeps, under the same names: `state_dict`,
`set_state_dict` and checkpoints work unchanged.
"""
import paddle


class AdamW(paddle.optimizer.AdamW):
    """Paddle's AdamW, plus `restart`, and resumable when some parameters had no update yet when it was saved."""

    def _add_accumulator(self, name, param, dtype=None, fill_value=0.0, shape=None, type=None, device=None):
        """Paddle's, but a parameter the loaded state has nothing for starts new: Paddle asserts while other
        loaded state waits (a TI run saved before V's first gradient, resumed into a stage that trains V)."""
        held = self._accumulators_holder
        if not any(key.startswith(f"{param.name}_{name}_") for key in held):
            self._accumulators_holder = {}
        try:
            return super()._add_accumulator(name, param, dtype, fill_value, shape, type, device)
        finally:
            self._accumulators_holder = held

    def start_value(self, accumulator: str) -> float:
        """The value a new optimizer's `accumulator` starts at: 0 for the moments, β for the powers βᵗ (t = 1)."""
        return {self._beta1_pow_acc_str: self._beta1, self._beta2_pow_acc_str: self._beta2}.get(accumulator, 0.0)

    def restart(self) -> None:
        """Moments and update counts as a new optimizer has them; the learning-rate schedule is not touched.

        State loaded by `set_state_dict` that no update has claimed yet (Paddle creates a parameter's
        accumulators at its first update) is dropped, so those accumulators start new too.
        """
        self._accumulators_holder.clear()
        for name, tensors in self._accumulators.items():
            for tensor in tensors.values():
                tensor.set_value(paddle.full_like(tensor, self.start_value(name)))


class BertAdam(AdamW):
    """Adam without bias correction, ε = 1e-6 (the module docstring)."""

    def __init__(self, **kwargs):
        super().__init__(epsilon=1e-6, **kwargs)

    def start_value(self, accumulator: str) -> float:
        return 0.0  # moments, and βᵗ: the kernel's bias correction is then 1

    def _add_accumulator(self, name, param, dtype=None, fill_value=0.0, shape=None, type=None, device=None):
        return super()._add_accumulator(name, param, dtype, self.start_value(name), shape, type, device)


OPTIMIZERS = {"adamw": AdamW, "bert_adam": BertAdam}
