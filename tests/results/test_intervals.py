"""Bootstrap intervals against the exact resampling distribution worked out by hand."""

from __future__ import annotations

import math

import pytest

from sencache_bench.results.intervals import bootstrap_interval


def test_interval_of_0_0_0_0_3_by_hand():
    # values (0, 0, 0, 0, 3): a resample's mean is 3k/5 with k ~ Binomial(5, 1/5) threes drawn.
    # P(k=0) = 0.32768, P(k<=2) = 0.94208, P(k<=3) = 0.99328: the 2.5% quantile is 0 and the 97.5% quantile is
    # the k = 3 level, 3 * 3 / 5 = 1.8 (the sample quantiles of 4000 resamples land on these levels: the
    # cumulative probabilities 0.942 and 0.993 are many standard errors, sqrt(.975 * .025 / 4000) = 0.0025, away)
    pmf = [math.comb(5, k) * 0.2**k * 0.8 ** (5 - k) for k in range(6)]
    assert sum(pmf[:3]) == pytest.approx(0.94208) and sum(pmf[:4]) == pytest.approx(0.99328)
    assert bootstrap_interval([0, 0, 0, 0, 3]) == (0.0, pytest.approx(1.8))


def test_two_values_and_the_edges():
    # (a, b): the resample mean is a, (a+b)/2 or b with probabilities 1/4, 1/2, 1/4: the interval is [a, b]
    assert bootstrap_interval([10.0, 20.0]) == (10.0, 20.0)
    assert bootstrap_interval([]) == (None, None) and bootstrap_interval([None, None]) == (None, None)
    assert bootstrap_interval([4.0, None]) == (4.0, 4.0)  # one item: nothing to resample
    assert bootstrap_interval([5.0] * 7) == (5.0, 5.0)


def test_seeded_and_covers_the_mean():
    values = [31.2, 28.4, 35.0, 30.1, 29.9, 33.3, 27.5, 32.8]
    lo, hi = bootstrap_interval(values)
    assert (lo, hi) == bootstrap_interval(values)  # the same on every call
    assert lo < sum(values) / len(values) < hi and min(values) < lo and hi < max(values)
    assert bootstrap_interval(values, seed=1) != (lo, hi)


def test_infinite_values_do_not_become_nan():
    # (inf, 40, 41), e.g. a video identical to its reference: all-40 resamples have probability 1/27 = 0.037 > 2.5%,
    # so the lower bound is 40; 1 - (2/3)^3 = 70% of the resamples hold the inf, so the upper one is inf
    assert bootstrap_interval([float("inf"), 40.0, 41.0]) == (40.0, float("inf"))


def test_nan_is_a_missing_value():
    # a video without LPIPS (NaN from pandas) is left out like None: never [nan, nan]
    assert bootstrap_interval([10.0, float("nan"), 20.0]) == (10.0, 20.0)
    assert bootstrap_interval([float("nan")]) == (None, None)
