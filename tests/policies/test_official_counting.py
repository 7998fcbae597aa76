"""SenCache, TeaCache and MagCache count as the official scripts do, at any step count.

The expected tables are the official rules worked out by hand (Python's round is half-to-even):

- SenCache Wan 2.1 (vita-epfl/SenCache, Wan2.1/sencache.py): calls interleave cond (cnt 2i) and uncond (2i + 1);
  eps_start while the cond call's cnt < round(0.2 * 2n); ret_steps 2 calls, cutoff 2n - 2 calls: step 0 and
  step n - 1 always compute.
- SenCache LTX-Video (LTX-Video/sencache.py): one batched call per step; eps_start while step < round(0.2 n);
  the first and last round(0.02 n) steps compute; the cached residual is taken after norm_out and the output
  modulation, and a reused call returns proj_out(proj_in(x) + residual) (TeaCache4LTX-Video the same).
- MagCache Wan 2.1 (Zehong-Ma/MagCache, MagCache4Wan2.1/magcache_generate.py): retention while
  cnt < int(2n * retention), cnt over the interleaved calls.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch
from diffusers.hooks.hooks import CacheContext, _set_cache_context

from sencache_bench.calibration.profile import SensitivityProfile
from sencache_bench.policies.base import CallInfo
from sencache_bench.policies.magcache import MagCachePolicy
from sencache_bench.policies.sencache import SenCacheConfig
from sencache_bench.policies.teacache import TeaCacheConfig

STEPS = (7, 10, 12, 25, 30, 50, 75, 100)
# n: (Wan warm-up steps = #{i: 2i < round(0.4 n)}, LTX warm-up steps = round(0.2 n), LTX forced k = round(0.02 n))
BY_HAND = {7: (2, 1, 0), 10: (2, 2, 0), 12: (3, 2, 0), 25: (5, 5, 0), 30: (6, 6, 1), 50: (10, 10, 1),
           75: (15, 15, 2), 100: (20, 20, 2)}


def profile(family: str) -> SensitivityProfile:
    ts = tuple(float(t) for t in range(1000, -1, -50))
    return SensitivityProfile(timesteps=ts, jx=(1.0,) * len(ts), jt=(0.0,) * len(ts), counts=(1,) * len(ts),
                              model="synthetic", family=family, schedule={})


def sencache_pattern(family: str, branches: tuple[str, ...], n: int):
    """Per branch: (computed steps, warm-up steps). Score is always 0 (Jt 0, constant latent), K is huge, so only
    forced steps compute; eps_start 1 / eps_main 2 with numel 4 give thresholds 2 / 4."""
    policy = SenCacheConfig(eps_start=1.0, eps_main=2.0, max_reuse=10_000).bind(profile(family), num_steps=n) \
        .make_policy()
    states = {b: policy.new_state() for b in branches}
    computed, warm = {b: set() for b in branches}, {b: set() for b in branches}
    x = torch.ones(1, 4, 1, 1, 1)
    for i in range(n):
        for b in branches:  # interleaved, cond first, as the pipelines call them
            d = policy.decide(states[b], CallInfo(b, i, 1000.0 - i, x, num_steps=n))
            if d.compute:
                computed[b].add(i)
            if d.threshold == pytest.approx(2.0):
                warm[b].add(i)
    return computed, warm


@pytest.mark.parametrize("n", STEPS)
def test_sencache_wan_counts_interleaved_calls_and_forces_first_and_last(n):
    computed, warm = sencache_pattern("wan", ("cond", "uncond"), n)
    for b in ("cond", "uncond"):
        assert computed[b] == {0, n - 1}
        assert warm[b] == set(range(BY_HAND[n][0]))


@pytest.mark.parametrize("n", STEPS)
def test_sencache_ltx_forces_round_2_percent_at_each_end(n):
    _, ltx_warm, k = BY_HAND[n]
    computed, warm = sencache_pattern("ltx", ("cond_uncond",), n)
    assert computed["cond_uncond"] == {0} | set(range(k)) | set(range(n - k, n))
    assert warm["cond_uncond"] == set(range(ltx_warm))


# n, retention, branches -> computed steps per branch, from int(c * n * retention) calls by hand
MAGCACHE = [
    (10, 0.2, ("cond", "uncond"), (2, 2)),  # int(4.0) = 4 calls
    (13, 0.2, ("cond", "uncond"), (3, 2)),  # int(5.2) = 5 calls: cond 0, 2, 4; uncond 1, 3
    (10, 0.25, ("cond", "uncond"), (3, 2)),  # int(5.0) = 5 calls (per branch steps would give int(2.5) = 2)
    (25, 0.2, ("cond", "uncond"), (5, 5)),
    (30, 0.2, ("cond", "uncond"), (6, 6)),
    (50, 0.2, ("cond", "uncond"), (10, 10)),
    (75, 0.2, ("cond", "uncond"), (15, 15)),
    (100, 0.2, ("cond", "uncond"), (20, 20)),
    (13, 0.2, ("cond_uncond",), (2,)),  # one batched call per step: int(2.6) = 2
    (10, 0.0, ("cond", "uncond"), (1, 1)),  # no retention: only each branch's first call
]


@pytest.mark.parametrize("n, retention, branches, kept", MAGCACHE)
def test_magcache_retention_counts_interleaved_calls(n, retention, branches, kept):
    """Ratio 1 everywhere: the error stays 0, K is huge, so exactly the retained calls compute."""
    policy = MagCachePolicy({b: np.ones(n) for b in branches}, thresh=0.1, max_reuse=10_000, retention=retention,
                            num_steps=n)
    states = {b: policy.new_state() for b in branches}
    computed = {b: [] for b in branches}
    for i in range(n):
        for b in branches:
            if policy.decide(states[b], CallInfo(b, i, 0.0, None, num_steps=n)).compute:
                computed[b].append(i)
    assert tuple(computed[b] for b in branches) == tuple(list(range(k)) for k in kept)


# ------------------------------------------------------------------------------------------------------------
# LTX-Video: the reused residual spans blocks + norm_out + modulation, up to proj_out
# ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ltx():
    from sencache_bench.models.ltx import build_tiny

    transformer = build_tiny(seed=0).transformer.eval()
    g = torch.Generator().manual_seed(1)
    common = {"encoder_hidden_states": torch.randn(2, 4, 32, generator=g), "encoder_attention_mask": torch.ones(2, 4),
              "num_frames": 2, "height": 4, "width": 4, "return_dict": False}
    calls = [dict(common, hidden_states=torch.randn(2, 32, 8, generator=g), timestep=torch.full((2,), t))
             for t in (900.0, 700.0)]
    return transformer, calls


def by_hand(transformer, calls):
    """proj_out(proj_in(x_B) + (P_A - proj_in(x_A))), P_A = proj_out's input of call A (norm_out + modulation)."""
    seen = []
    handle = transformer.proj_out.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    try:
        with torch.no_grad():
            plain = [transformer(**c)[0] for c in calls]
    finally:
        handle.remove()
    with torch.no_grad():
        residual = seen[0] - transformer.proj_in(calls[0]["hidden_states"])
        reused = transformer.proj_out(transformer.proj_in(calls[1]["hidden_states"]) + residual)
    return plain, reused


def cached_outputs(transformer, calls, config):
    config.attach(transformer, list(transformer.transformer_blocks))
    _set_cache_context(transformer, CacheContext("cond_uncond", num_inference_steps=6))
    try:
        with torch.no_grad():
            return [transformer(**c)[0] for c in calls]
    finally:
        _set_cache_context(transformer, None)
        config.detach(transformer)


def sencache_ltx(span: str = "official") -> SenCacheConfig:
    return SenCacheConfig(eps_start=1e9, eps_main=1e9, max_reuse=5, reuse_span=span).bind(profile("ltx"), num_steps=6)


def teacache_ltx(span: str = "official") -> TeaCacheConfig:
    return TeaCacheConfig(thresh=1e9, coefficients=[0.0, 0.0, 0.0, 1.0, 0.0], reuse_span=span)


@pytest.mark.parametrize("make", [sencache_ltx, teacache_ltx], ids=["sencache", "teacache"])
def test_ltx_reused_call_is_proj_out_of_input_plus_the_post_modulation_residual(ltx, make):
    transformer, calls = ltx
    plain, expected = by_hand(transformer, calls)
    first, second = cached_outputs(transformer, calls, make())
    torch.testing.assert_close(first, plain[0])  # the computed call is the model's own
    torch.testing.assert_close(second, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(second, plain[1], atol=1e-4)  # it was reused, not computed
    # the block-stack residual (norm_out and modulation with the current t) is another output
    _, blocks_only = cached_outputs(transformer, calls, make("blocks"))
    assert not torch.allclose(blocks_only, expected, atol=1e-4)
