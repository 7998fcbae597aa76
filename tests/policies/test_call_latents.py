"""The sampler's latents in a call's input (the family adapter's ``latents``): image-to-video inputs append
condition channels after the noisy latents (Wan 2.1 I2V: 16 + 4 mask + 16 image latents; HunyuanVideo 1.5:
C + C condition + 1 mask). Policies read the latents: SenCache's drift and its sqrt(numel) threshold, EasyCache's
y - x. Before the adapter, ``CallInfo.latent`` held every input channel and EasyCache was refused on these models
("output not shaped like its input"); the official Wan code passes the noisy latents to its forward and
concatenates the condition inside it, so the noisy latents are what its policies see."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
import torch

from sencache_bench.policy import CachePolicy, CallInfo, Decision, PolicyConfig
from sencache_bench.results.store import read_json
from sencache_bench.runner import Runner
from sencache_bench.spec import resolve

IMAGE = "configs/images/p002.png"
MODELS = {"tiny-wan-i2v": {"image": IMAGE}, "tiny-hunyuanvideo15": {}}


class _Seen(CachePolicy):
    """Computes every call; keeps what it was shown."""

    name = "seen"
    reuse = "residual"

    def __init__(self, seen: list):
        self.seen = seen

    def decide(self, state, call: CallInfo) -> Decision:
        self.seen.append(call.latent.clone())
        return Decision(compute=True)


class SeenConfig(PolicyConfig):
    name: Literal["test-seen"] = "test-seen"
    model_config = {"extra": "forbid", "frozen": False}
    seen: list = []

    def make_policy(self):
        return _Seen(self.seen)


def _runner(tmp_path, model: str, policy: dict, steps: int = 8) -> Runner:
    spec = resolve({"model": {"name": model}, "prompts": ["a red ball"], "sampling": {"steps": steps, **MODELS[model]},
                    "policy": policy, "output": {"dir": str(tmp_path), "save_videos": False}})
    return Runner(spec, log=lambda s: None)


def _calls(transformer, fn):
    """(hidden_states, output) of every transformer call while ``fn`` runs (the hooked forward's result)."""
    calls = []
    handle = transformer.register_forward_hook(
        lambda m, args, kwargs, out: calls.append((kwargs["hidden_states"].detach().clone(), out[0].detach().clone())),
        with_kwargs=True)
    try:
        fn()
    finally:
        handle.remove()
    return calls


@pytest.mark.parametrize("model", sorted(MODELS))
def test_call_latent_is_the_noisy_latents(model, tmp_path):
    session = _runner(tmp_path, model, {"name": "none"}, steps=3).session
    config = SeenConfig(seen=[])
    calls = _calls(session.transformer, lambda: session.generate("a red ball", 0, policy=config))
    out_channels = session.transformer.config.out_channels
    assert session.transformer.config.in_channels > out_channels  # the condition channels are there
    assert len(config.seen) == len(calls) == 6  # 3 steps x cond, uncond
    for latent, (hidden, _) in zip(config.seen, calls):
        assert latent.shape[1] == out_channels
        assert torch.equal(latent, hidden[-1:, :out_channels])


@pytest.mark.parametrize("model", sorted(MODELS))
def test_easycache_reuses_the_noisy_latents_transformation(model, tmp_path):
    """A reused call returns x_t + (y - x) of its branch's last computed call, x the noisy latents only."""
    runner = _runner(tmp_path, model, {"name": "easycache", "tau": 0.5})
    session = runner.session
    gen = {}
    calls = _calls(session.transformer, lambda: gen.update(g=session.generate("a red ball", 0,
                                                                               policy=runner.spec.policy)))
    trace = gen["g"].calls
    assert len(trace) == len(calls) == 16
    c = session.transformer.config.out_channels
    reused = 0
    for branch in ("cond", "uncond"):
        last = None
        for record, (hidden, out) in zip(trace, calls):
            if record.branch != branch:
                continue
            if record.computed:
                last = (hidden[:, :c], out)
            else:
                reused += 1
                torch.testing.assert_close(out, hidden[:, :c] + (last[1] - last[0]), rtol=0, atol=1e-6)
    assert reused > 0


@pytest.mark.parametrize("policy", [{"name": "lemica", "budget": 0.5}, {"name": "dpcache", "budget": 0.5}])
def test_calibrating_policies_generate_with_the_image(policy, tmp_path):
    """Their calibration's own pipeline calls pass the image (before: WanImageToVideoPipeline's TypeError)."""
    runner = _runner(tmp_path, "tiny-wan-i2v", policy, steps=6)
    record = read_json(runner.run_item(*runner.items()[0]))
    assert record["nfe"] == 3  # both plan 3 of 6 computed steps per branch (round(0.5 x 6))


def test_semcache_tmm_frames_on_i2v_are_the_noisy_latents(tmp_path):
    """TMM's motion scores on Wan I2V read the 16 noisy channels; the 20 mask and image-latent channels (non-zero
    on the first latent frame only) would make frame 0 look like motion at every step."""
    from sencache_bench.models.wan import semcache_frames
    from sencache_bench.policies.semcache import motion_scores

    session = _runner(tmp_path, "tiny-wan-i2v", {"name": "none"}, steps=2).session
    config = SeenConfig(seen=[])
    calls = _calls(session.transformer, lambda: session.generate("a red ball", 0, policy=config))
    hidden = calls[0][0]
    adapter = session.spec.family.adapters["semcache"]
    frames, per_frame = adapter["frames"](session.transformer, {"hidden_states": hidden})
    by_hand = hidden[:, :16].permute(0, 2, 1, 3, 4).flatten(2)  # patch (1, 2, 2): a frame is its 16 x H x W latents
    assert torch.equal(frames, by_hand) and per_frame == (hidden.shape[3] // 2) * (hidden.shape[4] // 2)
    whole = semcache_frames(session.transformer, {"hidden_states": hidden})[0]  # all 36 channels: the old input
    assert not np.allclose(motion_scores(frames), motion_scores(whole))
