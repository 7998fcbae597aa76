"""HunyuanVideo 1.5 image-to-video (diffusers ``HunyuanVideo15ImageToVideoPipeline``).

The transformer is the text-to-video one (task_type "i2v"): its input is [noisy latents, condition, mask] with the
image's VAE latents in frame 0 of the condition and a mask of ones on frame 0, and the SigLIP tokens of the image
(not zeros, so the transformer attends to them) beside the Qwen and ByT5 text. Separate cond / uncond calls per
step, as text-to-video.

Sources: diffusers' conversion script (scripts/convert_hunyuan_video1_5_to_diffusers.py: TRANSFORMER_CONFIGS
["480p_i2v"], the 480p_t2v one with task_type "i2v"; SCHEDULER_CONFIGS shift 5.0; GUIDANCE_CONFIGS 6.0), the
pipeline's docstring example (hub id, 50 steps, export at 24 fps) and its call (121 frames; the size is the
640-bucket closest to the image's aspect: 848x480 for a 16:9 image).

diffusers 0.42.1's call takes no height / width (it picks the bucket from the image), no ``guidance_scale``, no
``max_sequence_length`` and no ``callback_on_step_end``. :class:`BenchHunyuanVideo15ImageToVideoPipeline` takes
them: the spec's height and width (as every other model's) crop-resize the image as diffusers does to its bucket;
without them the bucket is diffusers'.
"""

from __future__ import annotations

import torch
from diffusers import HunyuanVideo15ImageToVideoPipeline

from .base import ModelEntry, SamplingDefaults
from .hunyuanvideo15 import (ADACACHE, FULL_SIZE, HUNYUANVIDEO15, SEACACHE, SEMCACHE, TEACACHE, HunyuanVideo15Family,
                             build_tiny, denoise, full_size_inputs, noisy_latents, sencache_text)


class BenchHunyuanVideo15ImageToVideoPipeline(HunyuanVideo15ImageToVideoPipeline):
    """``HunyuanVideo15ImageToVideoPipeline`` whose call also takes ``height`` / ``width``, ``guidance_scale``,
    ``max_sequence_length`` and ``callback_on_step_end``; its loop is the text-to-video one (:func:`denoise`) with
    the image's condition latents, mask and SigLIP tokens."""

    @torch.no_grad()
    def __call__(self, image=None, prompt=None, negative_prompt=None, height: int | None = None,
                 width: int | None = None, num_frames: int = 121, num_inference_steps: int = 50,
                 guidance_scale: float | None = None, max_sequence_length: int | None = None, generator=None,
                 latents=None, output_type: str = "np", return_dict: bool = True, attention_kwargs=None,
                 callback_on_step_end=None, callback_on_step_end_tensor_inputs=("latents",)):
        if image is None:
            raise ValueError("BenchHunyuanVideo15ImageToVideoPipeline needs `image` (the first frame)")
        if height is None or width is None:
            height, width = self.video_processor.calculate_default_height_width(
                height=image.size[1], width=image.size[0], target_size=self.target_size)

        def image_to_video(latents, dtype, device):
            return self.image_condition(image, latents, height, width)

        return denoise(self, prompt, negative_prompt, height, width, num_frames, num_inference_steps,
                       guidance_scale, max_sequence_length, generator, latents, output_type, return_dict,
                       attention_kwargs, callback_on_step_end, callback_on_step_end_tensor_inputs, image_to_video,
                       meanflow=True)

    def image_condition(self, image, latents: torch.Tensor, height: int, width: int):
        """(condition latents, mask, SigLIP tokens) of ``image`` for ``latents``, as diffusers' call makes them: the
        image crop-resized to height x width, its VAE latents in frame 0 of the condition, a mask of ones on frame
        0, its SigLIP tokens."""
        dtype, device = self.transformer.dtype, latents.device
        image = self.video_processor.resize(image, height=height, width=width, resize_mode="crop")
        tokens = self.encode_image(image=image, batch_size=1, device=device, dtype=dtype)
        condition, mask = self.prepare_cond_latents_and_mask(latents, image, 1, height, width, dtype, device)
        return condition, mask, tokens


def sencache_conditioning(pipe, prompt: str, call_kwargs: dict, latents: torch.Tensor) -> dict:
    """SenCache calibration: the conditional call's text, the image's SigLIP tokens and, as ``condition``, its
    condition latents and mask (:meth:`BenchHunyuanVideo15ImageToVideoPipeline.image_condition` at the run's size)."""
    condition, mask, tokens = pipe.image_condition(call_kwargs["image"], latents, call_kwargs["height"],
                                                   call_kwargs["width"])
    return {**sencache_text(pipe, prompt, call_kwargs, latents.device), "image_embeds": tokens,
            "condition": torch.cat([condition, mask], dim=1)}


class HunyuanVideo15I2VFamily(HunyuanVideo15Family):
    """Loads :class:`BenchHunyuanVideo15ImageToVideoPipeline` (a saved ``HunyuanVideo15ImageToVideoPipeline``
    directory loads into it)."""

    def pipeline_cls(self):
        return BenchHunyuanVideo15ImageToVideoPipeline


def full_size_inputs_i2v(arch: dict, z, batch: int) -> dict:
    """Text-to-video's call with the SigLIP tokens attended (a mask of ones, as diffusers' forward sets for
    non-zero image tokens)."""
    inputs = full_size_inputs(arch, z, batch)
    inputs["image_attention_mask"] = torch.ones(batch, arch["image_tokens"], device="meta")
    return inputs


SENCACHE = {**HUNYUANVIDEO15.adapters["sencache"], "conditioning": sencache_conditioning}

HUNYUANVIDEO15_I2V = HunyuanVideo15I2VFamily(
    name="hunyuanvideo15-i2v", pipeline_class="HunyuanVideo15ImageToVideoPipeline", cfg_layout="separate",
    block_stacks=HUNYUANVIDEO15.block_stacks, spatial_multiple=HUNYUANVIDEO15.spatial_multiple,
    temporal_multiple=HUNYUANVIDEO15.temporal_multiple,
    adapters={"teacache": TEACACHE, "seacache": SEACACHE, "sencache": SENCACHE, "adacache": ADACACHE,
              "semcache": SEMCACHE, "latents": noisy_latents,
              "full_size": {**FULL_SIZE, "transformer_inputs": full_size_inputs_i2v}})

HUNYUANVIDEO15_480P_I2V = ModelEntry(
    "hunyuanvideo-1.5-i2v", HUNYUANVIDEO15_I2V,
    SamplingDefaults(steps=50, height=480, width=848, frames=121, guidance_scale=6.0, shift=5.0, fps=24),
    repo_id="hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_i2v", image="required",
    description="HunyuanVideo 1.5 (8.3B) 480p image-to-video (needs sampling.image)")


def build_tiny_i2v(seed: int = 0):
    """tiny-hunyuanvideo15's components with its transformer as task_type "i2v" and a seeded 1-layer SigLIP vision
    encoder as wide as the transformer's image_embed_dim (16 tokens of a 32-pixel image, patch 8)."""
    from transformers import SiglipImageProcessorPil, SiglipVisionConfig, SiglipVisionModel

    base = build_tiny(seed)
    config = {k: v for k, v in base.transformer.config.items() if not k.startswith("_")}  # _use_default_values would
    transformer = type(base.transformer).from_config({**config, "task_type": "i2v"})    # restore the defaults
    transformer.load_state_dict(base.transformer.state_dict())
    torch.manual_seed(seed)
    encoder = SiglipVisionModel(SiglipVisionConfig(
        hidden_size=base.transformer.config.image_embed_dim, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=2, image_size=32, patch_size=8))
    pipe = BenchHunyuanVideo15ImageToVideoPipeline(
        text_encoder=base.text_encoder, tokenizer=base.tokenizer, transformer=transformer, vae=base.vae,
        scheduler=base.scheduler, text_encoder_2=base.text_encoder_2, tokenizer_2=base.tokenizer_2,
        guider=base.guider, image_encoder=encoder,
        feature_extractor=SiglipImageProcessorPil(size={"height": 32, "width": 32}))  # no torchvision here
    pipe.tokenizer_max_length, pipe.tokenizer_2_max_length = base.tokenizer_max_length, base.tokenizer_2_max_length
    pipe.prompt_template_encode_start_idx = base.prompt_template_encode_start_idx
    return pipe


TINY_HUNYUANVIDEO15_I2V = ModelEntry(
    "tiny-hunyuanvideo15-i2v", HUNYUANVIDEO15_I2V,
    SamplingDefaults(steps=6, height=32, width=32, frames=9, guidance_scale=6.0, shift=5.0),
    build=build_tiny_i2v, call_kwargs={"max_sequence_length": 16}, image="required",
    description="tiny random HunyuanVideo15ImageToVideoPipeline: SigLIP image encoder (tests)")
