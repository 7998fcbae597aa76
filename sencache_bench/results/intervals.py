"""95% bootstrap interval of a row's mean over its (prompt, seed) items (what a row is; how rows compare is
results/paired.py's: on the per-video differences).

The percentile bootstrap (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13): resample
the n per-video values with replacement ``resamples`` times, take each resample's mean, and report the
(1 - level)/2 and (1 + level)/2 quantiles of those means (``inverted_cdf``: an order statistic, no
interpolation, so an infinite value cannot turn a bound into NaN). Seeded: the same values give the same
interval on every machine. One item has no spread to resample: its interval is the value itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 4000
SEED = 0


def bootstrap_interval(values: Sequence[float | None], level: float = LEVEL, resamples: int = RESAMPLES,
                       seed: int = SEED) -> tuple[float | None, float | None]:
    """(lo, hi) of the mean of ``values`` (None and NaN entries, i.e. missing values, left out); (None, None)
    without values."""
    x = np.asarray([v for v in values if v is not None and v == v], dtype=float)
    if x.size == 0:
        return None, None
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return float(lo), float(hi)
