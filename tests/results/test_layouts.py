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


SPREAD = [0.0, 3.0, -2.0, 5.0, -4.0, -2.0]  # the prompts differ far more than the policies do (mean 0)


def videos(model, policy, setting, nfe, latency, psnr, lpips, ssim=0.9):
    """One record per video (reference key v0..v5): the same prompt spread for every policy."""
    return [record(model, policy, setting, nfe, latency, psnr + d, lpips + d / 100, ssim=ssim, ref_key=f"v{i}")
            for i, d in enumerate(SPREAD)]


RECORDS = [
    *videos("wan", "teacache", "fast", 20, 4.0, 25.0, 0.20),
    *videos("wan", "sencache", "slow", 30, 5.0, 30.0, 0.10, ssim=0.95),
    *videos("wan", "sencache", "fast", 20, 4.0, 28.0, 0.12),
    *videos("ltx", "none", "default", 50, 10.0, 100.0, 0.0, ssim=1.0),
    *videos("ltx", "magcache", "slow", 25, 6.0, 27.0, 0.15),
]


def md_rows(text):
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|:")][1:]


def test_rows_uncached_first_and_cache_percent():
    rows = layout_rows(RECORDS)
    assert [(r["model"], r["method"]) for r in rows] == [
        ("ltx", "Uncached"), ("ltx", "magcache (slow)"),
        ("wan", "Uncached"), ("wan", "sencache (fast)"), ("wan", "sencache (slow)"), ("wan", "teacache (fast)")]
    wan_ref = rows[2]  # no `none` records for wan: built from the (six, shared) references
    assert wan_ref["uncached"] and wan_ref["nfe"] == 50 and wan_ref["videos"] == 6
    assert wan_ref["pflops_no_attn"] == pytest.approx(1.0) and wan_ref["latency_s"] == 10.0
    assert rows[3]["cache"] == pytest.approx(1 - 20 / 50) and rows[4]["cache"] == pytest.approx(1 - 30 / 50)
    assert rows[1]["pflops_no_attn"] == pytest.approx(0.5)  # the no-attention convention, not total (2.0)


def test_sencache_markdown_bold_cells():
    table = md_rows(render_layout(RECORDS, "sencache", "markdown"))
    assert table[0][:2] == ["ltx", "Uncached"] and table[1][0] == ""  # model shown once per group
    wan = {row[1]: row for row in table[2:]}
    assert wan["Uncached"] == ["wan", "Uncached", "50", "0.0%", "-", "-", "-", "1.00x", ""]  # never bold
    # NFE: sencache (fast) and teacache (fast) tie at 20 (best value, both bold); LPIPS/PSNR/SSIM: sencache (slow),
    # separated from both others on every video; speedup: the two fast rows are equal (2.5x), not separated
    assert wan["sencache (fast)"][2] == "**20**" and wan["teacache (fast)"][2] == "**20**"
    assert wan["sencache (slow)"][2:8] == ["30", "40.0%", "**0.1000 a**", "**30.00 a**", "**0.9500 a**",
                                           "2.00x [2.00, 2.00] b"]
    assert wan["teacache (fast)"][4:8] == ["0.2000 c", "25.00 c", "0.9000 b", "2.50x [2.50, 2.50] a"]
    assert wan["sencache (fast)"][4:8] == ["0.1200 b", "28.00 b", "0.9000 b", "2.50x [2.50, 2.50] a"]
    ltx = table[1]  # the only cached ltx row: best value where values decide, no pair to separate it from
    assert ltx[2:7] == ["**25**", "50.0%", "0.1500 a", "27.00 a", "0.9000 a"]
    assert table[0][2:7] == ["50", "0.0%", "-", "-", "-"]  # from the reference, not the `none` run's own record


def test_semcache_latex_and_json():
    tex = render_layout(RECORDS, "semcache", "latex")
    assert "pflops\\_no\\_attn" in tex and "\\caption{SemCache Table 1 layout." in tex
    line = next(x for x in tex.splitlines() if x.startswith(" & sencache (slow)"))
    # FLOPs 0.6 P (not best), speedup 10/5 = 2x (separated, below the fast rows), latency 5 s; LPIPS/SSIM/PSNR best
    assert line == (" & sencache (slow) & 0.6 & 2.00x [2.00, 2.00] b &  & 5.00 &  & \\textbf{0.1000 a} & "
                    "\\textbf{0.9500 a} & \\textbf{30.00 a} \\\\")
    fast = next(x for x in tex.splitlines() if x.startswith(" & sencache (fast)"))
    assert "\\textbf{0.4} & 2.50x [2.50, 2.50] a &  & 4.00" in fast  # equal to teacache (fast): not bold
    assert tex.count("\\midrule") == 2  # after the header, and between the two models
    data = json.loads(render_layout(RECORDS, "semcache", "json"))
    assert data[0]["method"] == "Uncached" and data[0]["best"] == []
    assert data[3]["best"] == ["FLOPs (P)"] and data[3]["speedup_group"] == "a" and data[3]["psnr_group"] == "b"
    assert data[4]["best"] == ["LPIPS", "SSIM", "PSNR"] and data[4]["psnr"] == pytest.approx(30.0)
    assert data[4]["psnr_lo"] < 30.0 < data[4]["psnr_hi"]  # plain numbers with the interval beside them
    assert "speedup_lo" in data[4] and data[4]["speedup_hi"] == pytest.approx(2.0)


def test_csv_of_every_layout_has_plain_numbers():
    import io

    import pandas as pd

    for layout in ("default", "sencache", "semcache", "pairs"):
        frame = pd.read_csv(io.StringIO(render_layout(RECORDS, layout, "csv") if layout != "default"
                                        else __import__("sencache_bench.api", fromlist=["table"]).table(
                                            RECORDS, format="csv")))
        numeric = [c for c in frame.columns if c in ("psnr", "psnr_lo", "psnr_hi", "speedup", "speedup_lo", "diff",
                                                     "lo", "hi", "p_adj", "nfe")]
        assert numeric, layout
        for c in numeric:
            assert pd.api.types.is_numeric_dtype(frame[c]), (layout, c, frame[c].tolist())


def test_vbench_columns_total_or_dimensions():
    tf = {"vbench_temporal_flickering": 0.97}
    recs = [record("m", "a", "x", 20, 4.0, 30.0, 0.1, metrics=tf, ref_metrics={"vbench_temporal_flickering": 0.98}),
            record("m", "b", "y", 25, 5.0, 31.0, 0.1, metrics={"vbench_temporal_flickering": 0.96})]
    table = md_rows(render_layout(recs, "semcache", "markdown"))
    header = render_layout(recs, "semcache", "markdown").splitlines()[2]
    assert "VBench temporal_flickering" in header
    assert table[0][6] == "98.00%" and table[1][6] == "**97.00%**" and table[2][6] == "96.00%"
    full = {f"vbench_{d}": NORMALIZE[d][1] for d in DIMENSIONS}  # every dimension at VBench's Max: total 1
    recs = [record("m", "a", "x", 20, 4.0, 30.0, 0.1, metrics=full)]
    table = md_rows(render_layout(recs, "semcache", "markdown"))
    assert "| VBench |" in render_layout(recs, "semcache", "markdown") and table[1][6] == "**100.00%**"


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
def matched(policy, value, target, tuned, psnr, ssim=0.9, prompt=0, seed=0, setting=None, knob="thresh", nfe=None):
    rec = record("bench", policy, setting or f"{knob}={value}", nfe or round(tuned), 1.0, psnr, None, ssim=ssim,
                 ref_key=f"p{prompt}-s{seed}")
    rec.update(prompt_index=prompt, seed=seed, match={"by": "nfe", "target_fraction": target / 30,
                                                      "target_nfe": target, "knob": knob, "value": value,
                                                      "tuned_nfe": tuned, "monotone": True})
    return rec


def matched_records():
    recs = []
    spread = [0, 6, -3, 4, -5, 2, -4]  # between prompts: far wider than between the policies
    for i, d in enumerate(spread):
        # target 15: sencache 1 dB above teacache on every video (+- 0.1): separated although the rows' own
        # intervals overlap; SSIM equal for all: not separated
        recs.append(matched("sencache", 0.3, 15.0, 15.0, 41 + d + 0.1 * (-1) ** i, prompt=i))
        recs.append(matched("teacache", 0.2, 15.0, 14.5, 40 + d, prompt=i))
        # target 12.6: sencache above on some videos, below on others: not separated
        recs.append(matched("sencache", 0.6, 12.6, 13.0, 36 + d + (-1) ** i, prompt=i,
                            setting="thresh=0.6,max_reuse=3"))
        recs.append(matched("teacache", 0.4, 12.6, 12.0, 36 + d, prompt=i))
    return recs


def test_matched_layout_bold_only_when_the_pairs_separate():
    text = render_layout(matched_records(), "matched", "markdown")
    rows = md_rows(text)
    header = text.splitlines()[2]
    assert header.startswith("| Model | Target NFE | Method | Knob | Tuned NFE | NFE |")
    first, second = rows[0], rows[1]
    assert first[:5] == ["bench", "15 (0.5)", "sencache", "thresh=0.3", "15.00"]
    psnr, ssim = 11, 12
    assert first[psnr].startswith("**41.01 [") and first[psnr].endswith("] a**") and second[psnr].endswith("] b")
    lo, hi = (float(x) for x in second[psnr].split("[")[1].split("]")[0].split(","))
    assert lo < 41.01 < hi  # the rows' own intervals overlap: the old rule called this a tie
    assert first[ssim].endswith(" a") and second[ssim].endswith(" a") and "**" not in first[ssim]
    fast = rows[2:]
    assert [r[2] for r in fast] == ["sencache (max_reuse=3)", "teacache"]  # the other field that differs is shown
    assert fast[0][psnr].endswith(" a") and fast[1][psnr].endswith(" a") and "**" not in fast[0][psnr]
    assert "bench, target 15 NFE: PSNR best sencache (separable: " in text
    assert "bench, target 12.6 NFE: PSNR not separated (sencache (max_reuse=3), teacache)" in text
    assert "n = 7 per row" in text and "Holm" in text


def test_matched_json_has_intervals_and_verdicts():
    data = json.loads(render_layout(matched_records(), "matched", "json"))
    top = data[0]
    assert (top["policy"], top["target_nfe"], top["value"], top["tuned_nfe"]) == ("sencache", 15.0, 0.3, 15.0)
    assert top["psnr_lo"] < top["psnr"] < top["psnr_hi"] and top["psnr"] == pytest.approx(41 + 0.1 / 7)
    assert top["best"] == ["psnr"] and (top["psnr_group"], top["ssim_group"]) == ("a", "a")
    assert data[1]["psnr_group"] == "b" and data[2]["best"] == [] and data[3]["psnr_group"] == "a"


def test_matched_rows_off_the_target_budget_are_flagged():
    # the README's old 0.42 group: static at 10.0 calls and teacache at 13.0 compared as one budget of 12.6
    recs = [matched("static", 3, 12.6, 10.0, 40.0 + i, prompt=i, knob="every", nfe=10) for i in range(6)]
    recs += [matched("teacache", 0.4, 12.6, 13.0, 41.0 + i, prompt=i, nfe=13) for i in range(6)]
    recs += [matched("magcache", 0.2, 12.6, 12.0, 40.5 + i, prompt=i, nfe=12) for i in range(6)]
    data = {r["policy"]: r for r in json.loads(render_layout(recs, "matched", "json"))}
    assert data["static"]["nfe_off_target"] and "NFE 10.0: -2.6 from the target" in data["static"]["note"]
    assert data["teacache"]["nfe_off_target"] and "3.0 from another row" in data["teacache"]["note"]
    assert data["magcache"]["nfe_off_target"] and "NFE 12.0: 2.0 from another row" in data["magcache"]["note"]
    assert "NFE 10.0: -2.6 from the target" in render_layout(recs, "matched", "markdown")
    within = json.loads(render_layout([r for r in recs if r["policy"] != "static"], "matched", "json"))
    assert [(r["nfe_off_target"], r["note"]) for r in within] == [(False, ""), (False, "")]  # 12 and 13: one step


def test_matched_record_serving_two_targets_and_no_records():
    recs = [matched("static", 2, 15.0, 15.0, 40.0, prompt=i, knob="every") for i in range(2)]
    for r in recs:
        r["match"]["also"] = [{"by": "nfe", "target_fraction": 0.47, "target_nfe": 14.1, "tuned_nfe": 15.0}]
    data = json.loads(render_layout(recs, "matched", "json"))
    assert [(r["target_nfe"], r["videos"]) for r in data] == [(15.0, 2), (14.1, 2)]
    assert "No matched records here" in render_layout([record("m", "a", "x", 20, 4.0, 30.0, 0.1)], "matched",
                                                      "markdown")


def test_pairs_layout_notes_unequal_budgets_and_matched_notes_margins():
    recs = [matched("static", 3, 12.6, 10.0, 40.0 + i, prompt=i, knob="every", nfe=10) for i in range(6)]
    recs += [matched("teacache", 0.4, 12.6, 13.0, 41.0 + i, prompt=i, nfe=13) for i in range(6)]
    for r in recs[6:]:  # one of teacache's decisions sat 5e-4 (relative) from its threshold on each video
        r["trace"] = [{"score": 0.09995, "threshold": 0.1}, {"score": 0.05, "threshold": 0.1}]
    pairs = json.loads(render_layout(recs, "pairs", "json"))
    psnr = next(p for p in pairs if p["metric"] == "psnr")
    assert (psnr["a"], psnr["b"], psnr["n"]) == ("static", "teacache", 6)
    assert psnr["diff"] == pytest.approx(-1.0) and psnr["separated"] and psnr["verdict"] == "teacache better"
    assert "unequal budget: NFE 10.0 vs 13.0" in psnr["note"]
    rows = {r["policy"]: r for r in json.loads(render_layout(recs, "matched", "json"))}
    assert "6/12 decisions within 0.001 of their threshold" in rows["teacache"]["note"]
    assert "decisions within" not in rows["static"]["note"]


def test_table_cli_pairs_and_detect(tmp_path):
    import csv
    import io

    from typer.testing import CliRunner

    from sencache_bench.cli.app import app
    from sencache_bench.results.store import SCHEMA_VERSION

    for i, rec in enumerate(matched_records()):
        path = tmp_path / "runs" / f"{rec['policy']}-{rec['setting']}" / f"{i}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**rec, "kind": "run", "schema_version": SCHEMA_VERSION}))
    out = CliRunner().invoke(app, ["table", str(tmp_path), "--layout", "pairs", "-f", "csv"])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    psnr15 = next(r for r in rows if r["metric"] == "psnr" and r["group"] == "target 15")
    assert (psnr15["a"], psnr15["b"], psnr15["n"]) == ("sencache", "teacache", "7")
    assert float(psnr15["diff"]) == pytest.approx(1 + 0.1 / 7) and float(psnr15["p_adj"]) < 0.05
    out = CliRunner().invoke(app, ["table", str(tmp_path), "--layout", "matched", "-f", "markdown",
                                   "--detect", "psnr=0.05"])
    assert out.exit_code == 0 and "videos for 0.05 dB" in out.stdout
    bad = CliRunner().invoke(app, ["table", str(tmp_path), "--layout", "matched", "--detect", "psnr=abc"])
    assert bad.exit_code == 1 and "--detect 'psnr=abc': give METRIC=DIFF" in str(bad.exception)


def test_matched_layout_in_a_terminal_fits_120_columns_and_keeps_the_verdict():
    """rich (make run's table): group headings, letters and bold as in markdown, knobs and notes numbered below,
    at most 120 columns; --intervals gives every column back."""
    from rich.console import Console

    recs = matched_records()
    recs += [{**r, "policy": "sencache-global", "setting": "mode=adaptive,budget=0.25"}
             for r in matched_records() if r["policy"] == "teacache"]  # a long method label
    recs[-1]["match"] = {**recs[-1]["match"]}
    table = render_layout(recs, "matched", "rich")
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 120
    head = next(line for line in text.splitlines() if "Method" in line)
    assert "Knob" not in head and "[95% CI]" not in head and "Speedup" in head and "PSNR" in head
    assert "bench, target 15 NFE: knobs sencache thresh=0.3, " in " ".join(text.split())
    psnr_cells = {str(c) for c in table.columns[5].cells}
    markdown = md_rows(render_layout(recs, "matched", "markdown"))
    for row in markdown:  # the same letters as the full table (the compact cell is the mean and its letters)
        mean_and_letters = row[11].replace("**", "").split(" [")[0] + " " + row[11].replace("**", "").split("] ")[1]
        assert mean_and_letters in psnr_cells
    wide = Console(width=400, record=True)
    wide.print(render_layout(recs, "matched", "rich", intervals=True))
    assert "PSNR [95% CI]" in wide.export_text()
