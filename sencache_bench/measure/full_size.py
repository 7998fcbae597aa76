"""Exact FLOPs of a full-size model from its architecture alone: no weights, no GPU, no download.

The real diffusers / transformers classes are built on the meta device from the config.json facts in
``architectures/<model>.json`` and run once per distinct call shape under :func:`count_flops`, with the
inputs the pipeline builds (latent shape from the VAE factors, text lengths, CFG batch). A generation is
counted as the pipeline runs it: text encoding once per prompt (and once for the negative prompt when CFG
encodes one), the transformer ``steps x calls per step`` times (one call counted, then multiplied), and one
VAE decode with the VAE's default tiling flags. Both conventions are kept (see ``flops.py``): ``total``
includes attention's QK^T and PV, ``no_attn`` leaves them out as the SenCache/SemCache papers do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from ..errors import BenchError
from ..models import MODELS
from ..models.base import Family
from .flops import CallCost, FlopCount, call_cost, count_flops

ARCHITECTURES = Path(__file__).parent / "architectures"
PFLOP = 1e15


@dataclass(frozen=True)
class Flops:
    """One count in both conventions: ``total`` (attention included) and ``no_attn`` (the papers')."""

    total: int
    no_attn: int

    @classmethod
    def of(cls, count: FlopCount) -> Flops:
        return cls(count.total, count.no_attn)

    @property
    def attention(self) -> int:
        return self.total - self.no_attn

    def __add__(self, other: Flops) -> Flops:
        return Flops(self.total + other.total, self.no_attn + other.no_attn)

    def scale(self, factor: float) -> Flops:
        return Flops(round(self.total * factor), round(self.no_attn * factor))

    def to_dict(self) -> dict:
        return {"pflops": self.total / PFLOP, "pflops_no_attn": self.no_attn / PFLOP,
                "flops": self.total, "flops_no_attn": self.no_attn}


@dataclass(frozen=True)
class FullSizeFlops:
    """FLOPs of one generation (one prompt, one video) of a full-size model, per component."""

    model: str
    height: int
    width: int
    frames: int
    steps: int
    guidance_scale: float
    branches: tuple[str, ...]  # transformer calls per step, by the pipeline's cache_context name
    batch: int  # batch size of each transformer call (2 for batched CFG)
    prompt_passes: int  # text-encoder passes: the prompt, plus the negative prompt under CFG
    text_encoder: Flops  # all passes
    transformer_call: Flops  # one call
    call_cost: CallCost  # the same call split into outside/blocks, to price partially computed calls
    vae_decode: Flops
    seconds: float  # wall time of the counting
    expert_steps: dict[str, int] | None = None  # steps per expert (Wan 2.2); None: one transformer

    @property
    def calls(self) -> int:
        return self.steps * len(self.branches)

    def expert_loops(self) -> dict[str, Flops] | None:
        """The transformer loop of each expert (its steps x calls per step x one call: the experts share one
        architecture, so one call prices both)."""
        if self.expert_steps is None:
            return None
        return {name: self.transformer_call.scale(n * len(self.branches)) for name, n in self.expert_steps.items()}

    @property
    def transformer_loop(self) -> Flops:
        return self.transformer_call.scale(self.calls)

    @property
    def total(self) -> Flops:
        return self.text_encoder + self.transformer_loop + self.vae_decode

    def to_dict(self) -> dict:
        return {
            "model": self.model, "height": self.height, "width": self.width, "frames": self.frames,
            "steps": self.steps, "guidance_scale": self.guidance_scale, "branches": list(self.branches),
            "batch": self.batch, "calls": self.calls, "prompt_passes": self.prompt_passes,
            "text_encoder": self.text_encoder.to_dict(), "transformer_call": self.transformer_call.to_dict(),
            "transformer_loop": self.transformer_loop.to_dict(), "vae_decode": self.vae_decode.to_dict(),
            "total": self.total.to_dict(), "seconds": round(self.seconds, 2),
            **({"per_expert": {name: {"steps": self.expert_steps[name], "transformer_loop": loop.to_dict()}
                               for name, loop in self.expert_loops().items()}} if self.expert_steps else {}),
        }


def policy_total(flops: FullSizeFlops, nfe: float | Mapping[str, float]) -> Flops:
    """Total FLOPs of a cached run that computed ``nfe`` transformer calls per branch (out of ``steps``).

    This is the papers' accounting (TeaCache, MagCache, SenCache, SemCache): a reused call costs 0, a
    computed call a full call; text encoding and VAE decoding are unchanged. ``nfe`` is one number for
    every branch or a per-branch mapping (as ``CallRecorder.nfe()`` returns it). Calls that ran in part
    (residual reuse skips only the blocks) are priced exactly by ``flops.call_cost.price`` instead.
    """
    per_branch = dict(nfe) if isinstance(nfe, Mapping) else {b: nfe for b in flops.branches}
    unknown = sorted(set(per_branch) - set(flops.branches))
    if unknown:
        raise BenchError(f"NFE given for branch(es) {unknown}; {flops.model} runs {list(flops.branches)}")
    for branch, k in per_branch.items():
        if not 0 <= k <= flops.steps:
            raise BenchError(f"NFE must be between 0 and the {flops.steps} steps, got {k} for branch {branch!r}")
    computed = sum(per_branch.get(b, flops.steps) for b in flops.branches)  # a branch not given: all computed
    return flops.text_encoder + flops.transformer_call.scale(computed) + flops.vae_decode


@cache
def load_architecture(model: str) -> dict:
    """The architecture facts of a registered full-size model (``architectures/<name>.json``)."""
    name = MODELS.canonical(model)
    path = ARCHITECTURES / f"{name}.json"
    if not path.exists():
        known = sorted(p.stem for p in ARCHITECTURES.glob("*.json"))
        raise BenchError(f"no architecture file for {name!r}: FLOPs are counted for the full-size models "
                         f"({', '.join(known)})")
    return json.loads(path.read_text())


def count_full_size(model: str, height: int, width: int, frames: int, steps: int,
                    guidance_scale: float | None = None) -> FullSizeFlops:
    """Count one generation of ``model`` at the given sampling settings (default guidance: the model's)."""
    entry = MODELS.get(model)
    arch = load_architecture(entry.name)
    family = entry.family
    problems = family.check_sampling(height, width, frames)
    if problems:
        raise BenchError("; ".join(f"{field}: {message}" for field, message in problems))
    guidance = entry.defaults.guidance_scale if guidance_scale is None else guidance_scale
    hooks = family.adapters.get("full_size", {})  # a family whose pipeline is not diffusers' says how it runs
    cfg = guidance > 1.0 and family.cfg_layout != "distilled"
    batch = 2 if cfg and family.cfg_layout == "batched" else 1
    passes = 2 if cfg and hooks.get("encodes_negative_prompt", True) else 1  # CFG with a learned null caption: 1
    latent = _Latent(*hooks["latent"](arch, height, width, frames)) if "latent" in hooks else \
        _Latent.of(arch, height, width, frames)
    start = time.perf_counter()
    text = _count_text_encoders(arch)
    call, cost = _count_transformer_call(arch, family, latent, batch)
    vae = _count_vae_decode(arch, latent)
    return FullSizeFlops(
        model=entry.name, height=height, width=width, frames=frames, steps=steps, guidance_scale=guidance,
        branches=family.branches(guidance), batch=batch, prompt_passes=passes,
        text_encoder=text.scale(passes), transformer_call=call, call_cost=cost, vae_decode=vae,
        seconds=time.perf_counter() - start,
        expert_steps=expert_steps(arch["experts"], steps) if "experts" in arch else None)


def expert_steps(experts: dict, steps: int) -> dict[str, int]:
    """Steps per expert of a two-expert model (Wan 2.2): the first runs the steps with t >= boundary * 1000, the
    official sampler's t = 1000 * shift*s / (1 + (shift - 1)*s) on s = linspace(1, 0, steps + 1)[:steps]."""
    shift, bound = experts["shift"], experts["boundary_ratio"]
    high = 0
    for i in range(steps):
        s = 1 - i / steps
        high += shift * s / (1 + (shift - 1) * s) >= bound
    first, second = experts["names"]
    return {first: high, second: steps - high}


def _count_text_encoders(arch: dict) -> Flops:
    """One prompt through every text encoder, at the token length the pipeline pads to."""
    text = Flops(0, 0)
    for spec in arch["text_encoders"]:
        encoder = _build_transformers(spec)
        ids = torch.zeros(1, spec["tokens"], dtype=torch.long, device="meta")
        text += Flops.of(count_flops(lambda: encoder(input_ids=ids)))
    return text


def _count_transformer_call(arch: dict, family: Family, latent: _Latent, batch: int) -> tuple[Flops, CallCost]:
    """One transformer call, also split by block (CFG branches share one shape: counted once)."""
    transformer = _build_diffusers(arch["transformer"])
    make_inputs = family.adapters.get("full_size", {}).get("transformer_inputs") or _TRANSFORMER_INPUTS[family.name]
    inputs = make_inputs(arch, latent, batch)
    count = count_flops(lambda: transformer(**inputs, return_dict=False))
    root = type(transformer).__name__
    blocks = [f"{root}.{path}" for path, _ in family.blocks(transformer)]
    return Flops.of(count), call_cost(count, root, blocks, calls=1)


def _count_vae_decode(arch: dict, latent: _Latent) -> Flops:
    """One decode of the final latents with the VAE's default tiling flags (LTX 0.9.1 also takes a timestep)."""
    vae = _build_diffusers(arch["vae"])
    z = _meta(1, latent.channels, latent.frames, latent.height, latent.width)
    kwargs = {"temb": _meta(1)} if arch["vae"]["config"].get("timestep_conditioning") else {}
    return Flops.of(count_flops(lambda: vae.decode(z, **kwargs, return_dict=False)))


@dataclass(frozen=True)
class _Latent:
    """The pipeline's latent video: channels x frames x height x width (before transformer patching)."""

    channels: int
    frames: int
    height: int
    width: int

    @classmethod
    def of(cls, arch: dict, height: int, width: int, frames: int) -> _Latent:
        vae = arch["vae"]
        return cls(channels=arch["transformer"]["config"]["in_channels"],
                   frames=(frames - 1) // vae["temporal_compression"] + 1,
                   height=height // vae["spatial_compression"], width=width // vae["spatial_compression"])


def _meta(*shape: int) -> torch.Tensor:
    return torch.empty(*shape, device="meta")


def _model_class(name: str):
    """A diffusers class by name, else one a family names in ``adapters["full_size"]["classes"]`` (name -> loader)."""
    import diffusers

    if hasattr(diffusers, name):
        return getattr(diffusers, name)
    from ..models import FAMILIES

    for family in FAMILIES:
        loader = FAMILIES.get(family).adapters.get("full_size", {}).get("classes", {}).get(name)
        if loader is not None:
            return loader()
    raise BenchError(f"architecture class {name!r} is neither a diffusers class nor one a model family provides")


def _build_diffusers(spec: dict) -> torch.nn.Module:
    cls = _model_class(spec["class"])
    with torch.device("meta"):
        return cls.from_config(spec["config"]).eval()


def _build_transformers(spec: dict) -> torch.nn.Module:
    import transformers

    config = dict(spec["config"])
    config = transformers.AutoConfig.for_model(config.pop("model_type"), **config)
    config._attn_implementation = "sdpa"  # fused attention, counted as attention (not as plain matmuls)
    with torch.device("meta"):
        return getattr(transformers, spec["class"])(config).eval()


# The transformer call each pipeline makes (keyword arguments of ``forward``), keyed by family name.
def _wan_inputs(arch: dict, z: _Latent, batch: int) -> dict:
    cfg = arch["transformer"]["config"]
    p = cfg["patch_size"]
    # expand_timesteps (Wan 2.2 TI2V): one timestep per post-patch token, so the time embedding runs per token
    tokens = z.frames // p[0] * (z.height // p[1]) * (z.width // p[2])
    timestep = _meta(batch, tokens) if arch.get("expand_timesteps") else _meta(batch)
    return {"hidden_states": _meta(batch, z.channels, z.frames, z.height, z.width), "timestep": timestep,
            "encoder_hidden_states": _meta(batch, arch["text_tokens"], cfg["text_dim"])}


def _cogvideox_inputs(arch: dict, z: _Latent, batch: int) -> dict:
    # CogVideoXPipeline: latents are [B, F, C, H, W]; 1.5 pads F to a multiple of patch_size_t; RoPE
    # tables are (tokens, head_dim) cos/sin pairs when the model uses rotary embeddings.
    cfg = arch["transformer"]["config"]
    p, p_t = cfg["patch_size"], cfg["patch_size_t"] or 1
    frames = -(-z.frames // p_t) * p_t
    inputs = {"hidden_states": _meta(batch, frames, z.channels, z.height, z.width), "timestep": _meta(batch),
              "encoder_hidden_states": _meta(batch, arch["text_tokens"], cfg["text_embed_dim"])}
    if cfg["use_rotary_positional_embeddings"]:
        tokens = frames // p_t * (z.height // p) * (z.width // p)
        inputs["image_rotary_emb"] = (_meta(tokens, cfg["attention_head_dim"]),) * 2
    return inputs


def _ltx_inputs(arch: dict, z: _Latent, batch: int) -> dict:
    # LTXPipeline packs latents to [B, F*H*W, C] (patch size 1) and passes the latent grid and the RoPE
    # scale (temporal factor / frame_rate 25, spatial factors) explicitly.
    cfg, vae = arch["transformer"]["config"], arch["vae"]
    tokens = z.frames * z.height * z.width
    return {"hidden_states": _meta(batch, tokens, z.channels), "timestep": _meta(batch),
            "encoder_hidden_states": _meta(batch, arch["text_tokens"], cfg["caption_channels"]),
            "encoder_attention_mask": _meta(batch, arch["text_tokens"]),
            "num_frames": z.frames, "height": z.height, "width": z.width,
            "rope_interpolation_scale": (vae["temporal_compression"] / 25, vae["spatial_compression"],
                                         vae["spatial_compression"])}


def _hunyuanvideo_inputs(arch: dict, z: _Latent, batch: int) -> dict:
    cfg = arch["transformer"]["config"]
    return {"hidden_states": _meta(batch, z.channels, z.frames, z.height, z.width), "timestep": _meta(batch),
            "encoder_hidden_states": _meta(batch, arch["text_tokens"], cfg["text_embed_dim"]),
            "encoder_attention_mask": _meta(batch, arch["text_tokens"]),
            "pooled_projections": _meta(batch, cfg["pooled_projection_dim"]), "guidance": _meta(batch)}


_TRANSFORMER_INPUTS: dict[str, Callable[[dict, _Latent, int], dict]] = {
    "wan": _wan_inputs, "cogvideox": _cogvideox_inputs, "ltx": _ltx_inputs, "hunyuanvideo": _hunyuanvideo_inputs,
}
