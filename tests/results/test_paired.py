"""Paired comparisons (results/paired.py) against scipy.stats and hand-worked cases, and the verdicts built on them."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
import scipy.stats as st

from sencache_bench.results import paired
from sencache_bench.results.intervals import bootstrap_interval


def rows(*columns):
    """Per-video value dicts keyed like reference keys."""
    return [{f"v{i}": float(x) for i, x in enumerate(col) if x is not None} for col in columns]


def test_interval_and_p_agree_with_scipy():
    rng = np.random.default_rng(1)
    base = rng.normal(45, 6, 60)
    for effect in (0.3, 0.8):
        a, b = base + rng.normal(effect, 2.0, 60), base
        pair = paired.compare_pair(*rows(a, b), "psnr")
        boot = st.bootstrap((a, b), lambda x, y, axis: np.mean(x - y, axis=axis), paired=True, method="percentile",
                            n_resamples=100_000, rng=0).confidence_interval
        se = np.std(a - b, ddof=1) / math.sqrt(60)
        assert pair.diff == pytest.approx(np.mean(a - b), abs=1e-12) and pair.n == 60 and pair.left_out == 0
        assert pair.lo == pytest.approx(boot.low, abs=0.15 * se) and pair.hi == pytest.approx(boot.high, abs=0.15 * se)
        # the bootstrap p-value sits near the paired t-test's (a normal mean: both approximate the same tail)
        t = st.ttest_rel(a, b).pvalue
        assert 0.6 < pair.p / t < 1.4, (pair.p, t)


def test_constant_difference_and_p_floor():
    # 1.5 dB better on every video: the interval is the difference itself and p is the +1-corrected floor
    pair = paired.compare_pair(*rows([41.5] * 8, [40.0] * 8), "psnr")
    assert (pair.diff, pair.lo, pair.hi) == pytest.approx((1.5, 1.5, 1.5))
    assert pair.p == pytest.approx(2 / (paired.RESAMPLES + 1))


def test_prompt_spread_cancels_in_the_pairs():
    # the reviewer case: 60 videos, prompt spread 6 dB, one policy 1.5 dB (+- 0.3) better on every video:
    # the rows' own intervals overlap, the paired difference is far from 0
    rng = np.random.default_rng(0)
    base = rng.normal(44, 6, 60)
    a, b = base + 1.5 + rng.normal(0, 0.3, 60), base
    lo_a, hi_a = bootstrap_interval(list(a))
    lo_b, hi_b = bootstrap_interval(list(b))
    assert lo_a <= hi_b  # unpaired: "overlap", the old rule's tie
    comp = paired.compare_group([[rec(k, v) for k, v in r.items()] for r in rows(a, b)], "psnr")
    pair = comp.pairs[0]
    assert 1.3 < pair.lo < pair.diff < pair.hi < 1.7 and pair.separated
    assert comp.letters == ["a", "b"] and comp.best == 0


def rec(key, psnr=None, lpips=None, speedup=None, steady=True):
    out = {"reference": {"key": key}, "metrics": {"psnr": psnr, "lpips": lpips}}
    if speedup is not None:
        out["timing"] = {"speedup": speedup, "steady": steady}
    return out


def test_missing_values_leave_the_video_out_and_are_counted():
    a = [rec(f"v{i}", lpips=0.1 + 0.01 * i) for i in range(8)]
    b = [rec(f"v{i}", lpips=0.1 + 0.01 * i) for i in range(8)]
    a[3]["metrics"]["lpips"] = float("nan")  # one video without LPIPS
    b[5]["metrics"]["lpips"] = None
    comp = paired.compare_group([a, b], "lpips")
    pair = comp.pairs[0]
    assert (pair.n, pair.left_out) == (6, 2) and pair.diff == 0 and not pair.separated
    assert comp.best is None and comp.letters == ["a", "a"]  # equal means: no bold, one group
    # and the row's own interval is not [nan, nan]
    lo, hi = bootstrap_interval([r["metrics"]["lpips"] for r in a])
    assert not math.isnan(lo) and not math.isnan(hi)


def test_best_must_be_separated_from_every_row_not_only_the_runner_up():
    # A 40 (+-0.5), B 38 (+-0.2), C 37 with a wide spread that covers A: A is not bold
    rng = np.random.default_rng(3)
    n = 12
    a = 40 + rng.normal(0, 0.5, n)
    b = 38 + rng.normal(0, 0.2, n)
    c = 37 + 12 * np.array([1, -1] * (n // 2))  # mean 37, spread 12: its interval covers A's
    comp = paired.compare_group([[rec(f"v{i}", psnr=x) for i, x in enumerate(col)] for col in (a, b, c)], "psnr")
    by = {(p.a, p.b): p for p in comp.pairs}
    assert by[(0, 1)].separated and not by[(0, 2)].separated
    assert comp.best is None
    assert comp.letters[0] == "a" and "a" in comp.letters[2] and comp.letters[1] != "a"


def test_a_row_of_one_video_makes_no_claim():
    comp = paired.compare_group([[rec("v0", psnr=40.01)], [rec("v0", psnr=40.00)]], "psnr")
    pair = comp.pairs[0]
    assert pair.p is None and pair.lo is None and not pair.separated and "no claim" in pair.note
    assert comp.best is None and comp.letters == ["a", "a"]


def test_speedup_on_the_log_scale_and_unsteady_items_left_out():
    a = [rec(f"v{i}", speedup=2.0 * (1.1 if i % 2 else 1 / 1.1)) for i in range(6)]
    b = [rec(f"v{i}", speedup=1.6 * (1.1 if i % 2 else 1 / 1.1)) for i in range(6)]
    b.append(rec("v6", speedup=9.0, steady=False))
    pair = paired.compare_group([a, b], "speedup").pairs[0]
    assert (pair.diff, pair.lo, pair.hi) == pytest.approx((1.25, 1.25, 1.25)) and pair.n == 6 and pair.left_out == 1


def test_holm_by_hand():
    assert paired.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert paired.holm([0.2, None, 0.01]) == [pytest.approx(0.2), None, pytest.approx(0.02)]


def _pair(a, b, sep):
    p = paired.Pair(a, b, "psnr", n=10, left_out=0, p=0.001 if sep else 0.5)
    p.p_adj = p.p
    return p


def test_letters_by_hand():
    # means A 3 > C 2 > B 1; only A-B separated: A "a", C "ab", B "b"
    assert paired.letters([3, 1, 2], [_pair(0, 1, True), _pair(0, 2, False), _pair(1, 2, False)], "max") == \
        ["a", "b", "ab"]
    # every pair separated: three groups; lower is better for LPIPS
    assert paired.letters([0.3, 0.1, 0.2], [_pair(0, 1, True), _pair(0, 2, True), _pair(1, 2, True)], "min") == \
        ["c", "a", "b"]
    # rows sharing a letter are never a separated pair (four rows, two separations)
    means = [4, 3, 2, 1]
    pairs = [_pair(i, j, (i, j) in {(0, 2), (1, 3)}) for i in range(4) for j in range(i + 1, 4)]
    lt = paired.letters(means, pairs, "max")
    for p in pairs:
        assert bool(set(lt[p.a]) & set(lt[p.b])) != p.separated


def test_smallest_separable_and_videos_needed_by_hand():
    d = np.array([1.0, -1.0] * 8)  # sd (ddof 1) of 16 values
    pair = paired.compare_pair({f"v{i}": x for i, x in enumerate(d)}, {f"v{i}": 0.0 for i in range(16)}, "psnr")
    sd = float(np.std(d, ddof=1))
    z = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.8)
    assert paired.smallest_separable([pair]) == pytest.approx(z * sd / 4)
    assert paired.videos_needed([pair], z * sd / 4) == 16
    assert paired.videos_needed([pair], z * sd / 8) == 64
    # three pairs: alpha / 3 in the first Holm step
    z3 = NormalDist().inv_cdf(1 - 0.05 / 6) + NormalDist().inv_cdf(0.8)
    assert paired.smallest_separable([pair] * 3) == pytest.approx(z3 * sd / 4)


def test_the_p_value_floor_never_decides_holm():
    # 15 rows (105 pairs): with 4000 resamples the smallest p is 2/4001 and Holm's first step 105 x 5e-4 > 0.05,
    # so no pair could ever be separated; the resamples grow with the pairs instead
    rows_ = [[rec(f"v{i}", psnr=40.0 + k + 0.01 * (i % 3)) for i in range(10)] for k in range(15)]
    comp = paired.compare_group(rows_, "psnr")
    assert len(comp.pairs) == 105 and all(p.separated for p in comp.pairs)  # every row 1 dB from the next
    assert max(p.p_adj for p in comp.pairs) <= 105 * 2 / (paired.resamples_for(105) + 1) <= 0.1 * paired.ALPHA
    assert comp.best == 14 and comp.letters[14] == "a" and len(set(comp.letters)) == 15
