"""lemica: the graph's edge weights against a second method, its cost by hand, its checks, every tiny model."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import numpy as np
import pytest
import typer
import yaml
from typer.testing import CliRunner

from sencache_bench.calibration import CALIBRATORS
from sencache_bench.calibration.lemica import SegmentPolicy, calibrate, edges, load_graph
from sencache_bench.calibration.sencache_global import generate_latent
from sencache_bench.errors import BenchError, SpecError
from sencache_bench.planning import minimax_path
from sencache_bench.policies import POLICIES
from sencache_bench.policies.base import apply_policy, remove_policy
from sencache_bench.policies.lemica import LeMiCaConfig
from sencache_bench.runner import Runner
from sencache_bench.spec import load_spec, resolve

TINY_MODELS = ["tiny-wan", "tiny-cogvideox", "tiny-ltx", "tiny-hunyuanvideo"]
REPO = Path(__file__).resolve().parents[2]
STEPS = 6


def tiny(out, model: str = "tiny-wan", **policy) -> dict:
    return {"model": {"name": model}, "prompts": ["a red ball"], "sampling": {"steps": STEPS},
            "policy": {"name": "lemica", "budget": 0.5, **policy}, "output": {"dir": str(out), "save_videos": False}}


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    out = tmp_path_factory.mktemp("lemica")
    runner = Runner(resolve(tiny(out)), log=lambda s: None)
    path = calibrate(runner, samples=1, out=out / "graph.json", log=lambda s: None)
    return runner, path, json.loads(path.read_text())


def test_edges_of_the_dag():
    assert edges(4) == [(0, 2), (0, 3), (1, 3)]
    assert edges(6, max_reuse=1) == [(0, 2), (1, 3), (2, 4), (3, 5)]
    assert len(edges(30)) == comb(29, 2)  # every i < j - 1 <= 28


def test_edge_weight_is_the_global_error_of_that_one_segment(graph):
    """Second method: rerun the whole trajectory with only i+1..j-1 reused (no replay of stored outputs)."""
    runner, _, data = graph
    session = runner.session
    text, seed = data["prompts"][0], data["seeds"][0]
    x0 = generate_latent(runner, text, seed)
    for i, j in [(0, 2), (1, 4), (2, 5), (0, 5)]:
        apply_policy(session.transformer, session.blocks, SegmentPolicy(i, j, "residual"))
        try:
            cached = generate_latent(runner, text, seed)
        finally:
            remove_policy(session.transformer)
        expected = float((cached - x0).abs().mean())
        assert expected > 0
        assert data["weights"][i][j] == pytest.approx(expected, rel=1e-5, abs=1e-9)
    w = np.array([[np.nan if v is None else v for v in row] for row in data["weights"]])
    assert np.all(np.isnan(w[np.tril_indices(STEPS, k=1)]))  # adjacent steps and backward: no edge


def test_calibration_cost_by_hand(graph):
    """Per sample: the uncached run (n calls per branch), then edge i->j costs 1 + (n - j) calls per branch:
    sum over edges = C(n + 1, 3) - n + 1 = 30 for n = 6; 2 branches: 2 * (6 + 30) = 72 model calls."""
    _, _, data = graph
    assert data["edges"] == 10 and data["samples"] == 1
    assert data["model_calls"] == 2 * (STEPS + comb(STEPS + 1, 3) - STEPS + 1) == 72


def test_policy_runs_the_minimax_path(graph, tmp_path):
    runner, path, data = graph
    spec = resolve(tiny(tmp_path, graph=str(path)))
    run = Runner(spec, log=lambda s: None)
    run._session = runner.session  # the same loaded model
    run.prepare_policy()
    w = load_graph(path, model="tiny-wan", schedule=data["schedule"])["weights"]
    assert spec.policy.plan() == minimax_path(w, 3)[0]
    gen = run.session.generate("a red ball", 0, policy=spec.policy)
    for name in ("cond", "uncond"):
        pattern = [c.computed for c in gen.calls if c.branch == name]
        assert [i for i, on in enumerate(pattern) if on] == list(spec.policy.plan())
    assert spec.policy.inputs()["graph"]["path"] == str(path)


def test_graph_checks(graph, tmp_path):
    runner, path, data = graph
    schedule = data["schedule"]
    (tmp_path / "other.json").write_text(json.dumps({**data, "model": "tiny-ltx"}))
    with pytest.raises(BenchError, match="measured on tiny-ltx, not tiny-wan"):
        load_graph(tmp_path / "other.json", model="tiny-wan", schedule=schedule)
    with pytest.raises(BenchError, match="on 6 steps, this run has 5"):
        load_graph(path, model="tiny-wan", schedule={**schedule, "timesteps": schedule["timesteps"][:5]})
    (tmp_path / "kind.json").write_text(json.dumps({"kind": "teacache_coefficients"}))
    with pytest.raises(BenchError, match="not a lemica graph"):
        load_graph(tmp_path / "kind.json", model="tiny-wan", schedule=schedule)
    spec = resolve(tiny(tmp_path, graph=str(path), reuse="output"))
    run = Runner(spec, log=lambda s: None)
    run._session = runner.session
    with pytest.raises(BenchError, match="measured with reuse residual"):
        run.prepare_policy()
    bounded = tmp_path / "bounded.json"
    bounded.write_text(json.dumps({**data, "max_reuse": 1}))
    spec = resolve(tiny(tmp_path, graph=str(bounded)))
    run = Runner(spec, log=lambda s: None)
    run._session = runner.session
    with pytest.raises(BenchError, match="at most 1"):
        run.prepare_policy()


def test_config_and_knob(tmp_path):
    assert POLICIES.get("lemica") is LeMiCaConfig and "lemica" in CALIBRATORS
    knob = LeMiCaConfig.knob
    assert knob.field == "budget" and knob.more_compute == "higher"
    with pytest.raises(SpecError, match="budget"):
        resolve(tiny(tmp_path, budget=-0.1))
    with pytest.raises(BenchError, match="no path yet"):
        LeMiCaConfig().make_policy()


def test_cli_calibrate_policy_lemica(tmp_path):
    from sencache_bench.cli.calibrate import calibrate as calibrate_cmd

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny(tmp_path / "results", max_reuse=2)))
    app = typer.Typer()
    app.command()(calibrate_cmd)
    app.command("other")(lambda: None)
    out = tmp_path / "graph.json"
    result = CliRunner().invoke(app, ["calibrate", str(spec), "--policy", "lemica", "--samples", "1",
                                      "--out", str(out), "--set", "sampling.steps=5"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["kind"] == "lemica-graph" and data["max_reuse"] == 2 and data["edges"] == len(edges(5, 2)) == 5
    # without --samples: the calibrator's own default, LeMiCa's "few prompts" (4), not the profile's 8
    result = CliRunner().invoke(app, ["calibrate", str(spec), "--policy", "lemica", "--out", str(out),
                                      "--set", "sampling.steps=4"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["samples"] == 4


@pytest.mark.parametrize("model", TINY_MODELS)
def test_every_tiny_model_runs_its_path(model, tmp_path):
    """Without policy.graph the first run measures one; NFE per branch = the budget; first and last computed."""
    spec = resolve(tiny(tmp_path, model=model, max_reuse=3))
    runner = Runner(spec, log=lambda s: None)
    runner.prepare_policy()
    plan = spec.policy.plan()
    assert len(plan) == 3 and plan[0] == 0 and plan[-1] == STEPS - 1
    gen = runner.session.generate("a red ball", 0, policy=spec.policy)
    branches = {c.branch for c in gen.calls}
    for name in branches:
        pattern = [c.computed for c in gen.calls if c.branch == name]
        assert [i for i, on in enumerate(pattern) if on] == list(plan)


def test_shipped_bench_config_plans_from_its_graph():
    spec = load_spec(REPO / "configs" / "bench_lemica.yaml")
    data = json.loads((REPO / spec.policy.graph).read_text())
    graph = load_graph(REPO / spec.policy.graph, model="bench-t2v", schedule=data["schedule"])
    spec.policy.bind_graph(graph["weights"], "wan")
    plan = spec.policy.plan()
    assert len(plan) == 15 and plan[0] == 0 and plan[-1] == 29
    assert data["edges"] == comb(29, 2) and data["reuse"] == "residual"
