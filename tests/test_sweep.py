"""Sweeps: the grid from --set lists, shared references and pipeline, records equal to separate runs."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from sencache_bench.cli.app import app
from sencache_bench.errors import SpecError
from sencache_bench.results.store import load_records
from sencache_bench.runner import Runner
from sencache_bench.spec import resolve
from sencache_bench.sweep import expand_grid, resolve_grid, run_grid, split_values


def test_split_and_grid():
    assert split_values("0.05,0.1, 0.2") == ["0.05", "0.1", "0.2"]
    assert split_values("[0,1]") == ["[0,1]"] and split_values("{a: 1, b: 2},x") == ["{a: 1, b: 2}", "x"]
    assert split_values("'a, b',c") == ["'a, b'", "c"]
    fixed, points = expand_grid(["policy.eps_main=0.05,0.1,0.2", "sampling.seeds=[0,1]", "policy.max_reuse=2,3"])
    assert fixed == ["sampling.seeds=[0,1]"] and len(points) == 6
    assert points[0] == ["policy.eps_main=0.05", "policy.max_reuse=2"]
    assert points[-1] == ["policy.eps_main=0.2", "policy.max_reuse=3"]
    assert expand_grid([]) == ([], [[]])
    with pytest.raises(SpecError, match="given twice"):
        expand_grid(["a=1,2", "a=3"])
    with pytest.raises(SpecError, match="expected KEY=VALUE"):
        expand_grid(["novalue"])


def test_bad_point_is_caught_before_anything_runs(tiny_spec, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(policy={"name": "static", "every": 2})))
    with pytest.raises(SpecError, match=r"grid point policy.every=0"):
        resolve_grid(spec, ["policy.every=2,0"])
    assert not (tmp_path / "results").exists()


def test_sweep_shares_references_and_pipeline(tiny_spec, tmp_path):
    base = tiny_spec(prompts=["a quiet library"], policy={"name": "static", "every": 2})
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(base))
    grid = run_grid(resolve_grid(spec, ["policy.every=2,3"]), log=lambda s: None)
    assert [p.reused_session for p in grid] == [False, True]
    assert [len(p.records) for p in grid] == [1, 1]
    assert len(list((tmp_path / "results" / "references").glob("*.npz"))) == 1  # one reference for both
    records, _ = load_records(tmp_path / "results")
    got = {r["setting"]: r for r in records}
    assert set(got) == {"every=2,reuse=residual", "every=3,reuse=residual"}
    assert got["every=3,reuse=residual"]["nfe"] == 2

    # the same point run alone, in a fresh process state: the same video, bit for bit
    alone = tiny_spec(prompts=["a quiet library"], policy={"name": "static", "every": 3})
    alone["output"] = {"dir": str(tmp_path / "alone")}
    runner = Runner(resolve(alone))
    rec = json.loads(runner.run_item(*runner.items()[0]).read_text())
    assert rec["metrics"] == got["every=3,reuse=residual"]["metrics"]
    assert rec["trace"] == got["every=3,reuse=residual"]["trace"]

    # the reference recorded the consecutive-step output change: 5 differences per branch for 6 steps
    ref = json.loads(next((tmp_path / "results" / "references").glob("*.json")).read_text())
    change = ref["output_change"]["branches"]
    assert set(change) == {"cond", "uncond"} and change["cond"]["step"] == [1, 2, 3, 4, 5]
    assert all(v > 0 for v in change["cond"]["mean_abs"]) and len(change["uncond"]["rel_l1"]) == 5

    # resume: nothing left to run; the CLI's dry run lists the points
    assert [len(p.records) for p in run_grid(resolve_grid(spec, ["policy.every=2,3"]), log=lambda s: None)] == [0, 0]
    out = CliRunner().invoke(app, ["sweep", str(spec), "--set", "policy.every=2,3", "--dry-run"])
    assert out.exit_code == 0 and "1/2: policy.every=2" in out.stderr and "2/2: policy.every=3" in out.stderr
