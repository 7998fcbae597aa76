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

Then the replay: the real schedule (:func:`sencache_bench.measure.timing.paired_schedule`) run again over the
recorded chain under other rules (``baseline_every``, ``tolerance``, ``retries``), each generation it asks for
taken from the next recorded one of its kind in time order (one it skips widens the segment: conservative).
Printed per rule: generations per item, the steady share, and the standard error of a row's mean log speedup
over 15 items (its steady items only, so unsteady ones shrink the row; the lag-1 autocovariance counted, as
neighbours share a baseline). A rule
that buys precision at the rate of more items keeps ``SE^2 x generations`` (the last column) unchanged.

    python benchmarks/timing_drift.py [--pairs 32] [--tolerance 0.05] [--save chain.json | --load chain.json]
"""

from __future__ import annotations

import argparse
import json
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


def replay(base: list[float], pol: list[float], config) -> tuple[list[float], int, int]:
    """(log speedups of the steady items, items, generations) of ``paired_schedule`` replayed on the chain."""
    from sencache_bench.measure.timing import Sample, paired_schedule

    timeline = [("B", b) for b in base]
    for i, p in enumerate(pol):
        timeline.insert(2 * i + 1, ("P", p))
    at = {"pos": 0, "generations": 0}

    def next_of(kind: str) -> Sample:
        while at["pos"] < len(timeline) and timeline[at["pos"]][0] != kind:
            at["pos"] += 1
        if at["pos"] >= len(timeline):
            raise EOFError
        at["pos"] += 1
        at["generations"] += 1
        return Sample(timeline[at["pos"] - 1][1])

    items: list = []
    closed = {"generations": 0}  # up to the last closed segment (a segment cut off by the chain's end is dropped)

    def on_item(i, timing) -> None:
        items.append(timing)
        closed["generations"] = at["generations"]

    try:
        paired_schedule(10**6, config, lambda i: next_of("B"), lambda i: next_of("P"), on_item)
    except EOFError:
        pass
    return [math.log(t.speedup) for t in items if t.steady], len(items), closed["generations"]


def standard_error(values: list[float], n: float = 15) -> float:
    """SE of the mean of ``n`` consecutive items: (gamma_0 + 2 gamma_1 (n - 1) / n) / n, autocovariances."""
    m = fmean(values)
    c = [v - m for v in values]
    g0 = fmean(x * x for x in c)
    g1 = fmean(c[i] * c[i + 1] for i in range(len(c) - 1))
    return math.sqrt(max(g0 + 2 * g1 * (n - 1) / n, 0.0) / n)


def replay_table(base: list[float], pol: list[float]) -> None:
    from sencache_bench.measure.timing import TimingConfig

    print(f"{'rule':<42} {'gens/item':>9} {'steady':>7} {'SE(15)':>7} {'SE^2 x gens':>11}")
    for k in (1, 2, 3):
        for tolerance, retries in ((0.05, 2), (0.05, 0), (0.10, 2)):
            config = TimingConfig(baseline_every=k, tolerance=tolerance, retries=retries)
            logs, n, generations = replay(base, pol, config)
            if len(logs) < 3:
                continue
            se = standard_error(logs, 15 * len(logs) / n)  # a row of 15 items keeps its steady ones
            rule = f"baseline_every {k}, tolerance {tolerance:.0%}, retries {retries}"
            print(f"{rule:<42} {generations / n:>9.2f} {len(logs) / n:>7.0%} {se:>7.4f} "
                  f"{se * se * generations / n:>11.2e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--max-k", type=int, default=4)
    parser.add_argument("--save", type=Path, help="write the recorded chain (seconds) to this JSON file")
    parser.add_argument("--load", type=Path, help="replay a chain saved by --save instead of recording one")
    args = parser.parse_args()
    t0 = time.perf_counter()
    if args.load:
        saved = json.loads(args.load.read_text())
        base, pol = saved["baseline_s"], saved["policy_s"]
    else:
        base, pol = chain(args.pairs)
    if args.save:
        args.save.write_text(json.dumps({"baseline_s": base, "policy_s": pol}))
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
    replay_table(base, pol)
    return 0


if __name__ == "__main__":
    sys.exit(main())
