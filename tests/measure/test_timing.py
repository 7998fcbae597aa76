"""The paired schedule on a scripted clock: order of generations, drift cancelling, unsteady segments re-timed."""

from __future__ import annotations

import pytest

from sencache_bench.measure.timing import Sample, TimingConfig, paired_schedule


class ScriptedMachine:
    """Generations whose duration is their cost times the machine's speed factor at that moment."""

    def __init__(self, baseline_cost: float, policy_cost: float, factor=lambda position: 1.0):
        self.costs = {"B": baseline_cost, "P": policy_cost}
        self.factor = factor
        self.log: list[str] = []

    def _time(self, kind: str, item: int) -> Sample:
        seconds = self.costs[kind] * self.factor(len(self.log))
        self.log.append(f"{kind}{item}")
        return Sample(seconds=seconds, phases={"total_s": seconds})

    def run(self, n: int, **timing):
        items = {}
        paired_schedule(n, TimingConfig(**timing), lambda i: self._time("B", i), lambda i: self._time("P", i),
                        lambda i, t: items.__setitem__(i, t))
        return items


def test_each_baseline_serves_two_items_and_the_last_item_closes_the_chain():
    m = ScriptedMachine(2.0, 1.0)
    items = m.run(3)
    assert m.log == ["B0", "P0", "B1", "P1", "B2", "P2", "B2"]
    assert [items[i].speedup for i in range(3)] == [2.0, 2.0, 2.0]
    assert all(t.steady and not t.rejected for t in items.values())


def test_baseline_every_k_and_repeats():
    m = ScriptedMachine(3.0, 1.0)
    items = m.run(5, baseline_every=3, repeats=2)
    assert m.log == ["B0", "P0", "P0", "P1", "P1", "P2", "P2", "B3", "P3", "P3", "P4", "P4", "B4"]
    assert all(len(t.policy) == 2 for t in items.values()) and items[4].speedup == 3.0


def test_a_linear_drift_cancels():
    """Slowing 1% per generation: the two bracketing baselines average to the speed at the policy run."""
    m = ScriptedMachine(2.0, 0.5, factor=lambda pos: 1 + 0.01 * pos)
    items = m.run(4, tolerance=0.05)
    for t in items.values():
        assert t.speedup == pytest.approx(4.0, rel=1e-12)


def test_a_step_change_inside_a_segment_is_retimed():
    """A job starts (2x slower) right after P0: B0 is fast, B1 slow: unsteady; the re-timed segment is steady."""
    m = ScriptedMachine(2.0, 1.0, factor=lambda pos: 1.0 if pos < 2 else 2.0)
    items = m.run(2, retries=2)
    assert m.log == ["B0", "P0", "B1", "P0", "B1", "P1", "B1"]
    first = items[0]
    assert first.steady and first.baseline_s == [4.0, 4.0] and first.policy_s == [2.0]
    assert first.rejected == [{"policy_s": {"0": [1.0]}, "baseline_s": [2.0, 4.0]}]
    assert first.speedup == 2.0


def test_a_segment_that_never_settles_is_kept_but_marked():
    m = ScriptedMachine(2.0, 1.0, factor=lambda pos: 1.0 + pos)  # 100% slower per generation
    items = m.run(1, retries=1)
    assert not items[0].steady and len(items[0].rejected) == 1
