"""CogVideoX (CogVideoXPipeline): one batched [uncond, cond] transformer call per step."""

from __future__ import annotations

import torch

from .base import Family, ModelEntry, SamplingDefaults
from .tokenizers import t5_tokenizer


def teacache_time_embedding(transformer, inputs: dict, call) -> torch.Tensor:
    """TeaCache's CogVideoX indicator: the time embedding ``time_embedding(t)`` the blocks receive as temb."""
    return inputs["temb"]


# TeaCache (ali-vilab/TeaCache, TeaCache4CogVideoX1.5/teacache_sample_video.py): first and last step computed.
TEACACHE = {"transformer_class": "CogVideoXTransformer3DModel", "indicators": {
    "emb": {"fn": teacache_time_embedding, "warmup": 1, "force_last": True},
}}

# diffusers' FasterCache: latents (B, F, C, H, W), CFG batched [uncond, cond] in one call.
FASTERCACHE = {"transformer_class": "CogVideoXTransformer3DModel", "tensor_format": "BFCHW",
               "is_guidance_distilled": False}


def sencache_conditioning(pipe, prompt: str, call_kwargs: dict, latents: torch.Tensor) -> dict:
    """SenCache calibration: the conditional half of the batched call (prompt embeddings, rotary embeddings)."""
    embeds, _ = pipe.encode_prompt(prompt, do_classifier_free_guidance=False, device=latents.device,
                                   max_sequence_length=call_kwargs.get("max_sequence_length", 226),
                                   dtype=pipe.transformer.dtype)
    cond = {"encoder_hidden_states": embeds}
    if pipe.transformer.config.use_rotary_positional_embeddings:  # latents: (B, F, C, H, W)
        cond["image_rotary_emb"] = pipe._prepare_rotary_positional_embeddings(
            call_kwargs["height"], call_kwargs["width"], latents.size(1), latents.device)
    return cond


def sencache_encode_video(pipe, video: torch.Tensor, call_kwargs: dict) -> torch.Tensor:
    """SenCache calibration: video (1, 3, F, H, W) in [-1, 1] -> scaled latents (B, F, C, H, W); CogVideoX 1.5
    pads the latent frames to a multiple of patch_size_t in front, as its pipeline does."""
    latents = pipe.vae.encode(video).latent_dist.mode() * pipe.vae_scaling_factor_image
    latents = latents.permute(0, 2, 1, 3, 4)
    p_t = pipe.transformer.config.patch_size_t
    if p_t is not None and latents.size(1) % p_t:
        latents = torch.cat([latents[:, :1].repeat(1, p_t - latents.size(1) % p_t, 1, 1, 1), latents], dim=1)
    return latents


def sencache_step(scheduler, model_output, timestep, sample, index: int) -> torch.Tensor:
    """SenCache calibration: CogVideoXDPMScheduler's step takes the previous prediction (none: first order)."""
    from diffusers import CogVideoXDPMScheduler

    from ..calibration.sencache import scheduler_step

    if not isinstance(scheduler, CogVideoXDPMScheduler):
        return scheduler_step(scheduler, model_output, timestep, sample, index)
    back = scheduler.timesteps[index - 1] if index > 0 else None
    return scheduler.step(model_output, None, timestep, back, sample, return_dict=False)[0]


# ``force_last``: the official SenCache CogVideoX script (vita-epfl/SenCache) computes the first and the last step
# always (ret_steps 1, cutoff_steps = steps - 1).
SENCACHE = {"conditioning": sencache_conditioning, "encode_video": sencache_encode_video, "step": sencache_step,
            "force_last": True}


# SemCache (shared ALGORITHMS.md, "SemCache"): CogVideoX mixes text by the joint attention ``attn1`` of every
# block (text and video tokens attend together, with separate adaptive norms per stream): Z_in = the video tokens
# entering that attention (``norm1``'s video output), Z_out = the attention's video output (before the gate).
# TMM: the patch embedding puts the tokens frame-major (B, F'*H'*W', C) and adds the absolute positional
# embedding (CogVideoX 2B) before the blocks, so kept tokens carry their positions; with RoPE (5B, 1.5) the blocks
# receive (cos, sin), each (N, D), which is sliced like the tokens.
def semcache_text_attention(transformer) -> list:
    """The text-mixing attention layers, in depth order: every block's joint attention."""
    return [block.attn1 for block in transformer.transformer_blocks]


def semcache_frames(transformer, kwargs: dict) -> tuple[torch.Tensor, int]:
    """(latent frames grouped per post-patch frame (B, F', D), tokens per post-patch frame) of one call."""
    latent = kwargs["hidden_states"]  # (B, F, C, H, W)
    p, p_t = transformer.config.patch_size, transformer.config.patch_size_t or 1
    frames = latent.unflatten(1, (latent.shape[1] // p_t, p_t)).flatten(2)
    return frames, (latent.shape[3] // p) * (latent.shape[4] // p)


def semcache_select(arguments: dict, selection) -> None:
    """Kept tokens only: slice the RoPE table (absent in CogVideoX 2B, whose positions are already embedded)."""
    if arguments.get("image_rotary_emb") is not None:
        arguments["image_rotary_emb"] = tuple(selection.take(f, 0) for f in arguments["image_rotary_emb"])


SEMCACHE = {"transformer_class": "CogVideoXTransformer3DModel", "preset": None,
            "text_attention": semcache_text_attention, "frames": semcache_frames, "select": semcache_select,
            "mapping": "joint attention attn1 of every block: Z_in = its video input (norm1), Z_out = its video output"}


def seacache_raw_vision(module, args, kwargs) -> list[torch.Tensor]:
    """SeaCache's raw vision: CogVideoX's (B, F, C, H, W) latents as one (C, F, H, W) per sample."""
    return [x.permute(1, 0, 2, 3) for x in kwargs["hidden_states"].unbind(0)]


def seacache_sigma(timestep: float, scheduler=None) -> float:
    """SeaCache's sigma on CogVideoX's VP schedule, x_t = sqrt(a) x0 + sqrt(1 - a) eps (a = alphas_cumprod[t]):
    the flow sigma of equal SNR, sqrt(1 - a) / (sqrt(a) + sqrt(1 - a)). SEA's gain a S / (a^2 S + b^2) only scales
    when (a, b) scale together, and it is normalised to mean 1: the filter is the same."""
    if scheduler is None:
        raise ValueError("SeaCache on CogVideoX needs the pipeline's scheduler (its alphas_cumprod): run the policy "
                         "through a spec (the runner prepares it)")
    a = float(scheduler.alphas_cumprod[int(round(timestep))])
    return (1 - a) ** 0.5 / (a**0.5 + (1 - a) ** 0.5)


SEACACHE = {"transformer_class": "CogVideoXTransformer3DModel", "raw_vision": seacache_raw_vision,
            "sigma": seacache_sigma}


# -- AdaCache (arXiv 2411.02397): a block splits at norm2(hidden, encoder, temb), whose inputs are both streams with
# the joint attention's residuals added (the rest: the FF's); the measured block at Open-Sora's relative depth 13/28
# (ours), its video stream.
ADACACHE = {"transformer_class": "CogVideoXTransformer3DModel", "split": lambda block: block.norm2, "streams": 2,
            "block": lambda count: 13 * count // 28, "frame_tokens": lambda t, kwargs: semcache_frames(t, kwargs)[1]}

COGVIDEOX = Family(name="cogvideox", pipeline_class="CogVideoXPipeline", cfg_layout="batched",
                   block_stacks=("transformer_blocks",), spatial_multiple=16, temporal_multiple=4,
                   adapters={"teacache": TEACACHE, "sencache": SENCACHE, "fastercache": FASTERCACHE,
                             "semcache": SEMCACHE, "seacache": SEACACHE,
                             "adacache": ADACACHE})

_COG_480P = SamplingDefaults(steps=50, height=480, width=720, frames=49, guidance_scale=6.0, fps=8)

COGVIDEOX_2B = ModelEntry("cogvideox-2b", COGVIDEOX, _COG_480P, repo_id="THUDM/CogVideoX-2b",
                          description="CogVideoX 2B")
COGVIDEOX_5B = ModelEntry("cogvideox-5b", COGVIDEOX, _COG_480P, repo_id="THUDM/CogVideoX-5b",
                          description="CogVideoX 5B")
COGVIDEOX15_5B = ModelEntry("cogvideox1.5-5b", COGVIDEOX,
                            SamplingDefaults(steps=50, height=768, width=1360, frames=81, guidance_scale=6.0, fps=16),
                            repo_id="THUDM/CogVideoX1.5-5B", description="CogVideoX 1.5 5B")


def build_tiny(seed: int = 0):
    from diffusers import (AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline,
                           CogVideoXTransformer3DModel)
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
        text_embed_dim=32, num_layers=2, sample_width=4, sample_height=4, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=16)
    torch.manual_seed(seed)
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2,
        temporal_compression_ratio=4)
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=256, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    return CogVideoXPipeline(tokenizer=t5_tokenizer(), text_encoder=text_encoder, vae=vae,
                             transformer=transformer, scheduler=CogVideoXDDIMScheduler())


# max_sequence_length must equal the transformer's max_text_seq_length.
TINY_COGVIDEOX = ModelEntry("tiny-cogvideox", COGVIDEOX,
                            SamplingDefaults(steps=6, height=32, width=32, frames=9, guidance_scale=6.0),
                            build=build_tiny, call_kwargs={"max_sequence_length": 16},
                            description="tiny random CogVideoXPipeline (tests)")
