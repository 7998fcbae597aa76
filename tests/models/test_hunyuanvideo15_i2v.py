"""HunyuanVideo 1.5 image-to-video (tiny-hunyuanvideo15-i2v, hunyuanvideo-1.5-i2v): our pipeline subclass reproduces
diffusers' own call bit for bit, the image reaches the transformer (condition latents, mask, SigLIP tokens, each
worked out a second way), every registered policy runs or is refused in one line, and the full-size call by hand
(FLOPs against a direct count: tests/models/test_i2v.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sencache_bench.errors import SpecError
from sencache_bench.models import MODELS
from sencache_bench.models.hunyuanvideo15 import HunyuanVideo15FlopModel
from sencache_bench.results.store import read_json
from sencache_bench.runner import Runner
from sencache_bench.spec import resolve
from tests.models.test_hunyuanvideo15 import tiny_pipe

IMAGE = Path(__file__).resolve().parents[2] / "configs" / "images" / "p002.png"  # a bench-t2v first frame, 64x64
PROMPT = "a green square bouncing left and right quickly"
STEPS = 4


def _spec(tmp_path, policy=None, model="tiny-hunyuanvideo15-i2v", image=IMAGE, **sampling):
    data = {"model": {"name": model}, "prompts": [PROMPT], "metrics": ["psnr"], "policy": policy or {"name": "none"},
            "sampling": {"steps": STEPS, "seeds": [0], **sampling},
            "output": {"dir": str(tmp_path / "out"), "save_videos": False}}
    if image is not None:
        data["sampling"]["image"] = str(image)
    return resolve(data)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe("tiny-hunyuanvideo15-i2v")


def _image():
    return Image.open(IMAGE).convert("RGB")


def test_official_settings():
    """diffusers' conversion script (480p_i2v: the 480p_t2v transformer, shift 5, guidance 6) and the pipeline's
    example (50 steps, 24 fps); 121 frames at the 640-bucket of a 16:9 image, 848x480."""
    entry = MODELS.get("hunyuanvideo-1.5-i2v")
    d = entry.defaults
    assert (d.steps, d.guidance_scale, d.shift, d.frames, d.height, d.width, d.fps) == (50, 6.0, 5.0, 121, 480, 848, 24)
    assert entry.repo_id == "hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_i2v" and entry.image == "required"
    assert entry.family.pipeline_cls().__name__ == "BenchHunyuanVideo15ImageToVideoPipeline"
    assert MODELS.canonical("hunyuanvideo-1.5-480p-i2v") == "hunyuanvideo-1.5-i2v"
    from diffusers.pipelines.hunyuan_video1_5.image_processor import HunyuanVideo15ImageProcessor

    full_size = HunyuanVideo15ImageProcessor(vae_scale_factor=16)  # the 16x VAE's processor
    assert full_size.calculate_default_height_width(720, 1280, 640) == (480, 848)  # diffusers' bucket, 16:9


@pytest.mark.parametrize("guidance", [None, 3.0])
def test_pipeline_reproduces_diffusers_call(pipe, guidance):
    """Our call (height / width, guidance_scale, callback) equals diffusers' HunyuanVideo15ImageToVideoPipeline
    .__call__ bit for bit: the 64x64 image's bucket at target size 32 is 32x32, the size we pass."""
    from diffusers import ClassifierFreeGuidance, HunyuanVideo15ImageToVideoPipeline

    common = dict(num_frames=9, num_inference_steps=3, output_type="np")
    steps = []
    ours = pipe(_image(), PROMPT, height=32, width=32, guidance_scale=guidance,
                generator=torch.Generator().manual_seed(0),
                callback_on_step_end=lambda p, i, t, kw: steps.append(i) or kw, **common).frames[0]
    guider = pipe.guider
    try:
        pipe.guider = ClassifierFreeGuidance(guidance_scale=guidance or guider.guidance_scale)
        theirs = HunyuanVideo15ImageToVideoPipeline.__call__(pipe, _image(), PROMPT, **common,
                                                             generator=torch.Generator().manual_seed(0)).frames[0]
    finally:
        pipe.guider = guider
    assert ours.shape == (9, 32, 32, 3) and np.array_equal(ours, theirs) and steps == [0, 1, 2]


def test_the_image_reaches_the_transformer(pipe):
    """At the spec's 48x32 (not the image's bucket): the condition channels hold the VAE latents of the image
    crop-resized to 48x32 in frame 0 and zeros after, the mask
    is ones on frame 0 only, and the image tokens are SigLIP's last hidden state of that image, not zeros (the
    transformer's text-to-video path zeroes and masks all-zero tokens)."""
    seen = []
    handle = pipe.transformer.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append({k: v for k, v in kwargs.items() if torch.is_tensor(v)}), with_kwargs=True)
    try:
        video = pipe(_image(), PROMPT, height=32, width=48, num_frames=9, num_inference_steps=2,
                     generator=torch.Generator().manual_seed(0), output_type="np").frames[0]
    finally:
        handle.remove()
    assert video.shape == (9, 32, 48, 3) and len(seen) == 4  # 2 steps x (cond, uncond)
    c = pipe.vae.config.latent_channels
    x = seen[0]["hidden_states"]
    assert x.shape == (1, 2 * c + 1, 5, 8, 12)
    # the second way, by hand: the square image resized to 48x48 (the wider side fills), its middle 32 rows kept
    crop = _image().resize((48, 48), Image.LANCZOS).crop((0, 8, 48, 40))
    pixels = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None, :, None]
    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.mode() * pipe.vae.config.scaling_factor
    torch.testing.assert_close(x[:, c:2 * c, :1], latents, rtol=1e-4, atol=1e-4)
    assert torch.count_nonzero(x[:, c:2 * c, 1:]) == 0
    assert torch.equal(x[:, 2 * c, 0], torch.ones_like(x[:, 2 * c, 0])) and torch.count_nonzero(x[:, 2 * c, 1:]) == 0
    with torch.no_grad():
        tokens = pipe.image_encoder(**pipe.feature_extractor(images=crop, return_tensors="pt")).last_hidden_state
    torch.testing.assert_close(seen[0]["image_embeds"], tokens)
    assert all(torch.equal(s["image_embeds"], tokens) for s in seen) and tokens.abs().min() > 0


def test_another_image_gives_another_video(tmp_path):
    runs = [Runner(_spec(tmp_path / n, image=IMAGE.parent / f"{n}.png"), log=lambda s: None) for n in ("p001", "p002")]
    frames = [r.session.generate(PROMPT, 0).frames for r in runs]
    assert not np.array_equal(frames[0], frames[1])


CALIBRATED = ("teacache", "magcache", "lemica", "dpcache")
#: every registered policy, each set to reuse (the random model gives no meaningful thresholds); calibrated ones
#: take the file made on this model
SETTINGS = {
    "static": {"every": 2},
    "teacache": {"thresh": 1e9}, "magcache": {"thresh": 1e9, "max_reuse": 2},
    "lemica": {"budget": 0.5}, "dpcache": {"budget": 0.5},
    "semcache": {"alpha": 0.0, "beta": 100.0},
    "fbc": {"threshold": 1e9},
    "pab": {"spatial_attention_timestep_skip_range": [-1, 1001], "cross_attention_block_skip_range": 2,
            "cross_attention_timestep_skip_range": [-1, 1001]},
    "taylorseer": {"cache_interval": 2, "disable_cache_before_step": 1},
    "diffusers-magcache": {"ratios": [1.0] * STEPS, "threshold": 1e9},
    "easycache": {"tau": 1e9},
    "seacache": {"threshold": 1e9, "cache_end_steps": 0},
    "dicache": {"tau": 1e9, "warmup": 0.0},
    "dbcache": {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "residual_diff_threshold": 1e9, "max_warmup_steps": 1},
    "dbprune": {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "residual_diff_threshold": 1e9, "max_warmup_steps": 1},
    "adacache": {"codebook": {1e9: 3}, "moreg": True},  # 6 steps: 1, 2 and the forced 5, 6 compute; 3, 4 reused
}
SETTING_STEPS = {"adacache": 6}  # at 4 steps AdaCache's forced steps (1, N-1, N) and step 2 leave nothing to reuse
IN_BLOCK = {"pab", "taylorseer"}  # every call runs (part of) its blocks: fewer FLOPs, not fewer calls
REFUSED = {"fastercache": "the hunyuanvideo15-i2v family has no fastercache adapter"}
NEEDS_PROFILE = ("sencache", "sencache-global")  # their calibration: tests/calibration/test_sencache_condition.py


def test_every_registered_policy_is_covered():
    from sencache_bench.policies import POLICIES

    assert sorted(set(POLICIES) - {"none"}) == sorted([*SETTINGS, *REFUSED, *NEEDS_PROFILE])


def test_every_policy_runs_on_the_image_to_video_model(tmp_path):
    """One pipeline, every policy through the runner: each branch runs every step, reuses (NFE < 4, or fewer
    FLOPs for the in-block ones) and the record prices less than its reference; the ones that cannot run are
    refused in one line."""
    from sencache_bench.calibration import CALIBRATORS

    pytest.importorskip("cache_dit", reason="cache-dit is an optional extra (make env installs it)")
    base = Runner(_spec(tmp_path), log=lambda s: None)
    files = {name: str(CALIBRATORS.get(name)(base, samples=1, out=tmp_path / f"{name}.json", log=lambda s: None))
             for name in CALIBRATED}
    keys = {"teacache": "coefficients", "magcache": "ratios", "lemica": "graph", "dpcache": "errors"}
    failures = []
    for name, params in SETTINGS.items():
        policy = {"name": name, **params, **({keys[name]: files[name]} if name in files else {})}
        steps = SETTING_STEPS.get(name, STEPS)
        run = Runner(_spec(tmp_path, policy, steps=steps), log=lambda s: None)
        if steps == STEPS:  # the session generates at its own spec's steps
            run._session = base.session
        rec = read_json(run.run_item(*run.items()[0]))
        calls, nfe = rec["calls_per_branch"], rec["nfe_per_branch"]
        ok = (calls == {"cond": steps, "uncond": steps} and set(nfe) == {"cond", "uncond"}
              and rec["flops"]["transformer"] < rec["reference"]["flops"]["transformer"]
              and (name in IN_BLOCK or max(nfe.values()) < steps))
        if not ok:
            failures.append(f"{name}: calls {calls}, nfe {nfe}")
    assert failures == []
    for name, reason in REFUSED.items():
        with pytest.raises(SpecError) as err:
            _spec(tmp_path, {"name": name})
        assert reason in str(err.value) and "\n" not in str(err.value)


def test_flop_model_matches_diffusers_forward_with_image_tokens(pipe):
    """Non-zero image tokens are attended (mask ones): the meta-countable forward, given that mask, equals
    diffusers' forward and its FLOPs."""
    from sencache_bench.measure.flops import count_flops

    tr = pipe.transformer
    flop_model = HunyuanVideo15FlopModel.from_config(tr.config).eval()
    flop_model.load_state_dict(tr.state_dict())
    g = torch.Generator().manual_seed(0)
    kwargs = dict(hidden_states=torch.randn(1, 9, 3, 4, 4, generator=g), timestep=torch.tensor([700.0]),
                  encoder_hidden_states=torch.randn(1, 8, 16, generator=g),
                  encoder_attention_mask=torch.tensor([[1.0] * 5 + [0.0] * 3]),
                  encoder_hidden_states_2=torch.randn(1, 4, 8, generator=g),
                  encoder_attention_mask_2=torch.tensor([[1.0] * 2 + [0.0] * 2]),
                  image_embeds=torch.randn(1, 4, 12, generator=g))
    with torch.no_grad():
        theirs = count_flops(lambda: tr(**kwargs, return_dict=False))
        ours = count_flops(lambda: flop_model(**kwargs, image_attention_mask=torch.ones(1, 4)))
        out = tr(**kwargs, return_dict=False)[0], flop_model(**kwargs, image_attention_mask=torch.ones(1, 4))[0]
        masked = flop_model(**kwargs)[0]  # the text-to-video mask: the image tokens ignored
    torch.testing.assert_close(out[1], out[0], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(masked, out[0], rtol=1e-3, atol=1e-3)
    assert (ours.total, ours.attention) == (theirs.total, theirs.attention)


def test_spec_errors_are_one_line(tmp_path):
    cases = [(dict(image=None), "sampling.image: required: tiny-hunyuanvideo15-i2v is image-to-video"),
             (dict(model="tiny-hunyuanvideo15"), "sampling.image: tiny-hunyuanvideo15 takes no image")]
    for kwargs, expected in cases:
        with pytest.raises(SpecError) as err:
            _spec(tmp_path, **kwargs)
        assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_full_size_call_equals_text_to_video_by_hand():
    """The 480p_i2v transformer is the 480p_t2v one and attends to the 729 SigLIP tokens either way in the count
    (a mask changes no FLOPs): 51275 joint tokens, 54 blocks of width 2048, as tests/models/test_hunyuanvideo15.py
    works out; 100 calls at 50 steps."""
    from sencache_bench.measure.full_size import count_full_size

    f = count_full_size("hunyuanvideo-1.5-i2v", 480, 848, 121, 50)
    n, d = 31 * 30 * 53 + 1000 + 256 + 729, 2048
    assert f.transformer_call.attention == 54 * 4 * n * n * d + 2 * 4 * 1000 * 1000 * d
    assert f.calls == 100 and f.prompt_passes == 2
    assert all(0 < part.no_attn <= part.total for part in (f.text_encoder, f.transformer_call, f.vae_decode))
    assert f.total.total == f.text_encoder.total + f.transformer_loop.total + f.vae_decode.total
