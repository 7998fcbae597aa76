"""Table aggregation worked out by hand on small records, and every output format."""

from __future__ import annotations

import csv
import io
import json

import pytest

from sencache_bench.results.tables import COLUMNS, aggregate, render


def record(policy, setting, latency, ref_latency, nfe, psnr, group="default", lpips=None):
    return {"model": "m", "policy": policy, "setting": setting, "prompt_group": group, "nfe": nfe,
            "latency": {"total_s": latency}, "flops": {"total": 2e15 * nfe / 10, "total_no_attn": 1e15 * nfe / 10},
            "metrics": {"psnr": psnr, "ssim": 0.9, "lpips": lpips},
            "reference": {"nfe": 10, "latency": {"total_s": ref_latency}, "flops": {"total": 2e15}},
            # paired timing: the uncached baseline timed beside this video took ref_latency
            "timing": {"speedup": ref_latency / latency, "baseline_s": [ref_latency, ref_latency], "steady": True},
            "baseline": {"latency_s": ref_latency}}


RECORDS = [record("static", "every=2", 1.0, 2.0, 5, 30.0, "static"), record("static", "every=2", 3.0, 4.0, 5, 20.0, "dynamic"),
           record("none", "default", 2.0, 2.0, 10, 100.0, "static", lpips=0.0)]


def test_aggregate_by_hand():
    rows = {r["policy"]: r for r in aggregate(RECORDS)}
    s = rows["static"]
    assert s["videos"] == 2 and s["nfe"] == 5 and s["nfe_ref"] == 10
    # geometric mean of the per-video paired ratios 2/1 and 4/3: sqrt(8/3) = 1.633
    assert s["speedup"] == pytest.approx((8 / 3) ** 0.5)
    assert s["speedup_lo"] == pytest.approx(4 / 3) and s["speedup_hi"] == pytest.approx(2.0)  # bootstrap of 2 items
    assert s["latency_s"] == 2.0 and s["latency_ref_s"] == 3.0
    assert s["pflops"] == pytest.approx(1.0) and s["pflops_no_attn"] == pytest.approx(0.5) and s["pflops_ref"] == 2.0
    assert s["psnr"] == 25.0 and s["lpips"] is None and s["vbench"] is None
    assert rows["none"]["speedup"] == 1.0 and rows["none"]["lpips"] == 0.0
    grouped = aggregate(RECORDS, by_group=True)
    assert [(r["policy"], r["group"], r["videos"]) for r in grouped] == [
        ("none", "static", 1), ("static", "dynamic", 1), ("static", "static", 1)]


def test_formats():
    rows = aggregate(RECORDS)
    parsed = list(csv.reader(io.StringIO(render(rows, "csv"))))
    assert parsed[0] == COLUMNS and len(parsed) == 3
    static = dict(zip(parsed[0], parsed[2]))
    assert static["speedup"] == "1.63x" and static["speedup_lo"] == "1.33x" and static["psnr"] == "25.00"
    assert static["lpips"] == ""
    md = render(rows, "markdown").splitlines()
    assert md[0].startswith("| model | policy | setting |") and md[1].startswith("|---|") and len(md) == 4
    assert "| 1.63x [1.33, 2.00] |" in md[3] and "speedup_lo" not in md[0]  # the interval folded into the cell
    tex = render(rows, "latex")
    assert tex.startswith("\\begin{tabular}") and "pflops\\_no\\_attn" in tex and tex.rstrip().endswith("\\end{tabular}")
    data = json.loads(render(rows, "json"))
    assert data[1]["speedup"] == pytest.approx((8 / 3) ** 0.5) and list(data[0]) == COLUMNS
    table = render(rows, "rich")
    assert [c.header for c in table.columns] == [c for c in COLUMNS if c not in ("speedup_lo", "speedup_hi")]
    assert table.row_count == 2
    with pytest.raises(ValueError, match="unknown format"):
        render(rows, "xml")


def test_runs_at_several_samplings_are_not_averaged_together():
    a = {**record("static", "every=2", 1.0, 2.0, 5, 30.0), "sampling": {"width": 32, "height": 32, "frames": 9, "steps": 6}}
    b = {**record("static", "every=2", 1.0, 2.0, 4, 20.0), "sampling": {"width": 32, "height": 32, "frames": 9, "steps": 8}}
    rows = aggregate([a, b])
    assert sorted(r["model"] for r in rows) == ["m (32x32x9, 6 steps)", "m (32x32x9, 8 steps)"]
    assert [r["model"] for r in aggregate([a])] == ["m"]
