"""Wan 2.2's two experts (tiny-wan22): the switch at the official boundary, per-expert records, and caching that
never carries anything across the switch.

Before the two-expert change (commit 5ab4937) the harness hooked ``pipe.transformer`` only: on tiny-wan22 a
static every=2 run recorded 10 of the 16 calls (the 6 low-noise calls were neither recorded, cached nor
priced: NFE 3 per branch of an actual 5 computed + 3 uncached), so reuse could not cross the boundary, but
the records were wrong. These tests pin the new behaviour.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from sencache_bench.errors import PolicyError
from sencache_bench.models import MODELS
from sencache_bench.models.wan import WAN22_BOUNDARY_RATIO
from sencache_bench.runner import Session, _nfe_summary, price, price_per_expert
from sencache_bench.spec import resolve

PROMPT = "a red ball"


def _spec(tmp_path, policy=None, **sampling):
    return resolve({"model": {"name": "tiny-wan22"}, "prompts": [PROMPT], "sampling": {"seeds": [0], **sampling},
                    "policy": policy or {"name": "none"}, "output": {"dir": str(tmp_path)}})


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return Session(_spec(tmp_path_factory.mktemp("wan22")))


def _high_noise_steps(steps: int, shift: float) -> int:
    """The official rule by hand: the high-noise expert runs the steps with t >= 0.875 * 1000."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(steps)
    return sum(float(t) >= WAN22_BOUNDARY_RATIO * 1000 for t in scheduler.timesteps)


def test_official_settings_of_the_full_size_entries():
    """Wan2.2 wan/configs/wan_t2v_A14B.py: shift 12, 40 steps, guidance 4.0 high / 3.0 low, 81 frames at 16 fps."""
    entry = MODELS.get("wan2.2-t2v-a14b")
    d = entry.defaults
    assert (d.steps, d.shift, d.guidance_scale, d.frames, d.fps) == (40, 12.0, 4.0, 81, 16)
    assert (d.height, d.width) == (720, 1280) and entry.call_kwargs["guidance_scale_2"] == 3.0
    assert entry.repo_id == "Wan-AI/Wan2.2-T2V-A14B-Diffusers" and entry.experts == ("transformer", "transformer_2")
    assert WAN22_BOUNDARY_RATIO == 0.875


def test_two_experts_of_one_architecture_and_different_weights(session):
    pipe = session.pipe
    assert pipe.config.boundary_ratio == 0.875
    assert pipe.transformer.config == pipe.transformer_2.config
    w1, w2 = (next(t.parameters()) for t in (pipe.transformer, pipe.transformer_2))
    assert not torch.equal(w1, w2)
    assert [e[0] for e in session.recorder.experts] == ["transformer", "transformer_2"]
    assert list(MODELS.get("tiny-wan22").experts) == ["transformer", "transformer_2"]  # known before loading


def test_trace_shows_the_switch_and_counts_per_expert(session):
    gen = session.generate(PROMPT, 0)
    high = _high_noise_steps(8, 12.0)
    assert high == 5  # 1000 986 968 942 902 | 833 684 126
    assert [c.expert for c in gen.calls] == ["transformer"] * 2 * high + ["transformer_2"] * 2 * (8 - high)
    assert [c.step for c in gen.calls] == [s for s in range(8) for _ in range(2)]  # steps continue across
    assert all((c.timestep >= 875) == (c.expert == "transformer") for c in gen.calls)
    summary = _nfe_summary(gen.calls)
    assert summary["nfe_per_branch"] == {"cond": 8, "uncond": 8} and summary["nfe"] == 8
    assert summary["nfe_per_expert"] == {"transformer": {"cond": 5, "uncond": 5},
                                         "transformer_2": {"cond": 3, "uncond": 3}}
    assert gen.calls[2 * high].to_json()["expert"] == "transformer_2"


def _stack_residuals(session, policy):
    """(expert, branch, step) -> block-stack output minus input, seen by torch hooks outside the policy's."""
    seen, handles = {}, []
    for name, transformer, blocks in session.recorder.experts:
        def pre(module, args, kwargs, name=name):
            seen["in"] = kwargs.get("hidden_states", args[0] if args else None).clone()

        def post(module, args, kwargs, output, name=name):
            rec = session.recorder.current
            seen[(name, rec.branch, rec.step)] = output - seen["in"]

        handles.append(blocks[0].register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(blocks[-1].register_forward_hook(post, with_kwargs=True))
    try:
        gen = session.generate(PROMPT, 0, policy=policy)
    finally:
        for h in handles:
            h.remove()
    return gen, seen


def test_reuse_never_crosses_the_boundary(session, tmp_path):
    """static every=2 asks to reuse at step 5, the low-noise expert's first call: it computes (nothing of the
    high-noise expert is reused); step 7 reuses the residual the low-noise expert computed at step 6."""
    spec = _spec(tmp_path, {"name": "static", "every": 2}, steps=8)
    gen, residual = _stack_residuals(session, spec.policy)
    computed = {(c.expert, c.branch, c.step): c.computed for c in gen.calls}
    for branch in ("cond", "uncond"):
        assert [computed[(e, branch, s)] for e, s in
                [("transformer", s) for s in range(5)] + [("transformer_2", s) for s in range(5, 8)]] \
            == [True, False, True, False, True, True, True, False]
        reused = residual[("transformer_2", branch, 7)]
        assert torch.allclose(reused, residual[("transformer_2", branch, 6)], rtol=0, atol=1e-5)
        assert not torch.allclose(reused, residual[("transformer", branch, 4)])
        # the high-noise expert's reuse comes from its own last computed step
        assert torch.allclose(residual[("transformer", branch, 3)], residual[("transformer", branch, 2)], rtol=0,
                              atol=1e-5)


def test_a_policy_calibrated_for_one_transformer_is_refused_on_two_experts(session):
    """Every built-in calibrated policy now calibrates per expert (tests/calibration/test_two_experts_calibration.py,
    tests/policies/test_diffusers_magcache_experts.py, tests/policies/test_schedules_experts.py); a config that
    declares a calibration but not ``per_expert`` (a plugin's) is still refused in one line naming the experts."""
    from typing import ClassVar, Literal

    from sencache_bench.policy import PolicyConfig

    class ProfiledOnce(PolicyConfig):
        name: Literal["profiled-once"] = "profiled-once"
        calibration: ClassVar[str] = "a profile"

    with pytest.raises(PolicyError, match=r"'profiled-once' uses a profile made for one transformer; this model has "
                                          r"2 experts \(transformer, transformer_2\)"):
        session.check_policy(ProfiledOnce())


def test_every_calibrated_policy_declares_its_calibration():
    """magcache's ratio files name their model, so a tiny-wan file is refused at validation already; its
    ClassVar refuses one calibrated on tiny-wan22 the same way as the others."""
    from sencache_bench.policies import POLICIES

    calibrated = {n for n in POLICIES.names() if getattr(POLICIES.get(n), "calibration", None)}
    assert calibrated == {"sencache", "sencache-global", "lemica", "teacache", "magcache", "diffusers-magcache"}


def test_flops_per_expert_add_up(session):
    parts = session.count_flops(PROMPT, seed=0)
    gen = session.generate(PROMPT, 0)
    per_expert = price_per_expert(parts, gen.calls)
    full = parts["call"]
    per_call = sum(t for t, _ in full["blocks"]) + full["outside"][0]
    assert per_expert["transformer"]["transformer"] == 10 * per_call
    assert per_expert["transformer_2"]["transformer"] == 6 * per_call
    assert price(parts, gen.calls)["transformer"] == 16 * per_call


CACHE_DIT = {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "residual_diff_threshold": 0.5, "max_warmup_steps": 1}
CONFORMING = {  # tests/test_conformance.py's settings; the calibrated policies are refused above
    "none": dict(),
    "static": dict(params={"every": 2}, never_reuse={"every": 1}),
    "semcache": dict(never_reuse={"alpha": 0.0, "beta": 0.0, "tmm": False}),
    "fbc": dict(params={"threshold": 0.2}, never_reuse={"threshold": 0.0}),
    "pab": dict(params={"spatial_attention_timestep_skip_range": [-1, 1001]},
                never_reuse={"spatial_attention_block_skip_range": 1}),
    "taylorseer": dict(params={"cache_interval": 2, "disable_cache_before_step": 1}, never_reuse={"cache_interval": 1}),
    "dbcache": dict(params=CACHE_DIT, never_reuse={"residual_diff_threshold": 0.0}),
    "dbprune": dict(params=CACHE_DIT, never_reuse={"residual_diff_threshold": 0.0}),
    "easycache": dict(params={"tau": 0.5}),
    "seacache": dict(params={"threshold": 2.0}),
    "dicache": dict(params={"tau": 0.3}),
    "dpcache": dict(params={"budget": 0.5}),  # 4 steps: keys 0, 1 and the low-noise expert's 2, 3
    "adacache": dict(steps=8, params={"codebook": {0.5: 3, 1.0: 2, 100.0: 1}, "moreg": True}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFORMING))
def test_conformance_kit_on_two_experts(name, tmp_path):
    """4 steps: 2 high-noise, 2 low-noise; the kit's replay runs each captured call on its own expert."""
    from sencache_bench.testing import assert_conforms

    if name.startswith("db"):
        pytest.importorskip("cache_dit", reason="cache-dit is an optional extra (make env installs it)")
    report = assert_conforms(name, **{"model": "tiny-wan22", "steps": 4, "workdir": tmp_path, **CONFORMING[name]})
    checks = {c.name: c.passed for c in report.checks}
    assert checks["never-reuse reproduces the reference bit for bit"] is True
    assert checks["branches are independent"] is True
    assert checks["no state leaks between videos"] is True


def test_full_size_steps_per_expert_by_hand():
    """Official sampler: s = 1 - i/40, sigma = 12 s / (1 + 11 s) >= 0.875 <=> s >= 0.875 / 2.375 = 0.368
    <=> i <= 25.3: 26 high-noise steps, 14 low-noise."""
    from sencache_bench.measure.full_size import expert_steps, load_architecture

    experts = load_architecture("wan2.2-t2v-a14b")["experts"]
    assert expert_steps(experts, 40) == {"transformer": 26, "transformer_2": 14}
    # 8 steps: s = 1 .. 0.375 pass, 0.25 does not: 6 + 2 (tiny-wan22's FlowMatchEuler schedule splits 5 + 3: the
    # split is the scheduler's, so the runner takes it from the trace, and only full-size counts use this rule)
    assert expert_steps(experts, 8) == {"transformer": 6, "transformer_2": 2}


@pytest.mark.slow
def test_ti2v_5b_full_size_attention_by_hand():
    """1280x704, 121 frames: latent 31 x 44 x 80 (stride 4, 16, 16), patch (1, 2, 2): N = 31*22*40 = 27280 tokens;
    per block 4*H*N*N*D (self) + 4*H*N*512*D (cross, 512 text tokens), H = 24, D = 128, 30 blocks."""
    from sencache_bench.measure.full_size import count_full_size

    f = count_full_size("wan2.2-ti2v-5b", 704, 1280, 121, 50)
    n, h, d = 31 * 22 * 40, 24, 128
    assert f.transformer_call.attention == 30 * (4 * h * n * n * d + 4 * h * n * 512 * d)
    assert f.calls == 100 and f.branches == ("cond", "uncond")
