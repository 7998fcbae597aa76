"""SenCache calibration on HunyuanVideo 1.5 (tiny-hunyuanvideo15): its adapter rebuilds the conditional call the
pipeline makes ([latents, condition, mask] channels, Qwen and ByT5 text with masks, zero SigLIP tokens), so the
sensitivities are measured on the call a run makes. Before, the calibration (and sencache-global) was refused."""

from __future__ import annotations

import torch

from sencache_bench.models.hunyuanvideo15 import sencache_conditioning
from sencache_bench.results.store import read_json
from sencache_bench.runner import Runner
from sencache_bench.spec import resolve

PROMPT = "a red ball bouncing"


def _runner(tmp_path, policy: dict) -> Runner:
    spec = resolve({"model": {"name": "tiny-hunyuanvideo15"}, "prompts": [PROMPT], "sampling": {"steps": 6},
                    "policy": policy, "output": {"dir": str(tmp_path), "save_videos": False}})
    return Runner(spec, log=lambda s: None)


def test_adapter_rebuilds_the_pipelines_conditional_call(tmp_path):
    runner = _runner(tmp_path, {"name": "none"})
    session = runner.session
    pipe, transformer = session.pipe, session.transformer
    seen = []
    handle = transformer.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append({k: v.clone() if torch.is_tensor(v) else v for k, v in kwargs.items()}),
        with_kwargs=True)
    try:
        session.generate(PROMPT, 0)
    finally:
        handle.remove()
    first = seen[0]  # step 0, the conditional branch (cond runs before uncond)
    latents = first["hidden_states"][:, :transformer.config.out_channels]
    rebuilt = sencache_conditioning(pipe, PROMPT, runner.spec.generation_kwargs(), latents)
    hidden_states = torch.cat([latents, rebuilt.pop("condition")], dim=1)  # as the calibration appends it
    assert torch.equal(hidden_states, first["hidden_states"])
    for name, value in rebuilt.items():
        assert torch.equal(value, first[name]), name
    with torch.no_grad():
        ours = transformer(hidden_states=hidden_states, timestep=first["timestep"], **rebuilt, return_dict=False)[0]
        theirs = transformer(**{k: v for k, v in first.items() if k != "return_dict"}, return_dict=False)[0]
    assert torch.equal(ours, theirs)


def test_sencache_calibrates_and_runs(tmp_path):
    runner = _runner(tmp_path, {"name": "sencache", "eps_main": 0.5, "max_reuse": 2})
    record = read_json(runner.run_item(*runner.items()[0]))
    profile = read_json(next((tmp_path / "profiles").glob("sencache-*.json")))
    assert profile["model"] == "tiny-hunyuanvideo15" and len(profile["Jx"]) == 6
    assert all(v > 0 for v in profile["Jx"])
    assert 2 <= record["nfe"] < 6  # it reused something; the first step always computes
