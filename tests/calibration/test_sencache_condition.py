"""SenCache calibration where a call carries condition channels. On image-to-video models (tiny-wan-i2v,
tiny-hunyuanvideo15-i2v) the family adapter rebuilds the conditional call the pipeline makes from the run's image
(Wan 2.1 I2V: [mask, image latents] channels and the CLIP embedding; HunyuanVideo 1.5 I2V: [condition, mask]
channels and the SigLIP tokens), tensor for tensor, so the sensitivities are measured on the call a run makes; the
same on HunyuanVideo 1.5 text-to-video (zero condition channels and SigLIP tokens). Before, the calibration (and so
sencache and sencache-global without a given profile) was refused on both I2V models. Wan 2.2 TI2V-5B with an image
stays refused (a timestep per token)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sencache_bench.errors import BenchError
from sencache_bench.models import MODELS
from sencache_bench.results.store import read_json
from sencache_bench.runner import Runner
from sencache_bench.spec import resolve

IMAGE = str(Path(__file__).resolve().parents[2] / "configs" / "images" / "p002.png")
PROMPT = "a green square bouncing left and right quickly"
I2V = ["tiny-wan-i2v", "tiny-hunyuanvideo15-i2v"]


def _runner(tmp_path, model: str, policy: dict, steps: int = 6, **sampling) -> Runner:
    image = {"image": IMAGE} if MODELS.get(model).image == "required" else {}
    spec = resolve({"model": {"name": model}, "prompts": [PROMPT], "policy": policy,
                    "sampling": {"steps": steps, **image, **sampling},
                    "output": {"dir": str(tmp_path), "save_videos": False}})
    return Runner(spec, log=lambda s: None)


@pytest.mark.parametrize("model", [*I2V, "tiny-hunyuanvideo15"])
def test_adapter_rebuilds_the_pipelines_conditional_call(tmp_path, model):
    """At 48x32 (the image is 64x64, so resized and cropped): the first call's input channels, every keyword
    tensor and the transformer's output equal those rebuilt from its noisy latents, the prompt and the image
    (HunyuanVideo 1.5 text-to-video: zero condition channels and SigLIP tokens)."""
    runner = _runner(tmp_path, model, {"name": "none"}, width=48)
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
    adapter = MODELS.get(model).family.adapters["sencache"]
    with torch.no_grad():
        rebuilt = adapter["conditioning"](pipe, PROMPT, runner.spec.generation_kwargs(), latents)
    hidden_states = torch.cat([latents, rebuilt.pop("condition")], dim=1)  # as the calibration appends it
    assert torch.equal(hidden_states, first["hidden_states"])
    tensors = {k for k, v in first.items() if torch.is_tensor(v)} - {"hidden_states", "timestep"}
    assert set(rebuilt) == tensors
    for name, value in rebuilt.items():
        assert torch.equal(value, first[name]), name
    if model in I2V:
        image_key = "encoder_hidden_states_image" if "encoder_hidden_states_image" in rebuilt else "image_embeds"
        assert rebuilt[image_key].abs().amax() > 0  # the image's tokens, not text-to-video's zeros
    with torch.no_grad():
        ours = transformer(hidden_states=hidden_states, timestep=first["timestep"], **rebuilt, return_dict=False)[0]
        theirs = transformer(**{k: v for k, v in first.items() if k != "return_dict"}, return_dict=False)[0]
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("model", [*I2V, "tiny-hunyuanvideo15"])
def test_sencache_and_sencache_global_calibrate_and_run(tmp_path, model):
    """Without a profile, the run calibrates one on its own generations from the image and reuses; sencache-global
    then plans from that profile's samples (NFE = the plan's size in every branch)."""
    runner = _runner(tmp_path, model, {"name": "sencache", "eps_main": 0.5, "max_reuse": 2})
    record = read_json(runner.run_item(*runner.items()[0]))
    profile = read_json(next((tmp_path / "profiles").glob("sencache-*.json")))
    assert profile["model"] == model and len(profile["Jx"]) == 6 and all(v > 0 for v in profile["Jx"])
    assert profile["source"] == "generated"
    assert 2 <= record["nfe"] < 6  # it reused something; the first step always computes
    plan_runner = _runner(tmp_path, model, {"name": "sencache-global", "budget": 0.5, "max_reuse": 2})
    plan_runner.prepare_policy()
    policy = plan_runner.spec.policy
    plan = policy.plan()
    gen = plan_runner.session.generate(PROMPT, 0, policy=policy)
    for branch in ("cond", "uncond"):
        assert [c.step for c in gen.calls if c.branch == branch and c.computed] == list(plan)
    assert len(plan) == 3


def test_the_profile_depends_on_the_image(tmp_path):
    """Another conditioning image, the same prompt and seed: other sensitivities (the image enters every call)."""
    from sencache_bench.calibration.sencache import calibrate

    jx = []
    for name in ("p001", "p002"):
        runner = _runner(tmp_path / name, "tiny-hunyuanvideo15-i2v", {"name": "none"},
                         image=str(Path(IMAGE).with_name(f"{name}.png")))
        jx.append(read_json(calibrate(runner, samples=1, out=tmp_path / f"{name}.json", log=lambda s: None))["Jx"])
    assert jx[0] != jx[1]


def test_refusals_are_one_line(tmp_path):
    """Real videos (or clips) cannot serve an image-to-video calibration: their first frames are not the image;
    Wan 2.2 TI2V-5B with an image takes a timestep per token."""
    from sencache_bench.calibration.sencache import calibrate

    videos = tmp_path / "videos"
    videos.mkdir()
    cases = [(_runner(tmp_path, "tiny-wan-i2v", {"name": "none"}), {"videos": videos},
              "calibration source videos: on an image-to-video spec every sample is conditioned on sampling.image"),
             (_runner(tmp_path, "tiny-wan22-ti2v", {"name": "none"}, image=IMAGE), {},
              "sencache calibration on the wan-ti2v-i2v family: its image-to-video calls take a timestep per token")]
    for runner, kwargs, expected in cases:
        with pytest.raises(BenchError) as err:
            calibrate(runner, samples=1, log=lambda s: None, **kwargs)
        assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)
