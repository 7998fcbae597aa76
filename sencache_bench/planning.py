"""Global cache schedules: pure functions on arrays (no torch, no pipeline), shared by two policies.

A *schedule* of ``n`` steps is the sorted tuple of the step indices that compute; every other step reuses
the last computed one. Two planners (the math: ``docs/global-schedules.md``):

- :func:`plan_min_total` (``sencache-global``): the compute set of a given size that minimises the total
  predicted error ``sum over segments of cost[j, k]``, where a segment computes at ``j`` and reuses
  ``j+1..k``. Dynamic programming over (last computed step, computes used): O(n^2 * B).
- :func:`minimax_path` (``lemica``; Gao et al., LeMiCa, NeurIPS 2025, arXiv 2511.00090): a path of ``B``
  nodes from step 0 to step n-1 in the DAG whose edge ``i -> j`` computes at ``i`` and ``j`` and reuses in
  between; it minimises, lexicographically, the edge weights of its cache edges sorted in descending
  order (first the worst edge, then the next...). The leximax order is preserved by adding the same
  edges to two paths, so Bellman's principle holds and the same DP is exact, carrying sorted vectors.

Both honour forced steps (always computed; step 0 always is) and an optional bound on consecutive reuses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .errors import BenchError


def segment_costs(score: np.ndarray) -> np.ndarray:
    """``cost[j, k] = sum_{i=j+1..k} score[j, i]`` (0 on the diagonal, unused below it).

    ``score[j, i]``: the predicted error of reusing step ``j``'s output at step ``i > j`` (SenCache's
    S(j, i) = Jx(t_j) ||x_i - x_j|| + Jt(t_j) |t_i - t_j|).
    """
    score = np.asarray(score, dtype=np.float64)
    n = score.shape[0]
    upper = np.triu(score, k=1)
    cost = np.cumsum(upper, axis=1)
    cost[np.tril_indices(n, k=-1)] = np.nan
    return cost


def sencache_scores(jx: Sequence[float], jt: Sequence[float], displacement: np.ndarray,
                    dt: np.ndarray) -> np.ndarray:
    """``S[j, i] = Jx[j] * displacement[j, i] + Jt[j] * dt[j, i]`` (the SenCache score from refresh ``j``)."""
    jx = np.asarray(jx, dtype=np.float64)[:, None]
    jt = np.asarray(jt, dtype=np.float64)[:, None]
    return jx * np.asarray(displacement, dtype=np.float64) + jt * np.asarray(dt, dtype=np.float64)


def amplified_scores(score: np.ndarray, single: Sequence[float]) -> np.ndarray:
    """``score[j, i] * a_i`` with ``a_i = single[i] / score[i-1, i]``: each step's score rescaled to global error.

    ``single[i]``: the measured global error of reusing step ``i`` alone (computed at ``i-1``). The model:
    the global error of a segment is the sum over its reused steps of their local score times that step's
    amplification (how much of a unit of local error at step i survives into x0), measured once per step.
    """
    score = np.asarray(score, dtype=np.float64)
    n = score.shape[0]
    a = np.zeros(n)
    for i in range(1, n):
        local = score[i - 1, i]
        if not (np.isfinite(single[i]) and local > 0):
            raise BenchError(f"amplified error model: step {i} has no single-reuse error or a zero score")
        a[i] = single[i] / local
    return score * a[None, :]


def _check(n: int, budget: int, forced: Iterable[int], max_reuse: int | None, last: bool) -> set[int]:
    if n < 1:
        raise BenchError("a schedule needs at least one step")
    forced = {int(f) % n if f < 0 else int(f) for f in forced} | {0} | ({n - 1} if last else set())
    bad = [f for f in forced if not 0 <= f < n]
    if bad:
        raise BenchError(f"forced step {bad[0]} is outside the schedule's {n} steps")
    if not len(forced) <= budget <= n:
        raise BenchError(f"budget: {budget} computed steps of {n} cannot hold the {len(forced)} forced ones "
                         f"({sorted(forced)}); give a budget between {len(forced)} and {n}")
    if max_reuse is not None and budget < -(-n // (max_reuse + 1)):
        raise BenchError(f"budget: {budget} computed steps of {n} cannot keep every run of reuses at most "
                         f"max_reuse={max_reuse} long (need at least {-(-n // (max_reuse + 1))})")
    return forced


def _allowed(j: int, k: int, forced_after: np.ndarray, max_reuse: int | None) -> bool:
    """May a segment compute at ``j`` and reuse ``j+1..k``? No forced step inside it, at most K reuses."""
    if max_reuse is not None and k - j > max_reuse:
        return False
    return forced_after[j] > k  # the first forced step after j lies beyond k


def _forced_after(n: int, forced: set[int]) -> np.ndarray:
    """``out[j]``: the first forced step strictly after ``j`` (``n`` if none)."""
    out = np.full(n, n)
    nxt = n
    for j in range(n - 1, -1, -1):
        out[j] = nxt
        if j in forced:
            nxt = j
    return out


def plan_min_total(cost: np.ndarray, budget: int, forced: Iterable[int] = (), max_reuse: int | None = None,
                   ) -> tuple[tuple[int, ...], float]:
    """The ``budget`` compute steps minimising ``sum of cost[c_m, c_{m+1} - 1]`` (``c_{B+1} = n``).

    ``g[m, k]``: least cost of steps ``0..k-1`` with ``m`` computes, the last at ``k``;
    ``g[m+1, k] = min_j g[m, j] + cost[j, k-1]`` over allowed segments; the answer closes with the segment
    from the last compute to step ``n-1``. Ties: the earliest predecessor. Returns (steps, total cost).
    """
    cost = np.asarray(cost, dtype=np.float64)
    n = cost.shape[0]
    forced = _check(n, budget, forced, max_reuse, last=False)
    after = _forced_after(n, forced)
    inf = float("inf")
    g = np.full((budget + 1, n), inf)
    back = np.full((budget + 1, n), -1, dtype=int)
    g[1, 0] = 0.0
    for m in range(1, budget):
        for k in range(1, n):
            best, arg = inf, -1
            for j in range(k):
                if g[m, j] < inf and _allowed(j, k - 1, after, max_reuse):
                    value = g[m, j] + cost[j, k - 1]
                    if value < best:
                        best, arg = value, j
            g[m + 1, k], back[m + 1, k] = best, arg
    best, last = inf, -1
    for j in range(n):
        if g[budget, j] < inf and _allowed(j, n - 1, after, max_reuse):
            value = g[budget, j] + cost[j, n - 1]
            if value < best:
                best, last = value, j
    if last < 0:
        raise BenchError(f"no schedule of {budget} computed steps of {n} meets the forced steps {sorted(forced)} "
                         f"and max_reuse={max_reuse}")
    steps, m, k = [], budget, last
    while k >= 0:
        steps.append(int(k))
        k, m = back[m, k], m - 1
    return tuple(reversed(steps)), float(best)


def _leximax_key(weights: list[float]) -> tuple[float, ...]:
    """Sorted descending: comparing these tuples is the leximax order (zeros padded implicitly)."""
    return tuple(sorted(weights, reverse=True))


def _lex_less(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` before ``b`` in leximax order, missing entries counting as 0 (every weight is >= 0)."""
    for x, y in zip(a, b):
        if x != y:
            return x < y
    if len(a) == len(b):
        return False
    rest_a, rest_b = a[len(b):], b[len(a):]
    return any(x < 0 for x in rest_a) or any(y > 0 for y in rest_b)


def minimax_path(weights: np.ndarray, budget: int, forced: Iterable[int] = (), max_reuse: int | None = None,
                 ) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """LeMiCa's lexicographic minimax path: ``budget`` nodes from step 0 to step n-1.

    ``weights[i, j]`` (``j >= i + 2``): the measured global error of the cache edge ``i -> j`` (reuse at
    ``i+1..j-1``); adjacent steps (``j = i + 1``) reuse nothing and cost nothing. NaN: edge not measured
    (not allowed). Returns (steps, the path's cache-edge weights sorted descending).
    """
    weights = np.asarray(weights, dtype=np.float64)
    n = weights.shape[0]
    forced = _check(n, budget, forced, max_reuse, last=True)
    if n == 1:
        return (0,), ()
    after = _forced_after(n, forced)
    if np.any(weights[np.triu_indices(n, k=2)][~np.isnan(weights[np.triu_indices(n, k=2)])] < 0):
        raise BenchError("lemica: edge weights must be >= 0 (they are L1 errors)")
    # best[m][k]: the leximax-least sorted weight vector of a path with m nodes ending at k
    best: list[list[tuple[float, ...] | None]] = [[None] * n for _ in range(budget + 1)]
    back = np.full((budget + 1, n), -1, dtype=int)
    best[1][0] = ()
    for m in range(1, budget):
        for k in range(1, n):
            cand, arg = None, -1
            for j in range(k):
                prev = best[m][j]
                if prev is None or not _allowed(j, k - 1, after, max_reuse):
                    continue
                if k == j + 1:
                    key = prev
                else:
                    w = weights[j, k]
                    if np.isnan(w):
                        continue
                    key = _leximax_key([*prev, float(w)])
                if cand is None or _lex_less(key, cand):
                    cand, arg = key, j
            best[m + 1][k], back[m + 1, k] = cand, arg
    if best[budget][n - 1] is None:
        raise BenchError(f"lemica: no path of {budget} computed steps of {n} through the measured edges meets the "
                         f"forced steps {sorted(forced)} and max_reuse={max_reuse}")
    steps, m, k = [], budget, n - 1
    while k >= 0:
        steps.append(int(k))
        k, m = back[m, k], m - 1
    return tuple(reversed(steps)), best[budget][n - 1]


def schedule_cost(cost: np.ndarray, steps: Sequence[int]) -> float:
    """Total predicted error of a compute schedule (the objective :func:`plan_min_total` minimises)."""
    n = np.asarray(cost).shape[0]
    bounds = [*steps, n]
    return float(sum(cost[a, b - 1] for a, b in zip(bounds, bounds[1:])))


def path_weights(weights: np.ndarray, steps: Sequence[int]) -> tuple[float, ...]:
    """The cache-edge weights of a path, sorted descending (the vector :func:`minimax_path` minimises)."""
    return _leximax_key([float(weights[a, b]) for a, b in zip(steps, steps[1:]) if b > a + 1])


def plan_thresholds(score: np.ndarray, steps: Sequence[int]) -> np.ndarray:
    """ε(t) of a plan, in score units: the predicted score the plan accepts at each step.

    A reused step ``i`` of the segment computed at ``j``: ``score[j, i]``. A computed step ``k > 0`` after
    the segment ``j..k-1``: ``score[j, k-1]`` if that segment reused anything (the most the plan accepted
    there; on the typical trajectory the score at ``k``, ``score[j, k]``, is above it when the drift grows,
    so the local rule computes as planned), else 0. Step 0: 0. SenCache's rule REUSE iff S <= ε then
    reproduces the plan on a sample whose displacements are the table's.
    """
    score = np.asarray(score, dtype=np.float64)
    n = score.shape[0]
    computed = set(steps)
    eps = np.zeros(n)
    anchor = 0
    for i in range(1, n):
        if i in computed:
            eps[i] = score[anchor, i - 1] if i - 1 > anchor else 0.0
            anchor = i
        else:
            eps[i] = score[anchor, i]
    return eps
