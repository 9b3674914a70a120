"""Time one training-step engine of the checkout on PYTHONPATH: 3 warm-up steps, then N timed steps.

    PYTHONPATH=CHECKOUT python experiments/step_ab.py fp32|qat STEPS OUT.json

The MiniLM shape at batch 32 × 128 tokens, as `tools/benchmark.py --train` times it, with more
steps: experiments/regression.sh alternates checkouts with it, on a machine whose step times
wander by 10-20% between runs of 5 steps.
"""
import json
import sys
import time

try:
    from ernie_qat.benchmark.training import paddle_step_timer
except ImportError:  # revisions before the benchmarks moved into ernie_qat/benchmark/
    from ernie_qat.benchmark_train import paddle_step_timer

engine, steps, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
step = paddle_step_timer("minilm", 32, 128, qat=engine == "qat")
for _ in range(3):
    step()
times = []
for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
with open(out, "w") as f:
    json.dump(times, f)
