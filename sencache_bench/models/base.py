"""What the harness needs to know about a model family, so shared code has no per-model branches.

A backend wraps one diffusers pipeline class. It knows how to build or load the pipeline, which
sampling settings the pipeline accepts, the transformer's block stack (for residual reuse and for
pricing partial calls) and its CFG layout (how the pipeline names its ``cache_context`` branches).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ..errors import BenchError

CfgLayout = Literal["separate", "batched", "distilled"]

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


@dataclass(frozen=True)
class SamplingDefaults:
    steps: int
    height: int
    width: int
    frames: int
    guidance_scale: float
    shift: float | None = None
    fps: int = 8


@dataclass(frozen=True)
class Family:
    """One diffusers pipeline family (Wan, CogVideoX, LTX-Video, HunyuanVideo...).

    ``spatial_multiple`` / ``temporal_multiple``: height and width must be multiples of the first and
    ``frames - 1`` a multiple of the second, else the pipeline rejects (or silently rounds) them.
    ``block_stacks``: attribute names of the transformer's ModuleLists, in execution order.
    ``adapters``: what a policy needs to know about this model and nothing else does (e.g. TeaCache's
    indicator), keyed by policy name, so that policies carry no per-model branches.
    """

    name: str
    pipeline_class: str
    cfg_layout: CfgLayout
    block_stacks: tuple[str, ...]
    spatial_multiple: int
    temporal_multiple: int
    adapters: dict[str, Any] = field(default_factory=dict)  # per-policy model knowledge, keyed by policy name

    def pipeline_cls(self):
        import diffusers

        return getattr(diffusers, self.pipeline_class)

    def blocks(self, transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
        """The transformer's blocks as (attribute path, module), in execution order."""
        out = []
        for stack in self.block_stacks:
            for i, block in enumerate(getattr(transformer, stack)):
                out.append((f"{stack}.{i}", block))
        return out

    def experts(self, pipe) -> list[tuple[str, torch.nn.Module]]:
        """The pipeline's transformers as (component name, module), in the order the denoising loop uses them:
        diffusers names a second expert ``transformer_2`` (Wan 2.2: high noise first, low noise below the
        boundary); single-transformer pipelines have one."""
        return [(name, getattr(pipe, name)) for name in ("transformer", "transformer_2")
                if getattr(pipe, name, None) is not None]

    def branches(self, guidance_scale: float) -> tuple[str, ...]:
        """The cache_context names the pipeline uses per step."""
        if self.cfg_layout == "separate":
            return ("cond", "uncond") if guidance_scale > 1.0 else ("cond",)
        if self.cfg_layout == "batched":
            return ("cond_uncond",)
        return ("cond",)

    def check_sampling(self, height: int, width: int, frames: int) -> list[tuple[str, str]]:
        """(field, message) for every setting the pipeline would reject."""
        errors = []
        m = self.spatial_multiple
        for name, value in (("height", height), ("width", width)):
            if value % m:
                errors.append((f"sampling.{name}", f"must be a multiple of {m} for {self.name}, got {value} "
                                                  f"(nearest: {max(m, round(value / m) * m)})"))
        t = self.temporal_multiple
        if (frames - 1) % t:
            errors.append(("sampling.frames", f"must be {t}k+1 for {self.name}, got {frames} "
                                              f"(nearest: {max(1, round((frames - 1) / t)) * t + 1})"))
        return errors


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: a family plus where its weights come from and its default sampling."""

    name: str
    family: Family
    defaults: SamplingDefaults
    repo_id: str | None = None  # hub id of the diffusers-format weights
    build: Callable[[int], Any] | None = None  # seeded in-code builder (tiny models), no download
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    missing_hint: str = ""  # how to get the weights when repo_id is a local directory that is missing
    # prompts for calibration runs when the generic set means nothing to the model's text encoder (a model
    # with a small vocabulary); empty: calibration.sencache.CALIBRATION_PROMPTS
    calibration_prompts: tuple[str, ...] = ()
    # real videos for SenCache calibration, as the paper calibrates: (prompt, seed) -> uint8 (F, H, W, 3) clip
    # of that prompt (a model trained on a renderer gives its ground truth); None: generations or --videos
    calibration_clips: Callable[[str, int], Any] | None = None
    # the pipeline's transformers (diffusers component names, Family.experts): Wan 2.2 A14B has two
    experts: tuple[str, ...] = ("transformer",)
    # image-to-video: "required" (the pipeline takes ``image``; sampling.image must be given) or "none";
    # ``image_variant``: "module:ATTR" of the entry that runs when a text-to-video model is given an image
    # (Wan 2.2 TI2V-5B: the same weights in WanImageToVideoPipeline)
    image: Literal["none", "required"] = "none"
    image_variant: str = ""

    @property
    def kind(self) -> str:
        return "built-in" if self.build is not None else "pretrained"


def set_eval(pipe) -> None:
    """Components built from a config start in train mode (T5 dropout): switch all to eval."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()


def load_pretrained(family: Family, source: str, dtype: torch.dtype, missing_hint: str = ""):
    """``from_pretrained`` by hub id or local directory; missing weights become one clear line."""
    cls = family.pipeline_cls()
    is_dir = os.path.isdir(source)
    looks_like_path = source.startswith((".", "/", "~")) or source.count("/") != 1
    if not is_dir and looks_like_path:
        how = missing_hint or "give a local diffusers directory or a hub id"
        raise BenchError(f"model path {source!r} does not exist: {how}")
    try:
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
        pipe = cls.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError, EnvironmentError) as err:
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        if is_dir:
            raise BenchError(f"could not load {family.pipeline_class} from {source}: {str(err).splitlines()[0]}") from err
        how = (f"download it first with `hf download {source}` on a machine with internet "
               f"(then copy the cache or pass model.path=<local dir>)")
        state = "HF_HUB_OFFLINE is set and they are not in the local cache" if offline else "they could not be fetched"
        raise BenchError(f"weights for {source} are not available ({state}): {how}") from err
    set_eval(pipe)
    return pipe


# -- SeaCache adapters shared by several families (diffusers' SeaCacheConfig.raw_vision_callback and the sigma the
# pipelines other than WanPipeline leave out of their cache_context) ----------------------------------------------
def seacache_channels_first(module, args, kwargs) -> list[torch.Tensor]:
    """SeaCache's raw vision for (B, C, F, H, W) latents: one (C, F, H, W) per sample (as diffusers' Wan adapter)."""
    return list(kwargs["hidden_states"].unbind(0))


def seacache_flow_sigma(timestep: float, scheduler=None) -> float:
    """sigma of x_t = (1 - sigma) x0 + sigma eps on a flow-matching schedule: the model timestep over the train
    timesteps (FlowMatchEulerDiscreteScheduler: timesteps = sigmas * num_train_timesteps)."""
    return timestep / float(getattr(getattr(scheduler, "config", None), "num_train_timesteps", 1000))
