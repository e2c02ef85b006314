"""Paired bootstrap intervals for the difference between two methods' top-1 over tasks.

Both methods are scored on the same images, so the difference is resampled in pairs: each
replicate draws, per task, the task's classes with replacement and then, for every class drawn,
that many images of the class with replacement (the two-level resampling of a benchmark whose
classes and images are both samples). The statistic is the mean over tasks of the per-task
top-1 difference, as the benchmark's "average" row is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

REPLICATES = 2000
LEVEL = 0.95
SEED = 0


@dataclass(frozen=True)
class Interval:
    """A difference (``estimate``) and its ``level`` percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    level: float
    replicates: int

    @property
    def above_zero(self) -> bool:
        return self.low > 0

    def to_dict(self) -> dict[str, float | int | bool]:
        return {"estimate": round(self.estimate, 4), "low": round(self.low, 4),
                "high": round(self.high, 4), "level": self.level,
                "replicates": self.replicates, "above_zero": self.above_zero}


def paired_bootstrap(tasks: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                     replicates: int = REPLICATES, level: float = LEVEL,
                     seed: int = SEED) -> Interval:
    """The interval of mean-over-tasks top-1(a) - top-1(b).

    Args:
        tasks: per task, (a, b, targets): whether method a and method b got each image right
            (bool, (n,)) and each image's class.
    """
    rng = np.random.default_rng(seed)
    est = float(np.mean([np.mean(a) - np.mean(b) for a, b, _ in tasks]))
    reps = np.zeros(replicates)
    for a, b, y in tasks:
        d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
        classes = np.unique(y)
        draws = rng.multinomial(len(classes), np.full(len(classes), 1 / len(classes)),
                                size=replicates)  # (R, C) times each class is drawn
        total = np.zeros(replicates)
        count = np.zeros(replicates)
        for j, c in enumerate(classes):
            dc = d[y == c]
            n = len(dc)
            # a class drawn m times contributes m resamples of its n images: Multinomial(m n)
            counts = rng.multinomial(draws[:, j] * n, np.full(n, 1 / n))  # (R, n)
            total += counts @ dc
            count += draws[:, j] * n
        reps += total / np.maximum(count, 1)
    reps /= max(len(tasks), 1)
    lo, hi = np.quantile(reps, [(1 - level) / 2, 1 - (1 - level) / 2])
    return Interval(est, float(lo), float(hi), level, replicates)
