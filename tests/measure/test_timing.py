"""The paired schedule on a scripted clock: order of generations, drift cancelling, unsteady segments re-timed, the
defaults the docs promise, and the policy's untimed warm-up (scripted, and counted on a real runner)."""

from __future__ import annotations

import json

import pytest

from sencache_bench.measure.timing import Sample, TimingConfig, paired_schedule
from sencache_bench.runner import Runner, Session
from sencache_bench.spec import resolve


class ScriptedMachine:
    """Generations whose duration is their cost times the machine's speed factor at that moment."""

    def __init__(self, baseline_cost: float, policy_cost: float, factor=lambda position: 1.0):
        self.costs = {"B": baseline_cost, "P": policy_cost, "W": policy_cost}
        self.factor = factor
        self.log: list[str] = []

    def _time(self, kind: str, item: int) -> Sample:
        seconds = self.costs[kind] * self.factor(len(self.log))
        self.log.append(f"{kind}{item}")
        return Sample(seconds=seconds, phases={"total_s": seconds})

    def run(self, n: int, config: TimingConfig | None = None, warm_up: bool = False, **timing):
        items = {}
        warm = (lambda: self._time("W", 0)) if warm_up else None
        paired_schedule(n, config or TimingConfig(**timing), lambda i: self._time("B", i),
                        lambda i: self._time("P", i), lambda i, t: items.__setitem__(i, t), warm_up=warm)
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


def test_defaults_are_the_documented_ones_through_the_spec(tiny_spec):
    """docs/timing.md and the README promise repeats 1, baseline_every 1, tolerance 0.05, retries 2 for a spec
    without a timing section (a looser tolerance or no retries would pass every scripted test that sets them)."""
    timing = resolve(tiny_spec()).timing
    assert timing.model_dump() == {"repeats": 1, "baseline_every": 1, "tolerance": 0.05, "retries": 2, "timed": True}
    assert resolve(tiny_spec(timing={"tolerance": 0.1})).timing.tolerance == 0.1


def test_a_ten_percent_step_is_retimed_with_the_default_tolerance():
    """The machine gets 10% slower right after P0: the gap (0.10) exceeds the default tolerance (0.05), so the
    segment is timed again, with the default config; the same step of 4% is within it and is not."""
    m = ScriptedMachine(2.0, 1.0, factor=lambda pos: 1.0 if pos < 2 else 1.1)
    items = m.run(2, config=TimingConfig())
    assert m.log == ["B0", "P0", "B1", "P0", "B1", "P1", "B1"]
    assert items[0].steady and items[0].rejected == [{"policy_s": {"0": [1.0]}, "baseline_s": [2.0, 2.2]}]
    m = ScriptedMachine(2.0, 1.0, factor=lambda pos: 1.0 if pos < 2 else 1.04)
    items = m.run(2, config=TimingConfig())
    assert m.log == ["B0", "P0", "B1", "P1", "B1"] and items[0].steady and not items[0].rejected


def test_a_segment_unsteady_at_every_attempt_uses_the_default_two_retries():
    """Slowing 10% per generation: every gap is about 0.2; the default config times the segment 3 times (2 retries)
    and keeps it marked unsteady."""
    m = ScriptedMachine(2.0, 1.0, factor=lambda pos: 1.1 ** pos)
    items = m.run(1, config=TimingConfig())
    assert m.log == ["B0", "P0", "B0", "P0", "B0", "P0", "B0"]
    assert not items[0].steady and len(items[0].rejected) == 2


def test_the_warm_up_runs_once_before_the_first_baseline_and_is_in_no_sample():
    """A first-use cost (the warm-up takes 10x) lands in the untimed warm-up, not in P0 nor in any baseline."""
    m = ScriptedMachine(2.0, 1.0, factor=lambda pos: 10.0 if pos == 0 else 1.0)
    items = m.run(3, warm_up=True)
    assert m.log == ["W0", "B0", "P0", "B1", "P1", "B2", "P2", "B2"]
    assert all(t.policy_s == [1.0] and t.baseline_s == [2.0, 2.0] and t.steady for t in items.values())


def _timed_policy_generations(record: dict) -> int:
    timing = record["timing"]
    return len(timing["policy_s"]) + sum(len(v) for r in timing.get("rejected", []) for v in r["policy_s"].values())


def test_runner_warms_the_policy_once_per_setting_before_timing(tiny_spec, monkeypatch):
    """Counted on a real runner: one untimed policy generation after the reference and before the first timed
    baseline, none again when the same runner (one setting) runs more items; the records say it ran."""
    log: list[str] = []
    original = Session.generate

    def generate(self, prompt, seed, policy=None, on_step=None, purpose="other"):
        log.append("P" if policy is not None else "B")
        return original(self, prompt, seed, policy=policy, on_step=on_step, purpose=purpose)

    monkeypatch.setattr(Session, "generate", generate)
    spec = tiny_spec(policy={"name": "static", "every": 2})
    spec["sampling"]["steps"] = 2
    spec["output"]["save_videos"] = False
    runner = Runner(resolve(spec), log=lambda s: None)
    first_item, second_item = runner.items()
    first = json.loads(runner.run_items([first_item])[0].read_text())
    assert log[:3] == ["B", "P", "B"]  # the reference, the warm-up, the first timed baseline
    assert log.count("P") == 1 + _timed_policy_generations(first)
    log.clear()
    second = json.loads(runner.run_items([second_item])[0].read_text())
    assert log.count("P") == _timed_policy_generations(second), "one warm-up per setting, not per call or item"
    for record in (first, second):
        warm = record["timing"]["policy_warm_up"]
        assert warm["generations"] == 1 and warm["timed"] is False and warm["seconds"] > 0
        assert (warm["prompt_index"], warm["seed"]) == (first_item[0].index, first_item[1])
