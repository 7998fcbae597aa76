"""LTX-Video (LTXPipeline): one batched [uncond, cond] transformer call per step."""

from __future__ import annotations

import torch

from .base import Family, ModelEntry, SamplingDefaults
from .tokenizers import t5_tokenizer

LTX = Family(name="ltx", pipeline_class="LTXPipeline", cfg_layout="batched", block_stacks=("transformer_blocks",),
             spatial_multiple=32, temporal_multiple=8)

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
