"""Wan image-to-video (WanImageToVideoPipeline): Wan 2.1 I2V-14B-480P and Wan 2.2 TI2V-5B taking an image.

Wan 2.1 I2V: the transformer takes the noisy latents concatenated with a 4-channel first-frame mask and the VAE
latents of [image, zeros...] (16 + 4 + 16 = 36 input channels) and a CLIP image embedding (the penultimate hidden
states of a CLIP ViT) through extra key/value projections of every cross-attention. Wan 2.2 TI2V-5B with an image
(``expand_timesteps``): the first latent frame is replaced by the image's latents and its tokens take t = 0; the
transformer is the text-to-video one. Both: separate cond / uncond calls, as WanPipeline.
"""

from __future__ import annotations

import dataclasses

import torch

from .base import ModelEntry, SamplingDefaults, seacache_flow_sigma
from .wan import (ADACACHE, SEMCACHE, TEACACHE, WAN, WAN22_TI2V_5B, WAN_TI2V, build_tiny,
                  build_tiny_wan22_ti2v, semcache_frames)
from .wan import sencache_conditioning as wan_sencache_conditioning


def _text_cleaning_without_ftfy() -> None:
    """diffusers 0.42.1's pipeline_wan_i2v.py calls ``ftfy.fix_text`` even when ftfy is not installed (NameError);
    its pipeline_wan.py skips the fix then. Without ftfy, give the I2V module what WanPipeline does: no fix."""
    from diffusers.pipelines.wan import pipeline_wan_i2v
    from diffusers.utils import is_ftfy_available

    if not is_ftfy_available() and not hasattr(pipeline_wan_i2v, "ftfy"):
        pipeline_wan_i2v.ftfy = type("NoFtfy", (), {"fix_text": staticmethod(lambda text: text)})


_text_cleaning_without_ftfy()


def seacache_noisy_latents(module, args, kwargs) -> list[torch.Tensor]:
    """SeaCache's raw vision for an I2V call: the noisy latents only, one (C, F, H, W) per sample. Wan 2.1 I2V
    appends the mask and image-latent channels after them (in_channels 36 > out_channels 16): the first
    ``out_channels`` are the latents the sampler updates."""
    return list(kwargs["hidden_states"][:, :module.config.out_channels].unbind(0))


# SeaCache: diffusers detects only Wan text-to-video (in_channels == out_channels) and WanImageToVideoPipeline
# passes no sigma through cache_context, so both come from the adapter.
SEACACHE = {"transformer_class": "WanTransformer3DModel", "raw_vision": seacache_noisy_latents,
            "sigma": seacache_flow_sigma}

def semcache_noisy_latents(transformer, hidden_states: torch.Tensor) -> torch.Tensor:
    """The noisy latents of an I2V call, the first ``out_channels`` (16 of Wan 2.1 I2V's 36: the mask and
    image-latent channels after them never change, and the output has 16): SemCache's Eq. 8 input I and TMM's
    frames, and the family's ``latents`` every policy sees."""
    return hidden_states[:, :transformer.config.out_channels]


def semcache_frames_i2v(transformer, kwargs: dict) -> tuple[torch.Tensor, int]:
    """TMM's frames of an I2V call: the noisy latents only, grouped as Wan's (the mask and image-latent channels
    are the same at every step and would dilute the motion between frames)."""
    noisy = semcache_noisy_latents(transformer, kwargs["hidden_states"])
    return semcache_frames(transformer, {**kwargs, "hidden_states": noisy})


SEMCACHE_I2V = {**SEMCACHE, "noisy_latents": semcache_noisy_latents, "frames": semcache_frames_i2v}

def sencache_conditioning(pipe, prompt: str, call_kwargs: dict, latents: torch.Tensor) -> dict:
    """SenCache calibration: the conditional call's text, Wan 2.1's CLIP image embedding and, as ``condition``,
    the [mask, image latents] channels WanImageToVideoPipeline appends to the latents (its ``prepare_latents`` on
    the image preprocessed at the run's size; the given latents draw no noise)."""
    device, dtype = latents.device, pipe.transformer.dtype
    cond = wan_sencache_conditioning(pipe, prompt, call_kwargs, latents)
    image, height, width = call_kwargs["image"], call_kwargs["height"], call_kwargs["width"]
    if pipe.transformer.config.image_dim is not None:
        cond["encoder_hidden_states_image"] = pipe.encode_image(image, device).to(dtype)
    pixels = pipe.video_processor.preprocess(image, height=height, width=width).to(device, dtype=torch.float32)
    _, condition = pipe.prepare_latents(pixels, 1, pipe.vae.config.z_dim, height, width, call_kwargs["num_frames"],
                                        torch.float32, device, None, latents)
    return {**cond, "condition": condition.to(dtype)}


SENCACHE = {**WAN.adapters["sencache"], "conditioning": sencache_conditioning}  # Wan's forced ends, VAE encode
# Wan 2.2 TI2V-5B with an image: its calls take a timestep per token (the image's frame at t = 0) on latents whose
# first frame is replaced by the image's, which SenCache's Jt(t) over one timestep does not model
SENCACHE_TI2V = {"forced_ends": WAN.adapters["sencache"]["forced_ends"],
                 "refused": "its image-to-video calls take a timestep per token (the image's frame at t = 0), which "
                            "the sensitivity profile's one timestep per call does not model; calibrate without "
                            "sampling.image (text-to-video, the same weights) or give a profile"}


def full_size_latent(arch: dict, height: int, width: int, frames: int) -> tuple[int, int, int, int]:
    """The sampler's latents (the VAE's z_dim channels), not the transformer's 36 input channels."""
    vae = arch["vae"]
    return (vae["config"]["z_dim"], (frames - 1) // vae["temporal_compression"] + 1,
            height // vae["spatial_compression"], width // vae["spatial_compression"])


def full_size_inputs(arch: dict, z, batch: int) -> dict:
    """The I2V transformer call: [latents, mask, image latents] channels, text and (Wan 2.1) the CLIP embedding
    (257 tokens of a ViT-H/14 at 224 px: 16 x 16 patches + class token)."""
    cfg = arch["transformer"]["config"]
    inputs = {"hidden_states": torch.empty(batch, cfg["in_channels"], z.frames, z.height, z.width, device="meta"),
              "timestep": torch.empty(batch, device="meta"),
              "encoder_hidden_states": torch.empty(batch, arch["text_tokens"], cfg["text_dim"], device="meta")}
    if cfg.get("image_dim"):
        inputs["encoder_hidden_states_image"] = torch.empty(batch, arch["image_tokens"], cfg["image_dim"],
                                                            device="meta")
    return inputs


WAN_I2V = dataclasses.replace(
    WAN, name="wan-i2v", pipeline_class="WanImageToVideoPipeline",
    adapters={"teacache": TEACACHE, "seacache": SEACACHE, "adacache": ADACACHE, "sencache": SENCACHE,
              "semcache": SEMCACHE_I2V, "latents": semcache_noisy_latents,
              "full_size": {"latent": full_size_latent, "transformer_inputs": full_size_inputs}})
WAN_TI2V_I2V = dataclasses.replace(WAN_I2V, name="wan-ti2v-i2v", spatial_multiple=WAN_TI2V.spatial_multiple,
                                   adapters={**WAN_I2V.adapters, "sencache": SENCACHE_TI2V})

# Wan2.1 generate.py (Wan-Video/Wan2.1): i2v-14B samples 40 steps, guide_scale 5.0, 81 frames at 16 fps, and
# sample_shift 3.0 at 832x480 (5.0 otherwise).
WAN21_I2V_14B_480P = ModelEntry(
    "wan2.1-i2v-14b-480p", WAN_I2V,
    SamplingDefaults(steps=40, height=480, width=832, frames=81, guidance_scale=5.0, shift=3.0, fps=16),
    repo_id="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", image="required",
    description="Wan 2.1 I2V 14B 480P (image-to-video; needs sampling.image)")

# Wan 2.2 TI2V-5B with an image: diffusers' documented image-to-video use loads the same weights into
# WanImageToVideoPipeline (expand_timesteps from model_index.json); sampling as text-to-video (wan_ti2v_5B.py).
WAN22_TI2V_5B_I2V = dataclasses.replace(WAN22_TI2V_5B, family=WAN_TI2V_I2V, image="required",
                                        description="Wan 2.2 TI2V 5B, image-to-video")


def _tiny_image_encoder(seed: int, image_size: int = 32):
    """A seeded tiny CLIP ViT and its processor (the real classes Wan 2.1 I2V loads)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    encoder = CLIPVisionModel(CLIPVisionConfig(hidden_size=8, intermediate_size=16, projection_dim=8,
                                               num_hidden_layers=2, num_attention_heads=2, image_size=image_size,
                                               patch_size=8))
    processor = CLIPImageProcessor(crop_size=image_size, size=image_size)
    return encoder, processor


def build_tiny_wan_i2v(seed: int = 0):
    """WanImageToVideoPipeline on tiny-wan's VAE and text encoder: a 36-channel transformer with image
    cross-attention projections (added_kv_proj_dim = its width) and a tiny CLIP vision encoder."""
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel

    base = build_tiny(seed)
    encoder, processor = _tiny_image_encoder(seed)
    torch.manual_seed(seed)
    cfg = base.transformer.config
    # without `_use_default_values` (the keys tiny-wan left at their defaults, image_dim among them): from_config
    # would restore those defaults over the values given here, and the CLIP image tokens would reach no layer
    kept = {k: v for k, v in cfg.items() if k != "_use_default_values"}
    transformer = WanTransformer3DModel.from_config({
        **kept, "in_channels": 16 + 4 + 16, "image_dim": encoder.config.hidden_size,
        "added_kv_proj_dim": cfg.num_attention_heads * cfg.attention_head_dim})
    return WanImageToVideoPipeline(tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=base.vae,
                                   scheduler=base.scheduler, transformer=transformer, image_encoder=encoder,
                                   image_processor=processor)


TINY_WAN_I2V = ModelEntry("tiny-wan-i2v", WAN_I2V, SamplingDefaults(steps=6, height=32, width=32, frames=9,
                                                                    guidance_scale=5.0, shift=3.0),
                          build=build_tiny_wan_i2v, call_kwargs={"max_sequence_length": 16}, image="required",
                          description="tiny random Wan 2.1 I2V layout: CLIP image encoder, 36-channel input (tests)")


def build_tiny_wan22_ti2v_i2v(seed: int = 0):
    """tiny-wan22-ti2v's components in WanImageToVideoPipeline(expand_timesteps=True), no image encoder: what
    diffusers builds from the TI2V-5B weights for image-to-video."""
    from diffusers import WanImageToVideoPipeline

    base = build_tiny_wan22_ti2v(seed)
    return WanImageToVideoPipeline(tokenizer=base.tokenizer, text_encoder=base.text_encoder, vae=base.vae,
                                   scheduler=base.scheduler, transformer=base.transformer, expand_timesteps=True)


TINY_WAN22_TI2V_I2V = ModelEntry("tiny-wan22-ti2v", WAN_TI2V_I2V,
                                 SamplingDefaults(steps=6, height=32, width=32, frames=9, guidance_scale=5.0,
                                                  shift=5.0),
                                 build=build_tiny_wan22_ti2v_i2v, call_kwargs={"max_sequence_length": 16},
                                 image="required", description="tiny random Wan 2.2 TI2V layout, image-to-video")
