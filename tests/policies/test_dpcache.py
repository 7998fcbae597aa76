"""dpcache: the DP against brute force over every key set, the step errors and costs by hand, the runtime
extrapolation by hand, the calibration against a second recording, plans applied on the tiny models."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from sencache_bench.calibration import CALIBRATORS
from sencache_bench.calibration.dpcache import (
    budget_steps,
    calibrate,
    load_errors,
    plan_keys,
    step_errors,
    triple_costs,
)
from sencache_bench.errors import BenchError, SpecError
from sencache_bench.policies import POLICIES
from sencache_bench.policies.dpcache import DPCacheConfig, DPCachePolicy
from sencache_bench.policy import CallInfo
from sencache_bench.runner import Runner
from sencache_bench.spec import load_spec, resolve

TINY_MODELS = ["tiny-wan", "tiny-cogvideox", "tiny-ltx", "tiny-hunyuanvideo", "tiny-opensora"]
REPO = Path(__file__).resolve().parents[2]
STEPS = 6


def tiny(out, model: str = "tiny-wan", **policy) -> dict:
    return {"model": {"name": model}, "prompts": ["a red ball"], "sampling": {"steps": STEPS},
            "policy": {"name": "dpcache", "budget": 0.5, **policy}, "output": {"dir": str(out), "save_videos": False}}


# -- the dynamic programme -------------------------------------------------------------------------------------
def brute_force(costs: np.ndarray, budget: int, forced=()) -> float:
    """Every key set of ``budget`` steps holding 0, 1 and ``forced``: the least sum over consecutive triples."""
    n = costs.shape[0]
    need = {0, 1, *forced}
    best = np.inf
    for keys in itertools.combinations(range(n), budget):
        if not need <= set(keys):
            continue
        ks = [*keys, n]
        best = min(best, sum(costs[ks[m - 2], ks[m - 1], ks[m]] for m in range(2, len(ks))))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_dp_equals_brute_force_on_random_tables(seed):
    rng = np.random.default_rng(seed)
    n = 4 + seed % 4  # 4..7 steps
    errors = np.full((n, n, n), np.nan)
    for i, j, t in itertools.combinations(range(n), 3):
        errors[i, j, t] = rng.exponential()
    costs = triple_costs(errors)
    for budget in range(2, n + 1):
        for forced in [(), (n - 1,), (n // 2,)]:
            if len({0, 1, *forced}) > budget:
                continue
            keys, cost = plan_keys(costs, budget, forced)
            assert len(keys) == budget and keys[:2] == (0, 1) and set(forced) <= set(keys)
            ks = [*keys, n]
            assert cost == pytest.approx(sum(costs[ks[m - 2], ks[m - 1], ks[m]] for m in range(2, len(ks))))
            assert cost == pytest.approx(brute_force(costs, budget, forced))


def test_step_errors_costs_and_plan_by_hand():
    """h = 0, 1, 3, 3.5 (one element). E[i, j, t] = |h_i + (t-i)/(j-i) (h_j - h_i) - h_t|:
    E[0,1,2] = |2 - 3| = 1, E[0,1,3] = |3 - 3.5| = 0.5, E[0,2,3] = |4.5 - 3.5| = 1, E[1,2,3] = |5 - 3.5| = 1.5.
    Keys {0,1}: C[0,1,4] = 1.5. Keys {0,1,2}: C[0,1,2] + C[1,2,4] = 0 + 1.5. Keys {0,1,3}: C[0,1,3] + C[1,3,4]
    = 1 + 0: the plan of 3 keys."""
    errors = step_errors([torch.tensor([v]) for v in (0.0, 1.0, 3.0, 3.5)])
    assert errors[0, 1, 2] == 1 and errors[0, 1, 3] == 0.5 and errors[0, 2, 3] == 1 and errors[1, 2, 3] == 1.5
    assert np.isnan(errors[1, 0, 2]) and np.isnan(errors[0, 2, 1])
    costs = triple_costs(errors)
    assert costs[0, 1, 4] == 1.5 and costs[0, 1, 2] == 0 and costs[1, 2, 4] == 1.5 and costs[1, 3, 4] == 0
    assert np.isinf(costs[2, 1, 3])
    assert plan_keys(costs, 2) == ((0, 1), 1.5)
    assert plan_keys(costs, 3) == ((0, 1, 3), 1.0)
    assert plan_keys(costs, 3, forced=(2,)) == ((0, 1, 2), 1.5)
    assert plan_keys(costs, 4) == ((0, 1, 2, 3), 0.0)
    with pytest.raises(BenchError, match="cannot hold the 3 forced ones"):
        plan_keys(costs, 2, forced=(3,))


def test_budget_is_monotone_and_keeps_the_anchors():
    assert [budget_steps(b, 10) for b in (0.0, 0.1, 0.3, 0.5, 0.99, 1.0)] == [2, 2, 3, 5, 10, 10]
    assert DPCacheConfig.knob.field == "budget" and DPCacheConfig.knob.more_compute == "higher"


# -- the runtime rule ------------------------------------------------------------------------------------------
def test_policy_extrapolates_from_the_last_two_computed_steps():
    """Keys {0, 1, 3} of 5: step 2 from (0, 1): c = (2 - 0)/(1 - 0) = 2; step 4 from (1, 3): c = (4 - 1)/(3 - 1)."""
    errors = np.full((5, 5, 5), np.nan)
    errors[0, 1, 2], errors[1, 3, 4] = 0.25, 0.75
    policy = DPCachePolicy((0, 1, 3), errors)
    state = policy.new_state()
    got = [policy.decide(state, CallInfo(branch="cond", index=t, timestep=0.0, latent=torch.zeros(1)))
           for t in range(5)]
    assert [d.compute for d in got] == [True, True, False, True, False]
    assert (got[2].coefficient, got[4].coefficient) == (2.0, 1.5)
    assert (got[2].score, got[4].score) == (0.25, 0.75)
    assert policy.extrapolate == "feature" and policy.reuse == "residual"
    with pytest.raises(BenchError, match="computes steps 0 and 1"):
        DPCachePolicy((0, 2))


# -- calibration and runs on the tiny models -------------------------------------------------------------------
@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    out = tmp_path_factory.mktemp("dpcache")
    runner = Runner(resolve(tiny(out)), log=lambda s: None)
    path = calibrate(runner, samples=1, out=out / "errors.json", log=lambda s: None)
    return runner, path, json.loads(path.read_text())


def test_calibrated_errors_against_a_second_recording(calibrated):
    """Second method: the last block's output recorded by a torch forward hook on an uncached generation, the
    prediction written as sglang's ``h_j + (h_j - h_i) / (j - i) * (t - j)``, averaged over the two branches."""
    runner, path, data = calibrated
    session = runner.session
    feats = []
    handle = session.blocks[-1].register_forward_hook(lambda m, a, o: feats.append(o.detach().clone()))
    try:
        session.generate(data["prompts"][0], data["seeds"][0])
    finally:
        handle.remove()
    per_branch = [feats[0::2], feats[1::2]]  # Wan: cond then uncond at every step
    errors, _ = load_errors(path, model="tiny-wan", schedule=data["schedule"])
    for i, j, t in [(0, 1, 2), (0, 2, 5), (1, 3, 4), (2, 4, 5)]:
        expect = np.mean([float((h[j] + (h[j] - h[i]) / (j - i) * (t - j) - h[t]).abs().mean())
                          for h in per_branch])
        assert errors[i, j, t] == pytest.approx(expect, rel=1e-4)
    assert data["model_calls"] == 2 * STEPS and data["branches"] == ["cond", "uncond"]


def test_plan_applied_computes_exactly_the_planned_steps(calibrated, tmp_path):
    runner, path, data = calibrated
    spec = resolve(tiny(tmp_path, errors=str(path)))
    run = Runner(spec, log=lambda s: None)
    run._session = runner.session
    run.prepare_policy()
    errors, _ = load_errors(path, model="tiny-wan", schedule=data["schedule"])
    assert spec.policy.plan() == plan_keys(triple_costs(errors), 3)[0]
    assert spec.policy.inputs()["errors"]["path"] == str(path) and len(spec.policy.inputs()["errors"]["sha256"]) == 64
    gen = run.session.generate("a red ball", 0, policy=spec.policy)
    for name in ("cond", "uncond"):
        calls = [c for c in gen.calls if c.branch == name]
        assert [i for i, c in enumerate(calls) if c.computed] == list(spec.policy.plan())
        assert all(c.blocks_ran == [] and c.forward_ran for c in calls if not c.computed)


def test_mismatched_files_are_refused_with_one_line(calibrated, tmp_path):
    runner, path, data = calibrated
    schedule = data["schedule"]
    (tmp_path / "other.json").write_text(json.dumps({**data, "model": "tiny-ltx"}))
    with pytest.raises(BenchError, match="measured on tiny-ltx, not tiny-wan"):
        load_errors(tmp_path / "other.json", model="tiny-wan", schedule=schedule)
    with pytest.raises(BenchError, match="on 6 steps, this run has 5"):
        load_errors(path, model="tiny-wan", schedule={**schedule, "timesteps": schedule["timesteps"][:5]})
    (tmp_path / "kind.json").write_text(json.dumps({"kind": "lemica-graph"}))
    with pytest.raises(BenchError, match="not a dpcache calibration"):
        load_errors(tmp_path / "kind.json", model="tiny-wan", schedule=schedule)
    spec = resolve({**tiny(tmp_path, errors=str(path)), "sampling": {"steps": 5}})
    run = Runner(spec, log=lambda s: None)
    run._session = runner.session
    with pytest.raises(BenchError) as err:
        run.prepare_policy()
    assert "\n" not in str(err.value) and "6 steps, this run has 5" in str(err.value)
    with pytest.raises(BenchError, match="policy.errors: nowhere.json not found"):
        spec = resolve(tiny(tmp_path, errors="nowhere.json"))
        Runner(spec, log=lambda s: None).prepare_policy()


def test_config_checks(tmp_path):
    assert POLICIES.get("dpcache") is DPCacheConfig and "dpcache" in CALIBRATORS
    with pytest.raises(SpecError, match="budget"):
        resolve(tiny(tmp_path, budget=1.5))
    with pytest.raises(BenchError, match="no plan yet"):
        DPCacheConfig().make_policy()
    spec = resolve({**tiny(tmp_path), "sampling": {"steps": 2}})
    with pytest.raises(BenchError, match="2 steps leave nothing to predict"):
        Runner(spec, log=lambda s: None).prepare_policy()


def test_cli_calibrate_policy_dpcache(tmp_path):
    from sencache_bench.cli.calibrate import calibrate as calibrate_cmd

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny(tmp_path / "results")))
    app = typer.Typer()
    app.command()(calibrate_cmd)
    app.command("other")(lambda: None)
    out = tmp_path / "errors.json"
    result = CliRunner().invoke(app, ["calibrate", str(spec), "--policy", "dpcache", "--samples", "1",
                                      "--out", str(out), "--set", "sampling.steps=4"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["kind"] == "dpcache-errors" and data["samples"] == 1 and len(data["schedule"]["timesteps"]) == 4
    assert [len(row) for row in data["errors"]] == [3, 2, 1, 0] and len(data["errors"][0][0]) == 2  # t = 2, 3


@pytest.mark.parametrize("model", TINY_MODELS)
def test_every_tiny_model_runs_its_plan(model, tmp_path):
    """Without policy.errors the first run calibrates; NFE per branch = round(0.5 * 6) = 3, steps 0 and 1 in it."""
    spec = resolve(tiny(tmp_path, model=model))
    runner = Runner(spec, log=lambda s: None)
    runner.prepare_policy()
    plan = spec.policy.plan()
    assert len(plan) == 3 and plan[:2] == (0, 1)
    gen = runner.session.generate("a red ball", 0, policy=spec.policy)
    for name in {c.branch for c in gen.calls}:
        pattern = [c.computed for c in gen.calls if c.branch == name]
        assert [i for i, on in enumerate(pattern) if on] == list(plan)


def test_shipped_bench_config_plans_from_its_file():
    spec = load_spec(REPO / "configs" / "bench_dpcache.yaml")
    data = json.loads((REPO / spec.policy.errors).read_text())
    errors, _ = load_errors(REPO / spec.policy.errors, model="bench-t2v", schedule=data["schedule"])
    plan = spec.policy.bind_errors(errors).plan()
    assert len(plan) == 15 and plan[:2] == (0, 1) and data["samples"] == 4
