"""How far apart may the uncached baselines be? Measures the drift that ``timing.baseline_every`` must tolerate.

On bench-t2v, one chain B P B P ... of uncached (B) and static every=2 (P) generations, as a policy run times them.
For a spacing k, every k-th baseline is kept: a segment then spans k policy generations (and the k - 1 baselines
left out, so the gap is measured over more time than a real k-item segment: conservative). Printed per k:

- unsteady: the share of segments whose two kept baselines differ by more than the tolerance (the run re-times
  those: retries cost generations);
- shift: the mean |log| change of an item's speedup (baseline mean / policy time) against the speedup from its own
  flanking baselines (k = 1), i.e. what the spacing moves a per-video ratio by.

The pick: the largest k whose unsteady share is within 5 points of k = 1's and whose shift is under 1%; the bench
configs' ``timing.baseline_every`` is set from it (the figure goes in docs/timing.md).

    python benchmarks/timing_drift.py [--pairs 32] [--tolerance 0.05]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from statistics import fmean

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def chain(pairs: int) -> tuple[list[float], list[float]]:
    """Times of B P B P ... B: ``pairs`` + 1 baselines and ``pairs`` policy generations, alternating prompts."""
    from sencache_bench.runner import Session
    from sencache_bench.spec import load_spec

    spec = load_spec(ROOT / "configs" / "bench_static.yaml", ["prompts={file: bench.yaml, limit: 4}"])
    session = Session(spec)
    prompts = [p.text for p in spec.prompts]
    session.warm_up(prompts[0])
    session.generate(prompts[0], 0, policy=spec.policy)  # the policy's first-use work, untimed (as the runner)
    base, pol = [], []
    for i in range(pairs + 1):
        base.append(session.generate(prompts[i % len(prompts)], 0).latency["total_s"])
        if i < pairs:
            pol.append(session.generate(prompts[i % len(prompts)], 0, policy=spec.policy).latency["total_s"])
    return base, pol


def spacing_stats(base: list[float], pol: list[float], k: int, tolerance: float) -> tuple[float, float, int]:
    """(unsteady share, mean |log speedup shift| against k = 1, segments) for baselines every k items."""
    unsteady, shifts, segments = 0, [], 0
    for start in range(0, len(pol) - k + 1, k):
        b0, b1 = base[start], base[start + k]
        segments += 1
        unsteady += abs(b1 - b0) / min(b0, b1) > tolerance
        for i in range(start, start + k):
            own = (base[i] + base[i + 1]) / 2 / pol[i]
            spaced = (b0 + b1) / 2 / pol[i]
            shifts.append(abs(math.log(spaced / own)))
    return unsteady / segments, fmean(shifts), segments


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--max-k", type=int, default=4)
    args = parser.parse_args()
    t0 = time.perf_counter()
    base, pol = chain(args.pairs)
    print(f"{len(base)} baselines (mean {fmean(base):.3f} s) and {len(pol)} static every=2 generations "
          f"(mean {fmean(pol):.3f} s) in {time.perf_counter() - t0:.0f} s")
    print(f"{'k':>2} {'segments':>8} {'unsteady':>9} {'shift':>7}  generations per item")
    stats = {}
    for k in range(1, args.max_k + 1):
        share, shift, n = spacing_stats(base, pol, k, args.tolerance)
        stats[k] = (share, shift)
        print(f"{k:>2} {n:>8} {share:>8.0%} {shift:>6.2%}  {1 + 1 / k:.2f}")
    ok = [k for k, (share, shift) in stats.items() if share <= stats[1][0] + 0.05 and shift < 0.01]
    pick = max(ok) if ok else 1
    print(f"pick: baseline_every = {pick} (largest k with unsteady within 5 points of k=1's and shift under 1%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
