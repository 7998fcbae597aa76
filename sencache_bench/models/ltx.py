"""LTX-Video (LTXPipeline): one batched [uncond, cond] transformer call per step."""

from __future__ import annotations

import torch

from .base import Family, ModelEntry, SamplingDefaults, seacache_flow_sigma
from .tokenizers import t5_tokenizer


def teacache_modulated_input(transformer, inputs: dict, call) -> torch.Tensor:
    """TeaCache's LTX-Video indicator: the first block's modulated input ``norm1(x) * (1 + scale_msa) + shift_msa``."""
    block = transformer.transformer_blocks[0]
    hidden, temb = inputs["hidden_states"], inputs["temb"]
    batch = hidden.size(0)
    ada = block.scale_shift_table[None, None].to(temb.device) + temb.reshape(
        batch, temb.size(1), block.scale_shift_table.shape[0], -1)
    shift_msa, scale_msa = ada[:, :, 0], ada[:, :, 1]
    return block.norm1(hidden) * (1 + scale_msa) + shift_msa


# The official TeaCache and SenCache LTX-Video scripts cache ``norm_out(blocks(x)) * (1 + scale) + shift - x``
# (x = proj_in's output, scale/shift of the computed call) and a reused call returns ``proj_out(x + residual)``:
# the residual ends at ``proj_out``'s input (policies.base.SpanEndHook).
RESIDUAL_END = "proj_out"

# TeaCache (ali-vilab/TeaCache, TeaCache4LTX-Video/teacache_ltx.py): first and last step computed.
TEACACHE = {"transformer_class": "LTXVideoTransformer3DModel", "residual_end": RESIDUAL_END, "indicators": {
    "modulated": {"fn": teacache_modulated_input, "warmup": 1, "force_last": True},
}}


def sencache_conditioning(pipe, prompt: str, call_kwargs: dict, latents: torch.Tensor) -> dict:
    """SenCache calibration: the conditional half of the batched call (embeddings, mask, latent grid, RoPE scale)."""
    embeds, mask, _, _ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False, device=latents.device,
                                            max_sequence_length=call_kwargs.get("max_sequence_length", 128),
                                            dtype=pipe.transformer.dtype)
    t_ratio, s_ratio = pipe.vae_temporal_compression_ratio, pipe.vae_spatial_compression_ratio
    return {"encoder_hidden_states": embeds, "encoder_attention_mask": mask,
            "num_frames": (call_kwargs["num_frames"] - 1) // t_ratio + 1, "height": call_kwargs["height"] // s_ratio,
            "width": call_kwargs["width"] // s_ratio,
            "rope_interpolation_scale": (t_ratio / call_kwargs.get("frame_rate", 25), s_ratio, s_ratio)}


def sencache_encode_video(pipe, video: torch.Tensor, call_kwargs: dict) -> torch.Tensor:
    """SenCache calibration: video (1, 3, F, H, W) in [-1, 1] -> normalised, packed latents (B, tokens, C)."""
    vae = pipe.vae
    latents = vae.encode(video).latent_dist.mode()
    latents = pipe._normalize_latents(latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    return pipe._pack_latents(latents, pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size)


def sencache_forced_ends(steps: int) -> int:
    """The official SenCache LTX-Video script (vita-epfl/SenCache, LTX-Video/sencache.py): ret_steps =
    round(0.02 * steps) steps computed at each end (Python's round: 0 at <= 25 steps, 1 at 30 and 50, 2 at >= 75)."""
    return int(round(steps * 0.02))


# ``force_last`` (read by sencache_global) is kept; SenCache itself follows ``forced_ends``.
SENCACHE = {"conditioning": sencache_conditioning, "encode_video": sencache_encode_video, "force_last": True,
            "forced_ends": sencache_forced_ends, "residual_end": RESIDUAL_END}


# SemCache (shared ALGORITHMS.md, "SemCache"): LTX-Video mixes text by the cross-attention ``attn2`` of every
# block: Z_in = its input (the block's video stream after self-attention; LTX does not normalise it first),
# Z_out = its output. TMM: the transformer takes packed latents (B, F*H*W, C), frame-major, with the latent grid
# in ``num_frames``/``height``/``width``; the blocks receive the RoPE table (cos, sin), each (B, N, D), and temb
# (B, 1 or N, 6C), sliced like the tokens when per token.
def semcache_text_attention(transformer) -> list:
    """The text-mixing attention layers, in depth order: every block's cross-attention."""
    return [block.attn2 for block in transformer.transformer_blocks]


def semcache_frames(transformer, kwargs: dict) -> tuple[torch.Tensor, int]:
    """(latent frames grouped per post-patch frame (B, F', D), tokens per post-patch frame) of one call."""
    latent = kwargs["hidden_states"]  # (B, N, C), packed frame-major
    p, p_t = transformer.config.patch_size, transformer.config.patch_size_t
    frames = latent.reshape(latent.shape[0], kwargs["num_frames"] // p_t, -1)
    return frames, (kwargs["height"] // p) * (kwargs["width"] // p)


def semcache_select(arguments: dict, selection) -> None:
    """Kept tokens only: slice the RoPE table and a per-token temb."""
    if arguments.get("image_rotary_emb") is not None:
        arguments["image_rotary_emb"] = tuple(selection.take(f, 1) for f in arguments["image_rotary_emb"])
    temb = arguments["temb"]
    if temb.ndim == 3 and temb.shape[1] == selection.n_video and selection.n_video > 1:
        arguments["temb"] = selection.take(temb, 1)


SEMCACHE = {"transformer_class": "LTXVideoTransformer3DModel", "preset": None,
            "text_attention": semcache_text_attention, "frames": semcache_frames, "select": semcache_select,
            "mapping": "cross-attention attn2 of every block: Z_in = its input (the video stream), Z_out = its output"}


def seacache_raw_vision(module, args, kwargs) -> list[torch.Tensor]:
    """SeaCache's raw vision: LTX's packed (B, S, D) tokens unpacked to one (C, F, H, W) per sample, as
    ``LTXPipeline._unpack_latents`` does with the latent size the pipeline passes."""
    x, config = kwargs["hidden_states"], module.config
    p, pt = config.patch_size, config.patch_size_t
    f, h, w = kwargs["num_frames"], kwargs["height"], kwargs["width"]
    x = x.reshape(x.shape[0], f, h, w, -1, pt, p, p).permute(0, 4, 1, 5, 2, 6, 3, 7)
    return list(x.flatten(6, 7).flatten(4, 5).flatten(2, 3).unbind(0))


SEACACHE = {"transformer_class": "LTXVideoTransformer3DModel", "raw_vision": seacache_raw_vision,
            "sigma": seacache_flow_sigma}  # flow matching


# -- AdaCache (arXiv 2411.02397): a block splits at attn2, whose input is the tokens with the self-attention residual
# added (the rest: cross-attention + FF); the measured block at Open-Sora's relative depth 13/28 (ours).
ADACACHE = {"transformer_class": "LTXVideoTransformer3DModel", "split": lambda block: block.attn2,
            "block": lambda count: 13 * count // 28, "frame_tokens": lambda t, kwargs: semcache_frames(t, kwargs)[1]}


LTX = Family(name="ltx", pipeline_class="LTXPipeline", cfg_layout="batched", block_stacks=("transformer_blocks",),
             spatial_multiple=32, temporal_multiple=8, adapters={"teacache": TEACACHE, "sencache": SENCACHE,
                                                                     "semcache": SEMCACHE, "seacache": SEACACHE,
                                                                     "adacache": ADACACHE})

LTX_VIDEO = ModelEntry("ltx-video", LTX,
                       SamplingDefaults(steps=50, height=512, width=768, frames=161, guidance_scale=3.0, fps=24),
                       repo_id="a-r-r-o-w/LTX-Video-0.9.1-diffusers", description="LTX-Video 0.9.1")


def build_tiny(seed: int = 0):
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline, LTXVideoTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4,
        attention_head_dim=8, cross_attention_dim=32, num_layers=2, caption_channels=32)
    torch.manual_seed(seed)
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8,
        block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False), upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False, patch_size=1, patch_size_t=1,
        encoder_causal=True, decoder_causal=False)
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=256, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    return LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                       tokenizer=t5_tokenizer(), transformer=transformer)


TINY_LTX = ModelEntry("tiny-ltx", LTX, SamplingDefaults(steps=6, height=32, width=32, frames=9, guidance_scale=3.0),
                      build=build_tiny, call_kwargs={"max_sequence_length": 16},
                      description="tiny random LTXPipeline (tests)")
