"""seacache: diffusers' SeaCache through the harness, checked against SeaCacheConfig applied by hand, on every
tiny family (the family adapters' raw latents and sigma checked against the pipelines' own)."""

from __future__ import annotations

import pytest
import torch

from sencache_bench.metrics.video_io import frames_to_uint8
from sencache_bench.models import MODELS
from sencache_bench.models.base import set_eval
from sencache_bench.runner import Runner
from sencache_bench.spec import resolve


def run(tiny_spec, model: str, steps: int, threshold: float):
    spec = resolve(tiny_spec(model={"name": model}, sampling={**tiny_spec()["sampling"], "steps": steps},
                             policy={"name": "seacache", "threshold": threshold}))
    runner = Runner(spec, log=lambda s: None)
    runner.prepare_policy()
    return spec, runner.session.generate("a red ball", 0, policy=spec.policy)


def pattern(calls, branch: str) -> list[bool]:
    return [c.computed for c in calls if c.branch == branch]


def test_tiny_wan_makes_the_decisions_of_seacacheconfig_by_hand(tiny_spec):
    """The same tiny pipeline and seed with ``transformer.enable_cache(SeaCacheConfig(...))`` and nothing else:
    a call computed iff the last block's feed-forward ran. Same decisions per branch, same video bit for bit."""
    from diffusers.hooks import SeaCacheConfig

    spec, gen = run(tiny_spec, "tiny-wan", 8, 0.5)
    pipe = MODELS.get("tiny-wan").build(0)
    assert pipe.scheduler.config.shift == spec.sampling.shift  # the session's schedule
    set_eval(pipe)
    pipe.set_progress_bar_config(disable=True)
    ran: list[bool] = []
    pipe.transformer.register_forward_pre_hook(lambda m, a: ran.append(False))
    pipe.transformer.blocks[-1].ffn.register_forward_hook(lambda m, a, o: ran.__setitem__(-1, True))
    pipe.transformer.enable_cache(SeaCacheConfig(threshold=0.5))
    with torch.no_grad():
        video = pipe(prompt="a red ball", generator=torch.Generator("cpu").manual_seed(0), output_type="np",
                     **spec.call_kwargs()).frames[0]
    by_hand = {"cond": ran[0::2], "uncond": ran[1::2]}  # WanPipeline: cond, then uncond, at every step
    assert pattern(gen.calls, "cond") == by_hand["cond"]
    assert pattern(gen.calls, "uncond") == by_hand["uncond"]
    assert not all(ran) and ran[:2] == [True, True] and ran[-2:] == [True, True]
    assert (gen.frames == frames_to_uint8(video, layout="FHWC")).all()


@pytest.mark.parametrize("model", ["tiny-cogvideox", "tiny-ltx", "tiny-hunyuanvideo", "tiny-opensora"])
def test_families_without_wan_context_cache_with_the_adapters(tiny_spec, model):
    """The harness supplies step, sigma and latents: SeaCache reuses (it runs every call when it cannot build
    its indicator), keeps the first and last steps, and at most 2 reuses in a row."""
    _, gen = run(tiny_spec, model, 8, 0.5)
    for branch in {c.branch for c in gen.calls}:
        computed = pattern(gen.calls, branch)
        assert len(computed) == 8 and computed[0] and computed[-1] and not all(computed), (branch, computed)
        assert "..." not in "".join("C" if c else "." for c in computed)


@pytest.mark.parametrize("model", ["tiny-ltx", "tiny-hunyuanvideo", "tiny-opensora", "tiny-cogvideox"])
def test_adapter_sigma_is_the_schedule_noise_level(tiny_spec, model):
    """Flow matching: the scheduler's own sigmas[i] at its timesteps[i]. CogVideoX (VP): the flow sigma of the same
    signal-to-noise ratio, ((1 - s) / s)^2 = abar / (1 - abar)."""
    spec = resolve(tiny_spec(model={"name": model}))
    family = spec.family
    scheduler = MODELS.get(model).build(0).scheduler
    if model == "tiny-opensora":
        scheduler.set_timesteps(6, height=32, width=32, num_frames=9)
    else:
        scheduler.set_timesteps(6)
    sigma = family.adapters["seacache"]["sigma"]
    for i, t in enumerate(scheduler.timesteps):
        s = sigma(float(t), scheduler)
        if hasattr(scheduler, "alphas_cumprod"):
            abar = float(scheduler.alphas_cumprod[int(t)])
            assert ((1 - s) / s) ** 2 == pytest.approx(abar / (1 - abar), rel=1e-6)
        else:
            assert s == pytest.approx(float(scheduler.sigmas[i]), abs=1e-6)


def test_ltx_raw_latents_undo_the_pipeline_packing():
    from diffusers import LTXPipeline

    pipe = MODELS.get("tiny-ltx").build(0)
    x = torch.randn(2, 8, 3, 4, 5)
    packed = LTXPipeline._pack_latents(x, pipe.transformer.config.patch_size, pipe.transformer.config.patch_size_t)
    raw = MODELS.get("tiny-ltx").family.adapters["seacache"]["raw_vision"](
        pipe.transformer, (), {"hidden_states": packed, "num_frames": 3, "height": 4, "width": 5})
    assert len(raw) == 2 and all(torch.equal(r, v) for r, v in zip(raw, x))


def test_cogvideox_raw_latents_are_channels_first():
    raw = MODELS.get("tiny-cogvideox").family.adapters["seacache"]["raw_vision"](
        None, (), {"hidden_states": torch.arange(2 * 3 * 4 * 2 * 2.0).reshape(2, 3, 4, 2, 2)})
    assert [tuple(r.shape) for r in raw] == [(4, 3, 2, 2)] * 2
    assert raw[1][2, 1, 0, 1] == 1 * 48 + 1 * 16 + 2 * 4 + 0 * 2 + 1  # (b, f, c, h, w) = (1, 1, 2, 0, 1)
