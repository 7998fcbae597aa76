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
