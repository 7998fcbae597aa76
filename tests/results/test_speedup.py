"""A row's speedup: geometric mean of paired ratios, bootstrap interval, Amdahl bound, plausibility notes."""

from __future__ import annotations

import math

import pytest

from sencache_bench.results.speedup import amdahl_bound, bootstrap_geomean, geomean, summarize, untimed_note, warnings


def record(speedup, policy="static", steady=True, latency=1.0, total=10.0, denoise=8.0, flops=50, ref_flops=100,
           reproduced=True):
    return {"policy": policy, "model": "m", "setting": "s", "latency": {"total_s": latency},
            "timing": {"speedup": speedup, "steady": steady, "baseline_s": [speedup * latency] * 2,
                       "reference_reproduced": reproduced},
            "baseline": {"latency_s": speedup * latency, "phases": {"total_s": total, "denoise_s": denoise}},
            "flops": {"transformer": flops}, "reference": {"flops": {"transformer": ref_flops}}}


def test_geometric_mean_of_ratios():
    assert geomean([2.0, 0.5]) == pytest.approx(1.0)
    assert geomean([1.0, 4.0]) == pytest.approx(2.0)


def test_bootstrap_interval_by_hand():
    """Two items 1 and 4: resamples {1,1}, {1,4}, {4,1}, {4,4} have geometric means 1, 2, 2, 4 (chances 1/4,
    1/2, 1/4): the 2.5th and 97.5th percentiles of 2000 resamples are 1 and 4."""
    assert bootstrap_geomean([1.0, 4.0]) == (pytest.approx(1.0), pytest.approx(4.0))
    assert bootstrap_geomean([1.5] * 5) == (pytest.approx(1.5), pytest.approx(1.5))


def test_amdahl_bound_by_hand():
    """10 s baseline, 8 s of it denoising, half the transformer FLOPs: 10 / (2 + 8 * 0.5) = 1.667."""
    assert amdahl_bound(record(1.5)) == pytest.approx(10 / 6)


def test_row_summary_and_noisy_notes():
    row = summarize([record(1.4), record(1.5), record(1.6)])
    assert row["speedup"] == pytest.approx(math.exp((math.log(1.4) + math.log(1.5) + math.log(1.6)) / 3))
    assert row["speedup_lo"] <= row["speedup"] <= row["speedup_hi"] and row["note"] == ""
    assert row["speedup_bound"] == pytest.approx(10 / 6)
    too_fast = summarize([record(2.5), record(2.6)])  # above the 1.67x bound, the whole interval
    assert too_fast["note"] == "noisy"
    assert warnings([{**too_fast, "model": "m", "policy": "static", "setting": "s"}])[0].startswith(
        "m / static s: speedup 2.55x [2.50, 2.60], bound 1.67x: noisy")
    none = summarize([record(1.1, policy="none", flops=100), record(1.12, policy="none", flops=100)])
    assert none["note"] == "noisy"  # an uncached run must time as 1.0x
    assert summarize([record(0.99, policy="none", flops=100), record(1.02, policy="none", flops=100)])["note"] == ""


def test_unsteady_items_are_left_out_and_counted():
    row = summarize([record(1.5), record(1.5), record(3.0, steady=False)])
    assert row["speedup"] == pytest.approx(1.5) and row["note"] == "1 of 3 unsteady, left out"
    none_steady = summarize([record(1.5, steady=False), record(4.6, steady=False)])
    assert none_steady["note"] == "all 2 unsteady: no speedup" and none_steady["speedup"] is None
    assert none_steady["speedup_lo"] is None and none_steady["speedup_bound"] is None
    line = warnings([{**none_steady, "model": "m", "policy": "none", "setting": "s"}])
    assert line == ["m / none s: all 2 unsteady: no speedup (timing disturbed: rerun with --force on a quiet machine, "
                    "or raise timing.retries)"]
    assert "1 baseline(s) differ" in summarize([record(1.5, reproduced=False), record(1.5)])["note"]


def test_untimed_note_keeps_what_two_runs_must_agree_on():
    """Rerun comparisons (tests/faults, test_resume, test_sweep) compare this instead of dropping the note: timing
    noise goes, a baseline that no longer reproduces the stored reference stays."""
    timing_only = [summarize([record(2.5), record(2.6)]),  # noisy
                   summarize([record(1.5), record(1.5), record(3.0, steady=False)]),  # 1 of 3 unsteady, left out
                   summarize([record(1.5, steady=False)]),  # all 1 unsteady: no speedup
                   summarize([record(2.5, steady=False), record(2.6, steady=False)])]  # all 2 unsteady: no speedup
    assert [r["note"] for r in timing_only] == ["noisy", "1 of 3 unsteady, left out", "all 1 unsteady: no speedup",
                                                "all 2 unsteady: no speedup"]
    assert [untimed_note(r["note"]) for r in timing_only] == [""] * 4
    differ = summarize([record(2.5, reproduced=False), record(2.6), record(9.0, steady=False)])
    assert differ["note"] == "noisy; 1 of 3 unsteady, left out; 1 baseline(s) differ from the stored reference"
    assert untimed_note(differ["note"]) == "1 baseline(s) differ from the stored reference"
    assert untimed_note("") == untimed_note(None) == ""


def test_a_timing_warning_is_one_line_on_a_narrow_terminal(capsys, monkeypatch):
    """The CLI prints each warning on one line whatever the width (fault tests and users grep them)."""
    from sencache_bench.cli._console import warn_timing

    monkeypatch.setenv("COLUMNS", "60")
    row = {**summarize([record(1.5, steady=False), record(4.6, steady=False)]), "model": "tiny-wan",
           "policy": "static", "setting": "every=3,reuse=residual"}
    warn_timing([], rows=[row])
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: tiny-wan / static every=3,reuse=residual: all 2 unsteady")
