"""sencache-global: the plan and the adaptive eps(t) on a synthetic denoiser worked by hand, the stored table and
its checks, every tiny model, the shipped bench-t2v config."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.hooks.hooks import CacheContext, _set_cache_context

from sencache_bench.calibration.profile import SensitivityProfile, load_profile
from sencache_bench.calibration.sencache_global import displacement_table, load_table, table_path_for
from sencache_bench.errors import BenchError, SpecError
from sencache_bench.policies import POLICIES
from sencache_bench.policies.base import apply_policy, remove_policy
from sencache_bench.policies.sencache_global import SenCacheGlobalConfig, budget_steps, forced_steps
from sencache_bench.runner import Runner
from sencache_bench.spec import load_spec, resolve

TINY_MODELS = ["tiny-wan", "tiny-cogvideox", "tiny-ltx", "tiny-hunyuanvideo"]

REPO = Path(__file__).resolve().parents[2]


class Synthetic(torch.nn.Module):
    """f(x, t) = a x: Jx = a, Jt = 0 exactly (tests/policies/test_sencache.py measures such a profile)."""

    def __init__(self, a: float = 1.0):
        super().__init__()
        self.a, self.calls = a, 0

    def forward(self, hidden_states, timestep, return_dict=False):
        self.calls += 1
        return (self.a * hidden_states,)


class Decisions:
    def __init__(self):
        self.decisions = []

    def note_decision(self, decision):
        self.decisions.append(decision)


@contextlib.contextmanager
def branch(module, name: str, steps: int):
    _set_cache_context(module, CacheContext(name, num_inference_steps=steps))
    try:
        yield
    finally:
        _set_cache_context(module, None)


# The typical trajectory: one coordinate moving 3, 2, 1, 0.5, 0.25 per step (4 elements: sqrt(numel) = 2)
COORDS = [0.0, 3.0, 5.0, 6.0, 6.5, 6.75]
TS = [1000.0 - 100 * i for i in range(6)]


def latents(scale: float = 1.0) -> list[torch.Tensor]:
    return [torch.tensor([scale * c, 0.0, 0.0, 0.0]).view(1, 4, 1, 1, 1) for c in COORDS]


def synthetic_config(**fields) -> SenCacheGlobalConfig:
    profile = SensitivityProfile(timesteps=tuple(TS), jx=(1.0,) * 6, jt=(0.0,) * 6, counts=(1,) * 6,
                                 model="synthetic", family="wan", schedule={})
    disp, _ = displacement_table([latents()])
    ts = np.array(TS)
    fields = {"budget": 0.5, "max_reuse": 3, "reuse": "output", **fields}
    return SenCacheGlobalConfig(**fields).bind_inputs(profile, disp, np.abs(ts[None] - ts[:, None]), 4, None)


def run(config, xs) -> tuple[list[bool], int]:
    model, rec = Synthetic(), Decisions()
    apply_policy(model, [], config.make_policy(), rec)
    try:
        for x, t in zip(xs, TS):
            with branch(model, "cond", steps=6):
                model(hidden_states=x, timestep=torch.tensor([t]))
    finally:
        remove_policy(model)
    return [d.compute for d in rec.decisions], model.calls


def test_plan_on_the_synthetic_denoiser_is_the_hand_optimum():
    """S(j, i) = |c_i - c_j|; 3 computes of 6 (budget 0.5). cost = sum of S over each segment's reuses:

    {0,1,3}: S(1,2) + S(3,4) + S(3,5) = 2 + 0.5 + 0.75 = 3.25     {0,1,2}: 1 + 1.5 + 1.75 = 4.25
    {0,2,3}: 3 + 0.5 + 0.75 = 4.25    {0,2,4}: 3 + 1 + 0.25 = 4.25    {0,1,4}: 2 + 3 + 0.25 = 5.25
    {0,2,5}: 3 + 1 + 1.5 = 5.5        any plan reusing 1 and 2: >= 3 + 5
    """
    config = synthetic_config()
    assert config.plan() == (0, 1, 3)
    computed, calls = run(config, latents())
    assert computed == [True, True, False, True, False, False] and calls == 3


def test_adaptive_reproduces_the_plan_on_the_typical_trajectory_and_adapts_off_it():
    """eps(t) = the plan's accepted scores [0, 0, 2, 2, 0.5, 0.75] (step 3: S(1,2) = 2 < S(1,3) = 3).

    typical:   1: 3 > 0 C | 2: S(1,2) = 2 <= 2 R | 3: S(1,3) = 3 > 2 C | 4: 0.5 <= 0.5 R | 5: 0.75 <= 0.75 R
    twice as fast: 1 C | 2: 4 > 2 C | 3: S(2,3) = 2 <= 2 R | 4: S(2,4) = 3 > 0.5 C | 5: 0.5 <= 0.75 R
    half as fast:  1 C | 2: 1 <= 2 R | 3: 1.5 <= 2 R | 4: 1.75 > 0.5 C | 5: 0.125 <= 0.75 R
    """
    config = synthetic_config(mode="adaptive")
    assert (config._eps_t * 2).tolist() == pytest.approx([0.0, 0.0, 2.0, 2.0, 0.5, 0.75])
    assert run(config, latents())[0] == [True, True, False, True, False, False]
    assert run(config, latents(2.0))[0] == [True, True, True, False, True, False]
    assert run(config, latents(0.5))[0] == [True, True, False, False, True, False]
    # eps_scale 0: only a sample that does not move at all may reuse
    assert run(synthetic_config(mode="adaptive", eps_scale=0.0), latents())[0] == [True] * 6


def test_forced_steps_and_budget_bounds():
    assert forced_steps(None, 10) == {0}
    assert forced_steps("wan", 10) == {0}  # no family forces more today (adapters["sencache"]["forced"])
    assert budget_steps(0.5, 30, {0}, 2) == 15 and budget_steps(0.0, 30, {0}, 2) == 10  # K = 2: every 3rd
    assert budget_steps(0.0, 30, {0, 29}, None) == 2 and budget_steps(1.0, 30, {0}, 3) == 30
    assert synthetic_config(budget=0.0).plan() == (0, 2)  # K = 3 on 6 steps: two computes at least; 3 + 4.25


def test_config_validation_and_knob(tiny_spec):
    knob = SenCacheGlobalConfig.knob
    assert knob.field == "budget" and knob.more_compute == "higher" and (knob.low, knob.high) == (0.0, 1.0)
    assert not knob.monotone  # adaptive mode's NFE need not grow with the budget
    assert POLICIES.get("sencache-global") is SenCacheGlobalConfig
    with pytest.raises(SpecError, match="max_reuse"):
        resolve(tiny_spec(policy={"name": "sencache-global", "mode": "adaptive", "max_reuse": None}))
    with pytest.raises(SpecError, match="budget"):
        resolve(tiny_spec(policy={"name": "sencache-global", "budget": 1.5}))
    with pytest.raises(BenchError, match="no plan yet"):
        SenCacheGlobalConfig().make_policy()


@pytest.fixture(scope="module")
def tiny_wan_runner(tmp_path_factory):
    out = tmp_path_factory.mktemp("global")
    spec = resolve({"model": {"name": "tiny-wan"}, "prompts": ["a red ball"], "sampling": {"steps": 8},
                    "policy": {"name": "sencache-global", "budget": 0.5},
                    "output": {"dir": str(out), "save_videos": False}})
    runner = Runner(spec, log=lambda s: None)
    runner.prepare_policy()
    return runner


def test_table_is_measured_on_the_profiles_samples(tiny_wan_runner):
    inputs = tiny_wan_runner.spec.policy.inputs()
    profile = load_profile(inputs["profile"]["path"])
    table_file = Path(inputs["table"]["path"])
    assert table_file == table_path_for(Path(inputs["profile"]["path"]))
    data = json.loads(table_file.read_text())
    assert data["kind"] == "sencache-global-table" and data["model"] == "tiny-wan"
    assert data["prompts"] == profile.meta["prompts"] and data["seeds"] == list(range(8))
    assert data["schedule"]["timesteps"] == profile.schedule["timesteps"]
    disp = np.array(data["displacement"])
    assert disp.shape == (8, 8) and np.allclose(disp, disp.T) and np.all(np.diag(disp) == 0)
    assert np.allclose(disp, np.mean(data["per_sample"], axis=0), atol=1e-5)
    # 8 uncached generations x 2 branches x 8 steps; then, on 2 samples, an uncached run and for each step
    # i >= 1 the single-reuse edge computing i-1 and i+1..7: 8 - i calls per branch (sum 28)
    assert data["model_calls"] == 8 * 2 * 8 + 2 * 2 * (8 + 28) == 272
    single = data["single_reuse_error"]
    assert single[0] is None and len(single) == 8 and all(v > 0 for v in single[1:])
    ts = np.array(data["schedule"]["timesteps"])
    assert np.allclose(data["dt"], np.abs(ts[None] - ts[:, None]), atol=1e-5)


def test_table_for_another_model_or_schedule_is_refused(tiny_wan_runner, tmp_path):
    path = Path(tiny_wan_runner.spec.policy.inputs()["table"]["path"])
    data = json.loads(path.read_text())
    schedule = data["schedule"]
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**data, "model": "tiny-ltx"}))
    with pytest.raises(BenchError, match="measured on tiny-ltx, not tiny-wan"):
        load_table(other, model="tiny-wan", schedule=schedule)
    with pytest.raises(BenchError, match="measured on 8 steps, this run has 7"):
        load_table(path, model="tiny-wan", schedule={**schedule, "timesteps": schedule["timesteps"][:7]})
    with pytest.raises(BenchError, match="shift"):
        load_table(path, model="tiny-wan", schedule={**schedule, "shift": 5.0})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(BenchError, match="unreadable"):
        load_table(tmp_path / "bad.json", model="tiny-wan", schedule=schedule)


@pytest.mark.parametrize("model", TINY_MODELS)
def test_every_tiny_model_runs_the_plan_in_both_modes(model, tmp_path):
    spec = {"model": {"name": model}, "prompts": ["a red ball"], "sampling": {"steps": 8},
            "policy": {"name": "sencache-global", "budget": 0.5, "max_reuse": 2},
            "output": {"dir": str(tmp_path), "save_videos": False}}
    plan_spec = resolve(spec)
    runner = Runner(plan_spec, log=lambda s: None)
    runner.prepare_policy()
    plan = plan_spec.policy.plan()
    assert len(plan) == 4 and plan[0] == 0
    gen = runner.session.generate("a red ball", 0, policy=plan_spec.policy)
    by: dict[str, list[bool]] = {}
    for c in gen.calls:
        by.setdefault(c.branch, []).append(c.computed)
    for pattern in by.values():  # NFE = the plan's size, in every branch
        assert [i for i, on in enumerate(pattern) if on] == list(plan)
    adaptive = resolve({**spec, "policy": {**spec["policy"], "mode": "adaptive"}})
    runner = Runner(adaptive, log=lambda s: None)  # finds the profile and table the first run kept
    runner.prepare_policy()
    assert adaptive.policy.plan() == plan
    gen = runner.session.generate("a red ball", 0, policy=adaptive.policy)
    for name in by:
        pattern = [c.computed for c in gen.calls if c.branch == name]
        assert pattern[0] and len(pattern) == 8
        run_ = 0
        for on in pattern:
            run_ = 0 if on else run_ + 1
            assert run_ <= 2


def test_shipped_bench_config_plans_from_its_files():
    """configs/bench_sencache_global*.yaml: relative paths to files made by the calibrate command."""
    for name in ("bench_sencache_global.yaml", "bench_sencache_global_adaptive.yaml"):
        spec = load_spec(REPO / "configs" / name)
        policy = spec.policy
        assert policy.name == "sencache-global"
        profile = load_profile(REPO / policy.profile)
        table = load_table(table_path_for(REPO / policy.profile), model="bench-t2v", schedule=profile.schedule)
        policy.bind_inputs(profile, table["displacement"], table["dt"], table["numel"], "wan", 30)
        assert len(policy.plan()) == round(policy.budget * 30) and policy.plan()[0] == 0
