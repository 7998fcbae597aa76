"""Decisions that may flip: how close each cache decision sat to its threshold.

A policy reuses or computes by comparing a score with a threshold (``Decision(compute, score, threshold)``,
written to every record's ``trace``). A comparison decided by a hair goes the other way on another GPU,
dtype or attention kernel: replayed against the official TeaCache rule, one bench-t2v decision sat 1.9e-5
relative under its threshold (issue 22). The relative margin ``|score - threshold| / |threshold|`` of each
decision says how much float noise it can take; :func:`near_threshold` counts, over a table row's records,
the decisions within a small margin: the share of the result that hangs on float noise.

Which decisions carry a margin (both a score and a threshold, on the same scale):

- ``sencache`` (and ``sencache-global`` in adaptive mode): the sensitivity score against ``eps(t) * sqrt(n)``;
  steps the adaptive mode forces get threshold ``-sqrt(n)`` (a margin far above any small bound).
- ``teacache``: the *accumulated* rescaled relative L1 against ``thresh``; ``magcache``: the accumulated
  error against ``thresh``; ``semcache``: the accumulated error ``E`` against ``p_s``. An accumulated score
  is still the very value the rule compares, so its margin is the distance of that comparison; a flip of
  an earlier decision would change the later sums, which the margin of that earlier decision already shows.
- No margin: calls forced to compute before a score exists (warmup, first call: score None), the plan of
  ``sencache-global`` (a predicted score, no threshold), ``static``, and the caches run inside diffusers or
  cache-dit (``fbc``, ``pab``, ``fastercache``, ``taylorseer``, ``diffusers-magcache``, ``dbcache``,
  ``dbprune``): they report no score to the harness, so their decisions cannot be counted here.
- A decision whose outcome another rule fixed (``max_reuse`` reached, a forced last step) still carries its
  score's margin: the count is an upper bound on the decisions that can flip.
- Threshold 0: the relative margin is undefined and is left out of the trace (not written as infinity,
  which JSON cannot hold); such decisions are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from ..errors import BenchError

#: the default bound: a decision within 0.1% of its threshold is counted as one that may flip
DEFAULT_MARGIN = 1e-3


def relative_margin(score: float | None, threshold: float | None) -> float | None:
    """``|score - threshold| / |threshold|``; None when either is missing or not finite, or the threshold is 0."""
    if score is None or threshold is None:
        return None
    score, threshold = float(score), float(threshold)
    if not (math.isfinite(score) and math.isfinite(threshold)) or threshold == 0.0:
        return None
    return abs(score - threshold) / abs(threshold)


def _margin(call: dict) -> float | None:
    """A trace entry's margin: the stored one, or computed from its score and threshold (records made before
    margins were written)."""
    stored = call.get("margin")
    if stored is not None:
        return float(stored)
    return relative_margin(call.get("score"), call.get("threshold"))


def near_threshold(records: Iterable[dict], margin: float = DEFAULT_MARGIN) -> dict:
    """Over the records' traces: ``decisions`` (calls with a defined margin), ``near`` (those with
    margin <= ``margin``) and ``share`` (near / decisions, None when there are no decisions)."""
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 0:  # NaN fails >= 0
        raise BenchError(f"near_threshold: margin must be a number >= 0 (found {margin!r})")
    decisions = near = 0
    for rec in records:
        for call in rec.get("trace") or ():
            m = _margin(call)
            if m is None:
                continue
            decisions += 1
            near += m <= margin * (1 + 1e-9)  # inclusive, and 0.0999 vs 0.1 (1.0000000000000009e-3) is within 1e-3
    return {"decisions": decisions, "near": near, "margin": margin,
            "share": near / decisions if decisions else None}
