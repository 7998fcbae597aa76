"""diffusers' built-in caches through enable_cache: the harness counts their NFE; they detach cleanly.

Which reduce NFE (checked on the tiny models while writing them): fbc, diffusers-magcache and
taylorseer with use_lite_mode skip whole block stacks on all four tiny models; pab, fastercache and
taylorseer (default mode) reuse work inside the blocks, so their NFE stays full. fastercache runs on
tiny-cogvideox and tiny-hunyuanvideo and is refused for Wan and LTX.
"""

from __future__ import annotations

import pytest

from sencache_bench.errors import SpecError
from sencache_bench.runner import Session
from sencache_bench.spec import resolve

STEPS = 6


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    """One tiny-wan session and its uncached generation, shared by the tests that run on it."""
    spec = {"model": {"name": "tiny-wan"}, "sampling": {"steps": STEPS}, "prompts": ["a red ball"],
            "metrics": ["psnr"], "output": {"dir": str(tmp_path_factory.mktemp("results"))}}
    session = Session(resolve(spec))
    return spec, session, session.generate("a red ball", seed=0)


def _run(spec, session, policy):
    config = resolve(dict(spec, policy=policy)).policy
    return session.generate("a red ball", seed=0, policy=config)


@pytest.mark.parametrize("policy", [
    {"name": "fbc", "threshold": 0.2},
    {"name": "diffusers-magcache", "ratios": [1.0] * STEPS, "threshold": 0.5},
    {"name": "taylorseer", "cache_interval": 2, "disable_cache_before_step": 1, "use_lite_mode": True},
])
def test_block_skipping_builtins_reduce_nfe_on_tiny_wan(policy, wan):
    spec, session, reference = wan
    gen = _run(spec, session, policy)
    for branch in ("cond", "uncond"):
        calls = [c for c in gen.calls if c.branch == branch]
        assert len(calls) == STEPS and calls[0].computed
        assert sum(c.computed for c in calls) < STEPS
    assert (gen.frames != reference.frames).any()
    _assert_detached(session)


def _assert_detached(session):
    """Only the recorder's marker hooks are left on the transformer and its blocks."""
    from diffusers.hooks import HookRegistry

    from sencache_bench.measure.calls import MARKER_HOOK

    assert not session.transformer.is_cache_enabled
    for module in (session.transformer, *session.blocks):
        assert HookRegistry.check_if_exists_or_initialize(module)._hook_order == [MARKER_HOOK]


def test_uncached_after_a_builtin_is_the_reference_again(wan):
    spec, session, reference = wan
    _run(spec, session, {"name": "fbc", "threshold": 0.2})
    again = session.generate("a red ball", seed=0)
    assert all(c.computed for c in again.calls) and (again.frames == reference.frames).all()


@pytest.mark.parametrize("policy", [{"name": "pab", "spatial_attention_timestep_skip_range": [-1, 1001]},
                                    {"name": "taylorseer", "cache_interval": 2, "disable_cache_before_step": 1}])
def test_in_block_builtins_keep_full_nfe_but_change_the_output(policy, wan):
    spec, session, reference = wan
    gen = _run(spec, session, policy)
    assert all(c.computed for c in gen.calls) and len(gen.calls) == 2 * STEPS
    assert (gen.frames != reference.frames).any()
    _assert_detached(session)


def test_fastercache_runs_on_batched_cfg_and_is_refused_for_wan(tiny_spec):
    spec = resolve(tiny_spec(model={"name": "tiny-cogvideox"}, sampling={"steps": STEPS},
                             policy={"name": "fastercache", "spatial_attention_timestep_skip_range": [-1, 900]}))
    session = Session(spec)
    gen = session.generate("a red ball", seed=0, policy=spec.policy)
    assert [c.branch for c in gen.calls] == ["cond_uncond"] * STEPS and all(c.computed for c in gen.calls)
    assert not session.transformer.is_cache_enabled
    with pytest.raises(SpecError, match="wan family has no fastercache adapter"):
        resolve(tiny_spec(policy={"name": "fastercache"}))


def test_specs_mirror_diffusers_configs(tiny_spec):
    from diffusers.hooks import FasterCacheConfig, MagCacheConfig, PyramidAttentionBroadcastConfig

    pab = resolve(tiny_spec(policy={"name": "pab", "cross_attention_block_skip_range": 4})).policy
    cfg = pab.diffusers_config(None, lambda: 500.0)
    assert isinstance(cfg, PyramidAttentionBroadcastConfig)
    assert (cfg.spatial_attention_block_skip_range, cfg.cross_attention_block_skip_range) == (2, 4)
    assert cfg.spatial_attention_timestep_skip_range == (100, 800) and cfg.current_timestep_callback() == 500.0
    assert pab.setting() == "cross_attention_block_skip_range=4"
    fc = resolve(tiny_spec(model={"name": "tiny-hunyuanvideo"}, policy={"name": "fastercache"})).policy
    cfg = fc.diffusers_config(None, lambda: 0.0)
    assert isinstance(cfg, FasterCacheConfig) and cfg.is_guidance_distilled and cfg.tensor_format == "BCFHW"
    mag = resolve(tiny_spec(model={"name": "wan2.1-t2v-1.3b"}, sampling={},
                            policy={"name": "diffusers-magcache"})).policy.diffusers_config(None, None)
    assert isinstance(mag, MagCacheConfig) and mag.num_inference_steps == 50 and len(mag.mag_ratios) == 50
    with pytest.raises(SpecError, match="unknown key"):
        resolve(tiny_spec(policy={"name": "fbc", "thresh": 0.1}))


def test_pab_keeps_each_cfg_branch_apart_on_wan(wan):
    """tiny-wan runs cond and uncond as separate calls. With PAB broadcasting every second spatial attention, a
    reused attention output is the very tensor an earlier call of the layer returned: that call must be of the
    same branch (diffusers' one-state-per-layer PAB hands the cond call the uncond call's output)."""
    spec, session, _ = wan
    layers = [block.attn1 for block in session.transformer.blocks]
    seen: dict[int, list] = {i: [] for i in range(len(layers))}
    order = {"call": 0}

    def count(module, args, kwargs):
        order["call"] += 1

    def keep(i):
        def hook(module, args, output):
            seen[i].append(("cond" if order["call"] % 2 == 1 else "uncond", output))
        return hook

    handles = [session.transformer.register_forward_pre_hook(count, with_kwargs=True)]
    handles += [layer.register_forward_hook(keep(i)) for i, layer in enumerate(layers)]
    try:
        gen = _run(spec, session, {"name": "pab", "spatial_attention_timestep_skip_range": [-1, 1001]})
    finally:
        for h in handles:
            h.remove()
    assert [c.branch for c in gen.calls] == ["cond", "uncond"] * STEPS
    reused = 0
    for calls in seen.values():
        assert len(calls) == 2 * STEPS
        for k, (branch, out) in enumerate(calls):
            sources = [b for b, earlier in calls[:k] if earlier is out]
            reused += bool(sources)
            assert all(b == branch for b in sources), (k, branch, sources)
    assert reused == len(layers) * 2 * (STEPS // 2)  # odd iterations of each branch broadcast: the test can fail
    _assert_detached(session)


def test_fastercache_on_a_distilled_model_refuses_a_range_over_the_first_step(tiny_spec):
    """diffusers' FasterCache on HunyuanVideo (guidance-distilled) skips attention at its first call when the first
    timestep is in the skip range, with nothing cached (TypeError inside the hook): refused with the reason; a range
    that leaves the first step computed runs, full NFE, and changes the output."""
    with pytest.raises(SpecError, match="spatial_attention_timestep_skip_range ends at 1001.*first call"):
        resolve(tiny_spec(model={"name": "tiny-hunyuanvideo"}, sampling={"steps": STEPS},
                          policy={"name": "fastercache", "spatial_attention_timestep_skip_range": [-1, 1001]}))
    spec = resolve(tiny_spec(model={"name": "tiny-hunyuanvideo"}, sampling={"steps": STEPS},
                             policy={"name": "fastercache", "spatial_attention_timestep_skip_range": [-1, 900]}))
    session = Session(spec)
    reference = session.generate("a red ball", seed=0)
    gen = session.generate("a red ball", seed=0, policy=spec.policy)
    assert [c.branch for c in gen.calls] == ["cond"] * STEPS and all(c.computed for c in gen.calls)
    assert (gen.frames != reference.frames).any()
    assert not session.transformer.is_cache_enabled
