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
