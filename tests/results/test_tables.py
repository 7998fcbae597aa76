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
    intervals = ["lpips_lo", "lpips_hi", "ssim_lo", "ssim_hi", "psnr_lo", "psnr_hi", "decisions"]
    assert parsed[0] == COLUMNS + intervals and len(parsed) == 3
    static = dict(zip(parsed[0], parsed[2]))  # plain numbers, for machines
    assert float(static["speedup"]) == pytest.approx((8 / 3) ** 0.5) and float(static["speedup_lo"]) == pytest.approx(4 / 3)
    assert float(static["psnr"]) == 25.0 and static["lpips"] == ""
    md = render(rows, "markdown").splitlines()
    assert md[0].startswith("| model | policy | setting |") and md[1].startswith("|---|") and len(md) == 4
    assert "| 1.63x [1.33, 2.00] |" in md[3] and "speedup_lo" not in md[0]  # the interval folded into the cell
    tex = render(rows, "latex")
    assert tex.startswith("\\begin{tabular}") and "pflops\\_no\\_attn" in tex and tex.rstrip().endswith("\\end{tabular}")
    data = json.loads(render(rows, "json"))
    assert data[1]["speedup"] == pytest.approx((8 / 3) ** 0.5) and list(data[0]) == COLUMNS + intervals
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


def full_record(nfe, nfe_eff, nfe_ref, lat, lat_ref, flops, no_attn, ref_flops, ref_no_attn, lpips, ssim, psnr):
    return {"model": "m", "policy": "p", "setting": "s", "prompt_group": "default", "nfe": nfe,
            "nfe_effective": nfe_eff, "latency": {"total_s": lat},
            "flops": {"total": flops, "total_no_attn": no_attn},
            "metrics": {"lpips": lpips, "ssim": ssim, "psnr": psnr},
            "reference": {"nfe": nfe_ref, "latency": {"total_s": lat_ref},
                          "flops": {"total": ref_flops, "total_no_attn": ref_no_attn}},
            # paired timing: the uncached baselines timed beside this video took lat_ref
            "timing": {"speedup": lat_ref / lat, "baseline_s": [lat_ref, lat_ref], "steady": True},
            "baseline": {"latency_s": lat_ref}}


UNEQUAL = [full_record(4, 3.5, 10, 1.0, 3.0, 2e15, 1.5e15, 5e15, 4e15, 0.1, 0.8, 20.0),
           full_record(6, 5.0, 12, 2.0, 5.0, 3e15, 2.5e15, 7e15, 6e15, 0.3, 0.9, 30.0)]


def test_aggregate_with_unequal_values_in_every_column():
    """Every column the mean over videos, by hand; speedup the geometric mean of the per-video paired ratios
    3.0 and 2.5: sqrt(7.5) = 2.739 (the bootstrap interval of two items spans them: [2.5, 3.0])."""
    (row,) = aggregate(UNEQUAL)
    expected = {"videos": 2, "nfe": 5.0, "nfe_effective": 4.25, "nfe_ref": 11.0, "latency_s": 1.5,
                "latency_ref_s": 4.0, "speedup": 7.5 ** 0.5, "pflops": 2.5, "pflops_no_attn": 2.0, "pflops_ref": 6.0,
                "pflops_ref_no_attn": 5.0, "lpips": 0.2, "ssim": 0.85, "psnr": 25.0, "vbench": None}
    assert {k: row[k] for k in expected} == pytest.approx(expected)
    parsed = list(csv.reader(io.StringIO(render([row], "csv"))))
    cells = {k: v for k, v in zip(parsed[0], parsed[1]) if k in COLUMNS}
    assert cells == {"model": "m", "policy": "p", "setting": "s", "videos": "2", "nfe": "5.0", "nfe_effective": "4.25",
                     "nfe_ref": "11.0", "speedup": cells["speedup"], "speedup_lo": "2.5", "speedup_hi": cells["speedup_hi"],
                     "speedup_bound": "", "pflops": "2.5", "pflops_no_attn": "2.0",
                     "pflops_ref": "6.0", "latency_s": "1.5", "latency_ref_s": "4.0", "lpips": "0.2",
                     "ssim": cells["ssim"], "psnr": "25.0", "vbench": "", "near_threshold": "", "note": ""}
    assert float(cells["ssim"]) == pytest.approx(0.85) and float(cells["speedup"]) == pytest.approx(row["speedup"])
    assert float(cells["speedup_hi"]) == pytest.approx(3.0)


def test_a_metric_missing_on_some_videos_is_the_mean_over_the_others():
    third = full_record(8, 8.0, 14, 3.0, 4.0, 4e15, 3.5e15, 9e15, 8e15, None, 0.7, 10.0)
    (row,) = aggregate(UNEQUAL + [third])
    assert row["lpips"] == pytest.approx(0.2)  # (0.1 + 0.3) / 2: the video without LPIPS is not a zero
    assert row["ssim"] == pytest.approx(0.8) and row["psnr"] == pytest.approx(20.0) and row["nfe"] == 6.0
    assert row["speedup"] == pytest.approx((3.0 * 2.5 * 4.0 / 3.0) ** (1 / 3))  # geometric mean of the ratios
