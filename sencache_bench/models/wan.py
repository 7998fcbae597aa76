"""Wan 2.1 text-to-video (WanPipeline): separate cond / uncond transformer calls per step."""

from __future__ import annotations

import dataclasses

import torch

from .base import Family, ModelEntry, SamplingDefaults
from .tokenizers import t5_tokenizer


def teacache_time_embedding(transformer, inputs: dict, call) -> torch.Tensor:
    """TeaCache's Wan indicator ``e``: the time embedding ``time_embedder(sinusoid(t))``, in float32.

    The blocks only receive its projection (e0), so it is recomputed from the call's timestep (a small MLP). The
    official code computes it under ``autocast(dtype=float32)``: here the MLP runs on float32 copies of its
    parameters (``functional_call``), whatever the model's dtype.
    """
    mlp = transformer.condition_embedder.time_embedder
    hidden = inputs["hidden_states"]
    t = torch.full((hidden.shape[0],), call.timestep, device=hidden.device)
    freq = transformer.condition_embedder.timesteps_proj(t).float()
    if all(p.dtype == torch.float32 for p in mlp.parameters()):  # already float32: the same MLP, ~4x cheaper a call
        return mlp(freq)
    params = {name: p.float() for name, p in mlp.named_parameters()}
    return torch.func.functional_call(mlp, params, (freq,))


def teacache_time_projection(transformer, inputs: dict, call) -> torch.Tensor:
    """TeaCache's Wan indicator ``e0`` ("ret steps" mode): the projected time embedding the blocks receive."""
    return inputs["temb"]


# TeaCache (ali-vilab/TeaCache, TeaCache4Wan2.1/teacache_generate.py): indicator variants, the first is the
# default. ``warmup``: calls per branch always computed first; ``force_last``: the last step always computed
# (default mode: ret_steps = 1 per branch, cutoff = last step; ret-steps mode: 5 forced, last not).
TEACACHE = {"transformer_class": "WanTransformer3DModel", "indicators": {
    "e": {"fn": teacache_time_embedding, "warmup": 1, "force_last": True},
    "e0": {"fn": teacache_time_projection, "warmup": 5, "force_last": False},
}}


def sencache_conditioning(pipe, prompt: str, call_kwargs: dict, latents: torch.Tensor) -> dict:
    """SenCache calibration: the conditional call's inputs besides hidden_states and timestep."""
    embeds, _ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False, device=latents.device,
                                   max_sequence_length=call_kwargs.get("max_sequence_length", 512),
                                   dtype=pipe.transformer.dtype)
    return {"encoder_hidden_states": embeds}


def sencache_encode_video(pipe, video: torch.Tensor, call_kwargs: dict) -> torch.Tensor:
    """SenCache calibration: video (1, 3, F, H, W) in [-1, 1] -> the normalised latents the transformer takes."""
    vae = pipe.vae
    latents = vae.encode(video).latent_dist.mode()
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latents)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(latents)
    return (latents - mean) / std


def sencache_forced_ends(steps: int) -> int:
    """The official SenCache Wan 2.1 script (vita-epfl/SenCache, Wan2.1/sencache.py): ret_steps = 2 calls and
    cutoff_steps = 2 * steps - 2 calls, i.e. the first and the last step always compute."""
    return 1


SENCACHE = {"conditioning": sencache_conditioning, "encode_video": sencache_encode_video,
            "forced_ends": sencache_forced_ends}


# SemCache (shared ALGORITHMS.md, "SemCache"): Wan mixes text into the video tokens by the cross-attention
# ``attn2`` of every block: Z_in = its input (``norm2`` of the block's hidden states, video tokens only), Z_out =
# its output (video tokens). TMM: after patch embedding the tokens are frame-major, (B, F'*H'*W', C), so the
# tokens of post-patch frame f are the contiguous range f*H'W' .. (f+1)*H'W' - 1; the blocks also receive the
# RoPE table (cos, sin), each (1, N, 1, D), computed once per forward (and, for Wan 2.2 TI2V, a per-token temb).
def semcache_text_attention(transformer) -> list:
    """The text-mixing attention layers, in depth order: every block's cross-attention."""
    return [block.attn2 for block in transformer.blocks]


def semcache_frames(transformer, kwargs: dict) -> tuple[torch.Tensor, int]:
    """(latent frames grouped per post-patch frame (B, F', D), tokens per post-patch frame) of one call."""
    latent = kwargs["hidden_states"]  # (B, C, F, H, W)
    p_t, p_h, p_w = transformer.config.patch_size
    frames = latent.unflatten(2, (latent.shape[2] // p_t, p_t)).transpose(1, 2).flatten(2)
    return frames, (latent.shape[3] // p_h) * (latent.shape[4] // p_w)


def semcache_select(arguments: dict, selection) -> None:
    """Kept tokens only: slice the RoPE table (and a per-token temb) the blocks receive; positions are kept."""
    arguments["rotary_emb"] = tuple(selection.take(f, 1) for f in arguments["rotary_emb"])
    if arguments["temb"].ndim == 4:  # Wan 2.2 TI2V: (B, N, 6, C)
        arguments["temb"] = selection.take(arguments["temb"], 1)


SEMCACHE = {"transformer_class": "WanTransformer3DModel", "preset": {"alpha": 0.2, "beta": 0.8},
            "text_attention": semcache_text_attention, "frames": semcache_frames, "select": semcache_select,
            "mapping": "cross-attention attn2 of every block: Z_in = its input (norm2(x), video tokens), "
                       "Z_out = its output"}


# SeaCache: diffusers detects Wan text-to-video itself (in_channels == out_channels) and WanPipeline passes step,
# sigma and step count through cache_context: nothing to supply
SEACACHE = {"transformer_class": "WanTransformer3DModel", "raw_vision": None, "sigma": None}


# -- AdaCache (arXiv 2411.02397; official code only for Open-Sora): a block splits at norm2, whose input is the tokens
# with the self-attention residual added (the rest: cross-attention + FFN); the measured block sits at Open-Sora's
# relative depth 13/28 (ours).
ADACACHE = {"transformer_class": "WanTransformer3DModel", "split": lambda block: block.norm2,
            "block": lambda count: 13 * count // 28, "frame_tokens": lambda t, kwargs: semcache_frames(t, kwargs)[1]}


WAN = Family(name="wan", pipeline_class="WanPipeline", cfg_layout="separate", block_stacks=("blocks",),
             spatial_multiple=16, temporal_multiple=4, adapters={"teacache": TEACACHE, "sencache": SENCACHE,
                                                                     "semcache": SEMCACHE, "seacache": SEACACHE,
                                                                     "adacache": ADACACHE})

# diffusers' Wan 2.1 defaults: 832x480, 81 frames, 50 steps, CFG 5.0, flow shift 3.0 at 480p.
_WAN_480P = SamplingDefaults(steps=50, height=480, width=832, frames=81, guidance_scale=5.0, shift=3.0, fps=16)

WAN21_T2V_1_3B = ModelEntry("wan2.1-t2v-1.3b", WAN, _WAN_480P, repo_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
                            description="Wan 2.1 T2V 1.3B")
WAN21_T2V_14B = ModelEntry("wan2.1-t2v-14b", WAN, _WAN_480P, repo_id="Wan-AI/Wan2.1-T2V-14B-Diffusers",
                           description="Wan 2.1 T2V 14B")


def build_tiny(seed: int = 0):
    """WanPipeline with 2 tiny blocks, seeded random weights, in-code tokenizer (tests, CPU)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=256, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    return WanPipeline(tokenizer=t5_tokenizer(), text_encoder=text_encoder, vae=vae,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), transformer=transformer)


TINY_WAN = ModelEntry("tiny-wan", WAN, SamplingDefaults(steps=6, height=32, width=32, frames=9, guidance_scale=5.0,
                                                        shift=7.0),
                      build=build_tiny, call_kwargs={"max_sequence_length": 16},
                      description="tiny random WanPipeline (tests)")


# Wan 2.2 T2V-A14B (Wan-Video/Wan2.2 wan/configs/wan_t2v_A14B.py): two 14B experts of the Wan 2.1 14B
# architecture; `transformer` (high noise) runs the steps with t >= boundary * 1000, `transformer_2` (low noise)
# the rest (diffusers WanPipeline, `boundary_ratio` in the pipeline's model_index.json). sample_shift 12.0,
# sample_steps 40, boundary 0.875, sample_guide_scale (3.0 low noise, 4.0 high noise), 81 frames at 16 fps;
# 1280x720 (the default here) and 832x480 (`sampling: {height: 480, width: 832}`) share these settings.
WAN22_BOUNDARY_RATIO = 0.875
_WAN22_720P = SamplingDefaults(steps=40, height=720, width=1280, frames=81, guidance_scale=4.0, shift=12.0, fps=16)
_WAN22_CALL = {"guidance_scale_2": 3.0}  # the low-noise expert's CFG scale

WAN22_T2V_A14B = ModelEntry("wan2.2-t2v-a14b", WAN, _WAN22_720P, repo_id="Wan-AI/Wan2.2-T2V-A14B-Diffusers",
                            call_kwargs=_WAN22_CALL, experts=("transformer", "transformer_2"),
                            description="Wan 2.2 T2V A14B (two experts), 720p")


def build_tiny_wan22(seed: int = 0):
    """Two-expert WanPipeline (tiny-wan's components, a second transformer seeded differently), the official
    boundary ratio: the experts differ in weights only, as Wan 2.2's do."""
    from diffusers import WanPipeline, WanTransformer3DModel

    base = build_tiny(seed)
    torch.manual_seed(seed + 1)
    transformer_2 = WanTransformer3DModel.from_config(base.transformer.config)
    return WanPipeline(tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=base.vae,
                       scheduler=base.scheduler, transformer=base.transformer, transformer_2=transformer_2,
                       boundary_ratio=WAN22_BOUNDARY_RATIO)


# 8 steps at shift 12: timesteps 1000 986 968 942 902 | 833 684 126: 5 high-noise, 3 low-noise steps.
TINY_WAN22 = ModelEntry("tiny-wan22", WAN, SamplingDefaults(steps=8, height=32, width=32, frames=9,
                                                            guidance_scale=4.0, shift=12.0),
                        build=build_tiny_wan22, call_kwargs={"max_sequence_length": 16, **_WAN22_CALL},
                        experts=("transformer", "transformer_2"),
                        description="tiny random two-expert WanPipeline, Wan 2.2 boundary (tests)")


# Wan 2.2 TI2V-5B (Wan-Video/Wan2.2 wan/configs/wan_ti2v_5B.py): one transformer (dim 3072, 30 layers) on the
# Wan 2.2 VAE (48 latent channels, stride (4, 16, 16)), so height and width are multiples of 16 x patch 2 = 32;
# diffusers WanPipeline(expand_timesteps=True): a per-token timestep (the conditioning frame's tokens would take
# t = 0 in image-to-video). sample_shift 5.0, sample_steps 50, sample_guide_scale 5.0, frame_num 121, fps 24,
# size 1280x704. Text-to-video here; with sampling.image, wan_i2v.py's variant.
WAN_TI2V = dataclasses.replace(WAN, spatial_multiple=32)
WAN22_TI2V_5B = ModelEntry("wan2.2-ti2v-5b", WAN_TI2V,
                           SamplingDefaults(steps=50, height=704, width=1280, frames=121, guidance_scale=5.0,
                                            shift=5.0, fps=24),
                           repo_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers", description="Wan 2.2 TI2V 5B, text-to-video",
                           image_variant="sencache_bench.models.wan_i2v:WAN22_TI2V_5B_I2V")


def build_tiny_wan22_ti2v(seed: int = 0):
    """WanPipeline with ``expand_timesteps`` on a tiny Wan 2.2 VAE (residual, 48 latent channels, pixel patch 2,
    spatial factor 16) and a 48-channel tiny transformer: TI2V-5B's layout at test size."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    base = build_tiny(seed)
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=8, decoder_base_dim=8, z_dim=48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12,
                           patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4,
                           latents_mean=[0.0] * 48, latents_std=[1.0] * 48)
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel.from_config({**base.transformer.config, "in_channels": 48, "out_channels": 48})
    return WanPipeline(tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=vae, transformer=transformer,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), expand_timesteps=True)


TINY_WAN22_TI2V = ModelEntry("tiny-wan22-ti2v", WAN_TI2V,
                             SamplingDefaults(steps=6, height=32, width=32, frames=9, guidance_scale=5.0, shift=5.0),
                             build=build_tiny_wan22_ti2v, call_kwargs={"max_sequence_length": 16},
                             image_variant="sencache_bench.models.wan_i2v:TINY_WAN22_TI2V_I2V",
                             description="tiny random Wan 2.2 TI2V layout: expand_timesteps, 48-channel VAE (tests)")
