"""Percentile bootstrap confidence intervals for the headline figures, cheap at any size.

All three headline figures depend on the rows only through the contingency table (truth x
prediction counts). Resampling n rows with replacement draws each table cell's count from a
multinomial over the cells with probabilities count / n, so drawing `rng.multinomial(n,
cells / n, size=B)` gives exactly the tables of B row-level resamples, in distribution. The
cost is B x k^2 draws (k classes) whatever n is: a thousand resamples of a million rows take
milliseconds instead of resampling a million indices a thousand times. Seeded through
`np.random.default_rng(seed)`, so a report reproduces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eval.scoring.metrics import HEADLINE, figures

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def as_list(self) -> list[float]:
        return [self.low, self.high]


def resample_tables(counts: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """`resamples` bootstrap contingency tables (resamples, k, k) of the table `counts` (k, k)."""
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    if n == 0:
        raise ValueError("cannot bootstrap an empty table")
    rng = np.random.default_rng(seed)
    drawn = rng.multinomial(n, counts.ravel() / n, size=resamples)
    return drawn.reshape(resamples, *counts.shape)


def headline_intervals(counts: np.ndarray, resamples: int, seed: int,
                       level: float = LEVEL) -> dict[str, Interval]:
    """Percentile intervals of attribution accuracy, NMI and detection accuracy."""
    values = figures(resample_tables(counts, resamples, seed))
    tail = (1 - level) / 2 * 100
    return {m: Interval(*(float(v) for v in np.percentile(values[m], [tail, 100 - tail])))
            for m in HEADLINE}
