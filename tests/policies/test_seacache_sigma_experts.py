"""SeaCache's cache context on the Wan pipelines of issue 24: diffusers' SeaCache needs the step, sigma and the
step count of every call (else it runs "fail-open", computing everything). WanPipeline (tiny-wan22's two
experts, tiny-wan22-ti2v) passes them; WanImageToVideoPipeline (tiny-wan-i2v) passes none, and the I2V
family's seacache adapter supplies them. Checked here call by call, against the scheduler's own sigmas."""

from __future__ import annotations

from pathlib import Path

import pytest
from diffusers.hooks import HookRegistry
from diffusers.hooks.sea_cache import SeaCacheRootHook

from sencache_bench.runner import Runner
from sencache_bench.spec import resolve

STEPS = 4
IMAGE = Path(__file__).resolve().parents[2] / "configs" / "images" / "p002.png"  # as tests/models/test_i2v.py


@pytest.mark.parametrize("model", ["tiny-wan22", "tiny-wan-i2v", "tiny-wan22-ti2v"])
def test_every_call_has_step_and_sigma(model, tmp_path):
    sampling = {"seeds": [0], "steps": STEPS, **({"image": str(IMAGE)} if model == "tiny-wan-i2v" else {})}
    spec = resolve({"model": {"name": model}, "prompts": ["a red ball"], "sampling": sampling,
                    "policy": {"name": "seacache", "threshold": 5.0}, "output": {"dir": str(tmp_path)}})
    runner = Runner(spec, log=lambda m: None)
    runner.prepare_policy()
    session = runner.session
    seen, handles = [], []
    for name, transformer, blocks in session.recorder.experts:
        def pre(module, args, transformer=transformer, name=name):
            hooks = HookRegistry.check_if_exists_or_initialize(transformer).hooks.values()
            (root,) = [h for h in hooks if isinstance(h, SeaCacheRootHook)]
            ctx = root.state_manager._context
            seen.append((name, ctx.name, ctx.step_index, ctx.sigma, ctx.num_inference_steps))

        handles.append(blocks[0].register_forward_pre_hook(pre))
    try:
        gen = session.generate("a red ball", 0, policy=spec.policy)
    finally:
        for h in handles:
            h.remove()
    sigmas = [float(s) for s in session.pipe.scheduler.sigmas[:STEPS]]
    assert len(seen) == len(gen.calls) == 2 * STEPS  # the head block's pre-hook sees every call, reused or not
    assert any(not c.computed for c in gen.calls), "nothing reused: SeaCache ran fail-open"
    by_call = {(c.branch, c.step): c for c in gen.calls}
    for expert, branch, step, sigma, steps in seen:
        assert step is not None and steps == STEPS and by_call[(branch, step)].expert == expert
        assert sigma == pytest.approx(sigmas[step], abs=1e-6)  # the step's noise level (flow matching: t / 1000)
    if model == "tiny-wan22":
        assert {e for e, *_ in seen} == {"transformer", "transformer_2"}
