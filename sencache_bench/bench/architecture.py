"""The bench-t2v model: its training configuration and the three components built from it.

Sizes, seeds and schedules are one frozen :class:`TrainConfig`; :func:`build_vae`, :func:`build_text` and
:func:`build_transformer` make the untrained AutoencoderKLWan, UMT5 encoder (with its word-level tokenizer)
and WanTransformer3DModel that :mod:`sencache_bench.bench.train` trains.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .data import TEXT_LENGTH, WORDS


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    quick: bool = False
    # data: transformer clips are encoded once; the VAE sees fresh clips every step
    clips: int = 6000
    # VAE
    vae_base_dim: int = 16
    vae_z_dim: int = 8
    vae_dim_mult: tuple[int, ...] = (1, 2, 4)
    vae_res_blocks: int = 1
    vae_image_batch: int = 32  # single frames
    vae_image_stages: tuple[tuple[int, float], ...] = ((250, 1e-3), (550, 4e-4))  # (steps, constant lr)
    vae_batch: int = 8  # clips
    vae_stages: tuple[tuple[int, float], ...] = ((300, 4e-4), (100, 2e-4))
    vae_warmup: int = 20
    vae_noise: float = 0.05  # fixed std of the noise added to the posterior mean
    vae_object_weight: float = 5.0
    # text encoder (frozen, random)
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_ff: int = 128
    text_length: int = TEXT_LENGTH
    # transformer
    heads: int = 3
    head_dim: int = 64
    ffn_dim: int = 768
    layers: int = 6
    steps: int = 3000
    batch: int = 32
    lr: float = 4e-4
    warmup: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema: float = 0.998
    shift: float = 3.0
    empty_prompt: float = 0.1
    # output
    weights_dtype: str = "float16"
    log_every: int = 50
    eval_seeds: int = 1  # after training: quality on held-out and seen prompts with this many seeds (0: skip)

    @classmethod
    def quick_config(cls, seed: int = 0) -> "TrainConfig":
        """Smoke-test settings: the same stages and classes, tiny sizes and step counts (seconds)."""
        return cls(seed=seed, quick=True, clips=8, vae_base_dim=4, vae_image_batch=2, vae_image_stages=((2, 1e-3),),
                   vae_batch=1, vae_stages=((2, 1e-3), (1, 4e-4)), vae_warmup=0, heads=2, head_dim=16, ffn_dim=64,
                   layers=2, steps=6, batch=4, warmup=2, log_every=2, eval_seeds=0)

    @property
    def vae_steps(self) -> int:
        return sum(n for n, _ in self.vae_stages)

    @property
    def vae_image_steps(self) -> int:
        return sum(n for n, _ in self.vae_image_stages)

    def with_vae_steps(self, total: int, image: bool = False) -> "TrainConfig":
        """The clip (or, with ``image``, the single-frame) VAE stages rescaled to ``total`` steps."""
        stages = self.vae_image_stages if image else self.vae_stages
        first = round(total * stages[0][0] / sum(n for n, _ in stages))
        stages = ((first, stages[0][1]),) + tuple((total - first, lr) for _, lr in stages[1:2] if total > first)
        return replace(self, **{"vae_image_stages" if image else "vae_stages": stages})


# -- components ---------------------------------------------------------------------------------------

def build_vae(cfg: TrainConfig):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(cfg.seed)
    z = cfg.vae_z_dim
    return AutoencoderKLWan(base_dim=cfg.vae_base_dim, z_dim=z, dim_mult=list(cfg.vae_dim_mult),
                            num_res_blocks=cfg.vae_res_blocks, attn_scales=[],
                            temperal_downsample=[True] * (len(cfg.vae_dim_mult) - 1), dropout=0.0,
                            in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=8,
                            scale_factor_temporal=4, latents_mean=[0.0] * z, latents_std=[1.0] * z)


def build_text(cfg: TrainConfig):
    from transformers import UMT5Config, UMT5EncoderModel

    from ..models.tokenizers import t5_tokenizer

    tokenizer = t5_tokenizer(WORDS)
    torch.manual_seed(cfg.seed + 1)
    encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=cfg.text_dim, d_kv=cfg.text_dim // cfg.text_heads, d_ff=cfg.text_ff,
        num_layers=cfg.text_layers, num_heads=cfg.text_heads, relative_attention_num_buckets=32,
        feed_forward_proj="gated-gelu", dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0))
    encoder.requires_grad_(False).eval()
    return tokenizer, encoder


def build_transformer(cfg: TrainConfig):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(cfg.seed + 2)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=cfg.heads, attention_head_dim=cfg.head_dim,
        in_channels=cfg.vae_z_dim, out_channels=cfg.vae_z_dim, text_dim=cfg.text_dim, freq_dim=256,
        ffn_dim=cfg.ffn_dim, num_layers=cfg.layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        eps=1e-6)
