"""Open-Sora 1.2 (OpenSoraPipeline): one batched [cond, uncond] transformer call per step ("cond_uncond").

The family's model knowledge: how to load the pipeline (not a diffusers class), the block stack
(``transformer_blocks``: spatial and temporal blocks alternating), and the per-policy adapters.
"""

from __future__ import annotations

import torch

from ..base import Family, ModelEntry, SamplingDefaults, seacache_channels_first, seacache_flow_sigma
from ..tokenizers import _WORDS, t5_tokenizer

TRANSFORMER_CLASS = "OpenSoraSTDiT3Transformer"


class OpenSoraFamily(Family):
    """A family whose pipeline class lives in this package, not in diffusers."""

    def pipeline_cls(self):
        from .pipeline import OpenSoraPipeline

        return OpenSoraPipeline


# -- TeaCache (ali-vilab/TeaCache, TeaCache4Open-Sora1.2 stdit3 forward): the indicator is spatial block 0's
# modulated input norm1(x) * (1 + scale_msa) + shift_msa on the batched call; first and last step computed.
def teacache_modulated_input(transformer, inputs: dict, call) -> torch.Tensor:
    block = transformer.transformer_blocks[0]
    hidden, temb = inputs["hidden_states"], inputs["temb"]
    shift, scale = (block.scale_shift_table[None] + temb.reshape(hidden.shape[0], 6, -1))[:, :2].chunk(2, dim=1)
    return block.norm1(hidden) * (1 + scale) + shift


TEACACHE = {"transformer_class": TRANSFORMER_CLASS, "indicators": {
    "modulated": {"fn": teacache_modulated_input, "warmup": 1, "force_last": True},
}}


# -- SenCache calibration ---------------------------------------------------------------------------
def sencache_conditioning(pipe, prompt: str, call_kwargs: dict, latents: torch.Tensor) -> dict:
    """The conditional half of the batched call: T5 features with the aesthetic suffix, mask, fps, pixel size."""
    embeds, mask = pipe.encode_prompt(prompt, call_kwargs.get("max_sequence_length", 300), device=latents.device)
    return {"encoder_hidden_states": embeds.to(pipe.transformer.dtype), "encoder_attention_mask": mask,
            "fps": call_kwargs.get("fps", 24), "height": call_kwargs["height"], "width": call_kwargs["width"]}


def sencache_encode_video(pipe, video: torch.Tensor, call_kwargs: dict) -> torch.Tensor:
    """Video (1, 3, F, H, W) in [-1, 1] -> normalised latents (posterior means)."""
    return pipe.vae.encode_latents(video)


def sencache_step(scheduler, model_output, timestep, sample, index: int) -> torch.Tensor:
    """The sampler's step takes the velocity: the first in_channels of the 8 output channels (pred_sigma)."""
    from ...calibration.sencache import scheduler_step

    return scheduler_step(scheduler, model_output[:, :sample.shape[1]], timestep, sample, index)


# Jx, Jt are measured on the transformer's whole output (the calibration's denoiser), which here includes the 4
# unused sigma channels; the step uses the velocity channels only.
SENCACHE = {"conditioning": sencache_conditioning, "encode_video": sencache_encode_video, "step": sencache_step}


# -- SemCache (shared ALGORITHMS.md, "SemCache"; 12 cross-attention layers and (alpha, beta) = (0.2, 0.8) are the
# paper's Open-Sora setting): the text-mixing layers are the cross-attentions ``attn2`` of every block, spatial and
# temporal (Z_in = the block's video tokens after self-attention, Z_out = the cross-attention output). TMM: tokens
# are frame-major (B, T*S, D); the blocks receive the frame count and the temporal RoPE table (cos, sin), each
# (T, head_dim): a kept-frames call gets the kept count and the kept frames' rows (their own positions).
def semcache_text_attention(transformer) -> list:
    return [block.attn2 for block in transformer.transformer_blocks]


def semcache_frames(transformer, kwargs: dict) -> tuple[torch.Tensor, int]:
    latent = kwargs["hidden_states"]  # (B, C, T, H, W)
    t, h, w = transformer.grid(*latent.shape[2:])
    p_t = transformer.config.patch_size[0]
    if latent.shape[2] % p_t:
        latent = torch.nn.functional.pad(latent, (0, 0, 0, 0, 0, (-latent.shape[2]) % p_t))
    frames = latent.unflatten(2, (t, p_t)).transpose(1, 2).flatten(2)
    return frames, h * w


def semcache_select(arguments: dict, selection) -> None:
    """Kept frames only: the frame count and the RoPE rows of the kept frames (the kept tokens are whole frames)."""
    total_frames = arguments["num_frames"]
    per_frame = selection.n_video // total_frames
    keep = selection.keep
    frames = torch.unique(keep // per_frame)
    if frames.numel() * per_frame != keep.numel():
        raise RuntimeError("Open-Sora's temporal attention needs whole frames: the kept tokens are not whole frames")
    arguments["num_frames"] = int(frames.numel())
    arguments["rotary_emb"] = tuple(f.index_select(0, frames.to(f.device)) for f in arguments["rotary_emb"])


SEMCACHE = {"transformer_class": TRANSFORMER_CLASS, "preset": {"alpha": 0.2, "beta": 0.8},
            "text_attention": semcache_text_attention, "frames": semcache_frames, "select": semcache_select,
            "mapping": "cross-attention attn2 of every spatial and temporal block: Z_in = its input (video tokens), "
                       "Z_out = its output"}

# -- AdaCache (AdaCache-DiT/AdaCache, stdit3.py; configs/sample_adacache.py): the change rate is measured on the
# attention residual of temporal block 13 of 28 (cache_res 't-attn', cache_loc [13]); another depth takes the temporal
# block at the same relative depth (ours). A block splits at its cross-attention attn2, whose input is the tokens
# with the self-attention residual added (the official caches that residual, then cross-attention + MLP's).
def adacache_block(count: int) -> int:
    return 2 * (13 * (count // 2) // 28) + 1


def adacache_frame_tokens(transformer, kwargs: dict) -> int:
    _, h, w = transformer.grid(*kwargs["hidden_states"].shape[2:])
    return h * w


ADACACHE = {"transformer_class": TRANSFORMER_CLASS, "split": lambda block: block.attn2, "block": adacache_block,
            "frame_tokens": adacache_frame_tokens}


# -- PAB (Zhao et al., Open-Sora is one of its models): blocks alternate spatial (even index) and temporal (odd),
# so diffusers' default identifiers would take every self-attention for a spatial one; these tell them apart.
PAB = {"spatial_attention_block_identifiers": [r"transformer_blocks\.\d*[02468]\.attn1"],
       "temporal_attention_block_identifiers": [r"transformer_blocks\.\d*[13579]\.attn1"],
       "cross_attention_block_identifiers": [r"transformer_blocks\.\d+\.attn2"]}


# -- Full-size FLOPs (measure/full_size.py): the classes of architectures/opensora-1.2.json, the latent grid of the
# VAE's micro-frame chunks, and the transformer call the pipeline makes (all T5 tokens: no mask on meta).
def _transformer_class():
    from .transformer import OpenSoraSTDiT3Transformer

    return OpenSoraSTDiT3Transformer


def _vae_class():
    from .vae import OpenSoraVAE

    return OpenSoraVAE


def full_size_latent(arch: dict, height: int, width: int, frames: int) -> tuple[int, int, int, int]:
    from .vae import latent_frames

    vae, s = arch["vae"], arch["vae"]["spatial_compression"]
    return (arch["transformer"]["config"]["in_channels"],
            latent_frames(frames, vae["config"]["micro_frame_size"], vae["temporal_compression"]), height // s, width // s)


def full_size_inputs(arch: dict, z, batch: int) -> dict:
    cfg, s = arch["transformer"]["config"], arch["vae"]["spatial_compression"]

    def meta(*shape):
        return torch.empty(*shape, device="meta")

    return {"hidden_states": meta(batch, z.channels, z.frames, z.height, z.width), "timestep": meta(batch),
            "encoder_hidden_states": meta(batch, arch["text_tokens"], cfg["caption_channels"]),
            "fps": 24, "height": z.height * s, "width": z.width * s}


FULL_SIZE = {"classes": {TRANSFORMER_CLASS: _transformer_class, "OpenSoraVAE": _vae_class},
             "latent": full_size_latent, "transformer_inputs": full_size_inputs,
             "encodes_negative_prompt": False}  # CFG's unconditional caption is the learned null embedding


# SeaCache: (B, C, F, H, W) latents; rectified flow, sigma = t / 1000 (scheduler.py). The pipeline passes the step
# and step count through cache_context, not sigma
SEACACHE = {"transformer_class": TRANSFORMER_CLASS, "raw_vision": seacache_channels_first, "sigma": seacache_flow_sigma}


OPENSORA = OpenSoraFamily(name="opensora", pipeline_class="OpenSoraPipeline", cfg_layout="batched",
                          block_stacks=("transformer_blocks",), spatial_multiple=2, temporal_multiple=1,
                          adapters={"teacache": TEACACHE, "sencache": SENCACHE, "semcache": SEMCACHE, "pab": PAB,
                                    "seacache": SEACACHE,
                                    "adacache": ADACACHE, "full_size": FULL_SIZE})

# configs/opensora-v1-2/inference/sample.py at "480p", aspect "9:16": (H, W) = (480, 854), 51 frames, 30 steps,
# cfg 7.0, fps 24 (the aesthetic suffix is the pipeline's default).
OPENSORA_1_2 = ModelEntry(
    "opensora-1.2", OPENSORA,
    SamplingDefaults(steps=30, height=480, width=854, frames=51, guidance_scale=7.0, fps=24),
    repo_id="hpcai-tech/OpenSora-STDiT-v3", call_kwargs={"fps": 24},
    description="Open-Sora 1.2 (STDiT3-XL/2, 1.1B)")


def build_tiny(seed: int = 0):
    """OpenSoraPipeline with 2 + 2 tiny blocks, a tiny 2-D + temporal VAE and T5, seeded (tests, CPU)."""
    from transformers import T5Config, T5EncoderModel

    from .pipeline import OpenSoraPipeline
    from .scheduler import OpenSoraRFlowScheduler
    from .transformer import OpenSoraSTDiT3Transformer
    from .vae import OpenSoraVAE

    torch.manual_seed(seed)
    transformer = OpenSoraSTDiT3Transformer(in_channels=4, patch_size=(1, 2, 2), hidden_size=24, depth=2,
                                            num_heads=2, mlp_ratio=2.0, caption_channels=32, model_max_length=16)
    torch.manual_seed(seed)
    vae = OpenSoraVAE(
        spatial={"in_channels": 3, "out_channels": 3, "latent_channels": 4,
                 "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
                 "block_out_channels": [8, 8, 8, 8], "layers_per_block": 1, "norm_num_groups": 2},
        temporal={"channels": 4, "latent": 4, "filters": 4, "res_blocks": 1, "multipliers": [1, 1, 1, 2],
                  "downsample": [False, True, True], "groups": 2})
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(T5Config(
        vocab_size=256, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    # the words of the aesthetic suffix, so a short prompt with it fits the 16 tokens and the text mask matters
    tokenizer = t5_tokenizer(_WORDS + ["bouncing", "aesthetic", "score"])
    return OpenSoraPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae,
                            scheduler=OpenSoraRFlowScheduler())


# max_sequence_length must equal the transformer's model_max_length (the null caption's length).
TINY_OPENSORA = ModelEntry("tiny-opensora", OPENSORA,
                           SamplingDefaults(steps=6, height=32, width=32, frames=9, guidance_scale=7.0, fps=24),
                           build=build_tiny, call_kwargs={"max_sequence_length": 16, "fps": 24},
                           description="tiny random OpenSoraPipeline (tests)")
