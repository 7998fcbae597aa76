"""Figures: the Pareto front of hand-made points, and every plot written as a non-empty PNG and SVG."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sencache_bench.cli.app import app
from sencache_bench.results.plots import pareto_front, plot_pareto, plot_profiles, plot_traces, trace_matrix


def test_pareto_front_by_hand():
    # (speedup, LPIPS): (1, .05) (2, .10) (3, .20) are the front; (2, .15) is beaten by (2, .10);
    # (1.5, .12) by (2, .10); a duplicate of a front point stays on it.
    pts = [(2.0, 0.15), (1.0, 0.05), (3.0, 0.20), (2.0, 0.10), (1.5, 0.12), (3.0, 0.20)]
    assert pareto_front(pts) == [1, 3, 2, 5]
    # (speedup, PSNR), higher is better: (3, 20) is beaten by (3, 25)
    assert pareto_front([(1.0, 40.0), (3.0, 20.0), (3.0, 25.0), (2.0, 30.0)], minimize_y=False) == [0, 3, 2]


def rec(policy, setting, latency, psnr, lpips, trace, prompt=0):
    return {"model": "tiny", "policy": policy, "setting": setting, "prompt_group": "default", "prompt_index": prompt,
            "seed": 0, "nfe": sum(c["computed"] for c in trace) / 2, "latency": {"total_s": latency},
            "flops": {"total": 2e9, "total_no_attn": 1e9}, "metrics": {"psnr": psnr, "ssim": 0.9, "lpips": lpips},
            "reference": {"key": "k", "nfe": 4, "latency": {"total_s": 2.0},
                          "flops": {"total": 4e9, "total_no_attn": 2e9}},
            "timing": {"speedup": 2.0 / latency, "baseline_s": [2.0, 2.0], "steady": True},
            "baseline": {"latency_s": 2.0},
            "trace": trace}


def trace(computed, blocks=4):
    return [{"branch": b, "step": i, "t": 1000 - 250 * i, "computed": bool(c), "blocks": blocks if c else 0,
             "forward": True} for b in ("cond", "uncond") for i, c in enumerate(computed)]


RECORDS = [rec("static", "every=2", 1.0, 30.0, 0.1, trace([1, 0, 1, 0])),
           rec("static", "every=3", 0.8, 25.0, 0.2, trace([1, 0, 0, 1])),
           rec("sencache", "eps=0.1", 1.2, 35.0, 0.05, trace([1, 1, 0, 1]))]


def assert_figures(paths, stems):
    assert sorted(p.name for p in paths) == sorted(f"{s}.{e}" for s in stems for e in ("png", "svg"))
    for p in paths:
        data = p.read_bytes()
        assert len(data) > 2000
        assert data.startswith(b"\x89PNG") if p.suffix == ".png" else b"<svg" in data[:2000]


def test_trace_matrix():
    matrix, labels = trace_matrix([rec("x", "y", 1, 1, 1, trace([1, 0, 1, 0]) + [
        {"branch": "cond", "step": 4, "computed": False, "blocks": 2}])])
    assert labels == ["p0 s0 cond", "p0 s0 uncond"]
    assert matrix[0] == [1.0, 0.0, 1.0, 0.0, 0.5]  # 2 of 4 blocks ran: grey
    assert matrix[1][:4] == [1.0, 0.0, 1.0, 0.0] and matrix[1][4] != matrix[1][4]  # NaN: no such call


def test_pareto_and_traces_files(tmp_path):
    notes = []
    assert_figures(plot_pareto(RECORDS, tmp_path, notes=notes), ["pareto-tiny"])
    assert_figures(plot_traces(RECORDS, tmp_path, notes=notes), ["traces-tiny"])
    flops = plot_pareto(RECORDS, tmp_path / "f", x="flops", formats=["png"])
    assert [p.name for p in flops] == ["pareto-tiny.png"] and not notes


def profile(n, scale):
    t = [999.0, 750.0, 500.0, 250.0]
    return {"kind": "sensitivity-profile", "format": 1, "model": "tiny", "timesteps": t, "samples": n,
            "Jx": [scale * (1 + i) for i in range(4)], "Jt": [0.1 * scale] * 4, "counts": [n] * 4,
            "per_sample": {"Jx": [[scale * (1 + i) * f for i in range(4)] for f in (0.9, 1.1)],
                           "Jt": [[0.1 * scale * f] * 4 for f in (0.9, 1.1)]}}


def test_profiles_and_cli(tmp_path):
    small, large = tmp_path / "p8.json", tmp_path / "p64.json"
    small.write_text(json.dumps(profile(8, 1.0)))
    large.write_text(json.dumps(profile(64, 1.2)))
    assert_figures(plot_profiles([small, large], tmp_path / "out"), ["profile"])
    out = CliRunner().invoke(app, ["plot", "--profile", str(small), "--profile", str(large), "--out",
                                   str(tmp_path / "cli"), "--formats", "png"])
    assert out.exit_code == 0, out.output
    assert out.stdout.strip().splitlines() == [str(tmp_path / "cli" / "profile.png")]
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    res = CliRunner().invoke(app, ["plot", "--profile", str(bad), "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "is not a sensitivity profile" in str(res.exception)


@pytest.mark.parametrize("fmt", ["gif"])
def test_cli_rejects_unknown_format(tmp_path, fmt):
    res = CliRunner().invoke(app, ["plot", str(tmp_path), "--formats", fmt])
    assert res.exit_code == 1 and "unknown format" in str(res.exception)


def test_frame_strip_of_reference_and_cached_run(tiny_spec, tmp_path):
    from sencache_bench.results.plots import plot_frames
    from sencache_bench.runner import Runner
    from sencache_bench.spec import resolve

    spec = resolve(tiny_spec(policy={"name": "static", "every": 2}, prompts=["a red ball"], sampling={"steps": 3}))
    runner = Runner(spec)
    runner.run_item(*runner.items()[0])
    paths = plot_frames(spec.output_dir, tmp_path / "plots", prompt_index=0, formats=["png"])
    assert [p.name for p in paths] == ["frames-tiny-wan-p0.png"] and paths[0].stat().st_size > 2000
    import pytest

    from sencache_bench.errors import BenchError
    with pytest.raises(BenchError, match="no run with a saved video for prompt 5"):
        plot_frames(spec.output_dir, tmp_path / "plots", prompt_index=5)


# -- fronts and legibility ----------------------------------------------------------------------------------
def test_front_areas_by_hand():
    from sencache_bench.results.plots import front_areas, policy_front

    # a: (0.2, 30) (0.6, 40): over the common range [0.3, 0.5] the line goes 32.5 -> 37.5: area 0.2 * 35 = 7
    # b: (0.3, 20) (0.4, 30) (0.5, 20): a tent over [0.3, 0.5]: area 0.1 * 25 + 0.1 * 25 = 5
    # c: one point: no front to integrate, and it does not narrow the range
    fronts = {"a": [(0.2, 30.0), (0.6, 40.0)], "b": [(0.3, 20.0), (0.4, 30.0), (0.5, 20.0)], "c": [(0.4, 50.0)]}
    span, areas = front_areas(fronts)
    assert span == (0.3, 0.5) and areas == {"a": pytest.approx(7.0), "b": pytest.approx(5.0)}
    assert front_areas({"a": [(0.2, 1.0), (0.3, 2.0)], "b": [(0.4, 1.0), (0.5, 2.0)]}) == (None, {})
    # equal budgets keep the better value (PSNR: higher; LPIPS: lower)
    assert policy_front([(0.5, 30.0), (0.3, 20.0), (0.5, 35.0)], minimize_y=False) == [(0.3, 20.0), (0.5, 35.0)]
    assert policy_front([(0.5, 0.3), (0.5, 0.1)], minimize_y=True) == [(0.5, 0.1)]


SEVEN = ["fbc", "magcache", "semcache", "sencache", "static", "teacache", "taylorseer"]
LONG = {"sencache": "eps_start=0.01,eps_main={v},max_reuse=2,reuse=residual,profile=configs/calibrated/"
                    "bench-t2v_sencache.json,warmup_fraction=0.2",
        "magcache": "thresh={v},max_reuse=2,retention=0.2,ratios=configs/calibrated/bench-t2v_magcache.json",
        "teacache": "thresh={v},coefficients=configs/calibrated/bench-t2v_teacache.json",
        "static": "every={v},reuse=residual", "fbc": "threshold={v}", "semcache": "alpha=0.2,beta=0.8,ps_scale={v}",
        "taylorseer": "cache_interval={v}"}


def real_settings_records():
    recs = []
    for k, policy in enumerate(SEVEN):
        for j, v in enumerate((2, 3, 5)):
            for p in range(3):
                r = rec(policy, LONG[policy].format(v=v), 1.0 - 0.1 * j, 40.0 - 3 * j - k + p, 0.05 * (j + 1),
                        trace([1, 0, 1, 0] if j else [1, 1, 1, 0]), prompt=p)
                r["nfe"] = 4 - j - 0.1 * k
                recs.append(r)
    return recs


def test_short_labels_legend_outside_and_axes_keep_the_figure():
    from sencache_bench.results.plots import front_figure, pareto_figure, point_label
    from sencache_bench.results.tables import aggregate

    rows = aggregate(real_settings_records())
    sen = next(r for r in rows if r["policy"] == "sencache")
    assert point_label(sen) == "sencache eps_main=2"
    assert point_label(next(r for r in rows if r["policy"] == "taylorseer")) == "taylorseer cache_interval=2"
    # one setting per policy (the README's bench table): every parameter "varies", the full strings are long
    single = aggregate([r for r in real_settings_records() if r["setting"] == LONG[r["policy"]].format(v=2)])
    figures = [pareto_figure("bench-t2v", rows), front_figure("bench-t2v", rows)[0], pareto_figure("b", single)]
    for fig in figures:
        fig.draw_without_rendering()
        axes_area = sum(ax.get_position().width * ax.get_position().height for ax in fig.axes)
        assert axes_area > 0.5, f"the axes keep {axes_area:.0%} of the figure"
        (legend,) = fig.legends
        box = legend.get_window_extent()
        assert not any(box.overlaps(ax.get_window_extent()) for ax in fig.axes)  # the legend is off the data
        names = [t.get_text() for t in legend.get_texts()]
        assert sorted(set(names) - {"Pareto front"}) == sorted(SEVEN) and len(set(names)) == len(names)  # one each
        colors = {}
        for ax in fig.axes:  # one colour per policy across the panels
            for coll in ax.collections:
                if coll.get_label() in SEVEN:
                    colors.setdefault(coll.get_label(), set()).add(tuple(coll.get_facecolor()[0]))
        assert all(len(c) == 1 for c in colors.values())


def test_fronts_file_and_area_notes(tmp_path):
    from sencache_bench.results.plots import plot_fronts

    notes = []
    assert_figures(plot_fronts(real_settings_records(), tmp_path, notes=notes), ["fronts-tiny"])
    psnr = next(n for n in notes if n.startswith("fronts tiny psnr over nfe fraction"))
    assert "sencache area" in psnr and "mean" in psnr
