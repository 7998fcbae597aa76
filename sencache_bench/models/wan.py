"""Wan 2.1 text-to-video (WanPipeline): separate cond / uncond transformer calls per step."""

from __future__ import annotations

import torch

from .base import Family, ModelEntry, SamplingDefaults
from .tokenizers import t5_tokenizer

WAN = Family(name="wan", pipeline_class="WanPipeline", cfg_layout="separate", block_stacks=("blocks",),
             spatial_multiple=16, temporal_multiple=4)

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
