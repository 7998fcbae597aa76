"""STDiT3 (Open-Sora 1.2's video transformer) as a diffusers model, written from the architecture.

Facts (shared OPENSORA.md; hpcaitech/Open-Sora, branch ``opensora/v1.2``, ``opensora/models/stdit/stdit3.py``
and ``opensora/models/layers/blocks.py``):

- 3-D patch embedding (Conv3d, patch (1, 2, 2), input padded to the patch), plus a 2-D sin-cos position
  embedding per frame whose grid is ``arange(n) / scale * base_size / n`` with ``scale = sqrt(H*W) / 512`` (H, W
  in pixels) and ``base_size = round(sqrt(S))``; its first half encodes the column, the second the row, each
  as [sin, cos]. Frames get no absolute position: temporal attention uses RoPE (interleaved pairs, theta 10^4,
  latent frame index as position) on q and k after their RMSNorm.
- t = MLP(sinusoid_256(t)) + MLP(sinusoid_256(fps)) (cos first); adaLN-single: one SiLU + Linear(D, 6D) on t,
  each block adds its own (6, D) table: shift/scale/gate of the attention, then of the MLP.
- The blocks alternate spatial (attention within a frame) and temporal (attention across frames at one
  position); both cross-attend to the caption (no modulation, no gate). Here the 2 x depth blocks sit in one
  ``transformer_blocks`` list in execution order (spatial 0, temporal 0, spatial 1, ...), so the harness's block
  stack, diffusers' hooks and the policies see them as other transformers; even index = spatial.
- Caption: MLP(4096 -> D -> D, GELU tanh) of the T5 features; only the valid (unpadded) tokens are attended.
  The official code packs them with a block-diagonal xformers mask; here the keys are cut to the longest valid
  length of the batch and the rest is masked per sample in ``scaled_dot_product_attention`` (the same result).
- Final layer: LayerNorm, modulation by t with a (2, D) table (shift, scale), Linear to patch x out_channels
  (8 = 2 x 4: pred_sigma; the sampler keeps the first 4).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.models.attention import AttentionModuleMixin
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


# ---------------------------------------------------------------------------------------------------
# Embeddings (pure functions: the tests check them against hand-made values)
# ---------------------------------------------------------------------------------------------------
def sinusoid(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """[cos, sin] of t * exp(-ln(max_period) * k / (dim / 2)), k < dim / 2 (GLIDE's timestep embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def position_embedding_2d(dim: int, h: int, w: int, scale: float, base_size: int | None,
                          device=None) -> torch.Tensor:
    """(h*w, dim) sin-cos embedding of a frame's patch grid, row-major: [col sin, col cos, row sin, row cos]."""
    half = dim // 2
    inv_freq = 1.0 / (10000 ** (torch.arange(0, half, 2, dtype=torch.float32, device=device) / half))
    rows = torch.arange(h, dtype=torch.float32, device=device) / scale
    cols = torch.arange(w, dtype=torch.float32, device=device) / scale
    if base_size is not None:
        rows, cols = rows * (base_size / h), cols * (base_size / w)
    row = rows[:, None].expand(h, w).reshape(-1)
    col = cols[None, :].expand(h, w).reshape(-1)

    def emb(x):
        out = x[:, None] * inv_freq[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=-1)

    return torch.cat([emb(col), emb(row)], dim=-1)


def rope_frequencies(head_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """The head_dim / 2 rotation frequencies 1 / theta^(2k / head_dim) (rotary_embedding_torch, freqs_for='lang')."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32)[: head_dim // 2] / head_dim))


def rope_table(positions: torch.Tensor, freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (len(positions), head_dim): angles position * freq, each repeated for its pair."""
    angles = positions.float()[:, None] * freqs.to(positions.device)[None]
    angles = angles.repeat_interleave(2, dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate(x) * sin with interleaved pairs: rotate((a, b)) = (-b, a); x: (..., seq, head_dim)."""
    pairs = x.float().unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return (x.float() * cos + rotated * sin).to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32 (LlamaRMSNorm)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class EmbedMLP(nn.Module):
    """linear_1 -> activation -> linear_2."""

    def __init__(self, in_dim: int, dim: int, activation: nn.Module):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.act = activation
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class CaptionProjection(EmbedMLP):
    """The caption MLP, holding the learned null caption (model_max_length x caption_channels) used for CFG."""

    def __init__(self, caption_channels: int, dim: int, tokens: int):
        super().__init__(caption_channels, dim, nn.GELU(approximate="tanh"))
        self.register_buffer("null_embedding", torch.randn(tokens, caption_channels) / caption_channels**0.5)


# ---------------------------------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------------------------------
class OpenSoraSelfAttention(nn.Module, AttentionModuleMixin):
    """Self-attention with q/k RMSNorm over the head dim, then (temporal blocks) RoPE on q and k."""

    is_cross_attention = False

    def __init__(self, dim: int, heads: int, qk_norm: bool = True):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim) for _ in range(3))
        self.norm_q = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.to_out = nn.Linear(dim, dim)
        self.processor = None

    def forward(self, hidden_states: torch.Tensor, rotary_emb: tuple | None = None) -> torch.Tensor:
        b, n, _ = hidden_states.shape
        q, k, v = (proj(hidden_states).view(b, n, self.heads, self.head_dim).transpose(1, 2)
                   for proj in (self.to_q, self.to_k, self.to_v))
        q, k = self.norm_q(q), self.norm_k(k)
        if rotary_emb is not None:
            q, k = apply_rope(q, *rotary_emb), apply_rope(k, *rotary_emb)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class OpenSoraCrossAttention(nn.Module, AttentionModuleMixin):
    """Video tokens (queries) attend to the caption tokens of their own sample; ``mask`` (B, L) marks valid keys."""

    is_cross_attention = True

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim) for _ in range(3))
        self.to_out = nn.Linear(dim, dim)
        self.processor = None

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, _ = hidden_states.shape
        q = self.to_q(hidden_states).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k, v = (proj(encoder_hidden_states).view(b, -1, self.heads, self.head_dim).transpose(1, 2)
                for proj in (self.to_k, self.to_v))
        mask = attention_mask[:, None, None, :] if attention_mask is not None else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.proj_in = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.proj_out = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.act(self.proj_in(x)))


# ---------------------------------------------------------------------------------------------------
# Block
# ---------------------------------------------------------------------------------------------------
class STDiT3Block(nn.Module):
    """One spatial or temporal block on the token sequence (B, T*S, D), frame-major."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qk_norm: bool, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.norm1 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.attn1 = OpenSoraSelfAttention(dim, heads, qk_norm)
        self.attn2 = OpenSoraCrossAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)
        self.ff = FeedForward(dim, int(dim * mlp_ratio))
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, temb: torch.Tensor,
                encoder_attention_mask: torch.Tensor | None, num_frames: int, rotary_emb: tuple) -> torch.Tensor:
        x = hidden_states
        b, n, d = x.shape
        t, s = num_frames, n // num_frames
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + temb.reshape(b, 6, d)).chunk(6, dim=1)
        h = modulate(self.norm1(x), shift_msa, scale_msa)
        if self.temporal:
            h = h.view(b, t, s, d).transpose(1, 2).reshape(b * s, t, d)
            h = self.attn1(h, rotary_emb).view(b, s, t, d).transpose(1, 2).reshape(b, n, d)
        else:
            h = self.attn1(h.reshape(b * t, s, d)).view(b, n, d)
        x = x + gate_msa * h
        x = x + self.attn2(x, encoder_hidden_states, encoder_attention_mask)
        x = x + gate_mlp * self.ff(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


TransformerBlockRegistry.register(STDiT3Block, TransformerBlockMetadata(return_hidden_states_index=0,
                                                                        return_encoder_hidden_states_index=None))


# ---------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------
class OpenSoraSTDiT3Transformer(ModelMixin, ConfigMixin, CacheMixin):
    """STDiT3: ``forward(hidden_states (B, C, T, H, W) latents, timestep (B,) in 0..1000, encoder_hidden_states
    (B, L, caption_channels), encoder_attention_mask (B, L), fps, height, width (pixels))``."""

    _supports_gradient_checkpointing = False
    _no_split_modules = ["STDiT3Block"]

    @register_to_config
    def __init__(self, in_channels: int = 4, patch_size: tuple[int, int, int] = (1, 2, 2), hidden_size: int = 1152,
                 depth: int = 28, num_heads: int = 16, mlp_ratio: float = 4.0, caption_channels: int = 4096,
                 model_max_length: int = 300, qk_norm: bool = True, pred_sigma: bool = True,
                 input_sq_size: int = 512, rope_theta: float = 10000.0):
        super().__init__()
        d = hidden_size
        self.out_channels = in_channels * 2 if pred_sigma else in_channels
        patch_size = tuple(patch_size)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(in_channels, d, kernel_size=patch_size, stride=patch_size)
        self.time_embed = EmbedMLP(256, d, nn.SiLU())
        self.fps_embed = EmbedMLP(256, d, nn.SiLU())
        self.adaln_single = nn.Sequential()
        self.adaln_single.add_module("act", nn.SiLU())
        self.adaln_single.add_module("linear", nn.Linear(d, 6 * d))
        self.caption_projection = CaptionProjection(caption_channels, d, model_max_length)
        self.transformer_blocks = nn.ModuleList(
            [STDiT3Block(d, num_heads, mlp_ratio, qk_norm, temporal=bool(i % 2)) for i in range(2 * depth)])
        self.norm_out = nn.LayerNorm(d, eps=1e-6, elementwise_affine=False)
        self.out_scale_shift_table = nn.Parameter(torch.randn(2, d) / d**0.5)
        self.proj_out = nn.Linear(d, math.prod(patch_size) * self.out_channels)
        self.register_buffer("rope_freqs", rope_frequencies(d // num_heads, rope_theta), persistent=False)

    def grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """Post-patch (T, H, W) of a latent video (padded up to the patch)."""
        p_t, p_h, p_w = self.config.patch_size
        return -(-frames // p_t), -(-height // p_h), -(-width // p_w)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                encoder_attention_mask: torch.Tensor | None = None, fps: float | torch.Tensor = 24,
                height: int | None = None, width: int | None = None, return_dict: bool = True):
        x = hidden_states
        b, _, frames, lat_h, lat_w = x.shape
        dtype, device = self.patch_embed.proj.weight.dtype, x.device
        t_grid, h_grid, w_grid = self.grid(frames, lat_h, lat_w)
        s = h_grid * w_grid
        height = height if height is not None else lat_h * 8
        width = width if width is not None else lat_w * 8
        scale = math.sqrt(height * width) / self.config.input_sq_size
        pos = position_embedding_2d(self.config.hidden_size, h_grid, w_grid, scale, round(s**0.5), device).to(dtype)

        timestep = timestep.reshape(-1).expand(b) if timestep.numel() in (1, b) else timestep
        fps = torch.as_tensor(fps, device=device).reshape(-1).expand(b)
        temb = self.time_embed(sinusoid(timestep).to(dtype)) + self.fps_embed(sinusoid(fps).to(dtype))
        t_mlp = self.adaln_single(temb)

        y = self.caption_projection(encoder_hidden_states.to(dtype))
        mask = None
        if encoder_attention_mask is not None:
            valid = encoder_attention_mask.bool()
            if valid.shape[0] != b:  # the unconditional half reuses the conditional mask
                valid = valid.repeat(b // valid.shape[0], 1)
            longest = int(valid.sum(1).max())  # padding is at the end: keys after the longest valid run are unused
            y, valid = y[:, :longest], valid[:, :longest]
            mask = None if bool(valid.all()) else valid

        p_t, p_h, p_w = self.config.patch_size
        pad = (0, (-lat_w) % p_w, 0, (-lat_h) % p_h, 0, (-frames) % p_t)
        x = self.patch_embed.proj(F.pad(x.to(dtype), pad))  # (B, D, T, H, W)
        x = x.flatten(2).transpose(1, 2)  # (B, T*S, D), frame-major
        x = (x.view(b, t_grid, s, -1) + pos[None, None]).view(b, t_grid * s, -1)
        rotary = rope_table(torch.arange(t_grid, device=device), self.rope_freqs)

        for block in self.transformer_blocks:
            x = block(x, y, t_mlp, mask, t_grid, rotary)

        shift, scale_ = (self.out_scale_shift_table[None] + temb[:, None]).chunk(2, dim=1)
        x = self.proj_out(modulate(self.norm_out(x), shift, scale_))
        x = x.view(b, t_grid, h_grid, w_grid, p_t, p_h, p_w, self.out_channels)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, self.out_channels, t_grid * p_t, h_grid * p_h, w_grid * p_w)
        out = x[:, :, :frames, :lat_h, :lat_w].float()
        if not return_dict:
            return (out,)
        return Transformer2DModelOutput(sample=out)
