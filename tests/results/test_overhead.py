"""The overhead layout: share of the Amdahl bound reached, and the lost time split into deciding, hooks and rest,
checked against numbers worked out by hand."""

from __future__ import annotations

import pytest

from sencache_bench.results.overhead import overhead_row, render_overhead, video_overhead


def record(latency=7.0, decide=(0.1, 0.1), hook=(0.2, 0.1), steady=True, key="k0", policy="static"):
    """Baseline 10 s (8 s denoising), transformer FLOPs halved: bound = 10 / (2 + 8 * 0.5) = 5/3, so the ideal
    latency is 6 s and a 7 s video lost 1 s."""
    trace = [{"branch": "cond", "step": i, "computed": i == 0, "s": 1.0, "decide_s": d, "hook_s": h}
             for i, (d, h) in enumerate(zip(decide, hook))]
    return {"kind": "run", "model": "m", "policy": policy, "setting": "every=2", "nfe": 1.0,
            "latency": {"total_s": latency}, "trace": trace,
            "timing": {"speedup": 10.0 / latency, "steady": steady, "baseline_s": [10.0, 10.0]},
            "baseline": {"latency_s": 10.0, "phases": {"total_s": 10.0, "denoise_s": 8.0}},
            "flops": {"transformer": 50, "total": 60, "total_no_attn": 55},
            "reference": {"key": key, "nfe": 2.0, "flops": {"transformer": 100, "total": 110, "total_no_attn": 100}},
            "metrics": {"psnr": 30.0}}


def test_video_overhead_by_hand():
    v = video_overhead(record())
    assert v["lost_s"] == pytest.approx(1.0)
    assert v["decide_s"] == pytest.approx(0.2) and v["hook_s"] == pytest.approx(0.3)
    assert video_overhead(record(steady=False)) is None  # unsteady: left out, as from the speedup


def test_row_means_and_shares():
    recs = [record(), record(latency=8.0, decide=(0.3, 0.3), hook=(0.2, 0.2), key="k1")]
    row = overhead_row(recs, speedup=1.25, bound=5 / 3)
    assert row["reached"] == pytest.approx(0.75)
    assert row["lost_ms"] == pytest.approx(1500)  # lost 1 s and 2 s
    assert row["decide_ms"] == pytest.approx(400) and row["hook_ms"] == pytest.approx(350)
    assert row["rest_ms"] == pytest.approx(750) and row["explained"] == pytest.approx(0.5)


def test_policy_deciding_outside_the_harness_has_empty_columns():
    rec = record()
    for call in rec["trace"]:
        del call["decide_s"], call["hook_s"]
    row = overhead_row([rec], speedup=10 / 7, bound=5 / 3)
    assert row["lost_ms"] == pytest.approx(1000)
    assert row["decide_ms"] is row["hook_ms"] is row["rest_ms"] is row["explained"] is None


def test_rendered_table_fits_120_columns():
    from rich.console import Console

    recs = [record(key=f"k{i}") for i in range(3)] + [record(key=f"k{i}", policy="magcache") for i in range(3)]
    table = render_overhead(recs, "rich")
    assert Console(width=10_000).measure(table).maximum <= 120
    md = render_overhead(recs, "markdown")
    assert "|  | static (every=2) | 3 | 1.43x | 1.67x | 86% | 1000 | 200 | 300 | 500 | 50% |" in md
