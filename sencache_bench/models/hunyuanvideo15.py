"""HunyuanVideo 1.5 text-to-video (diffusers ``HunyuanVideo15Pipeline``): separate cond / uncond calls per step.

Sources: the official repository (Tencent-Hunyuan/HunyuanVideo-1.5, README "Optimal Inference Configurations":
480p T2V: CFG 6, flow shift 5, 50 steps; ``--video_length`` default 121 frames, aspect 16:9) and diffusers'
conversion script (scripts/convert_hunyuan_video1_5_to_diffusers.py: TRANSFORMER_CONFIGS["480p_t2v"],
SCHEDULER_CONFIGS shift 5.0, GUIDANCE_CONFIGS 6.0, the VAE with its class defaults, Qwen2.5-VL-7B-Instruct's
language model and google/byt5-small as text encoders). 480p 16:9 is 848x480: the pipeline's own default
(``calculate_default_height_width(9, 16, target_size=640)``, 16-pixel buckets). fps 24: the official README's
diffusers example exports at 24 fps (diffusers' docstring example says 15: not confirmed either way).

diffusers 0.42.1's ``__call__`` takes no ``guidance_scale`` (its ``guider`` component holds it), no
``max_sequence_length`` and no ``callback_on_step_end``, and names its CFG ``cache_context`` branches after the
guider's predictions (``pred_cond`` / ``pred_uncond``). :class:`BenchHunyuanVideo15Pipeline` is the same
pipeline with those three arguments and the branches named ``cond`` / ``uncond`` as every other separate-CFG
family names them (per-branch NFE, call order and the leader branch of EasyCache read those names).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from diffusers import HunyuanVideo15Pipeline, HunyuanVideo15Transformer3DModel
from diffusers.pipelines.hunyuan_video1_5.pipeline_hunyuan_video1_5 import (HunyuanVideo15PipelineOutput,
                                                                            retrieve_timesteps)

from .base import Family, ModelEntry, SamplingDefaults, seacache_flow_sigma

def _register_block() -> None:
    """diffusers 0.42.1 registers no HunyuanVideo15TransformerBlock with its block registry (what its cache hooks and
    ours read to find a block's outputs): it returns (hidden_states, encoder_hidden_states), as HunyuanVideo's."""
    from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
    from diffusers.models.transformers.transformer_hunyuan_video15 import HunyuanVideo15TransformerBlock

    TransformerBlockRegistry._register()
    if HunyuanVideo15TransformerBlock not in TransformerBlockRegistry._registry:
        TransformerBlockRegistry.register(HunyuanVideo15TransformerBlock, TransformerBlockMetadata(
            return_hidden_states_index=0, return_encoder_hidden_states_index=1))


_register_block()

#: the guider's prediction names -> the harness's branch names
BRANCH_NAMES = {"pred_cond": "cond", "pred_uncond": "uncond"}


def denoise(pipe, prompt, negative_prompt, height: int, width: int, num_frames: int, num_inference_steps: int,
            guidance_scale: float | None, max_sequence_length: int | None, generator, latents, output_type: str,
            return_dict: bool, attention_kwargs, callback_on_step_end, callback_on_step_end_tensor_inputs,
            condition, meanflow: bool = False):
    """The loop of diffusers' HunyuanVideo 1.5 pipelines (encode, the guider's per-step batches, ``scheduler.step``,
    decode) with a per-call guidance scale, Qwen prompt length and step callback, and the CFG branches named
    cond / uncond. ``condition(latents, dtype, device)`` gives the call's (condition latents, mask, image tokens):
    zeros for text-to-video, the image's for image-to-video. ``meanflow``: pass ``timestep_r`` (the next timestep)
    as the image-to-video pipeline does for a MeanFlow transformer; the text-to-video one never does."""
    if not isinstance(prompt, str):
        raise ValueError(f"{type(pipe).__name__} generates one prompt per call")
    guider = copy.deepcopy(pipe.guider)  # a fresh per-call state (``new()`` would log diffusers' warning each call)
    if guidance_scale is not None:
        guider.guidance_scale = guidance_scale
    pipe._attention_kwargs, pipe._interrupt = attention_kwargs, False
    device, dtype = pipe._execution_device, pipe.transformer.dtype
    qwen_length = pipe.tokenizer_max_length
    if max_sequence_length is not None:
        pipe.tokenizer_max_length = max_sequence_length
    try:
        cond = pipe.encode_prompt(prompt=prompt, device=device, dtype=dtype)
        uncond = (None,) * 4
        if guider._enabled and guider.num_conditions > 1:
            uncond = pipe.encode_prompt(prompt=negative_prompt, device=device, dtype=dtype)
    finally:
        pipe.tokenizer_max_length = qwen_length
    names = ("encoder_hidden_states", "encoder_attention_mask", "encoder_hidden_states_2",
             "encoder_attention_mask_2")
    text = {name: pair for name, pair in zip(names, zip(cond, uncond))}

    sigmas = np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1]
    timesteps, num_inference_steps = retrieve_timesteps(pipe.scheduler, num_inference_steps, device, sigmas=sigmas)
    latents = pipe.prepare_latents(1, pipe.num_channels_latents, height, width, num_frames, dtype, device,
                                   generator, latents)
    cond_latents, mask, image_embeds = condition(latents, dtype, device)
    pipe._num_timesteps = len(timesteps)
    for i, t in enumerate(timesteps):
        pipe._current_timestep = t
        model_input = torch.cat([latents, cond_latents, mask], dim=1)
        timestep = t.expand(model_input.shape[0]).to(model_input.dtype)
        extra = {}
        if meanflow and pipe.transformer.config.use_meanflow:
            t_r = timesteps[i + 1] if i + 1 < len(timesteps) else torch.tensor([0.0], device=device)
            extra["timestep_r"] = t_r.expand(latents.shape[0]).to(latents.dtype)
        guider.set_state(step=i, num_inference_steps=num_inference_steps, timestep=t)
        batches = guider.prepare_inputs(text)
        for batch in batches:
            guider.prepare_models(pipe.transformer)
            branch = getattr(batch, guider._identifier_key)
            with pipe.transformer.cache_context(BRANCH_NAMES.get(branch, branch)):
                batch.noise_pred = pipe.transformer(
                    hidden_states=model_input, image_embeds=image_embeds, timestep=timestep,
                    attention_kwargs=attention_kwargs, return_dict=False, **extra,
                    **{name: getattr(batch, name) for name in names})[0]
            guider.cleanup_models(pipe.transformer)
        latents = pipe.scheduler.step(guider(batches)[0], t, latents, return_dict=False)[0]
        if callback_on_step_end is not None:
            values = {"latents": latents}
            out = callback_on_step_end(pipe, i, t, {k: values[k] for k in callback_on_step_end_tensor_inputs})
            latents = out.pop("latents", latents)
    pipe._current_timestep = None
    if output_type == "latent":
        video = latents
    else:
        decoded = pipe.vae.decode(latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor, return_dict=False)[0]
        video = pipe.video_processor.postprocess_video(decoded, output_type=output_type)
    pipe.maybe_free_model_hooks()
    return HunyuanVideo15PipelineOutput(frames=video) if return_dict else (video,)


class BenchHunyuanVideo15Pipeline(HunyuanVideo15Pipeline):
    """``HunyuanVideo15Pipeline`` whose call also takes ``guidance_scale`` (a copy of the guider with that scale),
    ``max_sequence_length`` (the Qwen prompt length) and ``callback_on_step_end``; its loop is the parent's
    (:func:`denoise`) with the branches named cond / uncond."""

    @torch.no_grad()
    def __call__(self, prompt=None, negative_prompt=None, height: int | None = None, width: int | None = None,
                 num_frames: int = 121, num_inference_steps: int = 50, guidance_scale: float | None = None,
                 max_sequence_length: int | None = None, generator=None, latents=None, output_type: str = "np",
                 return_dict: bool = True, attention_kwargs=None, callback_on_step_end=None,
                 callback_on_step_end_tensor_inputs=("latents",)):
        if height is None or width is None:
            height, width = self.video_processor.calculate_default_height_width(
                self.default_aspect_ratio[1], self.default_aspect_ratio[0], self.target_size)

        def text_to_video(latents, dtype, device):
            condition, mask = self.prepare_cond_latents_and_mask(latents, dtype, device)  # zeros
            image = torch.zeros(1, self.vision_num_semantic_tokens, self.vision_states_dim, dtype=dtype,
                                device=device)
            return condition, mask, image

        return denoise(self, prompt, negative_prompt, height, width, num_frames, num_inference_steps,
                       guidance_scale, max_sequence_length, generator, latents, output_type, return_dict,
                       attention_kwargs, callback_on_step_end, callback_on_step_end_tensor_inputs, text_to_video)


class HunyuanVideo15Family(Family):
    """Loads :class:`BenchHunyuanVideo15Pipeline` (a saved ``HunyuanVideo15Pipeline`` directory loads into it) and
    counts branches as diffusers' ClassifierFreeGuidance does: one call per step when the scale is 1."""

    def pipeline_cls(self):
        return BenchHunyuanVideo15Pipeline

    def branches(self, guidance_scale: float) -> tuple[str, ...]:
        return ("cond",) if math.isclose(guidance_scale, 1.0) else ("cond", "uncond")


# -- TeaCache: no published HunyuanVideo 1.5 coefficients here (give coefficients and thresh, or calibrate). The
# indicator is HunyuanVideo's (TeaCache4HunyuanVideo): the first dual-stream block's modulated video input
# norm1(x, temb); the official repository's own TeaCache option was not read: that it uses the same indicator is
# not confirmed.
def teacache_modulated_input(transformer, inputs: dict, call) -> torch.Tensor:
    return transformer.transformer_blocks[0].norm1(inputs["hidden_states"], emb=inputs["temb"])[0]


TEACACHE = {"transformer_class": "HunyuanVideo15Transformer3DModel", "indicators": {
    "modulated": {"fn": teacache_modulated_input, "warmup": 1, "force_last": True},
}}


def seacache_noisy_latents(module, args, kwargs) -> list[torch.Tensor]:
    """SeaCache's raw vision: the noisy latents only (the first ``out_channels`` of [latents, condition, mask])."""
    return list(kwargs["hidden_states"][:, :module.config.out_channels].unbind(0))


def noisy_latents(transformer, hidden_states: torch.Tensor) -> torch.Tensor:
    """The sampler's latents in a call's input: the first ``out_channels`` of [latents, condition, mask] (the
    policies' ``CallInfo.latent`` and EasyCache's y - x read them; the condition and mask never change)."""
    return hidden_states[:, :transformer.config.out_channels]


SEACACHE = {"transformer_class": "HunyuanVideo15Transformer3DModel", "raw_vision": seacache_noisy_latents,
            "sigma": seacache_flow_sigma}  # flow matching; the pipeline passes no sigma through cache_context

def sencache_text(pipe, prompt: str, call_kwargs: dict, device) -> dict:
    """The conditional call's text: Qwen and ByT5 embeddings with their masks, the Qwen prompt cut to
    ``max_sequence_length`` as :func:`denoise` cuts it."""
    length = pipe.tokenizer_max_length
    if call_kwargs.get("max_sequence_length") is not None:
        pipe.tokenizer_max_length = call_kwargs["max_sequence_length"]
    try:
        text, mask, text_2, mask_2 = pipe.encode_prompt(prompt=prompt, device=device, dtype=pipe.transformer.dtype)
    finally:
        pipe.tokenizer_max_length = length
    return {"encoder_hidden_states": text, "encoder_attention_mask": mask, "encoder_hidden_states_2": text_2,
            "encoder_attention_mask_2": mask_2}


def sencache_conditioning(pipe, prompt: str, call_kwargs: dict, latents: torch.Tensor) -> dict:
    """SenCache calibration: the conditional call's text, the zero SigLIP tokens of text-to-video and, as
    ``condition``, the zero condition and mask channels the pipeline appends to the latents."""
    dtype, device = pipe.transformer.dtype, latents.device
    image = torch.zeros(1, pipe.vision_num_semantic_tokens, pipe.vision_states_dim, dtype=dtype, device=device)
    condition = torch.cat(pipe.prepare_cond_latents_and_mask(latents, dtype, device), dim=1)
    return {**sencache_text(pipe, prompt, call_kwargs, device), "image_embeds": image, "condition": condition}


def sencache_encode_video(pipe, video: torch.Tensor, call_kwargs: dict) -> torch.Tensor:
    """SenCache calibration on videos: (1, 3, F, H, W) in [-1, 1] -> the latents the sampler holds (the pipeline
    decodes ``latents / scaling_factor``)."""
    return pipe.vae.encode(video).latent_dist.mode() * pipe.vae.config.scaling_factor


SENCACHE = {"conditioning": sencache_conditioning, "encode_video": sencache_encode_video}
# SemCache (shared ALGORITHMS.md, "SemCache"): every HunyuanVideo 1.5 block is dual-stream, mixing text by joint
# attention (``transformer_blocks[i].attn``): Z_in = the video tokens entering it (``norm1(x, temb)``), Z_out = its
# video output (first return value, before the gate), as HunyuanVideo's mapping. TMM: tokens are frame-major
# (B, F'*H'*W', C) (patch 1 x 1 x 1 at 480p); the blocks receive the RoPE table ``freqs_cis`` (cos, sin), each
# (N, D), sliced to the kept tokens; their attention mask is the text's only (the processor pads it for the video
# tokens, so a shorter video sequence needs no change). Motion scores and Eq. 8 read the noisy latents only.
# No published (alpha, beta) for HunyuanVideo 1.5: give them.
def semcache_text_attention(transformer) -> list:
    """The text-mixing attention layers, in depth order: the joint attention of every block."""
    return [block.attn for block in transformer.transformer_blocks]


def semcache_frames(transformer, kwargs: dict) -> tuple[torch.Tensor, int]:
    """(the noisy latents grouped per post-patch frame (B, F', D), tokens per post-patch frame) of one call."""
    latent = noisy_latents(transformer, kwargs["hidden_states"])  # (B, C, F, H, W)
    p, p_t = transformer.config.patch_size, transformer.config.patch_size_t
    frames = latent.unflatten(2, (latent.shape[2] // p_t, p_t)).transpose(1, 2).flatten(2)
    return frames, (latent.shape[3] // p) * (latent.shape[4] // p)


def semcache_select(arguments: dict, selection) -> None:
    """Kept tokens only: slice the RoPE table (the text-only attention mask stays)."""
    if arguments.get("freqs_cis") is not None:
        arguments["freqs_cis"] = tuple(selection.take(f, 0) for f in arguments["freqs_cis"])


SEMCACHE = {"transformer_class": "HunyuanVideo15Transformer3DModel", "text_attention": semcache_text_attention,
            "frames": semcache_frames, "select": semcache_select, "noisy_latents": noisy_latents,
            "mapping": "joint attention of every block: Z_in = its video input (norm1(x, temb)), Z_out = its video "
                       "output"}

# AdaCache (arXiv 2411.02397): a dual-stream block splits where each stream has its joint-attention residual added:
# norm2 (the video tokens) and norm2_context (the text's) take them (the rest: each stream's FF); the measured block
# at Open-Sora's relative depth 13/28 (ours), its video stream.
ADACACHE = {"transformer_class": "HunyuanVideo15Transformer3DModel",
            "split": lambda block: (block.norm2, block.norm2_context),
            "block": lambda count: 13 * count // 28, "frame_tokens": lambda t, kwargs: semcache_frames(t, kwargs)[1]}


# -- Full-size FLOPs (measure/full_size.py) ------------------------------------------------------------------------
class HunyuanVideo15FlopModel(HunyuanVideo15Transformer3DModel):
    """The transformer for meta-device counting: diffusers' forward reorders the text tokens by their mask
    (valid first) and tests ``image_embeds == 0``, both data-dependent, so not runnable on meta. This forward runs
    the same modules on the same shapes without the reordering (a permutation of the text tokens with their mask:
    no FLOPs, and attention over masked keys is unchanged by it). tests/models/test_hunyuanvideo15.py checks the
    count and the output against diffusers' forward on real tensors."""

    def forward(self, hidden_states, timestep, encoder_hidden_states, encoder_attention_mask,
                encoder_hidden_states_2, encoder_attention_mask_2, image_embeds, image_attention_mask=None,
                return_dict: bool = False):
        rope = self.rope(hidden_states)
        temb = self.time_embed(timestep)
        x = self.x_embedder(hidden_states)
        parts = [self.image_embedder(image_embeds), self.context_embedder_2(encoder_hidden_states_2),
                 self.context_embedder(encoder_hidden_states, timestep, encoder_attention_mask)]
        if image_attention_mask is None:  # text-to-video: the image tokens are masked out
            image_attention_mask = torch.zeros(image_embeds.shape[:2], device=image_embeds.device)
        kinds = torch.cat([torch.full(p.shape[:2], k, dtype=torch.long, device=p.device)
                           for k, p in zip((2, 1, 0), parts)], dim=1)
        context = torch.cat(parts, dim=1) + self.cond_type_embed(kinds)
        mask = torch.cat([image_attention_mask, encoder_attention_mask_2, encoder_attention_mask], dim=1).bool()
        for block in self.transformer_blocks:
            x, context = block(x, context, temb, mask, rope)
        x = self.proj_out(self.norm_out(x, temb))
        b, _, f, h, w = hidden_states.shape
        p, p_t = self.config.patch_size, self.config.patch_size_t
        x = x.reshape(b, f // p_t, h // p, w // p, -1, p_t, p, p).permute(0, 4, 1, 5, 2, 6, 3, 7)
        x = x.flatten(6, 7).flatten(4, 5).flatten(2, 3)
        return (x,)


def full_size_latent(arch: dict, height: int, width: int, frames: int) -> tuple[int, int, int, int]:
    """The sampler's latents (the VAE's channels), not the transformer's 2C + 1 input channels."""
    vae = arch["vae"]
    return (vae["config"]["latent_channels"], (frames - 1) // vae["temporal_compression"] + 1,
            height // vae["spatial_compression"], width // vae["spatial_compression"])


def full_size_inputs(arch: dict, z, batch: int) -> dict:
    """One call: [latents, condition, mask] channels, the Qwen tokens after the template crop, ByT5's padded
    glyph tokens and the (zero, masked) SigLIP image tokens, as the pipeline passes them."""
    cfg = arch["transformer"]["config"]

    def meta(*shape):
        return torch.empty(*shape, device="meta")

    return {"hidden_states": meta(batch, cfg["in_channels"], z.frames, z.height, z.width),
            "timestep": meta(batch), "encoder_hidden_states": meta(batch, arch["text_tokens"], cfg["text_embed_dim"]),
            "encoder_attention_mask": meta(batch, arch["text_tokens"]),
            "encoder_hidden_states_2": meta(batch, arch["glyph_tokens"], cfg["text_embed_2_dim"]),
            "encoder_attention_mask_2": meta(batch, arch["glyph_tokens"]),
            "image_embeds": meta(batch, arch["image_tokens"], cfg["image_embed_dim"])}


FULL_SIZE = {"classes": {"HunyuanVideo15FlopModel": lambda: HunyuanVideo15FlopModel},
             "latent": full_size_latent, "transformer_inputs": full_size_inputs}


HUNYUANVIDEO15 = HunyuanVideo15Family(
    name="hunyuanvideo15", pipeline_class="HunyuanVideo15Pipeline", cfg_layout="separate",
    block_stacks=("transformer_blocks",), spatial_multiple=16, temporal_multiple=4,
    adapters={"teacache": TEACACHE, "seacache": SEACACHE, "sencache": SENCACHE, "adacache": ADACACHE,
              "semcache": SEMCACHE, "latents": noisy_latents, "full_size": FULL_SIZE})

HUNYUANVIDEO15_480P_T2V = ModelEntry(
    "hunyuanvideo-1.5", HUNYUANVIDEO15,
    SamplingDefaults(steps=50, height=480, width=848, frames=121, guidance_scale=6.0, shift=5.0, fps=24),
    repo_id="hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v",
    description="HunyuanVideo 1.5 (8.3B) 480p text-to-video")


# -- the tiny seeded variant ---------------------------------------------------------------------------------------
_CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")  # Qwen2.5's ChatML layout


def qwen_tokenizer():
    """Byte-level BPE Qwen2Tokenizer without merges (every byte a token) and Qwen's ChatML chat template."""
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        vocab[special] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], padding_side="right")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = _CHAT_TEMPLATE
    return tok


def template_prefix_tokens(pipe) -> int:
    """The pipeline's ``prompt_template_encode_start_idx`` for this tokenizer: the tokens of the chat template
    before the user's text (108 for Qwen2.5-VL's tokenizer and the official system message)."""
    marker = "\x00"
    text = pipe.tokenizer.apply_chat_template(
        [{"role": "system", "content": pipe.system_message}, {"role": "user", "content": marker}],
        add_generation_prompt=True, tokenize=False)
    return len(pipe.tokenizer(text[:text.index(marker)], add_special_tokens=False).input_ids)


def build_tiny(seed: int = 0):
    """The real classes at test size: 2 dual-stream blocks, a 2-level VAE (4x spatial, 2x temporal), a 2-layer
    Qwen2.5-VL text model (mrope sections [1, 1, 2] of head dim 8), a 1-layer ByT5-style T5 encoder, seeded."""
    from diffusers import AutoencoderKLHunyuanVideo15, ClassifierFreeGuidance, FlowMatchEulerDiscreteScheduler
    from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, T5Config, T5EncoderModel

    tokenizer, tokenizer_2 = qwen_tokenizer(), ByT5Tokenizer()
    torch.manual_seed(seed)
    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=4 * 2 + 1, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        num_refiner_layers=1, mlp_ratio=2.0, patch_size=1, patch_size_t=1, text_embed_dim=16, text_embed_2_dim=8,
        image_embed_dim=12, rope_axes_dim=(2, 2, 4), target_size=32, task_type="t2v")
    torch.manual_seed(seed)
    vae = AutoencoderKLHunyuanVideo15(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 16),
                                      layers_per_block=1, spatial_compression_ratio=4, temporal_compression_ratio=2,
                                      downsample_match_channel=False, upsample_match_channel=False)
    torch.manual_seed(seed)
    text_encoder = Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=16, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=2, rope_theta=1000000.0,  # the pipeline reads hidden_states[-3]
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        rope_scaling={"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"}))
    torch.manual_seed(seed)
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_2), d_model=8, d_kv=4, d_ff=16, num_layers=1,
                                             num_heads=2, relative_attention_num_buckets=8, pad_token_id=0,
                                             eos_token_id=1, decoder_start_token_id=0))
    pipe = BenchHunyuanVideo15Pipeline(
        text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2, guider=ClassifierFreeGuidance(guidance_scale=6.0))
    # instance settings of the pipeline (not config): a short Qwen prompt, the template crop this tokenizer needs,
    # 8 ByT5 glyph tokens and 4 image tokens instead of 1000, 256 and 729
    pipe.tokenizer_max_length, pipe.tokenizer_2_max_length, pipe.vision_num_semantic_tokens = 16, 8, 4
    pipe.prompt_template_encode_start_idx = template_prefix_tokens(pipe)
    return pipe


TINY_HUNYUANVIDEO15 = ModelEntry(
    "tiny-hunyuanvideo15", HUNYUANVIDEO15,
    SamplingDefaults(steps=6, height=32, width=32, frames=9, guidance_scale=6.0, shift=5.0),
    build=build_tiny, call_kwargs={"max_sequence_length": 16},
    description="tiny random HunyuanVideo15Pipeline (tests)")
