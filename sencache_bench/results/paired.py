"""Paired comparisons of table rows: per-video differences, a paired bootstrap, Holm, rank groups.

Every policy is scored on the same (prompt, seed) videos against the same uncached references, so two rows
are compared on the *differences* of their per-video values (the videos both rows have, matched by the
reference key): the spread between prompts, which widens each row's own interval, cancels. Per pair and
metric:

- ``diff``: the mean per-video difference A - B (speedup: of the log ratios, reported as a ratio A / B);
- ``lo`` / ``hi``: a seeded paired percentile bootstrap 95% interval (Efron & Tibshirani 1993, ch. 13): the
  videos are resampled with replacement, the two rows' values of a video stay together;
- ``p``: the two-sided bootstrap p-value of "no difference", ``2 min(P*(d <= 0), P*(d >= 0))`` with the
  +1 correction of Davison & Hinkley (1997, eq. 4.11), so it is never 0;
- ``p_adj``: Holm's step-down adjustment over all pairs of the group and metric (Holm 1979, *Scand. J.
  Statist.* 6:65-70): controls the chance of any false separation in the group at ``ALPHA``.

Two rows are *separated* on a metric when ``p_adj < ALPHA`` and they share at least ``MIN_PAIRED`` videos;
fewer make no claim. The verdict reads as rank groups (:func:`letters`): rows sharing a letter are not
separated. Missing values (None, NaN: LPIPS without its weights) leave that video out of that pair only,
and are counted.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

LEVEL = 0.95
ALPHA = 1 - LEVEL
RESAMPLES = 4000
SEED = 0
#: fewer shared videos than this: the pair makes no claim (a bootstrap of 1-4 values has almost no spread)
MIN_PAIRED = 5
#: power at which the smallest separable difference is stated
POWER = 0.8
#: (metric, which way is better) compared by default; speedup is compared on the log scale
METRICS = {"psnr": "max", "ssim": "max", "lpips": "min", "speedup": "max"}


def _finite(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def video_values(records: Sequence[dict], metric: str) -> dict[str, float | None]:
    """Per video (reference key) the value a row has for ``metric``; None where it has none (missing, NaN, infinite).

    ``speedup`` is the log of the record's paired ratio, from steady items only (as the row's own speedup)."""
    out: dict[str, float | None] = {}
    for rec in records:
        key = (rec.get("reference") or {}).get("key")
        if key is None:
            continue
        out[key] = None
        if metric == "speedup":
            timing = rec.get("timing") or {}
            v = timing.get("speedup")
            if _finite(v) and v > 0 and timing.get("steady", True):
                out[key] = math.log(v)
        else:
            v = (rec.get("metrics") or {}).get(metric)
            if _finite(v):
                out[key] = float(v)
    return out


def bootstrap_means(d: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Means of ``resamples`` resamples (with replacement) of the paired differences ``d``."""
    rng = np.random.default_rng(seed)
    return d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)


def bootstrap_p(means: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a zero mean difference (Davison & Hinkley 1997, eq. 4.11's +1)."""
    b = means.size
    below, above = (np.sum(means <= 0) + 1) / (b + 1), (np.sum(means >= 0) + 1) / (b + 1)
    return float(min(1.0, 2 * min(below, above)))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None entries make no claim and do not count among the tests)."""
    idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    m, out, running = len(idx), [None] * len(pvalues), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


@dataclass
class Pair:
    """Row ``a`` against row ``b`` (indices into the group's rows) on one metric."""

    a: int
    b: int
    metric: str
    n: int  # videos both rows have a value for
    left_out: int  # videos one of the rows has that the other lacks (or has no value for)
    diff: float | None = None  # mean A - B (speedup: ratio A / B)
    lo: float | None = None
    hi: float | None = None
    sd: float | None = None  # standard deviation of the per-video differences (log scale for speedup)
    p: float | None = None
    p_adj: float | None = None
    note: str = ""

    @property
    def separated(self) -> bool:
        return self.p_adj is not None and self.p_adj < ALPHA


def compare_pair(a: dict[str, float], b: dict[str, float], metric: str, ia: int = 0, ib: int = 1,
                 resamples: int = RESAMPLES, seed: int = SEED) -> Pair:
    """The paired difference of two rows' per-video values (``video_values``) on their shared videos."""
    shared = sorted(k for k in set(a) & set(b) if a[k] is not None and b[k] is not None)
    pair = Pair(ia, ib, metric, n=len(shared), left_out=len(set(a) | set(b)) - len(shared))
    if not shared:
        pair.note = "no shared videos"
        return pair
    d = np.asarray([a[k] - b[k] for k in shared], dtype=float)
    pair.diff, pair.sd = float(d.mean()), (float(d.std(ddof=1)) if d.size > 1 else None)
    if d.size < MIN_PAIRED:
        pair.note = f"{d.size} shared video(s), fewer than {MIN_PAIRED}: no claim"
    else:
        means = bootstrap_means(d, resamples, seed)
        lo, hi = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], method="inverted_cdf")
        pair.lo, pair.hi, pair.p = float(lo), float(hi), bootstrap_p(means)
    if metric == "speedup":  # back from the log scale: a ratio of speedups
        pair.diff, pair.lo, pair.hi = (None if x is None else math.exp(x) for x in (pair.diff, pair.lo, pair.hi))
    return pair


def resamples_for(m: int) -> int:
    """Enough resamples that the bootstrap p-value's floor, 2 / (B + 1), never decides Holm's first step: its m p
    stays at a tenth of ALPHA (at least RESAMPLES: 45 pairs, ten rows, take 18,000)."""
    return max(RESAMPLES, math.ceil(10 * 2 * m / ALPHA))


def compare_rows(values: Sequence[dict[str, float]], metric: str) -> list[Pair]:
    """Every pair (i < j) of rows of one group on one metric, Holm-adjusted over the group's pairs."""
    m = len(values) * (len(values) - 1) // 2
    pairs = [compare_pair(values[i], values[j], metric, i, j, resamples=resamples_for(m))
             for i in range(len(values)) for j in range(i + 1, len(values))]
    for pair, p_adj in zip(pairs, holm([p.p for p in pairs])):
        pair.p_adj = p_adj
    return pairs


def letters(means: Sequence[float | None], pairs: Sequence[Pair], better: str) -> list[str]:
    """Rank-group letters (compact letter display, Piepho 2004's insert-and-absorb): rows sharing a letter are
    not separated; ``a`` goes to the group of the best mean. Rows without a value get ''."""
    rows = [i for i, m in enumerate(means) if m is not None]
    order = sorted(rows, key=lambda i: means[i], reverse=better == "max")
    columns: list[set[int]] = [set(rows)]
    for p in pairs:
        if not p.separated:
            continue
        split = []
        for col in columns:
            if p.a in col and p.b in col:
                split += [col - {p.a}, col - {p.b}]
            else:
                split.append(col)
        columns = [c for c in split if c and not any(c < other for other in split)]
        columns = [c for k, c in enumerate(columns) if c not in columns[:k]]
    rank = {i: k for k, i in enumerate(order)}
    columns.sort(key=lambda c: sorted(rank[i] for i in c))  # by best member, then the next, ...
    out = [""] * len(means)
    for k, col in enumerate(columns):
        for i in col:
            out[i] += _letter(k)
    return out


def _letter(k: int) -> str:
    return chr(ord("a") + k) if k < 26 else f"[{k}]"


def best_separated(means: Sequence[float | None], pairs: Sequence[Pair], better: str) -> int | None:
    """The row with the best mean when it is separated from every other row with a value; else None."""
    rows = [i for i, m in enumerate(means) if m is not None]
    if len(rows) < 2:
        return None
    best = (max if better == "max" else min)(rows, key=lambda i: means[i])
    sep = {(p.a, p.b) for p in pairs if p.separated} | {(p.b, p.a) for p in pairs if p.separated}
    return best if all((best, j) in sep for j in rows if j != best) else None


def smallest_separable(pairs: Sequence[Pair], power: float = POWER, alpha: float = ALPHA) -> float | None:
    """The smallest mean difference the group's videos separate with probability ``power`` under the first (most
    stringent) Holm step, alpha / m: ``(z_{1-alpha/2m} + z_power) * sd_d / sqrt(n)`` with the median over the pairs
    of the per-video difference spread ``sd_d`` and of ``n`` (normal approximation). Speedup: a log ratio."""
    spread = [(p.sd, p.n) for p in pairs if p.sd is not None and p.n >= MIN_PAIRED]
    if not spread:
        return None
    sd, n = float(np.median([s for s, _ in spread])), float(np.median([k for _, k in spread]))
    return _z(alpha, len(pairs), power) * sd / math.sqrt(n)


def videos_needed(pairs: Sequence[Pair], difference: float, power: float = POWER, alpha: float = ALPHA) -> int | None:
    """How many paired videos separate a mean difference of ``difference`` (the metric's units; speedup: a ratio,
    e.g. 1.05) with probability ``power``, from the same spread: ``ceil(((z_a + z_b) sd_d / difference)^2)``."""
    spread = [p.sd for p in pairs if p.sd is not None and p.n >= MIN_PAIRED]
    if not spread or difference == 0:
        return None
    sd = float(np.median(spread))
    if pairs and pairs[0].metric == "speedup":
        difference = math.log(difference)
    return max(MIN_PAIRED, math.ceil((_z(alpha, len(pairs), power) * sd / abs(difference)) ** 2))


def _z(alpha: float, m: int, power: float) -> float:
    nd = NormalDist()
    return nd.inv_cdf(1 - alpha / (2 * max(m, 1))) + nd.inv_cdf(power)


@dataclass
class GroupComparison:
    """One group's rows compared on one metric."""

    metric: str
    better: str
    means: list[float | None]
    pairs: list[Pair]
    letters: list[str] = field(default_factory=list)
    best: int | None = None
    separable: float | None = None


def compare_group(row_records: Sequence[Sequence[dict]], metric: str, better: str | None = None,
                  means: Sequence[float | None] | None = None) -> GroupComparison:
    """All pairs of a group's rows (each row: its records) on ``metric``, with letters, the separated best and the
    smallest separable difference. ``means``: the rows' displayed means (default: the mean of each row's values)."""
    better = better or METRICS[metric]
    values = [video_values(recs, metric) for recs in row_records]
    if means is None:
        present = [[x for x in v.values() if x is not None] for v in values]
        means = [float(np.mean(x)) if x else None for x in present]
    pairs = compare_rows(values, metric)
    return GroupComparison(metric, better, list(means), pairs, letters(means, pairs, better),
                           best_separated(means, pairs, better), smallest_separable(pairs))


def group_rows(rows: Sequence[dict], key: Callable[[dict], tuple]) -> dict[tuple, list[int]]:
    """Indices of ``rows`` per group key, in order."""
    out: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        out.setdefault(key(r), []).append(i)
    return out
