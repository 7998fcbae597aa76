"""The knob search of ``match``: the value of a monotone budget knob whose measure g(v) is nearest a target.

The rule and the search (ends, widening a threshold, bisection, a log scale for integer periods, a scan of a
non-monotone knob) are described in :mod:`sencache_bench.matching`; g is any measure (NFE or relative FLOPs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .policies.base import Knob

Log = Callable[[str], None]
ONE_STEP = 1.0  # the most a matched point may spend over its target, and the most its evaluation may stray


def _order(knob: Knob, value: float) -> float:
    """A coordinate that grows with the compute the value asks for."""
    return -value if knob.more_compute == "lower" else value


def _norm(knob: Knob, value: float) -> float:
    return int(round(value)) if knob.integer else float(f"{value:.6g}")


@dataclass
class Search:
    """The outcome of one target: the value picked (None: unreachable), what it achieved, what was tried."""

    target: float
    value: float | None
    achieved: float | None
    probes: list[tuple[float, float]]  # (value, g) of every value tried for this spec, most compute first
    monotone: bool
    note: str = ""


def pick(knob: Knob, memo: dict[float, float], target: float, step: float = ONE_STEP) -> tuple[float, float] | None:
    """(value, g) nearest the target with g <= target + step; ties: below the target, then more compute."""
    ok = [(v, g) for v, g in memo.items() if g <= target + step + 1e-9]
    if not ok:
        return None
    return min(ok, key=lambda vg: (round(abs(vg[1] - target), 9), vg[1] > target, -_order(knob, vg[0])))


def is_monotone(knob: Knob, memo: dict[float, float]) -> bool:
    """g never decreases as the value asks for more compute."""
    gs = [g for _, g in sorted(memo.items(), key=lambda vg: _order(knob, vg[0]))]
    return all(b >= a - 1e-9 for a, b in zip(gs, gs[1:]))


def search_knob(knob: Knob, measure: Callable[[float], float], target: float, *, step: float = ONE_STEP,
                tol: float = 0.1, max_evals: int = 10, scan: int = 9, memo: dict[float, float] | None = None,
                log: Log = lambda s: None) -> Search:
    """Find the knob value whose ``measure`` is nearest ``target`` (never above it by more than ``step``)."""
    memo = {} if memo is None else memo
    evals = 0

    def g(value: float) -> float:
        nonlocal evals
        value = _norm(knob, value)
        if value not in memo:
            memo[value] = float(measure(value))
            evals += 1
            log(f"  {knob.field}={value}: {memo[value]:.2f}")
        return memo[value]

    low, high = knob.low, knob.high
    note = ""
    if not knob.monotone:
        values = [low + (high - low) * i / (scan - 1) for i in range(scan)]
        for v in dict.fromkeys(_norm(knob, v) for v in values):
            g(v)
        note = f"{knob.field} is declared non-monotone: scanned {len(memo)} values, no bisection"
    else:
        more, less = (low, high) if knob.more_compute == "lower" else (high, low)
        g(more)
        g(less)
        widen = 0
        while g(less) > target + step and knob.more_compute == "lower" and not knob.integer and widen < 3:
            before = g(less)
            less = high = max(high, 1.0) * 4  # a threshold has no natural upper end
            widen += 1
            if g(less) >= before:
                break  # a plateau: something else (a cap such as max_reuse) bounds the compute, not this knob
        span = abs(high - low)
        while evals < max_evals:
            best = pick(knob, memo, target, step)
            if best is not None and abs(best[1] - target) <= tol:
                break
            below = [v for v, gv in memo.items() if gv <= target]
            above = [v for v, gv in memo.items() if gv > target]
            if not below or not above:
                break
            a = max(below, key=lambda v: _order(knob, v))  # most compute still <= target
            b = min(above, key=lambda v: _order(knob, v))  # least compute above it
            if _order(knob, a) > _order(knob, b):
                break  # the order is broken: reported below
            if (knob.integer and abs(a - b) <= 1) or (not knob.integer and abs(a - b) <= 1e-4 * span):
                break
            if knob.integer:  # NFE ~ steps / value for a period such as static's every: halve on a log scale
                mid = round(math.sqrt(a * b)) if min(a, b) >= 1 else (a + b) // 2
                mid = min(max(mid, min(a, b) + 1), max(a, b) - 1)
            else:  # bisection: NFE against a threshold is far from linear (regula falsi stalled on TeaCache)
                mid = (a + b) / 2
            if _norm(knob, mid) in memo:
                break
            g(mid)
    monotone = is_monotone(knob, memo)
    if knob.monotone and not monotone:
        note = (f"NFE is not monotone in {knob.field} on the tuning prompts (values tried: "
                + ", ".join(f"{v}: {gv:.2f}" for v, gv in sorted(memo.items())) + "); bisection may have missed a "
                "closer value")
    probes = sorted(memo.items(), key=lambda vg: -_order(knob, vg[0]))
    best = pick(knob, memo, target, step)
    if best is None:
        least = min(memo.values())
        note = (f"unreachable: the least compute {knob.field} allows in [{low}, {high}] is {least:.2f}, more than "
                f"one step above the target {target:.2f} (if another field caps the reuse, e.g. max_reuse, raise it "
                f"with --set)" + (f"; {note}" if note else ""))
        return Search(target, None, None, probes, monotone, note)
    return Search(target, best[0], best[1], probes, monotone, note)
