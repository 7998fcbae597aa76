"""The papers' layouts on hand-made records: rows, cache %, FLOPs convention, bold in the right cells."""

from __future__ import annotations

import json

import pytest

from sencache_bench.metrics.vbench import DIMENSIONS, NORMALIZE
from sencache_bench.results.layouts import layout_rows, render_layout


def record(model, policy, setting, nfe, latency, psnr, lpips, ssim=0.9, ref_key="k0", metrics=None, ref_metrics=None):
    return {"model": model, "policy": policy, "setting": setting, "prompt_group": "default", "nfe": nfe,
            "latency": {"total_s": latency},
            "flops": {"total": 4e15 * nfe / 50, "total_no_attn": 1e15 * nfe / 50},
            "metrics": {"psnr": psnr, "ssim": ssim, "lpips": lpips, **(metrics or {})},
            "reference": {"key": ref_key, "nfe": 50, "latency": {"total_s": 10.0},
                          "flops": {"total": 4e15, "total_no_attn": 1e15}, "metrics": ref_metrics or {}},
            "timing": {"speedup": 10.0 / latency, "baseline_s": [10.0, 10.0], "steady": True},  # paired: 10 s uncached
            "baseline": {"latency_s": 10.0},
            "device_name": "cpu-x"}


RECORDS = [
    record("wan", "teacache", "fast", 20, 4.0, 25.0, 0.20),
    record("wan", "sencache", "slow", 30, 5.0, 30.0, 0.10, ssim=0.95),
    record("wan", "sencache", "fast", 20, 4.0, 28.0, 0.12),
    record("ltx", "none", "default", 50, 10.0, 100.0, 0.0, ssim=1.0),
    record("ltx", "magcache", "slow", 25, 6.0, 27.0, 0.15),
]


def md_rows(text):
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|:")][1:]


def test_rows_uncached_first_and_cache_percent():
    rows = layout_rows(RECORDS)
    assert [(r["model"], r["method"]) for r in rows] == [
        ("ltx", "Uncached"), ("ltx", "magcache (slow)"),
        ("wan", "Uncached"), ("wan", "sencache (fast)"), ("wan", "sencache (slow)"), ("wan", "teacache (fast)")]
    wan_ref = rows[2]  # no `none` records for wan: built from the (one, shared) reference
    assert wan_ref["uncached"] and wan_ref["nfe"] == 50 and wan_ref["videos"] == 1
    assert wan_ref["pflops_no_attn"] == pytest.approx(1.0) and wan_ref["latency_s"] == 10.0
    assert rows[3]["cache"] == pytest.approx(1 - 20 / 50) and rows[4]["cache"] == pytest.approx(1 - 30 / 50)
    assert rows[1]["pflops_no_attn"] == pytest.approx(0.5)  # the no-attention convention, not total (2.0)


def test_sencache_markdown_bold_cells():
    table = md_rows(render_layout(RECORDS, "sencache", "markdown"))
    assert table[0][:2] == ["ltx", "Uncached"] and table[1][0] == ""  # model shown once per group
    wan = {row[1]: row for row in table[2:]}
    assert wan["Uncached"] == ["wan", "Uncached", "50", "0.0%", "-", "-", "-"]  # never bold
    # NFE: sencache (fast) and teacache (fast) tie at 20; LPIPS/PSNR/SSIM: sencache (slow)
    assert wan["sencache (fast)"][2] == "**20**" and wan["teacache (fast)"][2] == "**20**"
    assert wan["sencache (slow)"][2:] == ["30", "40.0%", "**0.1000**", "**30.00**", "**0.9500**"]
    assert wan["teacache (fast)"][4:] == ["0.2000", "25.00", "0.9000"]
    ltx = table[1]  # the only cached ltx row is best in every column; the uncached row is not
    assert ltx[2:] == ["**25**", "50.0%", "**0.1500**", "**27.00**", "**0.9000**"]
    assert table[0][2:] == ["50", "0.0%", "-", "-", "-"]  # from the reference, not the `none` run's own record


def test_semcache_latex_and_json():
    tex = render_layout(RECORDS, "semcache", "latex")
    assert "pflops\\_no\\_attn" in tex and "\\caption{SemCache Table 1 layout." in tex
    line = next(x for x in tex.splitlines() if x.startswith(" & sencache (slow)"))
    # FLOPs 0.6 P (not best), speedup 10/5 = 2x (not best: 2.5x), latency 5 s; LPIPS/SSIM/PSNR best
    assert line == (" & sencache (slow) & 0.6 & 2.00x & 5.00 &  & \\textbf{0.1000} & \\textbf{0.9500} & "
                     "\\textbf{30.00} \\\\")
    fast = next(x for x in tex.splitlines() if x.startswith(" & sencache (fast)"))
    assert "\\textbf{0.4} & \\textbf{2.50x} & \\textbf{4.00}" in fast
    assert tex.count("\\midrule") == 2  # after the header, and between the two models
    data = json.loads(render_layout(RECORDS, "semcache", "json"))
    assert data[0]["Method"] == "Uncached" and data[0]["best"] == []
    assert set(data[3]["best"]) == {"FLOPs (P)", "Speedup", "Latency (s)"}


def test_vbench_columns_total_or_dimensions():
    tf = {"vbench_temporal_flickering": 0.97}
    recs = [record("m", "a", "x", 20, 4.0, 30.0, 0.1, metrics=tf, ref_metrics={"vbench_temporal_flickering": 0.98}),
            record("m", "b", "y", 25, 5.0, 31.0, 0.1, metrics={"vbench_temporal_flickering": 0.96})]
    table = md_rows(render_layout(recs, "semcache", "markdown"))
    header = render_layout(recs, "semcache", "markdown").splitlines()[2]
    assert "VBench temporal_flickering" in header
    assert table[0][5] == "98.00%" and table[1][5] == "**97.00%**" and table[2][5] == "96.00%"
    full = {f"vbench_{d}": NORMALIZE[d][1] for d in DIMENSIONS}  # every dimension at VBench's Max: total 1
    recs = [record("m", "a", "x", 20, 4.0, 30.0, 0.1, metrics=full)]
    table = md_rows(render_layout(recs, "semcache", "markdown"))
    assert "| VBench |" in render_layout(recs, "semcache", "markdown") and table[1][5] == "**100.00%**"


def test_labels_keep_only_what_varies():
    recs = [record("m", "static", "every=2,reuse=residual", 25, 5.0, 30.0, 0.1),
            record("m", "static", "every=3,reuse=residual", 17, 4.0, 28.0, 0.2),
            record("m", "teacache", "thresh=0.1,coeffs=[1,2]", 20, 4.0, 28.0, 0.2)]
    common = []
    rows = layout_rows(recs, common)
    assert [r["method"] for r in rows] == ["Uncached", "static (every=2)", "static (every=3)",
                                           "teacache (thresh=0.1, coeffs=[1,2])"]
    assert common == ["m: static: reuse=residual"]
    text = render_layout(recs, "sencache", "markdown")
    assert "Settings common to a policy's rows: m: static: reuse=residual." in text


def test_table_cli_layouts(tmp_path):
    from typer.testing import CliRunner

    from sencache_bench.cli.app import app
    from sencache_bench.results.store import SCHEMA_VERSION

    for i, rec in enumerate(RECORDS):
        path = tmp_path / "runs" / f"{rec['policy']}-{rec['setting']}" / f"{i}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**rec, "kind": "run", "schema_version": SCHEMA_VERSION}))
    out = CliRunner().invoke(app, ["table", str(tmp_path), "--layout", "semcache", "-f", "markdown",
                                   "--out", str(tmp_path / "t.md")])
    assert out.exit_code == 0, out.output
    assert "| Model | Method | FLOPs (P) | Speedup |" in out.stdout and (tmp_path / "t.md").read_text() == out.stdout
    bad = CliRunner().invoke(app, ["table", str(tmp_path), "--layout", "iclr"])
    assert bad.exit_code == 1 and "unknown layout 'iclr'" in str(bad.exception)


# -- matched: equal budgets -----------------------------------------------------------------------------------
def matched(policy, value, target, tuned, psnr, ssim=0.9, prompt=0, seed=0, setting=None, knob="thresh"):
    rec = record("bench", policy, setting or f"{knob}={value}", round(tuned), 1.0, psnr, None, ssim=ssim)
    rec.update(prompt_index=prompt, seed=seed, match={"by": "nfe", "target_fraction": target / 30,
                                                      "target_nfe": target, "knob": knob, "value": value,
                                                      "tuned_nfe": tuned, "monotone": True})
    return rec


def matched_records():
    recs = []
    for i, (a, b, c) in enumerate([(40, 30, 35), (41, 31, 36), (42, 32, 34), (43, 33, 37)]):
        # target 15: sencache 40..43 is clear of teacache 30..33 in PSNR; SSIM equal for all: a tie
        recs.append(matched("sencache", 0.3, 15.0, 15.0, a, prompt=i))
        recs.append(matched("teacache", 0.2, 15.0, 14.5, b, prompt=i))
        # target 12.6: teacache 34..37 overlaps sencache 35..38 (means 35.5 and 36.5): a tie
        recs.append(matched("sencache", 0.6, 12.6, 13.0, c + 1, prompt=i, setting="thresh=0.6,max_reuse=3"))
        recs.append(matched("teacache", 0.4, 12.6, 12.0, c, prompt=i))
    return recs


def test_matched_layout_bold_only_when_intervals_separate():
    text = render_layout(matched_records(), "matched", "markdown")
    rows = md_rows(text)
    header = text.splitlines()[2]
    assert header.startswith("| Model | Target NFE | Method | Knob | Tuned NFE | NFE |")
    first, second = rows[0], rows[1]
    assert first[:5] == ["bench", "15 (0.5)", "sencache", "thresh=0.3", "15.00"]
    # PSNR: mean 41.5, bootstrap interval of (40, 41, 42, 43) within [40, 43]: bold, clear of teacache
    assert first[10].startswith("**41.50 [") and first[10].endswith("]**") and second[10].startswith("31.50 [")
    assert first[11].endswith("tie") and second[11].endswith("tie")  # SSIM 0.9 everywhere: a tie
    fast = rows[2:]
    assert [r[2] for r in fast] == ["sencache (max_reuse=3)", "teacache"]  # the other field that differs is shown
    assert fast[0][10].endswith("tie") and fast[1][10].endswith("tie") and "**" not in fast[0][10]
    assert "bench, target 15 NFE: PSNR best sencache (clear of teacache); SSIM tie sencache / teacache." in text
    assert "bench, target 12.6 NFE: PSNR tie sencache / teacache" in text


def test_matched_json_has_intervals_and_verdicts():
    data = json.loads(render_layout(matched_records(), "matched", "json"))
    top = data[0]
    assert (top["policy"], top["target_nfe"], top["value"], top["tuned_nfe"]) == ("sencache", 15.0, 0.3, 15.0)
    assert 40 <= top["psnr_lo"] < top["psnr"] == 41.5 < top["psnr_hi"] <= 43
    assert top["best"] == ["psnr"] and top["tie"] == ["ssim"]
    assert data[2]["best"] == [] and "psnr" in data[2]["tie"]


def test_matched_record_serving_two_targets_and_no_records():
    recs = [matched("static", 2, 15.0, 15.0, 40.0, prompt=i, knob="every") for i in range(2)]
    for r in recs:
        r["match"]["also"] = [{"by": "nfe", "target_fraction": 0.47, "target_nfe": 14.1, "tuned_nfe": 15.0}]
    data = json.loads(render_layout(recs, "matched", "json"))
    assert [(r["target_nfe"], r["videos"]) for r in data] == [(15.0, 2), (14.1, 2)]
    assert "No matched records here" in render_layout([record("m", "a", "x", 20, 4.0, 30.0, 0.1)], "matched",
                                                      "markdown")
