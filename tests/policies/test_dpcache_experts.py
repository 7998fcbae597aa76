"""dpcache on Wan 2.2's two experts (tiny-wan22, 8 steps): the calibration says which expert ran each step, the
plan makes the first two steps of the low-noise expert keys, and no prediction reads the other expert's feature.

Before this (main at 6923079) dpcache failed at the switch: the low-noise expert's fresh state had no computed
step to extrapolate from (``ValueError: not enough values to unpack``)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from diffusers import FlowMatchEulerDiscreteScheduler

from sencache_bench.calibration.dpcache import calibrate, expert_keys, load_errors, triple_costs
from sencache_bench.errors import BenchError
from sencache_bench.models.wan import WAN22_BOUNDARY_RATIO
from sencache_bench.runner import Runner
from sencache_bench.spec import resolve

STEPS = 8


def _spec(out, **policy):
    return resolve({"model": {"name": "tiny-wan22"}, "prompts": ["a red ball"], "sampling": {"steps": STEPS},
                    "policy": {"name": "dpcache", "budget": 0.5, **policy},
                    "output": {"dir": str(out), "save_videos": False}})


def _high_noise_steps() -> int:
    """Wan 2.2's rule by hand: the high-noise expert runs the steps with t >= 0.875 x 1000 (tiny-wan22: shift 12)."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=12.0)
    scheduler.set_timesteps(STEPS)
    return sum(float(t) >= WAN22_BOUNDARY_RATIO * 1000 for t in scheduler.timesteps)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    out = tmp_path_factory.mktemp("dpcache22")
    runner = Runner(_spec(out), log=lambda s: None)
    path = calibrate(runner, samples=1, out=out / "errors.json", log=lambda s: None)
    return runner, path, json.loads(path.read_text())


def test_the_file_says_which_expert_ran_each_step(calibrated):
    _, path, data = calibrated
    high = _high_noise_steps()
    assert high == 5  # docs/models.md: 5 high-noise, 3 low-noise
    assert data["step_experts"] == ["transformer"] * high + ["transformer_2"] * (STEPS - high)
    errors, switches = load_errors(path, model="tiny-wan22", schedule=data["schedule"], experts=2)
    assert switches == (high,) and expert_keys(switches, STEPS) == (high, high + 1)


def _within_one_expert_cost(errors, keys, experts) -> float:
    """Brute force's cost of a key set: every non-key step predicted from the last two keys before it, +inf
    when one of them belongs to another expert (a prediction across the switch)."""
    total = 0.0
    for t in range(STEPS):
        if t in keys:
            continue
        i, j = [k for k in keys if k < t][-2:]
        if len({experts[i], experts[j], experts[t]}) > 1:
            return np.inf
        total += errors[i, j, t]
    return total


@pytest.mark.parametrize("budget", [0.5, 0.75])
def test_plan_is_the_cheapest_key_set_that_never_predicts_across_the_switch(calibrated, budget, tmp_path):
    runner, path, data = calibrated
    spec = _spec(tmp_path, budget=budget, errors=str(path))
    spec.policy.prepare(runner)
    errors, _ = load_errors(path, model="tiny-wan22", schedule=data["schedule"], experts=2)
    experts = data["step_experts"]
    k = len(spec.policy.plan())
    assert k == max(round(budget * STEPS), 4)  # 0.5: the 4 forced keys (0, 1, 5, 6); 0.75: 6
    best = min((_within_one_expert_cost(errors, keys, experts), keys)
               for keys in itertools.combinations(range(STEPS), k) if {0, 1} <= set(keys))
    plan = spec.policy.plan()
    assert _within_one_expert_cost(errors, plan, experts) == pytest.approx(best[0])
    assert {0, 1, 5, 6} <= set(plan)
    costs = triple_costs(errors)  # and the DP's own cost table agrees on the plan's cost
    ks = [*plan, STEPS]
    assert sum(costs[ks[m - 2], ks[m - 1], ks[m]] for m in range(2, len(ks))) == pytest.approx(best[0])


def test_run_computes_the_plan_and_predicts_from_its_own_expert(calibrated, tmp_path):
    runner, path, _ = calibrated
    spec = _spec(tmp_path, budget=0.75, errors=str(path))
    spec.policy.prepare(runner)
    gen = runner.session.generate("a red ball", 0, policy=spec.policy)
    plan = list(spec.policy.plan())
    for branch in ("cond", "uncond"):
        calls = [c for c in gen.calls if c.branch == branch]
        assert [c.step for c in calls if c.computed] == plan
        assert [c.expert for c in calls] == ["transformer"] * 5 + ["transformer_2"] * 3
        for c in calls:
            if not c.computed:  # the last two computed steps before it ran on its own expert
                before = [d for d in calls if d.computed and d.step < c.step][-2:]
                assert {d.expert for d in before} == {c.expert}


def test_a_file_without_experts_per_step_is_refused_on_two_experts(calibrated, tmp_path):
    _, path, data = calibrated
    old = tmp_path / "old.json"
    old.write_text(json.dumps({k: v for k, v in data.items() if k != "step_experts"}))
    with pytest.raises(BenchError, match=r"does not say which of the model's 2 experts ran each step"):
        load_errors(old, model="tiny-wan22", schedule=data["schedule"], experts=2)


@pytest.mark.parametrize("seed", range(3))
def test_plan_keeps_the_switch_keys_when_predicting_across_it_looks_cheaper(seed):
    """Synthetic errors where a prediction across the switch costs nothing and one inside an expert costs more:
    an unforced DP would predict across; the plan must still hold the low-noise expert's first two steps and be
    the cheapest key set among those that never cross."""
    from sencache_bench.policies.dpcache import DPCacheConfig

    experts = ["transformer"] * 5 + ["transformer_2"] * 3
    rng = np.random.default_rng(seed)
    errors = np.full((STEPS, STEPS, STEPS), np.nan)
    for i, j, t in itertools.combinations(range(STEPS), 3):
        errors[i, j, t] = 0.0 if len({experts[i], experts[j], experts[t]}) > 1 else rng.uniform(1, 2)
    for budget in (0.5, 0.625, 0.75):
        plan = DPCacheConfig(budget=budget).bind_errors(errors, switches=(5,)).plan()
        k = len(plan)
        best = min(_within_one_expert_cost(errors, keys, experts)
                   for keys in itertools.combinations(range(STEPS), k) if {0, 1} <= set(keys))
        assert {5, 6} <= set(plan) and _within_one_expert_cost(errors, plan, experts) == pytest.approx(best)
