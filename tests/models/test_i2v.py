"""Image-to-video: sampling.image (its pixels in the reference key, one line for bad input), the tiny I2V models
end to end, their FLOPs against a direct count, and the full-size Wan 2.1 I2V architecture by hand (SenCache
calibration on them: tests/calibration/test_sencache_condition.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sencache_bench.errors import SpecError
from sencache_bench.measure.full_size import count_full_size
from sencache_bench.models import MODELS
from sencache_bench.runner import Runner
from sencache_bench.spec import resolve
from tests.measure.test_calls import PARTS, direct_count  # the direct FlopCounterMode count


IMAGES = Path(__file__).resolve().parents[2] / "configs" / "images"
PROMPT = "a green square bouncing left and right quickly"


def _spec(tmp_path, model="tiny-wan-i2v", image=IMAGES / "p002.png", policy=None, **sampling):
    data = {"model": {"name": model}, "prompts": [PROMPT], "policy": policy or {"name": "none"},
            "sampling": {"steps": 4, "seeds": [0], **sampling}, "metrics": ["psnr"],
            "output": {"dir": str(tmp_path / "out")}}
    if image is not None:
        data["sampling"]["image"] = str(image)
    return resolve(data)


def _key(spec) -> str:
    runner = Runner(spec, log=lambda s: None)
    return runner.reference_key(*runner.items()[0])


def test_reference_key_follows_the_pixels_not_the_path(tmp_path):
    """A renamed copy keeps the key; an image one pixel different changes it; no image (T2V) differs again."""
    copy = tmp_path / "renamed.png"
    shutil.copy(IMAGES / "p002.png", copy)
    edited = np.asarray(Image.open(IMAGES / "p002.png").convert("RGB")).copy()
    edited[0, 0, 0] ^= 1
    Image.fromarray(edited).save(tmp_path / "edited.png")
    base = _key(_spec(tmp_path))
    assert _key(_spec(tmp_path, image=copy)) == base
    assert _key(_spec(tmp_path, image=tmp_path / "edited.png")) != base
    ti2v = _key(_spec(tmp_path, model="tiny-wan22-ti2v"))
    assert _key(_spec(tmp_path, model="tiny-wan22-ti2v", image=None)) != ti2v


def test_a_spec_without_the_new_fields_keeps_its_hash(tmp_path):
    """image and guidance_scale_2 unset leave raw (the spec hash) and the sampling keys as they were."""
    spec = _spec(tmp_path, model="tiny-wan", image=None)
    assert "image" not in spec.raw["sampling"] and "guidance_scale_2" not in spec.raw["sampling"]
    assert "image" not in spec.model_identity()


def test_bad_input_is_one_line(tmp_path):
    (tmp_path / "not_an_image.png").write_text("hello")
    cases = [
        (dict(image=tmp_path / "missing.png"), "sampling.image: " + str(tmp_path / "missing.png") + " not found"),
        (dict(image=tmp_path), "is a directory"),
        (dict(image=tmp_path / "not_an_image.png"), "not an image PIL can read"),
        (dict(model="tiny-wan"), "sampling.image: tiny-wan takes no image"),
        (dict(image=None), "sampling.image: required: tiny-wan-i2v is image-to-video"),
        (dict(model="tiny-wan", image=None, guidance_scale_2=2.0), "sampling.guidance_scale_2: tiny-wan has one"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(SpecError) as err:
            _spec(tmp_path, **kwargs)
        assert expected in str(err.value) and "\n" not in str(err.value), (kwargs, str(err.value))


def test_guidance_scale_2_reaches_the_pipeline_of_a_two_expert_model(tmp_path):
    spec = _spec(tmp_path, model="tiny-wan22", image=None, guidance_scale_2=2.5)
    assert spec.call_kwargs()["guidance_scale_2"] == 2.5
    assert _key(spec) != _key(_spec(tmp_path, model="tiny-wan22", image=None))


def test_the_image_variant_is_the_official_i2v_pipeline():
    """Wan 2.2 TI2V-5B with an image: WanImageToVideoPipeline(expand_timesteps) on the same weights; Wan 2.1
    I2V-14B-480P: Wan2.1 generate.py's i2v settings."""
    from sencache_bench.models.conditioning import entry_for_image

    ti2v = entry_for_image(MODELS.get("wan2.2-ti2v-5b"), "wan2.2-ti2v-5b", True)
    assert ti2v.family.pipeline_class == "WanImageToVideoPipeline" and ti2v.repo_id == "Wan-AI/Wan2.2-TI2V-5B-Diffusers"
    i2v = MODELS.get("wan2.1-i2v-14b-480p")
    d = i2v.defaults
    assert (d.steps, d.guidance_scale, d.shift, d.height, d.width, d.frames, d.fps) == (40, 5.0, 3.0, 480, 832, 81, 16)
    assert i2v.repo_id == "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"


def test_tiny_wan_i2v_transformer_attends_to_the_clip_image_tokens():
    """Wan 2.1 I2V's blocks cross-attend to the CLIP image tokens (image_dim, add_k_proj / add_v_proj): the tiny
    transformer has them, and its output changes with the image tokens (it once ignored them: from_config restored
    tiny-wan's default image_dim=None)."""
    import torch

    pipe = MODELS.get("tiny-wan-i2v").build(0)
    t = pipe.transformer.eval()
    assert t.config.image_dim == pipe.image_encoder.config.hidden_size
    assert all(block.attn2.add_k_proj is not None for block in t.blocks)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, t.config.in_channels, 3, 8, 8, generator=g)
    text = torch.randn(1, 4, t.config.text_dim, generator=g)
    images = [torch.randn(1, 5, t.config.image_dim, generator=g) for _ in range(2)]
    with torch.no_grad():
        out = [t(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=text,
                 encoder_hidden_states_image=img, return_dict=False)[0] for img in images]
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("model", ["tiny-wan-i2v", "tiny-wan22-ti2v"])
@pytest.mark.parametrize("policy", [{"name": "none"}, {"name": "static", "every": 2}, {"name": "seacache"}])
def test_tiny_i2v_runs_end_to_end(tmp_path, model, policy):
    runner = Runner(_spec(tmp_path, model=model, policy=policy), log=lambda s: None)
    rec = json.loads(runner.run_item(*runner.items()[0]).read_text())
    assert rec["nfe_per_branch"]["cond"] == {"none": 4, "static": 2}.get(policy["name"], rec["nfe_per_branch"]["cond"])
    assert 1 <= rec["nfe_per_branch"]["cond"] <= 4
    if policy["name"] == "none":
        assert rec["identical_to_reference"]
    # every call ran at the step's timestep: the conditioning frame's t = 0 tokens (TI2V) are not the call's t
    ts = sorted({c["t"] for c in rec["trace"]}, reverse=True)
    assert len(ts) == 4 and min(ts) > 0


STATIC = {"name": "static", "every": 2}


@pytest.mark.parametrize("model, policy", [
    ("tiny-wan-i2v", STATIC), ("tiny-wan22-ti2v", STATIC), ("tiny-hunyuanvideo15-i2v", STATIC),
    ("tiny-hunyuanvideo15-i2v", {"name": "easycache", "tau": 0.5}),
    ("tiny-hunyuanvideo15-i2v", {"name": "semcache", "alpha": 0.4, "beta": 0.6})],
    ids=["wan-i2v-static", "wan22-ti2v-static", "hy15-i2v-static", "hy15-i2v-easycache", "hy15-i2v-semcache"])
def test_i2v_flops_equal_a_direct_count(tmp_path, model, policy):
    """Text encoder and transformer equal the direct count part by part (SemCache: its TMM calls on the kept
    tokens; EasyCache: its reused calls run nothing); the once-per-video image conditioning (CLIP or SigLIP image
    encoder, VAE encode of the image), which the direct count sees outside the three parts, rides in the record's
    vae_decode part, so the total equals the whole direct count."""
    spec = _spec(tmp_path, model=model, policy=policy)
    runner = Runner(spec, log=lambda s: None)
    rec = json.loads(runner.run_item(*runner.items()[0]).read_text())
    holder = {}
    direct = direct_count(runner.session, lambda: holder.setdefault(
        "gen", runner.session.generate(PROMPT, 0, policy=spec.policy)))
    for part in ("text_encoder", "transformer"):
        assert rec["flops"][part] == direct[part][0], part
        assert rec["flops"][f"{part}_no_attn"] == direct[part][0] - direct[part][1], part
    assert direct["outside"][0] > 0  # the image conditioning ran
    assert rec["flops"]["vae_decode"] == direct["vae_decode"][0] + direct["outside"][0]
    assert rec["flops"]["total"] == sum(direct[p][0] for p in (*PARTS, "outside"))
    assert rec["flops"]["transformer"] < rec["reference"]["flops"]["transformer"]


def test_full_size_wan21_i2v_attention_by_hand():
    """Per layer: self-attention 4*S^2*dim, text cross-attention 4*S*512*dim and image cross-attention
    4*S*257*dim (257 CLIP tokens) over S = 21*30*52 latent tokens, dim 5120, 40 layers; 80 calls at 40 steps."""
    f = count_full_size("wan2.1-i2v-14b-480p", height=480, width=832, frames=81, steps=40)
    tokens, dim, layers = 21 * 30 * 52, 40 * 128, 40
    assert f.transformer_call.attention == layers * (4 * tokens**2 * dim + 4 * tokens * (512 + 257) * dim)
    assert f.calls == 80


def test_a_saved_i2v_pipeline_loads_by_directory_with_its_image(tmp_path):
    """A directory holding a WanImageToVideoPipeline (unregistered, family from model_index.json) takes
    sampling.image, needs it, and generates what the built model does; a text-to-video directory refuses it."""
    from sencache_bench.runner import Session

    MODELS.get("tiny-wan-i2v").build(0).save_pretrained(tmp_path / "i2v")
    MODELS.get("tiny-wan").build(0).save_pretrained(tmp_path / "t2v")
    sampling = {"height": 32, "width": 32, "frames": 9, "guidance_scale": 5.0, "shift": 3.0, "text_length": 16}
    loaded = _spec(tmp_path, model=str(tmp_path / "i2v"), **sampling)
    assert loaded.entry is None and loaded.family.name == "wan-i2v" and loaded.image is not None
    built = _spec(tmp_path, **sampling)
    frames = [Session(s).generate(PROMPT, 0).frames for s in (loaded, built)]
    assert np.array_equal(frames[0], frames[1])
    for kwargs, expected in [(dict(model=str(tmp_path / "i2v"), image=None),
                              f"sampling.image: required: {tmp_path / 'i2v'} holds a WanImageToVideoPipeline"),
                             (dict(model=str(tmp_path / "t2v")), "is not an image-to-video pipeline")]:
        with pytest.raises(SpecError) as err:
            _spec(tmp_path, **kwargs, **sampling)
        assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)
