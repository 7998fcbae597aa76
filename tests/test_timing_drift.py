"""benchmarks/timing_drift.py's replay: the real schedule over a recorded chain, figures worked out by hand."""

import importlib.util
import math
from pathlib import Path

import pytest

from sencache_bench.measure.timing import TimingConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "timing_drift.py"
spec = importlib.util.spec_from_file_location("timing_drift", SCRIPT)
timing_drift = importlib.util.module_from_spec(spec)
spec.loader.exec_module(timing_drift)

# B0 P0 B1 P1 ... B9: the machine slows by 20% between B4 and B5; every policy generation takes 0.5 s
BASE = [1.0] * 5 + [1.2] * 5
POLICY = [0.5] * 9


def test_replay_retimes_the_step_as_the_schedule_does():
    # k = 1, retries 2: items 0-3 bracketed by 1.0 s baselines (speedup 2); item 4's first bracket (B4 1.0, B5 1.2)
    # differs by 20%: re-timed with P5 between B5 and B6 (both 1.2: speedup 2.4); items 5-7 take P6-P8, B7-B9.
    # The chain then has no P left: 8 items, B0 + 8 x (P, B) + the retry's (P, B) = 19 generations.
    logs, items, generations = timing_drift.replay(BASE, POLICY, TimingConfig(tolerance=0.05, retries=2))
    assert (items, generations) == (8, 19)
    assert logs == pytest.approx([math.log(2.0)] * 4 + [math.log(2.4)] * 4)


def test_replay_without_retries_keeps_the_unsteady_item_out():
    # retries 0: item 4 keeps its unsteady bracket and is left out; 9 items, 19 generations, 8 steady
    logs, items, generations = timing_drift.replay(BASE, POLICY, TimingConfig(tolerance=0.05, retries=0))
    assert (items, generations, len(logs)) == (9, 19, 8)
    assert logs == pytest.approx([math.log(2.0)] * 4 + [math.log(2.4)] * 4)


def test_replay_with_spaced_baselines_skips_the_ones_between():
    # k = 2, tolerance 50% (never unsteady): B0 | P0 P1 | B2 (B1 skipped: the segment spans it) | P2 P3 | B4 | P4 P5
    # | B6 | P6 P7 | B8; the next segment would need P8 and P9 (there is no P9): cut off, dropped with its P8.
    # Baselines (1.0, 1.0), (1.0, 1.0), (1.0, 1.2 -> mean 1.1), (1.2, 1.2): 8 items, 1 + 4 x (2 P + 1 B) = 13
    logs, items, generations = timing_drift.replay(BASE, POLICY, TimingConfig(baseline_every=2, tolerance=0.5))
    assert (items, generations) == (8, 13)
    assert logs == pytest.approx([math.log(2.0)] * 4 + [math.log(2.2)] * 2 + [math.log(2.4)] * 2)


def test_standard_error_counts_the_neighbours_covariance():
    # values 0, 2, 1, 3: mean 1.5, gamma_0 = 1.25, gamma_1 = (-0.75 - 0.25 - 0.75) / 3; n = 15
    expected = math.sqrt((1.25 + 2 * (-1.75 / 3) * 14 / 15) / 15)
    assert timing_drift.standard_error([0.0, 2.0, 1.0, 3.0]) == pytest.approx(expected)
