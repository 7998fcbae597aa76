"""HunyuanVideo (HunyuanVideoPipeline): guidance-distilled, one transformer call per step."""

from __future__ import annotations

import torch

from .base import Family, ModelEntry, SamplingDefaults, seacache_channels_first, seacache_flow_sigma
from .tokenizers import clip_tokenizer, llama_tokenizer


def teacache_modulated_input(transformer, inputs: dict, call) -> torch.Tensor:
    """TeaCache's HunyuanVideo indicator: the first double block's modulated image input (``norm1(x, temb)``)."""
    block = transformer.transformer_blocks[0]
    return block.norm1(inputs["hidden_states"], emb=inputs["temb"])[0]


# TeaCache (ali-vilab/TeaCache, TeaCache4HunyuanVideo/teacache_sample_video.py): first and last step computed.
TEACACHE = {"transformer_class": "HunyuanVideoTransformer3DModel", "indicators": {
    "modulated": {"fn": teacache_modulated_input, "warmup": 1, "force_last": True},
}}

# diffusers' FasterCache: latents (B, C, F, H, W); guidance-distilled, so no batched-CFG approximation.
FASTERCACHE = {"transformer_class": "HunyuanVideoTransformer3DModel", "tensor_format": "BCFHW",
               "is_guidance_distilled": True}


def sencache_conditioning(pipe, prompt: str, call_kwargs: dict, latents: torch.Tensor) -> dict:
    """SenCache calibration: the call's text embeddings, mask, pooled CLIP embedding and distilled guidance."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    dtype, device = pipe.transformer.dtype, latents.device
    embeds, pooled, mask = pipe.encode_prompt(
        prompt=prompt, prompt_template=call_kwargs.get("prompt_template", DEFAULT_PROMPT_TEMPLATE), device=device,
        max_sequence_length=call_kwargs.get("max_sequence_length", 256))
    guidance = torch.tensor([call_kwargs["guidance_scale"]], dtype=dtype, device=device) * 1000.0
    return {"encoder_hidden_states": embeds.to(dtype), "encoder_attention_mask": mask.to(dtype),
            "pooled_projections": pooled.to(dtype), "guidance": guidance}


def sencache_encode_video(pipe, video: torch.Tensor, call_kwargs: dict) -> torch.Tensor:
    """SenCache calibration: video (1, 3, F, H, W) in [-1, 1] -> scaled latents."""
    return pipe.vae.encode(video).latent_dist.mode() * pipe.vae.config.scaling_factor


SENCACHE = {"conditioning": sencache_conditioning, "encode_video": sencache_encode_video}


# SemCache (shared ALGORITHMS.md, "SemCache"): HunyuanVideo mixes text by joint attention in its dual-stream
# blocks (``transformer_blocks[i].attn``, video and text tokens attend together): Z_in = the video tokens entering
# that attention (``norm1(x, temb)``, the modulated video stream), Z_out = the attention's video output (its
# first return value, before the gate). The single-stream blocks are not hooked (text and video are one stream).
# TMM: tokens are frame-major (B, F'*H'*W', C); every block receives the RoPE table (cos, sin), each (N, D)
# (``freqs_cis`` in the dual-stream blocks, ``image_rotary_emb`` in the single-stream ones) and the joint
# attention mask (B, 1, 1, N + text) whose first N entries are the video tokens. The single-stream blocks
# concatenate [video, text] themselves, so a shorter video sequence flows through them unchanged.
def semcache_text_attention(transformer) -> list:
    """The text-mixing attention layers, in depth order: the joint attention of every dual-stream block."""
    return [block.attn for block in transformer.transformer_blocks]


def semcache_frames(transformer, kwargs: dict) -> tuple[torch.Tensor, int]:
    """(latent frames grouped per post-patch frame (B, F', D), tokens per post-patch frame) of one call."""
    latent = kwargs["hidden_states"]  # (B, C, F, H, W)
    p, p_t = transformer.config.patch_size, transformer.config.patch_size_t
    frames = latent.unflatten(2, (latent.shape[2] // p_t, p_t)).transpose(1, 2).flatten(2)
    return frames, (latent.shape[3] // p) * (latent.shape[4] // p)


def semcache_select(arguments: dict, selection) -> None:
    """Kept tokens only: slice the RoPE table and the video part of the joint attention mask (text kept)."""
    for name in ("freqs_cis", "image_rotary_emb"):
        if arguments.get(name) is not None:
            arguments[name] = tuple(selection.take(f, 0) for f in arguments[name])
    if arguments.get("attention_mask") is not None:
        arguments["attention_mask"] = selection.take_with_tail(arguments["attention_mask"], -1)


SEMCACHE = {"transformer_class": "HunyuanVideoTransformer3DModel", "preset": {"alpha": 0.4, "beta": 0.6},
            "text_attention": semcache_text_attention, "frames": semcache_frames, "select": semcache_select,
            "mapping": "joint attention of every dual-stream block: Z_in = its video input (norm1(x, temb)), "
                       "Z_out = its video output"}


SEACACHE = {"transformer_class": "HunyuanVideoTransformer3DModel", "raw_vision": seacache_channels_first,
            "sigma": seacache_flow_sigma}  # (B, C, F, H, W) latents; flow matching


# -- AdaCache: refused. Its single-stream blocks compute attention and MLP in parallel from one input and project them
# together (proj_out of their concatenation): there is no attention residual to cache apart from the MLP's.
ADACACHE = {"refused": "its single-stream blocks fuse attention and MLP in one output projection, so a block has no "
                       "separate attention and MLP residuals to cache"}

HUNYUANVIDEO = Family(name="hunyuanvideo", pipeline_class="HunyuanVideoPipeline", cfg_layout="distilled",
                      block_stacks=("transformer_blocks", "single_transformer_blocks"),
                      spatial_multiple=16, temporal_multiple=4, adapters={"teacache": TEACACHE, "sencache": SENCACHE,
                                                                          "fastercache": FASTERCACHE,
                                                                          "semcache": SEMCACHE, "seacache": SEACACHE,
                                                                          "adacache": ADACACHE})

HUNYUANVIDEO_T2V = ModelEntry(
    "hunyuanvideo", HUNYUANVIDEO,
    SamplingDefaults(steps=50, height=720, width=1280, frames=129, guidance_scale=6.0, shift=7.0, fps=24),
    repo_id="hunyuanvideo-community/HunyuanVideo", description="HunyuanVideo 13B")


def build_tiny(seed: int = 0):
    from diffusers import (AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline,
                           HunyuanVideoTransformer3DModel)
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    torch.manual_seed(seed)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=2,
        num_single_layers=2, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4))
    torch.manual_seed(seed)
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("HunyuanVideoDownBlock3D",) * 4, up_block_types=("HunyuanVideoUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8), layers_per_block=1, act_fn="silu", norm_num_groups=4,
        scaling_factor=0.476986, spatial_compression_ratio=8, temporal_compression_ratio=4,
        mid_block_add_attention=True)
    llama_tok, clip_tok = llama_tokenizer(), clip_tokenizer()
    torch.manual_seed(seed)
    text_encoder = LlamaModel(LlamaConfig(
        bos_token_id=1, eos_token_id=2, pad_token_id=3, hidden_size=16, intermediate_size=37,
        num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=3,  # the pipeline takes hidden_states[-3]
        vocab_size=len(llama_tok), hidden_act="silu", max_position_embeddings=512))
    torch.manual_seed(seed)
    text_encoder_2 = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=8, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=len(clip_tok), hidden_act="gelu",
        projection_dim=32, max_position_embeddings=77))
    return HunyuanVideoPipeline(text_encoder=text_encoder, tokenizer=llama_tok, transformer=transformer, vae=vae,
                                scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
                                text_encoder_2=text_encoder_2, tokenizer_2=clip_tok)


# A trivial prompt template keeps the tiny text sequence short (the default crops 95 template tokens).
TINY_HUNYUANVIDEO = ModelEntry(
    "tiny-hunyuanvideo", HUNYUANVIDEO,
    SamplingDefaults(steps=6, height=32, width=32, frames=9, guidance_scale=6.0, shift=7.0),
    build=build_tiny, call_kwargs={"max_sequence_length": 16, "prompt_template": {"template": "{}", "crop_start": 0}},
    description="tiny random HunyuanVideoPipeline (tests)")
