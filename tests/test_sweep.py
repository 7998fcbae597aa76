"""Sweeps: the grid from --set lists, shared references and pipeline, records equal to separate runs."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from sencache_bench.cli.app import app
from sencache_bench.errors import SpecError
from sencache_bench.results.speedup import untimed_note
from sencache_bench.results.store import load_records
from sencache_bench.runner import Runner
from sencache_bench.spec import resolve
from sencache_bench.sweep import expand_grid, resolve_grid, run_grid, split_values

# machine-noisy columns (the paired timing), left out when two runs' tables are compared; the note is compared
# without its timing parts (untimed_note)
TIMED = ("latency_s", "latency_ref_s", "speedup", "speedup_lo", "speedup_hi", "speedup_bound")


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
    timed = ("s", "decide_s", "hook_s")  # each call's wall time (measure/calls.py): the same decisions, other times

    def decisions(trace):
        return [{k: v for k, v in call.items() if k not in timed} for call in trace]

    assert decisions(rec["trace"]) == decisions(got["every=3,reuse=residual"]["trace"])

    # the reference recorded the consecutive-step output change: 5 differences per branch for 6 steps
    ref = json.loads(next((tmp_path / "results" / "references").glob("*.json")).read_text())
    change = ref["output_change"]["branches"]
    assert set(change) == {"cond", "uncond"} and change["cond"]["step"] == [1, 2, 3, 4, 5]
    assert all(v > 0 for v in change["cond"]["mean_abs"]) and len(change["uncond"]["rel_l1"]) == 5

    # resume: nothing left to run; the CLI's dry run lists the points
    assert [len(p.records) for p in run_grid(resolve_grid(spec, ["policy.every=2,3"]), log=lambda s: None)] == [0, 0]
    out = CliRunner().invoke(app, ["sweep", str(spec), "--set", "policy.every=2,3", "--dry-run"])
    assert out.exit_code == 0 and "1/2: policy.every=2" in out.stderr and "2/2: policy.every=3" in out.stderr


def test_shard_grid_deals_every_pair_once():
    from sencache_bench.distributed import Dist, shard_grid

    points = ["a", "b", "c"]
    items = {"a": [0, 1, 2], "b": [0, 1, 2], "c": [0]}
    parts = [shard_grid(points, lambda p: items[p], Dist(rank, 2)) for rank in range(2)]
    every = [(i, item) for i, p in enumerate(points) for item in items[p]]
    assert sorted(parts[0] + parts[1]) == sorted(every) and not set(parts[0]) & set(parts[1])
    assert parts[0] == [(0, 0), (0, 2), (1, 1), (2, 0)] and parts[1] == [(0, 1), (1, 0), (1, 2)]


def test_two_ranks_cover_the_grid_without_overlap(tiny_spec, tmp_path):
    """Each rank's share run in turn (as two torchrun ranks would): disjoint, and together the whole grid."""
    from sencache_bench.distributed import Dist

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec(prompts=["a quiet library", "a red ball"], sampling={"steps": 3},
                                             policy={"name": "static", "every": 2}, output={
                                                 "dir": str(tmp_path / "results"), "save_videos": False})))
    shares = [run_grid(resolve_grid(spec, ["policy.every=2,3"]), log=lambda s: None, dist=Dist(rank, 2))
              for rank in range(2)]
    made = [sorted(str(p) for point in grid for p in point.records) for grid in shares]
    assert len(made[0]) == len(made[1]) == 2 and not set(made[0]) & set(made[1])
    records, _ = load_records(tmp_path / "results")
    assert sorted(r["_path"] for r in records) == sorted(made[0] + made[1])
    assert sorted((r["setting"], r["prompt_index"]) for r in records) == [
        ("every=2,reuse=residual", 0), ("every=2,reuse=residual", 1),
        ("every=3,reuse=residual", 0), ("every=3,reuse=residual", 1)]


def test_sweep_kill_9_then_rerun_matches_uninterrupted(tiny_spec, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    def spec_for(name):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(tiny_spec(
            prompts=["a quiet library", "a red ball", "a dog running"], sampling={"steps": 4},
            policy={"name": "static", "every": 2}, output={"dir": str(tmp_path / name), "save_videos": False})))
        return path

    def table(results):
        out = CliRunner().invoke(app, ["table", str(results), "-f", "json"])
        assert out.exit_code == 0, out.output
        return [{**{k: v for k, v in row.items() if k not in TIMED}, "note": untimed_note(row["note"])}
                for row in json.loads(out.stdout)]

    killed = spec_for("killed")
    cmd = [sys.executable, "-m", "sencache_bench", "sweep", str(killed), "--set", "policy.every=2,3", "-q"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "killed" / "runs"
    deadline = time.monotonic() + 500
    while time.monotonic() < deadline and proc.poll() is None and not list(runs.rglob("p*.json")):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = list(runs.rglob("p*.json"))
    assert 1 <= len(finished) < 6, "the kill should land mid-sweep"
    for path in finished:
        json.loads(path.read_text())  # what is visible is complete

    out = CliRunner().invoke(app, ["sweep", str(killed), "--set", "policy.every=2,3", "-q"])
    assert out.exit_code == 0, out.output
    straight = spec_for("straight")
    assert CliRunner().invoke(app, ["sweep", str(straight), "--set", "policy.every=2,3", "-q"]).exit_code == 0
    assert table(tmp_path / "killed") == table(tmp_path / "straight")
    assert len(table(tmp_path / "killed")) == 2
