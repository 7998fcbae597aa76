"""Open-Sora 1.2: STDiT3's embeddings and sampler by hand, the batched CFG over the null caption, the VAE's
micro-frame chunks, the official weight layout (round trip, full-size coverage), and every policy on tiny-opensora
with its trace priced against a direct FlopCounterMode count."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sencache_bench.calibration import CALIBRATORS
from sencache_bench.errors import BenchError
from sencache_bench.measure.flops import count_flops
from sencache_bench.models.opensora import weights as W
from sencache_bench.models.opensora.family import teacache_modulated_input
from sencache_bench.models.opensora.pipeline import with_aesthetic_score
from sencache_bench.models.opensora.scheduler import OpenSoraRFlowScheduler, transform_ratio
from sencache_bench.models.opensora.transformer import (OpenSoraSTDiT3Transformer, apply_rope, position_embedding_2d,
                                                         rope_frequencies, rope_table, sinusoid)
from sencache_bench.models.opensora.vae import latent_frames
from sencache_bench.runner import Runner, Session, price
from sencache_bench.spec import resolve

STEPS = 4


def _spec(tmp_path, policy=None, steps=STEPS, frames=9, **extra):
    return {"model": {"name": "tiny-opensora"}, "prompts": ["a red ball bouncing on grass"],
            "sampling": {"steps": steps, "height": 32, "width": 32, "frames": frames, "guidance_scale": 7.0,
                         "seeds": [0]},
            "policy": policy or {"name": "none"}, "metrics": ["psnr"],
            "output": {"dir": str(tmp_path / "results"), "save_videos": False}, **extra}


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return Session(resolve(_spec(tmp_path_factory.mktemp("os"))))


def _first_call(session, prompt="a red ball bouncing on grass", steps=1) -> dict:
    captured = {}

    def grab(module, args, kwargs):
        captured.setdefault("kwargs", dict(kwargs))

    handle = session.transformer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        session._call(prompt, seed=0, steps=steps)
    finally:
        handle.remove()
    return {**captured["kwargs"], "return_dict": False}


# ---------------------------------------------------------------------------------------------------
# Embeddings and sampler, by hand
# ---------------------------------------------------------------------------------------------------
def test_sinusoid_and_position_embedding_by_hand():
    e = sinusoid(torch.tensor([0.0, 2.0]), dim=4)  # freqs exp(-ln(1e4) * k / 2), k = 0, 1: 1 and 0.01
    torch.testing.assert_close(e[0], torch.tensor([1.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(e[1], torch.tensor([math.cos(2), math.cos(0.02), math.sin(2), math.sin(0.02)]))
    # dim 8: each axis gets 4 = [sin, cos] x inv_freq (1, 0.01); grid 2 x 3 (h x w), scale 2, base_size 4:
    # rows 0, 1 -> / 2 * 4 / 2 = 0, 1; cols 0, 1, 2 -> / 2 * 4 / 3 = 0, 2/3, 4/3; token 5 = row 1, col 2
    pos = position_embedding_2d(8, 2, 3, scale=2.0, base_size=4)
    col, row = 4 / 3, 1.0
    want = [math.sin(col), math.sin(col / 100), math.cos(col), math.cos(col / 100),
            math.sin(row), math.sin(row / 100), math.cos(row), math.cos(row / 100)]
    assert pos.shape == (6, 8)
    torch.testing.assert_close(pos[5], torch.tensor(want))


def test_rope_is_a_complex_rotation_of_consecutive_pairs():
    """Second method: pairs (x0, x1) as x0 + i x1 multiplied by exp(i * position * freq)."""
    freqs = rope_frequencies(8)
    torch.testing.assert_close(freqs, torch.tensor([1.0, 10000 ** -0.25, 10000 ** -0.5, 10000 ** -0.75]))
    x = torch.randn(3, 5, 8)  # (heads, frames, head_dim)
    got = apply_rope(x, *rope_table(torch.arange(5), freqs))
    z = torch.view_as_complex(x.reshape(3, 5, 4, 2))
    angle = torch.arange(5.0)[:, None] * freqs[None]
    want = torch.view_as_real(z * torch.polar(torch.ones_like(angle), angle)).reshape(3, 5, 8)
    torch.testing.assert_close(got, want)


def test_timestep_transform_and_euler_steps_by_hand():
    r = math.sqrt(480 * 854 / 512**2) * math.sqrt(51 // 17 * 5)
    assert transform_ratio(480, 854, 51) == pytest.approx(r) and r == pytest.approx(1.25049 * 3.87298, abs=1e-3)
    sched = OpenSoraRFlowScheduler()
    sched.set_timesteps(30, height=480, width=854, num_frames=51)
    t = sched.timesteps
    assert len(t) == 30 and float(t[0]) == pytest.approx(1000.0)
    s = 1 - 10 / 30  # i = 10
    assert float(t[10]) == pytest.approx(1000 * r * s / (1 + (r - 1) * s), rel=1e-6)
    assert float(sched.sigmas[-1]) == 0.0 and bool((t[1:] < t[:-1]).all())
    z, v = torch.ones(1, 2), torch.full((1, 2), 3.0)
    for i in range(30):
        z_next = sched.step(v, t[i], z, return_dict=False)[0]
        dt = (float(t[i]) - (float(t[i + 1]) if i < 29 else 0.0)) / 1000
        torch.testing.assert_close(z_next, z + 3.0 * dt)
        z = z_next
    torch.testing.assert_close(z, torch.full((1, 2), 4.0))  # the dt sum to 1: z_0 = z_1 + v


def test_latent_frames_follow_the_micro_frame_chunks():
    assert [latent_frames(f) for f in (1, 9, 17, 34, 51, 102, 60)] == [1, 3, 5, 10, 15, 30, 15 + 3]
    assert with_aesthetic_score("a cat", 6.5) == "a cat aesthetic score: 6.5."
    assert with_aesthetic_score("a cat aesthetic score: 5.0.", 6.5) == "a cat aesthetic score: 5.0."


def test_vae_decodes_chunks_to_the_frame_count(session):
    vae = session.pipe.vae
    with torch.no_grad():
        z = torch.randn(1, 4, 5 + 3, 4, 4)  # 17 frames, then 9
        assert vae.decode(z, num_frames=26, return_dict=False)[0].shape == (1, 3, 26, 32, 32)
        assert vae.decode(z, return_dict=False)[0].shape == (1, 3, 17 + 9, 32, 32)
        video = torch.rand(1, 3, 26, 32, 32) * 2 - 1
        assert vae.encode_latents(video).shape == (1, 4, 8, 4, 4)


# ---------------------------------------------------------------------------------------------------
# The pipeline's call: one batched [cond, null] call, the per-sample text mask, CFG
# ---------------------------------------------------------------------------------------------------
def test_batched_cfg_over_the_null_caption(session):
    pipe, tr = session.pipe, session.transformer
    kw = _first_call(session)
    x, emb, mask = kw["hidden_states"], kw["encoder_hidden_states"], kw["encoder_attention_mask"]
    assert x.shape == (2, 4, 3, 4, 4) and torch.equal(x[0], x[1])
    assert torch.equal(emb[1], tr.caption_projection.null_embedding)  # the learned null caption
    assert mask.shape == (1, 16) and 0 < int(mask.sum()) < 16  # the conditional mask only: uncond reuses it
    with torch.no_grad():
        cond_embeds, cond_mask = pipe.encode_prompt("a red ball bouncing on grass", 16)
    torch.testing.assert_close(emb[0], cond_embeds[0], rtol=1e-6, atol=1e-6)
    assert torch.equal(mask, cond_mask)
    # second method: the batched call's halves equal two separate calls of batch 1
    with torch.no_grad():
        both = tr(**kw)[0]
        one = {k: v for k, v in kw.items() if k not in ("hidden_states", "timestep", "encoder_hidden_states")}
        c = tr(hidden_states=x[:1], timestep=kw["timestep"][:1], encoder_hidden_states=emb[:1], **one)[0]
        u = tr(hidden_states=x[1:], timestep=kw["timestep"][1:], encoder_hidden_states=emb[1:], **one)[0]
    torch.testing.assert_close(both, torch.cat([c, u]), rtol=1e-5, atol=1e-6)
    # one step of the pipeline = z + dt * (u + 7 (c - u)) on the first 4 channels
    latents = x[:1].clone()
    out = pipe("a red ball bouncing on grass", height=32, width=32, num_frames=9, num_inference_steps=1,
               max_sequence_length=16, latents=latents, output_type="latent").frames
    v = u[:, :4] + 7.0 * (c[:, :4] - u[:, :4])
    torch.testing.assert_close(out, latents + v * float(kw["timestep"][0]) / 1000, rtol=1e-4, atol=1e-5)


def test_padded_text_tokens_are_ignored_per_sample(session):
    """Keys past a sample's valid length change nothing, and samples of different lengths match their solo runs."""
    tr = session.transformer
    torch.manual_seed(0)
    x, t = torch.randn(2, 4, 3, 4, 4), torch.tensor([700.0, 700.0])
    y = torch.randn(2, 16, 32)
    mask = torch.zeros(2, 16, dtype=torch.long)
    mask[0, :5], mask[1, :9] = 1, 1
    with torch.no_grad():
        out = tr(x, t, y, mask, return_dict=False)[0]
        noisy = y.clone()
        noisy[0, 5:] += 100.0
        noisy[1, 9:] -= 50.0
        torch.testing.assert_close(tr(x, t, noisy, mask, return_dict=False)[0], out)
        solo = tr(x[:1], t[:1], y[:1, :5], None, return_dict=False)[0]
        torch.testing.assert_close(out[:1], solo, rtol=1e-5, atol=1e-6)


def test_attention_flops_by_the_hand_formula(session):
    """4 * batch * heads * Sq * Sk * head_dim per attention: spatial over S = 4 tokens of each of 3 frames, temporal
    over 3 frames at each of 4 positions, cross over the prompt's valid tokens."""
    parts = session.count_flops("a red ball bouncing on grass", seed=0)
    valid = int(session.pipe.encode_prompt("a red ball bouncing on grass", 16)[1].sum())
    heads, hd, t, s, b = 2, 12, 3, 4, 2
    cross = 4 * b * heads * (t * s) * valid * hd
    spatial = 4 * (b * t) * heads * s * s * hd + cross
    temporal = 4 * (b * s) * heads * t * t * hd + cross
    assert [blk[1] for blk in parts["call"]["blocks"]] == [spatial, temporal, spatial, temporal]
    assert parts["call"]["outside"][1] == 0


# ---------------------------------------------------------------------------------------------------
# Weights: the official layout
# ---------------------------------------------------------------------------------------------------
def test_official_layout_round_trip(session, tmp_path):
    """A tiny model written in the official layout (names and fused q/k/v) loads back to the same outputs."""
    tr = session.transformer
    W.save_official(tr, tmp_path / "stdit")
    from safetensors.torch import load_file

    official = load_file(str(tmp_path / "stdit" / W.WEIGHTS_FILE))
    config = json.loads((tmp_path / "stdit" / "config.json").read_text())
    expected = W.official_parameter_shapes(config)
    assert {k: tuple(v.shape) for k, v in official.items()} == expected
    qkv = official["temporal_blocks.1.attn.qkv.weight"]  # temporal block 1 is our block 3
    torch.testing.assert_close(qkv[24:48], tr.transformer_blocks[3].attn1.to_k.weight)
    loaded = W.load_official_transformer(str(tmp_path / "stdit"))
    kw = _first_call(session)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**kw)[0], tr(**kw)[0], rtol=0, atol=0)
    bad = dict(official, **{"rope.freqs": official["rope.freqs"] * 2})
    with pytest.raises(BenchError, match="RoPE frequencies"):
        W.from_official(bad, tr.rope_freqs)


def test_official_vae_layout_round_trip(session, tmp_path):
    vae = session.pipe.vae
    W.save_official_vae(vae, tmp_path / "vae")
    from safetensors.torch import load_file

    names = set(load_file(str(tmp_path / "vae" / W.WEIGHTS_FILE)))
    assert {"scale", "shift"} <= names and any(n.startswith("spatial_vae.module.decoder.") for n in names)
    assert "temporal_vae.encoder.block_res_blocks.0.0.conv1.conv.weight" in names
    loaded = W.load_official_vae(str(tmp_path / "vae"), config=dict(vae.config))
    z = torch.randn(1, 4, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(z).sample, vae.decode(z).sample, rtol=0, atol=0)


def test_mapping_covers_every_full_size_parameter():
    """The official STDiT3-XL/2's names (from the architecture) map one to one onto the full-size model's."""
    arch = json.loads(open("sencache_bench/measure/architectures/opensora-1.2.json").read())
    official_cfg = W.official_config(arch["transformer"]["config"])
    shapes = W.official_parameter_shapes(official_cfg)
    with torch.device("meta"):
        model = OpenSoraSTDiT3Transformer(**W.config_from_official(official_cfg))
    state = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    mapped = W.from_official(state)
    ours = model.state_dict()
    assert set(mapped) == set(ours)
    assert all(tuple(mapped[k].shape) == tuple(ours[k].shape) for k in ours)
    back = W.to_official(ours, model.rope_freqs)
    assert {k: tuple(v.shape) for k, v in back.items()} == shapes
    params = sum(p.numel() for p in model.parameters())
    assert params == pytest.approx(1.21e9, rel=0.005)  # STDiT3-XL/2: ~1.21 B (shared OPENSORA.md)
    assert len([k for k in shapes if k.endswith("attn.qkv.weight")]) == 56


def test_missing_weights_offline_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    spec = resolve({**_spec(tmp_path), "model": {"name": "opensora-1.2"}, "sampling": {}})
    with pytest.raises(BenchError) as err:
        Session(spec)
    msg = str(err.value)
    assert all(r in msg for r in W.OFFICIAL.values()) and "hf download" in msg and "\n" not in msg


# ---------------------------------------------------------------------------------------------------
# Policies on tiny-opensora
# ---------------------------------------------------------------------------------------------------
def test_teacache_indicator_is_block_0s_modulated_input(session):
    kw = _first_call(session)
    block = session.transformer.transformer_blocks[0]
    seen = {}
    handle = block.register_forward_pre_hook(lambda m, a, k: seen.update(args=a), with_kwargs=True)
    with torch.no_grad():
        session.transformer(**kw)
        handle.remove()
        x, temb = seen["args"][0], seen["args"][2]
        mine = teacache_modulated_input(session.transformer, {"hidden_states": x, "temb": temb}, None)
        d = x.shape[-1]
        shift, scale = temb[:, :d], temb[:, d:2 * d]  # adaLN rows 0 and 1 (+ the block's table)
        shift, scale = shift + block.scale_shift_table[0], scale + block.scale_shift_table[1]
        ln = torch.nn.functional.layer_norm(x, (d,), eps=1e-6)
    torch.testing.assert_close(mine, ln * (1 + scale[:, None]) + shift[:, None])


def test_teacache_presets_are_the_published_open_sora_ones(tmp_path):
    from sencache_bench.policies.teacache import describe

    spec = resolve({**_spec(tmp_path), "model": {"name": "opensora-1.2"}, "sampling": {},
                    "policy": {"name": "teacache", "preset": "fast"}})
    d = describe(spec.policy)
    assert d["thresh"] == 0.2 and d["coefficients"][0] == 2.17546007e+02 and (d["warmup"], d["force_last"]) == (1, True)


POLICIES = {
    "teacache": {"name": "teacache", "thresh": 0.3, "coefficients": [0, 0, 0, 1, 0]},
    "sencache": {"name": "sencache", "eps_main": 0.5, "max_reuse": 2},
    "static": {"name": "static", "every": 2},
    "fbc": {"name": "fbc", "threshold": 0.5},
    "taylorseer": {"name": "taylorseer", "cache_interval": 2, "disable_cache_before_step": 1},
}


def _priced_and_direct(runner, policy_spec, prompt="a red ball bouncing on grass"):
    session = runner.session
    parts = session.count_flops(prompt, seed=0)
    holder = {}
    direct = count_flops(lambda: holder.setdefault("gen", session.generate(prompt, seed=0, policy=policy_spec)))
    calls = holder["gen"].calls
    if hasattr(policy_spec, "price_parts"):
        parts = policy_spec.price_parts(session, parts, calls)
    return price(parts, calls), direct, holder["gen"]


@pytest.mark.parametrize("name", list(POLICIES))
def test_policy_runs_and_its_priced_trace_matches_a_direct_count(name, tmp_path):
    runner = Runner(resolve(_spec(tmp_path, POLICIES[name])), log=lambda m: None)
    runner.prepare_policy()
    priced, direct, gen = _priced_and_direct(runner, runner.spec.policy)
    if name != "taylorseer":
        assert priced["total"] - priced["total_no_attn"] == direct.attention
    assert {c.branch for c in gen.calls} == {"cond_uncond"} and len(gen.calls) == STEPS
    computed = sum(c.computed for c in gen.calls)
    if name == "taylorseer":  # predicts attention / MLP inside the blocks: every call runs its blocks, and the
        assert computed == STEPS and priced["total"] > direct.total  # predicted modules are not in the pricing
    else:
        assert 0 < computed < STEPS and priced["total"] == direct.total, [c.computed for c in gen.calls]


def test_magcache_calibrated_on_tiny_then_run(tmp_path):
    ratios = tmp_path / "ratios.json"
    runner = Runner(resolve(_spec(tmp_path, {"name": "magcache", "ratios": str(ratios), "thresh": 0.5,
                                             "max_reuse": 2, "retention": 0.25}, steps=8)), log=lambda m: None)
    CALIBRATORS.get("magcache")(runner, samples=1, out=ratios, log=lambda m: None)
    data = json.loads(ratios.read_text())
    assert (data["model"], data["family"], set(data["branches"])) == ("tiny-opensora", "opensora", {"cond_uncond"})
    curve = data["branches"]["cond_uncond"]
    assert len(curve) == 8 and all(v > 0 for v in curve)
    from sencache_bench.policies.magcache import simulate

    runner = Runner(resolve(_spec(tmp_path, {"name": "magcache", "ratios": str(ratios), "thresh": 0.5,
                                             "max_reuse": 2, "retention": 0.25}, steps=8)), log=lambda m: None)
    priced, direct, gen = _priced_and_direct(runner, runner.spec.policy)
    assert [c.computed for c in gen.calls] == simulate(curve, 0.5, 2, 0.25)
    assert priced["total"] == direct.total


def test_semcache_with_tmm_on_tiny_opensora(tmp_path):
    """12 cross-attention layers asked of 8: all hooked; TMM keeps whole frames; priced = counted."""
    policy = {"name": "semcache", "layers": 12, "keep_ratio": 0.6}
    runner = Runner(resolve(_spec(tmp_path, policy, steps=10, frames=17)), log=lambda m: None)
    priced, direct, gen = _priced_and_direct(runner, runner.spec.policy)
    tmm = [c for c in gen.calls if c.tokens]
    assert tmm and all(c.tokens[1] == 20 and c.tokens[0] % 4 == 0 and c.tokens[0] < 20 for c in tmm)
    assert priced["total"] == direct.total
    assert all(c.threshold is not None for c in gen.calls if c.step >= 2)


def test_tmm_kept_frames_match_the_full_path_with_dropped_frames_masked(tmp_path):
    """Reference: the full call whose temporal attention ignores the dropped frames as keys (spatial attention,
    cross-attention and the MLP are per frame or per token), so the kept frames keep their own RoPE positions."""
    from sencache_bench.policies.semcache import apply_semcache, forced_keep_frames, remove_semcache

    session = Session(resolve(_spec(tmp_path, {"name": "semcache"}, frames=17)))
    tr = session.transformer
    kw = _first_call(session)
    assert kw["hidden_states"].shape[2] == 5
    kept, dropped = [0, 2, 3], [1, 4]

    def run(frames=None):
        if frames is not None:
            apply_semcache(tr, session.blocks, session.spec.policy.build(tr, force_keep=forced_keep_frames(frames)))
        try:
            with torch.no_grad(), tr.cache_context("cond_uncond"):
                return tr(**kw)[0]
        finally:
            remove_semcache(tr)

    plain = run()
    assert torch.equal(run(list(range(5))), plain)
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def masked(q, k, v, attn_mask=None, *args, **kwargs):
        if k.shape[-2] == 5 and attn_mask is None:  # temporal self-attention (spatial has 4 keys, cross the text)
            visible = torch.ones(5, dtype=torch.bool)
            visible[dropped] = False
            attn_mask = visible.view(1, 1, 1, 5)
        return sdpa(q, k, v, attn_mask, *args, **kwargs)

    torch.nn.functional.scaled_dot_product_attention = masked
    try:
        with torch.no_grad():
            reference = tr(**kw)[0]
    finally:
        torch.nn.functional.scaled_dot_product_attention = sdpa
    out = run(kept)
    torch.testing.assert_close(out[:, :, kept], reference[:, :, kept], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out[:, :, kept], plain[:, :, kept], atol=1e-4)  # the dropped frames mattered
    assert not torch.allclose(out[:, :, dropped], reference[:, :, dropped], atol=1e-3)


def test_pab_tells_spatial_temporal_and_cross_attention_apart(tmp_path):
    """With the family's identifiers PAB hooks 2 spatial, 2 temporal and 4 cross-attentions; broadcasting them
    changes the video while every call still runs all blocks (NFE full, FLOP pricing unchanged)."""
    from sencache_bench.models.opensora.family import PAB

    policy = {"name": "pab", "spatial_attention_block_skip_range": 2, "temporal_attention_block_skip_range": 2,
              "cross_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": [-1, 1001],
              "temporal_attention_timestep_skip_range": [-1, 1001], "cross_attention_timestep_skip_range": [-1, 1001],
              **PAB}
    runner = Runner(resolve(_spec(tmp_path, policy)), log=lambda m: None)
    session = runner.session
    plain = session.generate("a red ball bouncing on grass", seed=0)
    priced, direct, gen = _priced_and_direct(runner, runner.spec.policy)
    assert all(c.computed for c in gen.calls) and not np.array_equal(plain.frames, gen.frames)
    assert priced["total"] > direct.total  # the broadcast attention is not in the per-block pricing
    import re

    names = [n for n, m in session.transformer.named_modules() if hasattr(m, "is_cross_attention")]
    kinds = {k: [n for n in names if any(re.search(p, n) for p in PAB[f"{k}_attention_block_identifiers"])]
             for k in ("spatial", "temporal", "cross")}
    assert kinds["spatial"] == ["transformer_blocks.0.attn1", "transformer_blocks.2.attn1"]
    assert kinds["temporal"] == ["transformer_blocks.1.attn1", "transformer_blocks.3.attn1"]
    assert len(kinds["cross"]) == 4


def test_sencache_calibration_uses_the_velocity_channels(tmp_path):
    from sencache_bench.calibration.profile import load_profile
    from sencache_bench.calibration.sencache import calibrate

    runner = Runner(resolve(_spec(tmp_path, {"name": "sencache", "eps_main": 0.3, "max_reuse": 2})),
                    log=lambda m: None)
    profile = load_profile(calibrate(runner, samples=1, log=lambda s: None))
    assert profile.family == "opensora" and len(profile.timesteps) == STEPS
    assert profile.timesteps == pytest.approx([float(t) for t in runner.session.pipe.scheduler.timesteps])


# ---------------------------------------------------------------------------------------------------
# Full size and shipped configs
# ---------------------------------------------------------------------------------------------------
def test_full_size_call_matches_the_hand_formula_and_semcaches_figure():
    """480x854, 51 frames: latent 15 x 60 x 106, N = 15 * 30 * 53 tokens, 300 text tokens, batch 2 (CFG)."""
    from sencache_bench.measure.full_size import count_full_size

    f = count_full_size("opensora-1.2", 480, 854, 51, 30)
    assert (f.branches, f.batch, f.prompt_passes, f.calls) == (("cond_uncond",), 2, 1, 30)
    d, t, s, text, b = 1152, 15, 30 * 53, 300, 2
    n = t * s
    linear = 28 * n * d * d + 4 * text * d * d  # q, k, v, out, cross q / out: 2 N D^2 each; MLP 16 N D^2; cross k, v
    spatial_attn = 4 * b * t * s * s * d + 4 * b * n * text * d
    temporal_attn = 4 * b * s * t * t * d + 4 * b * n * text * d
    blocks = f.call_cost.blocks
    assert len(blocks) == 56
    assert [blk[1] for blk in blocks] == [spatial_attn, temporal_attn] * 28
    assert all(blk[0] - blk[1] == b * linear for blk in blocks)
    assert f.total.no_attn == pytest.approx(3.15e15, rel=0.03)  # SemCache Table 1 (3.21 in its Table 4)
    assert f.total.total > 1.1 * 3.21e15  # the full count is not the papers' convention
    assert f.seconds < 60


def test_paper_configs_validate_and_pab_uses_the_familys_identifiers():
    from pathlib import Path

    from sencache_bench.models.opensora.family import PAB
    from sencache_bench.spec import load_spec

    paths = sorted(Path("configs/paper").glob("semcache_opensora_*.yaml"))
    assert {p.stem.split("semcache_opensora_")[1] for p in paths} >= {"none", "semcache", "teacache_fast", "magcache",
                                                                      "pab_slow", "pab_fast"}
    for path in paths:
        spec = load_spec(path)
        assert spec.model_name == "opensora-1.2" and spec.sampling.steps == 30 and spec.sampling.frames == 51
        if spec.policy.name == "pab":
            assert {k: getattr(spec.policy, k) for k in PAB} == PAB
        if spec.policy.name == "semcache":
            assert (spec.policy.alpha, spec.policy.beta, spec.policy.layers) == (0.2, 0.8, 12)
