"""SenCache's decision rule: hand-computed sequences on a synthetic denoiser, then tiny real pipelines.

The synthetic denoiser f(x, t) = a*x + b*t (a small nn.Module standing in for the transformer) only
feeds the real rule and the real hooks with inputs whose score is known exactly.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.hooks.hooks import CacheContext, _set_cache_context

from sencache_bench.calibration.profile import SensitivityProfile
from sencache_bench.calibration.sencache import calibrate, measure, summarize
from sencache_bench.errors import BenchError, SpecError
from sencache_bench.policies.base import apply_policy, remove_policy
from sencache_bench.policies.sencache import PRESETS, SenCacheConfig, SenCacheParams, SenCachePolicy
from sencache_bench.runner import Runner, Session
from sencache_bench.spec import resolve


class Synthetic(torch.nn.Module):
    """f(x, t) = a*x + b*t (b*t added to every element): Jx = a, Jt = b*sqrt(numel) exactly."""

    def __init__(self, a: float, b: float):
        super().__init__()
        self.a, self.b = a, b
        self.calls = 0

    def forward(self, hidden_states, timestep, return_dict=False):
        self.calls += 1
        return (self.a * hidden_states + self.b * timestep.view(-1, *[1] * (hidden_states.ndim - 1)),)


class Decisions:
    """Stands in for the call recorder: keeps every decision the hook reports."""

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


def constant_profile(jx: float, jt: float, family: str = "wan") -> SensitivityProfile:
    ts = tuple(float(t) for t in range(1000, -1, -50))
    return SensitivityProfile(timesteps=ts, jx=(jx,) * len(ts), jt=(jt,) * len(ts), counts=(1,) * len(ts),
                              model="synthetic", family=family, schedule={})


def latent(c: float) -> torch.Tensor:
    return torch.tensor([c, 0.0, 0.0, 0.0]).view(1, 4, 1, 1, 1)  # numel 4: eps_eff = 2 eps


def test_rule_on_a_hand_computed_sequence():
    """f = 0.5 x + 0.005 t on a 4-element latent: Jx 0.5, Jt 0.01 (as calibrated). dt 10 per step, drift along
    one axis, K 2, 10 steps (eps_start for steps 0-1), eps_start 0.01 / eps_main 0.5 -> eps_eff 0.02 / 1.

    step c     ref      S = 0.5|c - c_ref| + 0.01 (t_ref - t)   eps_eff  reuses  decision
    0    0     -        -                                       0.02     -       C (first call)
    1    0.1   0        0.05 + 0.1 = 0.15                       0.02     0       C
    2    0.2   0.1      0.05 + 0.1 = 0.15                       1        0       R
    3    0.3   0.1      0.10 + 0.2 = 0.30                       1        1       R
    4    0.4   0.1      0.15 + 0.3 = 0.45                       1        2 = K   C
    5    2.0   0.4      0.80 + 0.1 = 0.90                       1        0       R
    6    2.1   0.4      0.85 + 0.2 = 1.05                       1        1       C
    7    2.2   2.1      0.05 + 0.1 = 0.15                       1        0       R
    8    2.3   2.1      0.10 + 0.2 = 0.30                       1        1       R
    9    2.4   2.1      0.15 + 0.3 = 0.45                       1        2 = K   C
    """
    cs = [0, 0.1, 0.2, 0.3, 0.4, 2.0, 2.1, 2.2, 2.3, 2.4]
    ts = [1000.0 - 10 * i for i in range(10)]
    model, rec = Synthetic(a=0.5, b=0.005), Decisions()  # Jt = 0.005 * sqrt(4)
    # the profile of this denoiser, measured by the calibration code itself
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(10)
    with torch.no_grad():
        profile = summarize(*measure(lambda x, t, s: model(hidden_states=x, timestep=torch.tensor([t]))[0],
                                     scheduler, [latent(1.0)]), model="synthetic", family="wan", schedule={})
    assert profile.jx == pytest.approx([0.5] * 10, rel=1e-5) and profile.jt == pytest.approx([0.01] * 10, rel=1e-5)
    model.calls = 0
    policy = SenCachePolicy(SenCacheParams(eps_start=0.01, eps_main=0.5, max_reuse=2), profile, reuse="output")
    apply_policy(model, [], policy, rec)
    outputs = []
    try:
        for c, t in zip(cs, ts):
            with branch(model, "cond", steps=10):
                outputs.append(model(hidden_states=latent(c), timestep=torch.tensor([t]))[0])
    finally:
        remove_policy(model)
    computed = [d.compute for d in rec.decisions]
    assert computed == [True, True, False, False, True, False, True, False, False, True]
    assert model.calls == 5
    assert rec.decisions[0].score is None
    assert [d.score for d in rec.decisions[1:]] == pytest.approx([0.15, 0.15, 0.3, 0.45, 0.9, 1.05, 0.15, 0.3, 0.45],
                                                                 rel=1e-4)
    assert [d.threshold for d in rec.decisions] == pytest.approx([0.02] * 2 + [1.0] * 8)
    # a reused call returns the output of the branch's last computed call
    last = None
    for out, c, t, comp in zip(outputs, cs, ts, computed):
        if comp:
            last = 0.5 * latent(c) + 0.005 * t
        torch.testing.assert_close(out, last)


def test_jx_jt_are_looked_up_at_the_refresh_timestep():
    """Jx, Jt come from the profile's timestep nearest t_ref, fixed until the next refresh."""
    ts = (1000.0, 500.0, 0.0)
    profile = SensitivityProfile(timesteps=ts, jx=(1.0, 2.0, 3.0), jt=(0.1, 0.2, 0.3), counts=(1, 1, 1),
                                 model="synthetic", family="wan", schedule={})
    policy = SenCachePolicy(SenCacheParams(eps_start=100.0, eps_main=100.0, max_reuse=10), profile)
    state = policy.new_state()
    from sencache_bench.policies.base import CallInfo

    def call(i, t, c):
        return policy.decide(state, CallInfo("cond", i, t, latent(c), num_steps=4))

    assert call(0, 620.0, 0.0).compute  # refresh at 620: nearest measured 500 -> Jx 2, Jt 0.2
    d = call(1, 400.0, 1.0)
    assert not d.compute and d.score == pytest.approx(2.0 * 1.0 + 0.2 * 220.0)
    d = call(2, 100.0, 3.0)  # still the refresh's Jx, Jt (not the nearest to 100)
    assert d.score == pytest.approx(2.0 * 3.0 + 0.2 * 520.0)


def test_branches_keep_their_own_state():
    """Interleaved cond / uncond calls with different latents decide exactly as each branch alone."""
    params = SenCacheParams(eps_start=0.1, eps_main=0.3, max_reuse=3)
    g = torch.Generator().manual_seed(0)
    seqs = {b: torch.cumsum(torch.rand(12, 1, 4, 1, 1, 1, generator=g) * s, 0)
            for b, s in (("cond", 0.2), ("uncond", 0.6))}
    ts = [1000.0 - 40 * i for i in range(12)]

    def run(branches):
        model, rec = Synthetic(a=0.8, b=0.002), Decisions()
        apply_policy(model, [], SenCachePolicy(params, constant_profile(0.8, 0.004), reuse="output"), rec)
        try:
            for i, t in enumerate(ts):
                for b in branches:
                    with branch(model, b, steps=12):
                        model(hidden_states=seqs[b][i], timestep=torch.tensor([t]))
        finally:
            remove_policy(model)
        return {b: [d.compute for d in rec.decisions[k::len(branches)]] for k, b in enumerate(branches)}

    both = run(["cond", "uncond"])
    assert both["cond"] == run(["cond"])["cond"]
    assert both["uncond"] == run(["uncond"])["uncond"]
    assert both["cond"] != both["uncond"]  # the test would prove nothing if they agreed


def test_config_presets_and_validation(tiny_spec):
    assert SenCacheConfig(preset="slow").params("wan") == SenCacheParams(0.01, 0.1, 2)
    assert SenCacheConfig(preset="fast").params("wan") == SenCacheParams(0.01, 0.2, 3)
    assert SenCacheConfig(preset="slow").params("cogvideox").eps_main == 0.6
    assert SenCacheConfig(preset="fast").params("ltx") == SenCacheParams(0.01, 0.5, 3)
    assert SenCacheConfig(preset="fast", max_reuse=5, eps_start=0.02).params("wan") == SenCacheParams(0.02, 0.2, 5)
    assert set(PRESETS) == {"wan", "cogvideox", "ltx"}
    with pytest.raises(BenchError, match="no SenCache setting for the hunyuanvideo family"):
        SenCacheConfig(preset="slow").params("hunyuanvideo")
    with pytest.raises(SpecError, match="policy: give preset"):
        resolve(tiny_spec(policy={"name": "sencache", "eps_main": 0.1}))
    with pytest.raises(SpecError, match="policy.max_reuse"):
        resolve(tiny_spec(policy={"name": "sencache", "eps_main": 0.1, "max_reuse": -1}))
    with pytest.raises(BenchError, match="needs a sensitivity profile"):
        SenCacheConfig(preset="slow").make_policy()


# -- tiny real pipelines -----------------------------------------------------------------------------
STEPS = 10


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    """tiny-wan (separate cond / uncond calls) with a profile calibrated on 2 samples."""
    out = tmp_path_factory.mktemp("sencache")
    spec = resolve({"model": {"name": "tiny-wan"}, "prompts": ["a red ball bouncing on grass"],
                    "sampling": {"steps": STEPS, "height": 32, "width": 32, "frames": 9, "guidance_scale": 5.0},
                    "output": {"dir": str(out), "save_videos": False}})
    runner = Runner(spec, log=lambda s: None)
    path = calibrate(runner, samples=2, log=lambda s: None)
    from sencache_bench.calibration.profile import load_profile

    return runner.session, load_profile(path)


def sencache(profile, **fields) -> SenCacheConfig:
    return SenCacheConfig(**fields).bind(profile)


def per_branch(calls) -> dict[str, list]:
    out: dict[str, list] = {}
    for c in calls:
        out.setdefault(c.branch, []).append(c)
    return out


@pytest.mark.parametrize("reuse", ["residual", "output"])
def test_eps_zero_reproduces_the_reference_bit_for_bit(wan, reuse):
    session, profile = wan
    plain = session.generate("a red ball bouncing on grass", seed=0)
    cached = session.generate("a red ball bouncing on grass", seed=0,
                              policy=sencache(profile, eps_start=0.0, eps_main=0.0, max_reuse=3, reuse=reuse))
    assert all(c.computed for c in cached.calls) and len(cached.calls) == 2 * STEPS
    assert (plain.frames == cached.frames).all()


def test_nfe_never_increases_when_eps_grows(wan):
    session, profile = wan
    nfes = []
    for eps in (0.0, *np.geomspace(0.01, 2.0, 12), 10.0):
        gen = session.generate("a quiet library", seed=0,
                               policy=sencache(profile, eps_start=eps, eps_main=eps, max_reuse=4))
        nfes.append(sum(c.computed for c in gen.calls))
    # none reused .. every K+1-th computed, and the last step (Wan's official cutoff)
    assert nfes[0] == 2 * STEPS and nfes[-1] == 2 * (math.ceil(STEPS / 5) + ((STEPS - 1) % 5 != 0))
    assert all(a >= b for a, b in zip(nfes, nfes[1:])), nfes
    assert len(set(nfes)) >= 4, nfes  # the sweep passes through intermediate NFEs


@pytest.mark.parametrize("k", [1, 2, 3])
def test_k_consecutive_reuses_at_most(wan, k):
    session, profile = wan
    gen = session.generate("a quiet library", seed=0,
                           policy=sencache(profile, eps_main=1e9, eps_start=1e9, max_reuse=k))
    for name, calls in per_branch(gen.calls).items():
        pattern = [c.computed for c in calls]
        assert pattern == [i % (k + 1) == 0 or i == STEPS - 1 for i in range(STEPS)], (name, pattern)
        assert all(c.threshold is not None for c in calls)
        assert all(c.score < c.threshold for c in calls if not c.computed)


def test_trace_records_score_and_threshold_per_branch(wan):
    session, profile = wan
    gen = session.generate("a quiet library", seed=0, policy=sencache(profile, eps_main=0.1, max_reuse=2))
    branches = per_branch(gen.calls)
    assert set(branches) == {"cond", "uncond"}
    numel = 16 * 3 * 4 * 4  # tiny-wan latent of one sample: 16 channels, 3 frames, 4x4
    for calls in branches.values():
        assert calls[0].computed and calls[0].score is None
        warm = round(0.2 * STEPS)
        assert [c.threshold for c in calls] == pytest.approx(
            [0.01 * math.sqrt(numel)] * warm + [0.1 * math.sqrt(numel)] * (STEPS - warm))
        run = 0
        for c in calls:
            run = 0 if c.computed else run + 1
            assert run <= 2


def test_batched_cfg_model_runs_and_computes_its_last_step(tmp_path):
    """tiny-cogvideox (one batched cond_uncond call): a constant profile, huge eps: every 3rd call computed, and the
    last step (index 7) too, as the official CogVideoX script forces it (the rule alone would reuse it)."""
    spec = resolve({"model": {"name": "tiny-cogvideox"}, "prompts": ["a cat"], "sampling": {"steps": 8},
                    "output": {"dir": str(tmp_path)}})
    session = Session(spec)
    config = SenCacheConfig(eps_main=1e9, eps_start=1e9, max_reuse=2).bind(constant_profile(1.0, 0.01, "cogvideox"),
                                                                           num_steps=8)
    gen = session.generate("a cat", seed=0, policy=config)
    assert [c.branch for c in gen.calls] == ["cond_uncond"] * 8
    assert [c.computed for c in gen.calls] == [True, False, False, True, False, False, True, True]
    assert gen.calls[-1].score < gen.calls[-1].threshold  # computed although the score allowed a reuse


@pytest.mark.parametrize("family, forced", [("cogvideox", True), ("ltx", False), ("wan", True),
                                            ("hunyuanvideo", False)])
def test_last_step_is_forced_only_where_the_official_script_forces_it(family, forced):
    """Huge eps, K 10, 6 steps: after the first call everything may be reused; the last step computes on CogVideoX
    and Wan (ret 1 step / cutoff 1 step before the end), not on LTX-Video (round(0.02 * 6) = 0 steps forced) or
    HunyuanVideo (no official script)."""
    policy = sencache(constant_profile(1.0, 0.01, family), eps_main=1e9, eps_start=1e9, max_reuse=10).make_policy()
    state = policy.new_state()
    from sencache_bench.policies.base import CallInfo

    pattern = [policy.decide(state, CallInfo("cond", i, 1000.0 - 100 * i, latent(0.1 * i), num_steps=6)).compute
               for i in range(6)]
    assert pattern == [True] + [False] * 4 + [forced]


def test_reuse_needs_the_score_strictly_below_the_threshold():
    """eps 0 and an unchanged latent and timestep: S = 0 = eps_eff. The official test is S < eps_eff: compute."""
    policy = SenCachePolicy(SenCacheParams(eps_start=0.0, eps_main=0.0, max_reuse=5), constant_profile(1.0, 1.0))
    state = policy.new_state()
    from sencache_bench.policies.base import CallInfo

    decisions = [policy.decide(state, CallInfo("cond", i, 500.0, latent(1.0), num_steps=4)) for i in range(4)]
    assert [d.compute for d in decisions] == [True] * 4
    assert [d.score for d in decisions[1:]] == [0.0] * 3 and [d.threshold for d in decisions] == [0.0] * 4
