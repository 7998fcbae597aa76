"""Open-Sora 1.2 text-to-video as a diffusers ``DiffusionPipeline`` (shared OPENSORA.md; hpcaitech/Open-Sora
``opensora/v1.2``, ``scripts/inference.py``, ``configs/opensora-v1-2/inference/sample.py``,
``opensora/models/text_encoder/t5.py``).

Per prompt: "aesthetic score: 6.5." is appended, T5 encodes it padded to 300 tokens (mask kept), the latent
noise is (1, 4, F', H / 8, W / 8) with F' from the VAE's micro-frame chunks; each of the 30 rectified-flow steps
is ONE transformer call on the batch [cond, uncond] (the same latents twice; the unconditional caption is the
learned null embedding, with the conditional mask), under ``cache_context("cond_uncond")``;
v = u + s (c - u) on the first 4 of the 8 output channels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

AESTHETIC_SCORE = 6.5


@dataclass
class OpenSoraPipelineOutput(BaseOutput):
    frames: np.ndarray | torch.Tensor


def with_aesthetic_score(prompt: str, score: float | None) -> str:
    """The official suffix: "<prompt> aesthetic score: 6.5." (not added twice)."""
    if score is None or "aesthetic score:" in prompt:
        return prompt
    return f"{prompt} aesthetic score: {score:.1f}."


class OpenSoraPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _callback_tensor_inputs = ["latents"]

    def __init__(self, tokenizer, text_encoder, transformer, vae, scheduler):
        super().__init__()
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae,
                              scheduler=scheduler)

    # -- loading ----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, source: str, dtype: torch.dtype = torch.float32, **kwargs):
        """A directory written by ``save_pretrained`` (this pipeline's layout), or the official checkpoints:
        ``hpcai-tech/OpenSora-STDiT-v3`` (or a local copy of it) with the VAE and T5 of ``weights.OFFICIAL``."""
        from .weights import load_official_pipeline, load_saved_pipeline

        if os.path.isfile(os.path.join(source, "model_index.json")):
            return load_saved_pipeline(cls, source, dtype)
        return load_official_pipeline(cls, source, dtype)

    # -- text ---------------------------------------------------------------------------------------
    def encode_prompt(self, prompt: str | list[str], max_sequence_length: int = 300,
                      aesthetic_score: float | None = AESTHETIC_SCORE, device=None):
        """(T5 features (B, L, C), attention mask (B, L)) of the prompts with the aesthetic suffix."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [with_aesthetic_score(p, aesthetic_score) for p in prompts]
        device = device or self.text_encoder.device
        tokens = self.tokenizer(prompts, max_length=max_sequence_length, padding="max_length", truncation=True,
                                add_special_tokens=True, return_tensors="pt")
        ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
        embeds = self.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        return embeds, mask

    def null_embedding(self, batch: int, length: int) -> torch.Tensor:
        """The learned unconditional caption (model_max_length x C), repeated for the batch."""
        null = self.transformer.caption_projection.null_embedding
        if null.shape[0] != length:
            raise ValueError(f"max_sequence_length {length} differs from the transformer's model_max_length "
                             f"{null.shape[0]} (the null caption's length): use {null.shape[0]}")
        return null[None].expand(batch, -1, -1)

    def latent_shape(self, height: int, width: int, num_frames: int) -> tuple[int, int, int, int]:
        f = self.vae.spatial_compression
        return (self.transformer.config.in_channels, self.vae.latent_frames(num_frames), height // f, width // f)

    # -- sampling -----------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, prompt: str | list[str], height: int = 480, width: int = 854, num_frames: int = 51,
                 num_inference_steps: int = 30, guidance_scale: float = 7.0, fps: int = 24,
                 max_sequence_length: int = 300, aesthetic_score: float | None = AESTHETIC_SCORE,
                 negative_prompt: str | None = None, generator: torch.Generator | None = None,
                 latents: torch.Tensor | None = None, output_type: str = "np", return_dict: bool = True,
                 callback_on_step_end=None, callback_on_step_end_tensor_inputs: list[str] = ("latents",)):
        if negative_prompt is not None:
            raise ValueError("Open-Sora 1.2 has no negative prompt: its CFG uses the learned null caption "
                             "(remove sampling.negative_prompt)")
        device = self._execution_device
        transformer = self.transformer
        dtype = transformer.dtype
        embeds, mask = self.encode_prompt(prompt, max_sequence_length, aesthetic_score, device)
        batch = embeds.shape[0]
        cfg = guidance_scale > 1.0
        if cfg:
            embeds = torch.cat([embeds, self.null_embedding(batch, embeds.shape[1]).to(embeds)])
        embeds = embeds.to(dtype)

        shape = (batch, *self.latent_shape(height, width, num_frames))
        if latents is None:
            latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(device)
        latents = latents.to(device=device, dtype=torch.float32)

        self.scheduler.set_timesteps(num_inference_steps, device=device, height=height, width=width,
                                     num_frames=num_frames)
        in_ch = transformer.config.in_channels
        branch = "cond_uncond" if cfg else "cond"
        for i, t in enumerate(self.scheduler.timesteps):
            model_in = torch.cat([latents, latents]) if cfg else latents
            timestep = t.expand(model_in.shape[0])
            with transformer.cache_context(branch, step_index=i, num_inference_steps=num_inference_steps,
                                           timestep=float(t)):
                out = transformer(hidden_states=model_in.to(dtype), timestep=timestep, encoder_hidden_states=embeds,
                                  encoder_attention_mask=mask, fps=fps, height=height, width=width,
                                  return_dict=False)[0]
            out = out[:, :in_ch].float()
            if cfg:
                cond, uncond = out.chunk(2)
                out = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(out, t, latents, return_dict=False)[0]
            if callback_on_step_end is not None:
                tensors = {"latents": latents}
                unknown = set(callback_on_step_end_tensor_inputs) - set(tensors)
                if unknown:
                    raise ValueError(f"callback_on_step_end_tensor_inputs: {sorted(unknown)} not in {sorted(tensors)}")
                returned = callback_on_step_end(self, i, t, {k: tensors[k] for k in callback_on_step_end_tensor_inputs})
                latents = returned.pop("latents", latents)

        if output_type == "latent":
            video = latents
        else:
            video = self.vae.decode(latents.to(self.vae.dtype), num_frames=num_frames, return_dict=False)[0]
            video = ((video.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1)  # (B, F, H, W, 3) in [0, 1]
            if output_type == "np":
                video = video.cpu().numpy()
        self.maybe_free_model_hooks()
        if not return_dict:
            return (video,)
        return OpenSoraPipelineOutput(frames=video)
