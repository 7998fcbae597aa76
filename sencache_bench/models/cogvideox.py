"""CogVideoX (CogVideoXPipeline): one batched [uncond, cond] transformer call per step."""

from __future__ import annotations

import torch

from .base import Family, ModelEntry, SamplingDefaults
from .tokenizers import t5_tokenizer

COGVIDEOX = Family(name="cogvideox", pipeline_class="CogVideoXPipeline", cfg_layout="batched",
                   block_stacks=("transformer_blocks",), spatial_multiple=16, temporal_multiple=4)

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
