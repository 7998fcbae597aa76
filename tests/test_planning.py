"""The two global planners: hand-worked optima on a synthetic denoiser, then brute force on small schedules."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sencache_bench.errors import BenchError
from sencache_bench.planning import (
    minimax_path,
    path_weights,
    plan_min_total,
    plan_thresholds,
    schedule_cost,
    segment_costs,
    sencache_scores,
)


def synthetic_scores(jx, n: int) -> np.ndarray:
    """A synthetic denoiser on a straight-line trajectory x_i = i * e (so ||x_i - x_j|| = |i - j|), Jt = 0."""
    steps = np.arange(n, dtype=float)
    displacement = np.abs(steps[None, :] - steps[:, None])
    return sencache_scores(jx, [0.0] * n, displacement, np.zeros((n, n)))


def test_segment_costs_sum_the_scores():
    score = synthetic_scores([1.0] * 4, 4)
    cost = segment_costs(score)
    # reusing j's output for L steps costs 1 + 2 + ... + L on the straight line
    assert cost[0, 0] == 0 and cost[0, 1] == 1 and cost[0, 2] == 3 and cost[0, 3] == 6 and cost[1, 3] == 3


def test_plan_by_hand_spends_the_budget_where_the_model_is_sensitive():
    """Jx = 10, 9, 8, 1, 1, 1 on 6 steps, 3 computes. cost(j, k) = Jx[j] * L (L + 1) / 2 (L = k - j reuses).

    {0,1,3}: 0 + 9*1 + 1*3 = 12      {0,2,3}: 10*1 + 0 + 1*3 = 13      {0,2,4}: 10 + 8 + 1 = 19
    {0,1,4}: 0 + 9*3 + 1 = 28        {0,1,2}: 0 + 0 + 8*6 = 48         {0,3,4}: 10*3 + 0 + 1 = 31
    The optimum computes steps 1 and 3: the sensitive early steps get the compute, the late ones reuse two.
    """
    cost = segment_costs(synthetic_scores([10, 9, 8, 1, 1, 1], 6))
    steps, total = plan_min_total(cost, 3)
    assert steps == (0, 1, 3) and total == pytest.approx(12.0)
    assert schedule_cost(cost, (0, 2, 4)) == pytest.approx(19.0)
    # K = 1 forbids the late run of two reuses: {0,2,4} (cost 19) is then the only 3-compute plan
    assert plan_min_total(cost, 3, max_reuse=1) == ((0, 2, 4), pytest.approx(19.0))
    # a forced step 2: {0,2,3} (13) beats every other plan holding 2
    assert plan_min_total(cost, 3, forced=[2])[0] == (0, 2, 3)


def test_uniform_sensitivity_spreads_the_reuses_evenly():
    """Convex segment costs: with Jx constant the optimum splits the reuses as evenly as it can."""
    cost = segment_costs(synthetic_scores([1.0] * 9, 9))
    assert plan_min_total(cost, 3) == ((0, 3, 6), pytest.approx(9.0))  # three segments of two reuses: 3 * 3


def _all_plans(n, budget, forced, max_reuse, last=False):
    must = {0, *forced} | ({n - 1} if last else set())
    for rest in itertools.combinations(range(1, n), budget - 1):
        steps = (0, *rest)
        if not must <= set(steps):
            continue
        bounds = [*steps, n]
        if max_reuse is not None and any(b - a - 1 > max_reuse for a, b in zip(bounds, bounds[1:])):
            continue
        yield steps


@pytest.mark.parametrize("seed", range(6))
def test_plan_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 8
    score = rng.uniform(0.0, 2.0, (n, n)) * rng.uniform(0.5, 4.0, (n, 1))
    cost = segment_costs(score)
    for budget in range(1, n + 1):
        for forced, k in [((), None), ((4,), None), ((), 2), ((3, 6), 3)]:
            plans = list(_all_plans(n, budget, forced, k))
            if not plans:
                with pytest.raises(BenchError):
                    plan_min_total(cost, budget, forced, k)
                continue
            best = min(schedule_cost(cost, p) for p in plans)
            steps, total = plan_min_total(cost, budget, forced, k)
            assert total == pytest.approx(best) and schedule_cost(cost, steps) == pytest.approx(best)
            assert len(steps) == budget and steps[0] == 0 and set(forced) <= set(steps)


def test_plan_thresholds_are_the_accepted_scores():
    score = synthetic_scores([10, 9, 8, 1, 1, 1], 6)
    eps = plan_thresholds(score, (0, 1, 3))
    # step 1 computed right after 0 (nothing reused): 0; 2 reused from 1: S(1,2) = 9; 3 computed after
    # the segment 1..2: S(1,2) = 9 (the typical score at 3, S(1,3) = 18, is above it); 4, 5 from 3: 1, 2
    assert eps.tolist() == [0.0, 0.0, 9.0, 9.0, 1.0, 2.0]


def test_minimax_by_hand_differs_from_the_least_sum():
    """5 steps, 3 computes: paths 0-1-4 (edge 1->4: 5), 0-2-4 (0->2: 3, 2->4: 3), 0-3-4 (0->3: 4).

    Least worst edge: 0-2-4 (3), though 0-3-4 has the least sum (4 < 6)."""
    w = np.full((5, 5), np.nan)
    w[1, 4], w[0, 2], w[2, 4], w[0, 3] = 5.0, 3.0, 3.0, 4.0
    assert minimax_path(w, 3) == ((0, 2, 4), (3.0, 3.0))
    w[0, 3] = 3.0  # now (3,) against (3, 3): the second entry decides, 0-3-4 wins
    assert minimax_path(w, 3) == ((0, 3, 4), (3.0,))


def test_minimax_second_worst_edge_breaks_ties():
    """6 steps, 4 computes: two paths have worst edge 5 (every other path meets a 9); the next-worst decides."""
    w = np.full((6, 6), 9.0)
    w[0, 2], w[2, 4] = 5.0, 2.0  # path 0-2-4-5: (5, 2)
    w[0, 2], w[3, 5] = 5.0, 1.0  # path 0-2-3-5: (5, 1)
    path, vec = minimax_path(w, 4)
    assert path == (0, 2, 3, 5) and vec == (5.0, 1.0)


def _brute_minimax(w, n, budget, forced, k):
    best = None
    for p in _all_plans(n, budget, forced, k, last=True):
        if any(b > a + 1 and np.isnan(w[a, b]) for a, b in zip(p, p[1:])):
            continue
        vec = path_weights(w, p)
        padded = vec + (0.0,) * (n - len(vec))
        if best is None or padded < best:
            best = padded
    return best


@pytest.mark.parametrize("seed", range(6))
def test_minimax_matches_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    n = 8
    w = np.triu(rng.uniform(0.0, 1.0, (n, n)), k=2) + np.triu(np.ones((n, n)), k=2) * np.arange(n)[None, :] * 0.1
    w[np.tril_indices(n, k=1)] = np.nan
    if seed % 2:
        w[1, 6] = np.nan  # an edge that was not measured
    for budget in range(2, n + 1):
        for forced, k in [((), None), ((3,), None), ((), 2)]:
            best = _brute_minimax(w, n, budget, forced, k)
            if best is None:
                with pytest.raises(BenchError):
                    minimax_path(w, budget, forced, k)
                continue
            path, vec = minimax_path(w, budget, forced, k)
            assert path[0] == 0 and path[-1] == n - 1 and len(path) == budget and set(forced) <= set(path)
            assert vec == path_weights(w, path)
            assert vec + (0.0,) * (n - len(vec)) == best


def test_bad_budgets_are_one_clear_error():
    cost = segment_costs(synthetic_scores([1.0] * 6, 6))
    with pytest.raises(BenchError, match="between 2 and 6"):
        plan_min_total(cost, 1, forced=[3])
    with pytest.raises(BenchError, match="max_reuse=1"):
        plan_min_total(cost, 2, max_reuse=1)
    with pytest.raises(BenchError, match="outside"):
        minimax_path(np.zeros((4, 4)), 3, forced=[7])


def test_amplified_scores_move_the_plan_by_hand():
    """Straight line, Jx = 1 (S(j, i) = i - j); measured single-reuse errors w = [-, 4, 1, 1, 2, 1], so the
    amplifications are a_i = w_i / S(i-1, i) = w_i. Plain scores: {0,2,4} (1 + 1 + 1 = 3) is the optimum.
    Amplified (each reused step i costs a_i (i - j)): {0,2,4}: 4 + 1 + 1 = 6; {0,1,3}: 1 + (2 + 2) = 5;
    {0,1,4}: (1 + 2) + 1 = 4, the optimum ({0,1,2}: 1 + 4 + 3 = 8; {0,2,3}: 4 + 4 = 8)."""
    from sencache_bench.planning import amplified_scores

    score = synthetic_scores([1.0] * 6, 6)
    assert plan_min_total(segment_costs(score), 3) == ((0, 2, 4), pytest.approx(3.0))
    amp = amplified_scores(score, [np.nan, 4.0, 1.0, 1.0, 2.0, 1.0])
    assert amp[0, 1] == 4.0 and amp[2, 4] == 4.0 and amp[1, 3] == 2.0
    assert plan_min_total(segment_costs(amp), 3) == ((0, 1, 4), pytest.approx(4.0))
    with pytest.raises(BenchError, match="step 2"):
        amplified_scores(score, [np.nan, 1.0, np.nan, 1.0, 1.0, 1.0])
