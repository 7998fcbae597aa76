"""diffusers' built-in caches, through ``transformer.enable_cache(<Config>)`` / ``disable_cache()``.

Each spec mirrors its diffusers config dataclass as typed fields (callables become plain values). The
harness counts their NFE and traces itself (:mod:`sencache_bench.measure.calls`): its marker hooks sit
inside diffusers' hooks, so a call counts as computed only when the last block's real forward ran.

- ``fbc`` (FirstBlockCacheConfig): the first block always runs; the rest of the stack is skipped (cached
  residual) while the first block's output residual changed less than ``threshold`` (relative absmean).
  Per-branch state (cache_context). NFE drops.
- ``pab`` (PyramidAttentionBroadcastConfig): attention outputs are broadcast (reused) inside the blocks;
  the blocks still run, so its NFE stays full while its real cost drops: its FLOPs come from an untimed
  counted replay of the cached generation (``priced_by_replay``), as do FasterCache's and TaylorSeer's.
  diffusers keeps one state per attention layer and counts iterations over all calls, not per
  ``cache_context``: with separate cond / uncond calls (Wan) a skipped cond call would receive the uncond
  call's attention output. The harness keeps the layers' states per branch (:class:`_PerBranchPAB` swaps
  each layer's state for the branch's before every call), so each branch broadcasts its own attention and
  counts its own iterations.
- ``fastercache`` (FasterCacheConfig): attention reuse with a frequency-corrected extrapolation, plus
  the unconditional half of a batched CFG call approximated from the conditional one. It needs CFG in
  one batched call (CogVideoX) or a guidance-distilled model (HunyuanVideo); families without a
  ``fastercache`` adapter (Wan: separate calls, LTX: packed tokens) are refused. NFE stays full. On a
  guidance-distilled model a skip range that covers the first step is refused (diffusers' hook would skip
  attention at its first call with an empty cache and fail with a TypeError).
- ``taylorseer`` (TaylorSeerCacheConfig): outputs of the matched modules are predicted by a Taylor
  expansion between full computations every ``cache_interval`` steps. Default ``cache_identifiers``
  match every block's attention and feed-forward modules of the four families (diffusers' own default,
  ``^blocks.*attn`` under ``re.fullmatch``, matches no module of Wan, CogVideoX or LTX): the blocks still
  run, NFE stays full. ``use_lite_mode: true`` skips whole blocks and predicts ``proj_out``: NFE drops.
- ``diffusers-magcache`` (MagCacheConfig): diffusers' MagCache; one ratio curve for every branch
  (``branch`` picks it from a file with several), retention rounded ``int(r * n + 0.5)``, ``<=`` on the
  error bound. NFE drops. ``magcache`` (policies/magcache.py) is the official rule, per branch.
  Several experts: each expert's MagCacheConfig gets the steps it runs and its own curve (diffusers #14025).
- ``seacache`` (SeaCacheConfig): diffusers' SeaCache; TeaCache-style accumulated change of the spectrally
  filtered latent, first-order extrapolated stack residual. Per branch. diffusers finds Wan's latents and
  WanPipeline passes step and sigma; for the other families the ``seacache`` adapter gives the latents and
  sigma, and a small hook completes each call's cache context (step = the branch's call count). NFE drops.

PAB and FasterCache read the current timestep through a callback; the harness provides it with a
small hook that records each transformer call's ``timestep``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager
from pydantic import Field, PrivateAttr

from ..errors import BenchError
from .base import Knob, timestep_of
from .teacache import ModelBoundConfig, family_of

TIMESTEP_HOOK = "sencache_bench_timestep"
PAB_BRANCH_HOOK = "sencache_bench_pab_branches"
Range = tuple[float, float]


class _TimestepProbe(ModelHook):
    """Records the timestep of the transformer call in progress (registered outside diffusers' hooks)."""

    def __init__(self):
        super().__init__()
        self.timestep = 1000.0

    def pre_forward(self, module, *args, **kwargs):
        self.timestep = timestep_of(kwargs)
        return args, kwargs


@dataclass
class _PABStates(BaseState):
    """One branch's PyramidAttentionBroadcastState per PAB hook (keyed by the hook's id)."""

    states: dict = field(default_factory=dict)

    def reset(self, *args, **kwargs) -> None:
        self.states = {}


class _PerBranchPAB(ModelHook):
    """On the transformer: before each call, give every PAB hook the state of the call's ``cache_context``."""

    _is_stateful = True

    def __init__(self, hooks: list):
        super().__init__()
        self.hooks = hooks
        self.state_manager = StateManager(_PABStates)

    def pre_forward(self, module, *args, **kwargs):
        from diffusers.hooks.pyramid_attention_broadcast import PyramidAttentionBroadcastState

        branch = self.state_manager.get_state() if self.state_manager._context is not None else None
        if branch is not None:
            for hook in self.hooks:
                hook.state = branch.states.setdefault(id(hook), PyramidAttentionBroadcastState())
        return args, kwargs

    def reset_state(self, module):
        self.state_manager.reset()
        return module


class BuiltinCacheSpec(ModelBoundConfig):
    """A diffusers cache: ``attach`` enables it on the transformer, ``detach`` disables it."""

    def diffusers_config(self, transformer: torch.nn.Module, timestep) -> object:
        raise NotImplementedError

    def make_policy(self):
        return None

    def attach(self, transformer: torch.nn.Module, blocks: list[torch.nn.Module], recorder=None) -> None:
        probe = _TimestepProbe()
        try:
            config = self.diffusers_config(transformer, lambda: probe.timestep)
        except ValueError as err:
            raise BenchError(f"policy {self.name}: {err}") from None
        if getattr(transformer, "is_cache_enabled", False):
            raise BenchError(f"policy {self.name}: the transformer already has a diffusers cache enabled")
        transformer.enable_cache(config)
        # after enable_cache: outside (before) diffusers' hooks, which read the timestep in their forward
        registry = HookRegistry.check_if_exists_or_initialize(transformer)
        registry.register_hook(probe, TIMESTEP_HOOK)
        self.after_enable(transformer, registry)
        registry.invalidate_child_registries_cache()

    def after_enable(self, transformer: torch.nn.Module, registry: HookRegistry) -> None:
        """Anything the harness adds around diffusers' hooks once they are installed."""

    def detach(self, transformer: torch.nn.Module) -> None:
        registry = HookRegistry.check_if_exists_or_initialize(transformer)
        for name in (TIMESTEP_HOOK, PAB_BRANCH_HOOK):
            if registry.get_hook(name) is not None:
                registry.remove_hook(name, recurse=False)
        if getattr(transformer, "is_cache_enabled", False):
            transformer.disable_cache()
        registry.invalidate_child_registries_cache()


def _as_kwargs(spec: BuiltinCacheSpec, exclude: set[str]) -> dict:
    """The spec's fields as a diffusers config's keyword arguments: identifier lists as tuples, an identifier
    list left unset keeps diffusers' default."""
    kwargs = {}
    for key, value in spec.model_dump(exclude=exclude).items():
        if key.endswith("_identifiers"):
            if value is None:
                continue
            value = tuple(value)
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    return kwargs


# -- First Block Cache ----------------------------------------------------------------------------
class FirstBlockCacheSpec(BuiltinCacheSpec):
    name: Literal["fbc"] = "fbc"
    knob: ClassVar[Knob] = Knob("threshold", "lower", 0.0, 1.0)  # a larger change bound reuses more
    threshold: float = Field(default=0.05, ge=0.0, description="relative absmean change of the first block's "
                                                                "residual below which the rest is skipped")

    def diffusers_config(self, transformer, timestep):
        from diffusers.hooks import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=self.threshold)


# -- Pyramid Attention Broadcast ------------------------------------------------------------------
class PyramidAttentionBroadcastSpec(BuiltinCacheSpec):
    """PAB skips attention inside the blocks: NFE stays full while the real cost drops (priced by replay)."""

    name: Literal["pab"] = "pab"
    spatial_attention_block_skip_range: int | None = Field(default=2, ge=1)
    temporal_attention_block_skip_range: int | None = Field(default=None, ge=1)
    cross_attention_block_skip_range: int | None = Field(default=None, ge=1)
    spatial_attention_timestep_skip_range: Range = (100, 800)
    temporal_attention_timestep_skip_range: Range = (100, 800)
    cross_attention_timestep_skip_range: Range = (100, 800)
    spatial_attention_block_identifiers: list[str] | None = Field(default=None, description="default: diffusers'")
    temporal_attention_block_identifiers: list[str] | None = None
    cross_attention_block_identifiers: list[str] | None = None

    def priced_by_replay(self) -> bool:
        return True

    def diffusers_config(self, transformer, timestep):
        from diffusers.hooks import PyramidAttentionBroadcastConfig

        return PyramidAttentionBroadcastConfig(current_timestep_callback=timestep, **_as_kwargs(self, exclude={"name"}))

    def after_enable(self, transformer, registry):
        """Per-branch state for diffusers' PAB hooks (see the module doc)."""
        from diffusers.hooks.pyramid_attention_broadcast import PyramidAttentionBroadcastHook

        hooks = [hook for module in transformer.modules() if hasattr(module, "_diffusers_hook")
                 for hook in module._diffusers_hook.hooks.values() if isinstance(hook, PyramidAttentionBroadcastHook)]
        registry.register_hook(_PerBranchPAB(hooks), PAB_BRANCH_HOOK)


# -- FasterCache ----------------------------------------------------------------------------------
FIRST_TIMESTEP = 999.0  # the first step's timestep is 999 (DDPM-style schedules) or 1000 (flow matching)


class FasterCacheSpec(BuiltinCacheSpec):
    """FasterCache: needs batched CFG or a guidance-distilled model (the family's ``fastercache`` adapter)."""

    name: Literal["fastercache"] = "fastercache"
    spatial_attention_block_skip_range: int = Field(default=2, ge=1)
    temporal_attention_block_skip_range: int | None = Field(default=None, ge=1)
    spatial_attention_timestep_skip_range: Range = (-1, 681)
    temporal_attention_timestep_skip_range: Range = (-1, 681)
    low_frequency_weight_update_timestep_range: Range = (99, 901)
    high_frequency_weight_update_timestep_range: Range = (-1, 301)
    alpha_low_frequency: float = 1.1
    alpha_high_frequency: float = 1.1
    unconditional_batch_skip_range: int = Field(default=5, ge=1)
    unconditional_batch_timestep_skip_range: Range = (-1, 641)
    spatial_attention_block_identifiers: list[str] | None = Field(default=None, description="default: diffusers'")
    temporal_attention_block_identifiers: list[str] | None = None
    attention_weight: float = Field(default=0.5, description="constant attention_weight_callback (diffusers' default)")
    tensor_format: Literal["BCFHW", "BFCHW", "BCHW"] | None = Field(default=None, description="default: the family's")
    is_guidance_distilled: bool | None = Field(default=None, description="default: the family's")

    def check_model(self) -> None:
        adapter = self._adapter(None)
        distilled = adapter["is_guidance_distilled"] if self.is_guidance_distilled is None else self.is_guidance_distilled
        if distilled:
            self._check_first_step()

    def _check_first_step(self) -> None:
        """On a guidance-distilled model diffusers' hook skips attention at its first call when that call's timestep
        is inside the range, before anything is cached (a TypeError deep in the hook): refuse such a range."""
        ranges = [("spatial_attention_timestep_skip_range", self.spatial_attention_timestep_skip_range)]
        if self.temporal_attention_block_skip_range is not None:
            ranges.append(("temporal_attention_timestep_skip_range", self.temporal_attention_timestep_skip_range))
        for name, (_, high) in ranges:
            if high > FIRST_TIMESTEP:
                raise ValueError(f"{name} ends at {high:g}, past the first step's timestep (up to {FIRST_TIMESTEP:g}): "
                                 f"on a guidance-distilled model diffusers' FasterCache would skip attention at its "
                                 f"first call with nothing cached; end it at {FIRST_TIMESTEP:g} or below (default 681)")

    def priced_by_replay(self) -> bool:
        return True

    def _adapter(self, transformer) -> dict:
        from ..models import FAMILIES

        family = FAMILIES.get(self._family) if self._family else family_of(transformer, "fastercache")
        adapter = family.adapters.get("fastercache")
        if adapter is None:
            have = [n for n in FAMILIES if FAMILIES.get(n).adapters.get("fastercache")]
            raise ValueError(f"diffusers' FasterCache needs the CFG branches batched in one call on frame-shaped "
                             f"latents, or a guidance-distilled model; the {family.name} family has no fastercache "
                             f"adapter (supported: {', '.join(have)})")
        return adapter

    def diffusers_config(self, transformer, timestep):
        from diffusers.hooks import FasterCacheConfig

        adapter = self._adapter(transformer)
        kwargs = _as_kwargs(self, exclude={"name", "attention_weight", "tensor_format", "is_guidance_distilled"})
        weight = self.attention_weight
        distilled = adapter["is_guidance_distilled"] if self.is_guidance_distilled is None else self.is_guidance_distilled
        if distilled:
            self._check_first_step()
        return FasterCacheConfig(
            current_timestep_callback=timestep, attention_weight_callback=lambda _: weight,
            tensor_format=self.tensor_format or adapter["tensor_format"], is_guidance_distilled=distilled, **kwargs)


# -- TaylorSeer -----------------------------------------------------------------------------------
VIDEO_TAYLORSEER_IDENTIFIERS = [r"(blocks|transformer_blocks|single_transformer_blocks)\.\d+\.(attn\d*|ffn?)"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TaylorSeerSpec(BuiltinCacheSpec):
    name: Literal["taylorseer"] = "taylorseer"
    cache_interval: int = Field(default=5, ge=1)
    disable_cache_before_step: int = Field(default=3, ge=0)
    disable_cache_after_step: int | None = Field(default=None, ge=0)
    max_order: int = Field(default=1, ge=0)
    taylor_factors_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    skip_predict_identifiers: list[str] | None = None
    cache_identifiers: list[str] | None = Field(
        default=None, description="regexes (fullmatch) of predicted modules; default: every block's attention and "
                                  "feed-forward")
    use_lite_mode: bool = False

    def priced_by_replay(self) -> bool:
        return True  # predicted modules run nothing (lite mode predicts proj_out too): the trace cannot see it

    def diffusers_config(self, transformer, timestep):
        from diffusers.hooks import TaylorSeerCacheConfig

        cache = self.cache_identifiers
        if cache is None and self.skip_predict_identifiers is None and not self.use_lite_mode:
            cache = VIDEO_TAYLORSEER_IDENTIFIERS
        return TaylorSeerCacheConfig(
            cache_interval=self.cache_interval, disable_cache_before_step=self.disable_cache_before_step,
            disable_cache_after_step=self.disable_cache_after_step, max_order=self.max_order,
            taylor_factors_dtype=DTYPES[self.taylor_factors_dtype],
            skip_predict_identifiers=self.skip_predict_identifiers, cache_identifiers=cache,
            use_lite_mode=self.use_lite_mode)


# -- diffusers' MagCache --------------------------------------------------------------------------
class DiffusersMagCacheSpec(BuiltinCacheSpec):
    """diffusers' MagCacheConfig with a shipped or calibrated curve (defaults: MagCache's video settings)."""

    name: Literal["diffusers-magcache"] = "diffusers-magcache"
    calibration: ClassVar[str] = "a magnitude-ratio curve"  # several experts: each expert's own curve and steps
    per_expert: ClassVar[bool] = True
    threshold: float = Field(default=0.12, ge=0.0, description="accumulated error bound (MagCache video default)")
    max_skip_steps: int = Field(default=2, ge=0, description="K")
    retention_ratio: float = Field(default=0.2, ge=0.0, le=1.0)
    ratios: str | list[float] | None = Field(
        default=None, description="shipped curve name, calibrated JSON path or the list itself; default: the "
                                  "model's shipped curve")
    branch: str = Field(default="cond", description="which curve of a file with several (diffusers uses one)")
    num_inference_steps: int | None = Field(default=None, ge=1, description="default: the spec's sampling.steps")

    def check_model(self) -> None:
        self._curve()

    def _curve(self) -> list[float]:
        from .magcache import MagCacheConfig

        if isinstance(self.ratios, list):
            return [float(x) for x in self.ratios]
        helper = MagCacheConfig(ratios=self.ratios)
        helper._model, helper._family, helper._spec_dir = self._model, self._family, self._spec_dir
        curves = helper.resolve()[0]
        if self.branch in curves:
            return curves[self.branch].tolist()
        if len(curves) == 1:
            return next(iter(curves.values())).tolist()
        raise ValueError(f"the ratios have branches {', '.join(curves)}; set policy.branch to one of them")

    def _expert_curve(self) -> tuple[list[float], int]:
        """The attached expert's curve over the steps it runs (a per-expert file's ``steps_run``), and their count."""
        from .magcache import MagCacheConfig, load_ratios
        helper = MagCacheConfig(ratios=self.ratios if isinstance(self.ratios, str) else None)
        helper._model, helper._family, helper._spec_dir = self._model, self._family, self._spec_dir
        path = helper._curve_source()[0] if isinstance(self.ratios, str) else None
        part = self.expert_part(load_ratios(path), path, "MagCache ratios") if path else {}
        curves, ran = part.get("branches", {}), part.get("steps_run") or {}
        branch = self.branch if self.branch in curves else next(iter(curves), None)
        if not ran.get(branch) or len(curves[branch]) != self._steps:
            raise ValueError(f"on the expert {self._expert!r} the ratios must be a per-expert calibrated file of "
                             f"{self._steps} steps: `sencache-bench calibrate SPEC.yaml --policy magcache`")
        return [float(curves[branch][i]) for i in ran[branch]], len(ran[branch])

    def diffusers_config(self, transformer, timestep):
        from diffusers.hooks import MagCacheConfig
        curve, steps = self._expert_curve() if self._expert else (self._curve(), self.num_inference_steps or self._steps)
        if steps is None:
            raise ValueError("give num_inference_steps (diffusers' MagCache remaps its curve to it)")
        return MagCacheConfig(threshold=self.threshold, max_skip_steps=self.max_skip_steps,
                              retention_ratio=self.retention_ratio, num_inference_steps=steps,
                              mag_ratios=torch.tensor(curve, dtype=torch.float64))


# -- SeaCache -------------------------------------------------------------------------------------
SEA_CONTEXT_HOOK = "sencache_bench_seacache_context"


class _SeaCacheContext(ModelHook):
    """Completes the cache context SeaCache reads (step index, sigma, step count) where the pipeline leaves fields
    out (every pipeline but WanPipeline): the step is the branch's call count, sigma the family adapter's."""

    def __init__(self, managers: list, sigma, steps: int | None, scheduler):
        super().__init__()
        self.managers, self.sigma, self.steps, self.scheduler = managers, sigma, steps, scheduler
        self.calls: dict[str, int] = {}

    def pre_forward(self, module, *args, **kwargs):
        context = self.managers[0]._context
        if context is not None:
            index = self.calls.get(context.name, 0)
            self.calls[context.name] = index + 1
            filled = replace(
                context, step_index=index if context.step_index is None else context.step_index,
                sigma=self.sigma(timestep_of(kwargs), self.scheduler) if context.sigma is None else context.sigma,
                num_inference_steps=context.num_inference_steps or self.steps)
            for manager in self.managers:
                manager.set_context(filled)
        return args, kwargs


class SeaCacheSpec(BuiltinCacheSpec):
    """diffusers' SeaCache (CVPR 2026, arXiv 2602.18993; ``diffusers/hooks/sea_cache.py``): TeaCache-style
    accumulation of the relative L1 change of the spectrally filtered input latent; the block stack is replaced
    by its residual, extrapolated to first order from the last two computed steps. Defaults: diffusers'.
    The family's ``seacache`` adapter gives the raw vision latents and sigma where diffusers does not."""

    name: Literal["seacache"] = "seacache"
    knob: ClassVar[Knob] = Knob("threshold", "lower", 0.0, 1.0)  # a larger budget reuses more
    threshold: float = Field(default=0.25, ge=0.0, description="accumulated relative-L1 budget of the SEA indicator")
    residual_order: Literal[0, 1] = Field(default=1, description="0: last residual; 1: linear extrapolation")
    retention_steps: int = Field(default=1, ge=0, description="first steps always computed")
    cache_end_steps: int = Field(default=1, ge=0, description="last steps always computed")
    max_consecutive_cached: int = Field(default=2, ge=0, description="0: no limit")
    power_exp: float = Field(default=3.0, gt=0.0, description="exponent of the clean-signal power prior |f|^-beta")
    _scheduler: object = PrivateAttr(default=None)

    def check_model(self) -> None:
        self._adapter(None)

    def prepare(self, runner) -> None:
        """The pipeline's scheduler, for families whose sigma comes from it (CogVideoX's alphas_cumprod)."""
        self._scheduler = runner.session.pipe.scheduler

    def _adapter(self, transformer) -> dict:
        from ..models import FAMILIES

        family = FAMILIES.get(self._family) if self._family else family_of(transformer, "seacache")
        adapter = family.adapters.get("seacache")
        if adapter is None:
            have = [n for n in FAMILIES if FAMILIES.get(n).adapters.get("seacache")]
            raise ValueError(f"diffusers' SeaCache needs the raw vision latents and the step's sigma; the "
                             f"{family.name} family has no seacache adapter (supported: {', '.join(have)})")
        return adapter

    def diffusers_config(self, transformer, timestep):
        from diffusers.hooks import SeaCacheConfig

        return SeaCacheConfig(threshold=self.threshold, residual_order=self.residual_order,
                              retention_steps=self.retention_steps, cache_end_steps=self.cache_end_steps,
                              max_consecutive_cached=self.max_consecutive_cached, power_exp=self.power_exp,
                              raw_vision_callback=self._adapter(transformer)["raw_vision"])

    def after_enable(self, transformer, registry):
        from diffusers.hooks.sea_cache import SeaCacheRootHook

        sigma = self._adapter(transformer)["sigma"]
        if sigma is not None and self._steps is None:
            raise BenchError("policy seacache: the pipeline does not pass the step count; validate the policy "
                             "through a spec (spec.resolve) or bind(steps=...)")
        if sigma is not None:
            managers = [h.state_manager for h in registry.hooks.values() if isinstance(h, SeaCacheRootHook)]
            registry.register_hook(_SeaCacheContext(managers, sigma, self._steps, self._scheduler), SEA_CONTEXT_HOOK)

    def detach(self, transformer) -> None:
        registry = HookRegistry.check_if_exists_or_initialize(transformer)
        if registry.get_hook(SEA_CONTEXT_HOOK) is not None:
            registry.remove_hook(SEA_CONTEXT_HOOK, recurse=False)
        super().detach(transformer)
