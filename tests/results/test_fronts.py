"""Fronts layout: hand-worked front differences, the paired bootstrap against independent computations, Holm."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math

import numpy as np
import pytest
from test_layouts import record  # the synthetic records load_results accepts

from sencache_bench.errors import BenchError
from sencache_bench.results import fronts
from sencache_bench.results.fronts import (
    bootstrap_p,
    front_difference,
    front_rows,
    holm,
    pareto_front,
    render_fronts,
)


def policy(name, settings, model="wan", metric="psnr"):
    """Records of one policy: ``settings`` = {setting: [(video key, nfe, metric value), ...]}."""
    out = []
    for setting, videos in settings.items():
        for key, nfe, value in videos:
            rec = record(model, name, setting, nfe, 4.0, 30.0, 0.1, ref_key=key)
            rec["metrics"] = {"psnr": 30.0, "ssim": 0.9, "lpips": 0.1, metric: value}
            out.append(rec)
    return out


def same_videos(points, n=6, spread=0.0):
    """{setting: videos} where every video sits at (nfe, value + spread * video index)."""
    return {f"s={x}": [(f"k{k}", x, y + spread * k) for k in range(n)] for x, y in points}


def row(rows, metric="psnr", a="a", b="b"):
    return next(r for r in rows if r["metric"] == metric and (r["policy_a"], r["policy_b"]) == (a, b))


# -- hand-worked fronts --------------------------------------------------------------------------------------
def test_constant_gap_is_exact_and_its_interval_collapses():
    # A: y = 15 + x/2 at x = 10, 20, 30; B: y = 13.5 + x/2 at x = 15, 25, 35; overlap [15, 30], gap 1.5 dB
    a = policy("a", same_videos([(10, 20.0), (20, 25.0), (30, 30.0)], spread=0.7))
    b = policy("b", same_videos([(15, 21.0), (25, 26.0), (35, 31.0)], spread=0.7))
    r = row(front_rows(a + b))
    assert r["diff"] == pytest.approx(1.5, abs=1e-12)
    assert (r["overlap_lo"], r["overlap_hi"]) == (15.0, 30.0)
    assert r["lo"] == pytest.approx(1.5, abs=1e-9) and r["hi"] == pytest.approx(1.5, abs=1e-9)
    assert (r["videos"], r["left_out"]) == (6, 0)
    assert r["p"] == pytest.approx(2 / (fronts.RESAMPLES + 1)) and r["verdict"] == "a above b"


def test_crossing_fronts_with_a_dominated_point():
    # A: (0,0) (5,8) (10,10), plus (7,6) dominated by (5,8); B: (2,6) (12,10). Overlap [2, 10].
    # int_2^10 f_A = int_2^5 1.6x + int_5^10 (8 + 0.4(x-5)) = 16.8 + 45 = 61.8
    # int_2^10 f_B = int_2^10 (6 + 0.4(x-2)) = 48 + 12.8 = 60.8; mean gap = (61.8 - 60.8) / 8 = 0.125
    a = policy("a", same_videos([(0, 0.0), (5, 8.0), (7, 6.0), (10, 10.0)]))
    b = policy("b", same_videos([(2, 6.0), (12, 10.0)]))
    r = row(front_rows(a + b))
    assert r["diff"] == pytest.approx(0.125, abs=1e-12)
    assert (r["overlap_lo"], r["overlap_hi"]) == (2.0, 10.0)
    # pairs go in name order: with A renamed "z" the row is b - z, the negative
    swapped = row(front_rows(policy("z", same_videos([(0, 0.0), (5, 8.0), (7, 6.0), (10, 10.0)])) + b), a="b", b="z")
    assert swapped["diff"] == pytest.approx(-0.125, abs=1e-12)


def test_pareto_front_drops_dominated_points():
    pts = [(10, 9.0), (0, 0.0), (5, 8.0), (7, 6.0), (5, 7.0), (10, 10.0)]
    assert pareto_front(pts, "max") == [(0, 0.0), (5, 8.0), (10, 10.0)]
    # LPIPS, lower is better: (7, 0.3) costs more than (5, 0.2) and is worse
    assert pareto_front([(0, 0.5), (5, 0.2), (7, 0.3), (10, 0.1), (10, 0.15)], "min") == [
        (0, 0.5), (5, 0.2), (10, 0.1)]


def test_lpips_wording_lower_is_better():
    a = policy("a", same_videos([(10, 0.20), (20, 0.10), (30, 0.05)], spread=0.01), metric="lpips")
    b = policy("b", same_videos([(10, 0.22), (20, 0.12), (30, 0.07)], spread=0.01), metric="lpips")
    r = row(front_rows(a + b), "lpips")
    assert r["diff"] == pytest.approx(-0.02, abs=1e-12)
    assert r["verdict"] == "a better than b (lower)" and r["verdict_holm"] == "a better than b (lower)"


def test_no_overlap_touching_and_single_points_make_no_claim():
    a = policy("a", same_videos([(0, 1.0), (10, 2.0)]))
    far = policy("b", same_videos([(12, 3.0), (20, 4.0)]))
    r = row(front_rows(a + far))
    assert r["diff"] is None and r["lo"] is None and r["verdict"] == "no claim"
    assert "do not overlap" in r["note"]
    touching = policy("b", same_videos([(10, 3.0), (20, 4.0)]))
    assert "meet in one point" in row(front_rows(a + touching))["note"]
    single = policy("b", same_videos([(5, 3.0)]))
    r = row(front_rows(a + single))
    assert r["diff"] is None and "b: a single point (1 setting), no front" in r["note"]
    flat = policy("b", same_videos([(5, 3.0), (8, 3.0)]))  # (8, 3) is dominated: one point left
    assert "a front is one point" in row(front_rows(a + flat))["note"]
    assert front_difference([(0, 1.0), (10, 2.0)], [(12, 3.0), (20, 4.0)])[0] is None


def test_missing_video_none_and_nan_are_left_out_and_counted():
    pts_a, pts_b = [(10, 20.0), (20, 25.0)], [(10, 19.0), (20, 24.0)]
    a, b = same_videos(pts_a, n=8), same_videos(pts_b, n=8)
    b["s=20"] = [v for v in b["s=20"] if v[0] != "k7"]  # k7 missing in one setting of B
    a["s=10"][6] = ("k6", 10, None)  # k6: no PSNR in A
    b["s=10"][5] = ("k5", 10, float("nan"))  # k5: NaN in B
    a["s=20"][4] = ("k4", 20, 1000.0)  # k4 is wild but complete: it stays, and the means show which videos count
    recs = policy("a", a) + policy("b", b)
    r = row(front_rows(recs))
    assert (r["videos"], r["left_out"]) == (5, 3)
    # shared k0..k4: A at x=20 has mean (4 * 25 + 1000) / 5 = 220; the gap: mean of (1, 196) over [10, 20]
    assert r["diff"] == pytest.approx((1 + (220 - 24)) / 2)
    assert r["lo"] is not None  # 5 videos: enough for an interval


def test_fewer_than_five_videos_no_interval():
    a = policy("a", same_videos([(10, 20.0), (20, 25.0)], n=4, spread=0.3))
    b = policy("b", same_videos([(10, 19.0), (20, 24.0)], n=4))
    r = row(front_rows(a + b))
    assert r["diff"] == pytest.approx(1.0 + 0.3 * 1.5)
    assert r["lo"] is None and r["p"] is None and r["verdict"] == "no claim" and "4 shared videos" in r["note"]


# -- the bootstrap against independent computations ----------------------------------------------------------
def noisy_pair(n=9, seed=3):
    """Two policies whose per-video NFE and PSNR both vary (so x must be resampled too) and whose fronts
    change shape between resamples (B's middle setting is sometimes dominated)."""
    rng = np.random.default_rng(seed)
    keys = [f"v{k}" for k in range(n)]
    hard = rng.normal(0, 1.0, n)  # per-video difficulty shared by both policies: the pairing matters
    a = {f"t={t}": [(k, t + rng.normal(0, 2), 18 + t / 3 + hard[i] + rng.normal(0, 0.5)) for i, k in enumerate(keys)]
         for t in (10, 20, 30)}
    b = {f"t={t}": [(k, t + rng.normal(0, 2), 17.5 + t / 3 + hard[i] + rng.normal(0, 0.8)) for i, k in enumerate(keys)]
         for t in (12, 22, 24, 34)}
    return keys, a, b


def naive_front_settings(means):
    """Indices of the settings on the O(n^2)-dominance front of the observed means."""
    return [i for i, p in enumerate(means) if not any(q != p and q[0] <= p[0] and q[1] >= p[1] for q in means)]


def naive_gap(a_means, b_means, keep_a=None, keep_b=None):
    """Pure Python: O(n^2) dominance (or the given settings: a resample keeps the observed front's), linear
    interpolation by scan, trapezoids on the union of breakpoints."""
    def front(points, keep):
        keep = naive_front_settings(points) if keep is None else keep
        return sorted({points[i] for i in keep})

    def at(f, x):
        for (x0, y0), (x1, y1) in itertools.pairwise(f):
            if x0 <= x <= x1:
                return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        raise AssertionError

    fa, fb = front(a_means, keep_a), front(b_means, keep_b)
    lo, hi = max(fa[0][0], fb[0][0]), min(fa[-1][0], fb[-1][0])
    xs = sorted({lo, hi} | {x for x, _ in fa + fb if lo < x < hi})
    d = [at(fa, x) - at(fb, x) for x in xs]
    return sum((x1 - x0) * (d0 + d1) / 2 for x0, x1, d0, d1 in zip(xs, xs[1:], d, d[1:])) / (hi - lo)


def means_on(settings, keys):
    out = []
    for videos in settings.values():
        by = {k: (x, y) for k, x, y in videos}
        out.append((sum(by[k][0] for k in keys) / len(keys), sum(by[k][1] for k in keys) / len(keys)))
    return out


def test_bootstrap_matches_a_naive_implementation_on_the_same_stream():
    keys, a, b = noisy_pair()
    r = row(front_rows(policy("a", a) + policy("b", b)))
    assert r["diff"] == pytest.approx(naive_gap(means_on(a, keys), means_on(b, keys)), abs=1e-9)
    idx = np.random.default_rng(fronts.SEED).integers(0, len(keys), size=(fronts.RESAMPLES, len(keys)))
    keep_a, keep_b = naive_front_settings(means_on(a, keys)), naive_front_settings(means_on(b, keys))
    diffs = sorted(naive_gap(means_on(a, [keys[i] for i in sel]), means_on(b, [keys[i] for i in sel]), keep_a, keep_b)
                   for sel in idx.tolist())
    lo = diffs[math.ceil((1 - fronts.LEVEL) / 2 * len(diffs)) - 1]  # inverted_cdf: an order statistic
    hi = diffs[math.ceil((1 + fronts.LEVEL) / 2 * len(diffs)) - 1]
    assert (r["lo"], r["hi"]) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))
    assert r["lo"] < r["diff"] < r["hi"] and r["hi"] - r["lo"] > 0.1
    below = sum(d <= 0 for d in diffs)
    above = sum(d >= 0 for d in diffs)
    p = min(1.0, 2 * min(below + 1, above + 1) / (len(diffs) + 1))
    assert r["p"] == pytest.approx(p)


def test_bootstrap_agrees_with_scipy_within_monte_carlo_error():
    stats = pytest.importorskip("scipy.stats")
    keys, a, b = noisy_pair()

    def gap(sel):
        chosen = [keys[int(i)] for i in sel]
        return naive_gap(means_on(a, chosen), means_on(b, chosen))

    ci = stats.bootstrap((np.arange(len(keys)),), gap, vectorized=False, n_resamples=4000, method="percentile",
                         confidence_level=0.95, rng=np.random.default_rng(7)).confidence_interval
    r = row(front_rows(policy("a", a) + policy("b", b)))
    width = r["hi"] - r["lo"]
    assert r["lo"] == pytest.approx(ci.low, abs=0.1 * width) and r["hi"] == pytest.approx(ci.high, abs=0.1 * width)


def test_bootstrap_p_and_holm_by_hand():
    assert bootstrap_p(np.array([1.0, 2.0, -1.0, 3.0])) == pytest.approx(2 * 2 / 5)  # #<=0: 1, (1+1)/5, doubled
    assert bootstrap_p(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(2 / 5)
    assert bootstrap_p(np.array([0.0, 0.0])) == 1.0
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(1*0.04, 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([None, 0.01, 0.02]) == [None, pytest.approx(0.02), pytest.approx(0.02)]
    assert holm([0.6, 0.7]) == [1.0, 1.0]


def test_holm_verdict_within_one_model_and_metric(monkeypatch):
    ps = iter([0.01, 0.04, 0.03])  # pairs (a,b), (a,c), (b,c); Holm: 0.03, 0.06, 0.06

    def fake(a, b, better, names):
        return {"diff": 1.0, "lo": 0.5, "hi": 1.5, "overlap_lo": 0.0, "overlap_hi": 1.0, "videos": 9,
                "left_out": 0, "p": next(ps), "note": ""}

    monkeypatch.setattr(fronts, "compare_pair", fake)
    recs = [r for p in "abc" for r in policy(p, same_videos([(10, 20.0), (20, 25.0)]), metric="ssim")]
    for r in recs:
        r["metrics"] = {"ssim": r["metrics"]["ssim"]}  # only SSIM computed: one family
    rows = front_rows(recs)
    assert [r["metric"] for r in rows] == ["ssim"] * 3
    assert [r["p_holm"] for r in rows] == pytest.approx([0.03, 0.06, 0.06])
    assert [r["verdict"] for r in rows] == ["a above b", "a above c", "b above c"]
    assert [r["verdict_holm"] for r in rows] == ["a above b", "not separated", "not separated"]


# -- rendering and the CLI -----------------------------------------------------------------------------------
def pair_records():
    return (policy("a", same_videos([(10, 20.0), (20, 25.0), (30, 30.0)], spread=0.7))
            + policy("b", same_videos([(15, 21.0), (25, 26.0), (35, 31.0)], spread=0.7))
            + policy("none", same_videos([(50, 100.0)])))


def test_csv_and_json_carry_numbers_markdown_the_interval():
    recs = pair_records()
    data = json.loads(render_fronts(recs, "json"))
    assert {(r["policy_a"], r["policy_b"]) for r in data} == {("a", "b")}  # `none` is not a front
    psnr = next(r for r in data if r["metric"] == "psnr")
    assert isinstance(psnr["diff"], float) and psnr["diff"] == pytest.approx(1.5)
    assert isinstance(psnr["lo"], float) and isinstance(psnr["videos"], int)
    rows = list(csv.DictReader(io.StringIO(render_fronts(recs, "csv"))))
    got = next(r for r in rows if r["metric"] == "psnr")
    assert float(got["diff"]) == pytest.approx(1.5) and float(got["lo"]) == pytest.approx(1.5)
    assert float(got["overlap_lo"]) == 15.0 and got["verdict"] == "a above b"
    md = render_fronts(recs, "markdown")
    assert "| wan | PSNR | a | b | +1.50 [1.50, 1.50] | 15 to 30 | 6 | 0 |" in md
    assert f"({fronts.RESAMPLES} resamples, seed {fronts.SEED})" in md and "overlap" in md
    assert "bootstrap p < 0.05 over" in md  # the level as written in docs/statistics.md, not 0.050000000000000044
    assert "\\begin{tabular}" in render_fronts(recs, "latex")
    assert render_fronts(recs, "rich").columns[4].header == "A - B [95% CI]"
    from sencache_bench import api

    assert api.table(recs, layout="fronts")[0]["diff"] == pytest.approx(1.5)  # format=None: the rows


def test_flops_axis_and_unknown_axis():
    r = row(front_rows(pair_records(), axis="flops"))  # pflops_no_attn = nfe / 50 here: same mean gap
    assert r["diff"] == pytest.approx(1.5) and r["overlap_lo"] == pytest.approx(15 / 50)
    with pytest.raises(BenchError, match="unknown axis"):
        front_rows(pair_records(), axis="latency")


def test_table_cli_fronts_csv(tmp_path):
    from typer.testing import CliRunner

    from sencache_bench.cli.app import app
    from sencache_bench.results.store import SCHEMA_VERSION, write_json

    for i, rec in enumerate(pair_records()):
        write_json(tmp_path / "runs" / f"{rec['policy']}-{rec['setting']}" / f"{i}.json",
                   {**rec, "kind": "run", "schema_version": SCHEMA_VERSION})
    out = CliRunner().invoke(app, ["table", str(tmp_path), "--layout", "fronts", "-f", "csv"])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [(r["metric"], r["policy_a"], r["policy_b"]) for r in rows] == [
        ("psnr", "a", "b"), ("ssim", "a", "b"), ("lpips", "a", "b")]
    assert float(rows[0]["diff"]) == pytest.approx(1.5) and rows[0]["videos"] == "6"


def test_one_policy_has_no_pairs_and_a_video_run_twice_is_averaged():
    only = policy("a", same_videos([(10, 20.0), (20, 25.0)]))
    assert front_rows(only) == [] and "No two cached policies" in render_fronts(only, "markdown")
    a = policy("a", same_videos([(10, 20.0), (20, 25.0)]))
    again = policy("a", {"s=20": [("k0", 20, 31.0)]})  # k0 at s=20 again (e.g. in a sweep and a match folder)
    b = policy("b", same_videos([(10, 20.0), (20, 25.0)]))
    r = row(front_rows(a + again + b))
    assert r["videos"] == 6 and r["diff"] == pytest.approx((0 + 3 / 6) / 2)  # k0 at s=20: (25 + 31) / 2 = 28


def test_matched_variants_are_fronts_of_their_own_and_the_reuse_cap_moves_along_one():
    def rec(policy, setting, knob, key, nfe, psnr):
        r = record("bench", policy, setting, nfe, 1.0, psnr, None, ref_key=key)
        r["match"] = {"by": "nfe", "target_nfe": 15.0, "knob": knob, "value": 0, "tuned_nfe": nfe}
        return r

    recs = []
    for i in range(6):
        recs += [rec("sencache", "eps_main=0.75,max_reuse=2", "eps_main", f"v{i}", 15, 44.0 + i),
                 rec("sencache", "eps_main=1.0,max_reuse=3", "eps_main", f"v{i}", 12, 41.0 + i),
                 rec("sencache-global", "budget=0.5", "budget", f"v{i}", 15, 43.0 + i),
                 rec("sencache-global", "budget=0.375", "budget", f"v{i}", 11, 42.0 + i),
                 rec("sencache-global", "budget=0.25,mode=adaptive", "budget", f"v{i}", 16, 45.0 + i),
                 rec("sencache-global", "budget=0.2,mode=adaptive", "budget", f"v{i}", 12, 43.0 + i)]
    names = set(fronts.front_names(recs))
    assert names == {"sencache", "sencache-global", "sencache-global (mode=adaptive)"}
    rows = {(r["policy_a"], r["policy_b"]): r for r in front_rows(recs) if r["metric"] == "psnr"}
    # sencache (12, 41.0+i)-(15, 44.0+i) against the plan (11, 42)-(15, 43): over [12, 15] the plan runs
    # 42.25 -> 43.0 and sencache 41 -> 44: gaps -1.25 and +1.0, linear, mean -0.125
    assert rows[("sencache", "sencache-global")]["diff"] == pytest.approx(-0.125)


def test_a_front_whose_points_swap_in_resamples_keeps_its_settings():
    # a's two settings are 0.2 dB apart on average with +-3 dB per video: many resamples swap them; the observed
    # front (both settings) is kept in every resample, so the pair still gets an interval
    noise = [3.0, -3.0, 2.0, -2.0, 1.0, -1.0, 0.5, -0.5]
    a = {"lo": [(f"v{i}", 12, 42.0 + n) for i, n in enumerate(noise)],
         "hi": [(f"v{i}", 15, 42.2 + 0.5 * n) for i, n in enumerate(noise)]}
    b = {"lo": [(f"v{i}", 12, 41.0) for i in range(8)], "hi": [(f"v{i}", 15, 42.0) for i in range(8)]}
    r = row(front_rows(policy("a", a) + policy("b", b)))
    assert r["diff"] == pytest.approx(0.6) and r["lo"] is not None and r["lo"] < 0.6 < r["hi"]
