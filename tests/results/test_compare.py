"""The regression gate catches a deliberately weakened policy and passes an unchanged one."""

from __future__ import annotations

import pytest

from sencache_bench.errors import BenchError
from sencache_bench.policies.static import StaticPolicy
from sencache_bench.results.compare import compare, load_baseline, make_baseline, parse_tolerances, update_baseline
from sencache_bench.results.store import load_records
from sencache_bench.results.tables import aggregate
from sencache_bench.runner import Runner
from sencache_bench.spec import resolve


def _rows(out):
    records, _ = load_records(out)
    return aggregate(records)


def test_gate_catches_weakened_policy(tiny_spec, tmp_path, monkeypatch):
    spec = resolve(tiny_spec(policy={"name": "static", "every": 2}, prompts=["a red ball bouncing on grass"]))
    out = spec.output_dir
    Runner(spec).run_item(*Runner(spec).items()[0])
    baseline = tmp_path / "baseline.json"
    update_baseline(baseline, _rows(out))
    tol = parse_tolerances([])
    assert not [c for c in compare(_rows(out), load_baseline(baseline), tol) if c.worse]

    # The same setting, but an implementation that reuses more than it should.
    original = StaticPolicy.decide
    monkeypatch.setattr(StaticPolicy, "decide", lambda self, state, call: original(self, state, call)
                        if call.index < 2 else original(self, state, call).__class__(compute=False))
    runner = Runner(spec, force=True)
    runner.run_item(*runner.items()[0])
    changes = compare(_rows(out), load_baseline(baseline), tol)
    worse = {c.metric for c in changes if c.worse}
    assert {"psnr", "ssim"} <= worse
    assert "nfe" not in worse  # fewer NFE is not a regression


def test_nfe_and_missing_entries_and_tolerances():
    row = {"model": "m", "policy": "p", "setting": "s", "nfe": 20.0, "pflops": 1.0, "psnr": 30.0, "ssim": 0.9,
           "lpips": 0.1, "latency_s": 1.0, "speedup": 2.0, "videos": 4}
    base = make_baseline([row])
    tol = parse_tolerances(["psnr=1.0"])
    assert [c.metric for c in compare([{**row, "nfe": 21.0}], base, tol) if c.worse] == ["nfe"]
    assert not [c for c in compare([{**row, "psnr": 29.2}], base, tol) if c.worse]  # within the 1 dB asked for
    assert [c.metric for c in compare([{**row, "pflops": 1.02}], base, tol) if c.worse] == ["pflops"]
    assert [c.note for c in compare([], base, tol)] == ["missing from the results"]
    with pytest.raises(BenchError, match="METRIC=VALUE"):
        parse_tolerances(["speed=1"])


def test_bad_baseline_files(tmp_path):
    with pytest.raises(BenchError, match="not found"):
        load_baseline(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(BenchError, match="not valid JSON"):
        load_baseline(tmp_path / "bad.json")


BASE_ROW = {"model": "m", "policy": "p", "setting": "s", "nfe": 20.0, "pflops": 1.0, "psnr": 30.0, "ssim": 0.9,
            "lpips": 0.1, "latency_s": 1.0, "speedup": 2.0, "videos": 4}


@pytest.mark.parametrize("metric, worse, within, better", [
    ("nfe", 20.001, 20.0, 19.0),          # tolerance 0: any increase
    ("pflops", 1.0101, 1.0099, 0.5),      # 1 % of 1.0, relative
    ("psnr", 29.499, 29.501, 31.0),       # 0.5 dB down
    ("ssim", 0.8949, 0.8951, 0.95),       # 0.005 down
    ("lpips", 0.1051, 0.1049, 0.05),      # 0.005 up
])
def test_each_tolerance_just_past_and_just_within(metric, worse, within, better):
    base, tol = make_baseline([BASE_ROW]), parse_tolerances([])
    verdicts = {value: any(c.worse for c in compare([{**BASE_ROW, metric: value}], base, tol))
                for value in (worse, within, better)}
    assert verdicts == {worse: True, within: False, better: False}
    # and the CI gate's loosened tolerances move the bar: psnr=1.0 lets 29.2 pass, not 28.9
    loose = parse_tolerances(["psnr=1.0"])
    assert [c.worse for c in compare([{**BASE_ROW, "psnr": 29.2}], base, loose)] == [False]
    assert [c.worse for c in compare([{**BASE_ROW, "psnr": 28.9}], base, loose)] == [True]


def test_a_gated_metric_that_disappears_fails_and_a_new_one_passes():
    base, tol = make_baseline([BASE_ROW]), parse_tolerances([])
    gone = compare([{**BASE_ROW, "lpips": None}], base, tol)
    assert [(c.metric, c.worse, c.note) for c in gone] == [("lpips", True, "no longer measured")]
    new = compare([BASE_ROW], make_baseline([{**BASE_ROW, "lpips": None}]), tol)
    assert [(c.metric, c.worse, c.note) for c in new] == [("lpips", False, "not in the baseline")]


def test_cli_gate_exits_1_on_a_regression_and_on_a_vanished_metric(tiny_spec, tmp_path):
    """What `make ci-gate` relies on: the exit status of `sencache-bench compare`."""
    import json

    import yaml
    from typer.testing import CliRunner

    from sencache_bench.cli.app import app

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(policy={"name": "static", "every": 2}, prompts=["a quiet library"],
                                             output={"dir": str(tmp_path / "results"), "save_videos": False})))
    cli = lambda *a: CliRunner().invoke(app, [str(x) for x in a])  # noqa: E731
    assert cli("run", spec, "-q").exit_code == 0
    baseline = tmp_path / "baseline.json"
    assert cli("compare", tmp_path / "results", baseline, "--update").exit_code == 0
    same = cli("compare", tmp_path / "results", baseline)
    assert same.exit_code == 0 and "no regression" in same.stderr

    data = json.loads(baseline.read_text())
    (entry,) = data["entries"].values()
    entry["psnr"] += 0.6  # the results are now 0.6 dB below the baseline: past the default 0.5
    baseline.write_text(json.dumps(data))
    worse = cli("compare", tmp_path / "results", baseline)
    assert worse.exit_code == 1
    assert worse.stderr.strip().splitlines()[-1] == f"regression: 1 value(s) worse than {baseline} beyond tolerance"
    assert cli("compare", tmp_path / "results", baseline, "-t", "psnr=0.7").exit_code == 0

    entry["psnr"] -= 0.6
    entry["lpips"] = 0.01  # the baseline measured LPIPS; these results (psnr, ssim only) do not
    baseline.write_text(json.dumps(data))
    gone = cli("compare", tmp_path / "results", baseline)
    assert gone.exit_code == 1 and "no longer measured" in gone.stdout
