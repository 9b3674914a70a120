"""Paired comparisons of two methods on the same test examples, seeds paired.

Inputs are boolean arrays [seeds, examples]: whether each seed's model got each example right, the
rows of both methods in the same seed order. `mcnemar` pools the discordant pairs over the seeds;
`paired_bootstrap` resamples test examples (the same resample for every seed) to bound the
difference of the mean accuracy over seeds.
"""
from typing import NamedTuple

import numpy as np
from scipy.stats import binomtest

RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CHUNK = 500  # resamples drawn at a time (memory: CHUNK × examples indices)


class McNemar(NamedTuple):
    b: int      # baseline right, method wrong (pooled over seeds)
    c: int      # method right, baseline wrong
    p: float    # exact two-sided: binomial test of b among b + c discordant pairs at 1/2; 1 if none


class Difference(NamedTuple):
    mean: float  # method − baseline accuracy, points, mean over seeds
    low: float   # 2.5th percentile of the bootstrap distribution, points
    high: float  # 97.5th percentile


def mcnemar(baseline: np.ndarray, method: np.ndarray) -> McNemar:
    """McNemar's exact test of two methods' correctness [seeds, examples], pooled over seeds."""
    b = int(np.sum(baseline & ~method))
    c = int(np.sum(method & ~baseline))
    return McNemar(b, c, float(binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0)


def paired_bootstrap(baseline: np.ndarray, method: np.ndarray, resamples: int = RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> Difference:
    """The accuracy difference (method − baseline, points, mean over seeds) and its percentile 95% interval
    over `resamples` resamples of the test examples with replacement (numpy generator seeded with `seed`)."""
    per_example = (method.astype(float) - baseline.astype(float)).mean(axis=0)  # [examples]
    rng = np.random.default_rng(seed)
    n = len(per_example)
    means = np.concatenate([per_example[rng.integers(0, n, (min(CHUNK, resamples - start), n))].mean(axis=1)
                            for start in range(0, resamples, CHUNK)])
    low, high = np.percentile(means, [2.5, 97.5])
    return Difference(100.0 * float(per_example.mean()), 100.0 * float(low), 100.0 * float(high))
