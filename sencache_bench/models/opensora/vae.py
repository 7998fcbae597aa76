"""Open-Sora 1.2's VAE (OpenSoraVAE_V1_2), written from the architecture: a 2-D image VAE per frame, then a causal
temporal VAE over the frames' latents (shared OPENSORA.md; hpcaitech/Open-Sora ``opensora/v1.2``,
``opensora/models/vae/vae.py`` and ``vae_temporal.py``).

- Spatial: diffusers ``AutoencoderKL`` (the SDXL VAE, 8x, 4 channels), latents x 0.18215, 4 frames per batch.
- Temporal (``VAE_Temporal_SD``): causal Conv3d (time padded in front only) ResNet encoder / decoder, filters
  128, multipliers (1, 2, 2, 4), 4 res blocks per level, time stride 2 after levels 2 and 3 (4x), 4 latent
  channels; the decoder upsamples time by a conv to 2x channels and a depth-to-time rearrangement.
- Micro-frames: the frames' latents are cut in chunks of 17, each front-padded to a multiple of 4 (17 -> 20 ->
  5 latent frames); decoding goes by 5 latent frames, cropping each chunk's front padding.
- Normalisation of the final latents: z = (z - shift) / scale per channel.

The module names follow the official ones (``temporal_vae.encoder.block_res_blocks.0.0.conv1.conv`` ...), so
the official checkpoint maps by dropping the ``spatial_vae.module.`` wrapper (see ``weights.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

SPATIAL_SCALING = 0.18215


class CausalConv3d(nn.Module):
    """Conv3d padded by (kernel_t - 1) frames in front (none behind) and half the kernel in space."""

    def __init__(self, chan_in: int, chan_out: int, kernel_size=3, stride=(1, 1, 1), bias: bool = True):
        super().__init__()
        k = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
        time_pad = k[0] - 1 + (1 - stride[0])
        self.padding = (k[2] // 2, k[2] // 2, k[1] // 2, k[1] // 2, time_pad, 0)
        self.conv = nn.Conv3d(chan_in, chan_out, k, stride=stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding))


class ResBlock(nn.Module):
    def __init__(self, chan_in: int, chan_out: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, chan_in)
        self.conv1 = CausalConv3d(chan_in, chan_out, 3, bias=False)
        self.norm2 = nn.GroupNorm(groups, chan_out)
        self.conv2 = CausalConv3d(chan_out, chan_out, 3, bias=False)
        self.conv3 = CausalConv3d(chan_in, chan_out, 1, bias=False) if chan_in != chan_out else None
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = self.conv2(self.act(self.norm2(h)))
        return h + (self.conv3(x) if self.conv3 is not None else x)


class TemporalEncoder(nn.Module):
    def __init__(self, channels: int, latent: int, filters: int, res_blocks: int, multipliers, downsample,
                 groups: int):
        super().__init__()
        self.conv_in = CausalConv3d(channels, filters, 3, bias=False)
        self.block_res_blocks, self.conv_blocks = nn.ModuleList(), nn.ModuleList()
        prev = filters
        for i, m in enumerate(multipliers):
            out = filters * m
            level = nn.ModuleList()
            for _ in range(res_blocks):
                level.append(ResBlock(prev, out, groups))
                prev = out
            self.block_res_blocks.append(level)
            if i < len(multipliers) - 1:
                self.conv_blocks.append(CausalConv3d(prev, out, 3, stride=(2, 1, 1)) if downsample[i] else nn.Identity())
        self.res_blocks = nn.ModuleList([ResBlock(prev, prev, groups) for _ in range(res_blocks)])
        self.norm1 = nn.GroupNorm(groups, prev)
        self.conv2 = CausalConv3d(prev, latent, 1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for i, level in enumerate(self.block_res_blocks):
            for block in level:
                x = block(x)
            if i < len(self.conv_blocks):
                x = self.conv_blocks[i](x)
        for block in self.res_blocks:
            x = block(x)
        return self.conv2(self.act(self.norm1(x)))


class TemporalDecoder(nn.Module):
    def __init__(self, channels: int, latent: int, filters: int, res_blocks: int, multipliers, downsample,
                 groups: int):
        super().__init__()
        self.downsample = tuple(downsample)
        top = filters * multipliers[-1]
        self.conv1 = CausalConv3d(latent, top, 3)
        self.res_blocks = nn.ModuleList([ResBlock(top, top, groups) for _ in range(res_blocks)])
        levels, convs = [], []
        prev = top
        for i in reversed(range(len(multipliers))):
            out = filters * multipliers[i]
            level = nn.ModuleList()
            for _ in range(res_blocks):
                level.append(ResBlock(prev, out, groups))
                prev = out
            levels.insert(0, level)
            if i > 0:
                convs.insert(0, CausalConv3d(prev, prev * 2, 3) if downsample[i - 1] else nn.Identity())
        self.block_res_blocks, self.conv_blocks = nn.ModuleList(levels), nn.ModuleList(convs)
        self.norm1 = nn.GroupNorm(groups, prev)
        self.conv_out = CausalConv3d(prev, channels, 3)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for block in self.res_blocks:
            x = block(x)
        for i in reversed(range(len(self.block_res_blocks))):
            for block in self.block_res_blocks[i]:
                x = block(x)
            if i > 0:
                x = self.conv_blocks[i - 1](x)
                if self.downsample[i - 1]:  # (B, 2C, T, H, W) -> (B, C, 2T, H, W): channel pairs become frames
                    b, c2, t, h, w = x.shape
                    x = x.view(b, c2 // 2, 2, t, h, w).permute(0, 1, 3, 2, 4, 5).reshape(b, c2 // 2, 2 * t, h, w)
        return self.conv_out(self.act(self.norm1(x)))


class TemporalVAE(nn.Module):
    """VAE_Temporal: time downsampled by 2^(number of True in ``downsample``), front-padded to a multiple of it."""

    def __init__(self, channels: int = 4, latent: int = 4, filters: int = 128, res_blocks: int = 4,
                 multipliers=(1, 2, 2, 4), downsample=(False, True, True), groups: int = 32):
        super().__init__()
        self.factor = 2 ** sum(bool(d) for d in downsample)
        self.encoder = TemporalEncoder(channels, 2 * latent, filters, res_blocks, multipliers, downsample, groups)
        self.quant_conv = CausalConv3d(2 * latent, 2 * latent, 1)
        self.post_quant_conv = CausalConv3d(latent, latent, 1)
        self.decoder = TemporalDecoder(channels, latent, filters, res_blocks, multipliers, downsample, groups)

    def front_pad(self, frames: int) -> int:
        return (-frames) % self.factor

    def encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar) of the posterior of (B, C, T, H, W) image latents."""
        x = F.pad(x, (0, 0, 0, 0, self.front_pad(x.shape[2]), 0))
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, logvar

    def decode(self, z: torch.Tensor, num_frames: int) -> torch.Tensor:
        x = self.decoder(self.post_quant_conv(z))
        return x[:, :, self.front_pad(num_frames):]


def latent_frames(frames: int, micro_frame_size: int = 17, factor: int = 4) -> int:
    """Latent frames of a video: chunks of ``micro_frame_size`` frames, each front-padded to a multiple of
    ``factor`` (51 -> 3 x 5 = 15; 9 -> 3)."""
    full, rest = divmod(frames, micro_frame_size)
    return full * (-(-micro_frame_size // factor)) + -(-rest // factor)


class OpenSoraVAE(ModelMixin, ConfigMixin):
    """Video (B, 3, F, H, W) in [-1, 1] <-> normalised latents (B, 4, F', H / 8, W / 8)."""

    @register_to_config
    def __init__(self, spatial: dict | None = None, temporal: dict | None = None, micro_frame_size: int = 17,
                 micro_batch_size: int = 4, shift=(-0.10, 0.34, 0.27, 0.98), scale=(3.85, 2.32, 2.33, 3.06),
                 latent_channels: int = 4):
        super().__init__()
        self.spatial_vae = AutoencoderKL(**(spatial or {}))
        self.temporal_vae = TemporalVAE(**(temporal or {}))
        if (temporal or {}).get("latent", 4) != latent_channels:
            raise ValueError(f"latent_channels {latent_channels} differs from the temporal VAE's latent channels")
        self.register_buffer("latents_shift", torch.tensor(shift, dtype=torch.float32).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("latents_scale", torch.tensor(scale, dtype=torch.float32).view(1, -1, 1, 1, 1), persistent=False)

    @property
    def spatial_compression(self) -> int:
        return 2 ** (len(self.spatial_vae.config.block_out_channels) - 1)

    @property
    def latent_chunk(self) -> int:
        """Latent frames of one full micro-frame chunk (17 -> 5)."""
        m = self.config.micro_frame_size
        return (m + self.temporal_vae.front_pad(m)) // self.temporal_vae.factor

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a video of ``frames`` frames (51 -> 15)."""
        return latent_frames(frames, self.config.micro_frame_size, self.temporal_vae.factor)

    def _per_frame(self, fn, x: torch.Tensor) -> torch.Tensor:
        """Apply an image function to (B, C, T, H, W) frame by frame, ``micro_batch_size`` frames at a time."""
        b, _, t = x.shape[:3]
        flat = x.transpose(1, 2).flatten(0, 1)
        out = torch.cat([fn(flat[i:i + self.config.micro_batch_size])
                         for i in range(0, flat.shape[0], self.config.micro_batch_size)])
        return out.unflatten(0, (b, t)).transpose(1, 2)

    def encode_latents(self, video: torch.Tensor, generator: torch.Generator | None = None,
                       sample: bool = False) -> torch.Tensor:
        """Normalised latents of a video; the posterior means unless ``sample`` (the official code samples both)."""
        def image(x):
            dist = self.spatial_vae.encode(x).latent_dist
            return (dist.sample(generator) if sample else dist.mode()) * SPATIAL_SCALING

        x_z = self._per_frame(image, video)
        chunks = []
        for i in range(0, x_z.shape[2], self.config.micro_frame_size):
            mean, logvar = self.temporal_vae.encode_moments(x_z[:, :, i:i + self.config.micro_frame_size])
            if sample:
                mean = mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * torch.randn(
                    mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            chunks.append(mean)
        z = torch.cat(chunks, dim=2)
        return (z - self.latents_shift.to(z)) / self.latents_scale.to(z)

    def decode(self, z: torch.Tensor, num_frames: int | None = None, return_dict: bool = True):
        """Normalised latents -> video; ``num_frames`` defaults to 4k - 3 frames per chunk of k latent frames."""
        z = z * self.latents_scale.to(z) + self.latents_shift.to(z)
        step, m = self.latent_chunk, self.config.micro_frame_size
        factor = self.temporal_vae.factor
        if num_frames is None:
            num_frames = sum(min(m, factor * min(step, z.shape[2] - i) - factor + 1) for i in range(0, z.shape[2], step))
        parts, left = [], num_frames
        for i in range(0, z.shape[2], step):
            parts.append(self.temporal_vae.decode(z[:, :, i:i + step], num_frames=min(m, left)))
            left -= m
        x_z = torch.cat(parts, dim=2)
        video = self._per_frame(lambda x: self.spatial_vae.decode(x / SPATIAL_SCALING).sample, x_z)
        if not return_dict:
            return (video,)
        return DecoderOutput(sample=video)
