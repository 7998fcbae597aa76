"""cache-dit's DBCache and DBPrune (vipshop/cache-dit, PyPI ``cache-dit``) as policies of the harness.

cache-dit is the toolbox many users pick instead of writing their own cache; these specs run it under the
same protocol as every other policy. ``attach`` calls ``cache_dit.enable_cache`` on the transformer
(cache-dit's transformer-only path: one persistent cache context per video, made fresh at each attach,
instead of the pipeline path, which patches the pipeline *class*'s ``__call__``); ``detach`` calls
``cache_dit.disable_cache``. The harness's recorder (:mod:`sencache_bench.measure.calls`) counts NFE and
prices each call by the blocks that ran, as for diffusers' caches.

- ``dbcache`` (``DBCacheConfig``): every step runs the first ``Fn_compute_blocks`` blocks; when the relative
  L1 change of their output residual since the last computed step is below ``residual_diff_threshold`` (and
  the step is past ``max_warmup_steps``, under ``max_cached_steps`` / ``max_continuous_cached_steps``), the
  middle blocks are replaced by their cached residual and only the last ``Bn_compute_blocks`` run. Such a
  step is a partial call (Fn + Bn blocks), priced as such; NFE counts the calls that ran every block.
  ``calibrator`` (``taylorseer`` | ``foca`` | ``dmd``, or a mapping with ``name`` and that calibrator's
  fields) forecasts the cached residual instead of reusing it (cache-dit's ``*CalibratorConfig``).
- ``dbprune`` (``DBPruneConfig``): the same Fn/Bn frame, but each middle block is skipped on its own when
  its input residual changed less than the threshold (dynamic block prune); NFE counts the calls with no
  block pruned, FLOPs price the blocks that ran.

The fields mirror cache-dit's config dataclasses one to one with cache-dit's defaults (a test checks them
against the installed ``DBCacheConfig`` / ``DBPruneConfig`` / calibrator configs), and every spec is built
into cache-dit's own config at validation, so cache-dit rejects what it would reject at run time. Three
fields of cache-dit describe the pipeline, not the policy, and come from the spec instead:
``enable_separate_cfg`` (the family's CFG layout and ``guidance_scale``: Wan runs cond then uncond as two
calls per step, cache-dit's even/odd convention), ``cfg_compute_first`` (False: every supported pipeline
runs the conditional branch first) and ``num_inference_steps`` (``sampling.steps``).

cache-dit's registry decides which transformers it supports (Wan, CogVideoX, LTX-Video, HunyuanVideo among
the harness's families); any other is refused with that reason. Install: ``pip install --no-deps
"cache-dit==1.5.3"`` (its core needs only packaging, pyyaml, torch, diffusers, transformers).
"""

from __future__ import annotations

import logging
import os
from typing import Annotated, ClassVar, Literal, Union

import torch
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from ..errors import BenchError
from .base import Knob
from .teacache import ModelBoundConfig

INSTALL = 'pip install --no-deps "cache-dit==1.5.3" (or the project\'s `cachedit` extra)'
#: cache-dit fields that describe the pipeline; the harness sets them from the spec
PIPELINE_FIELDS = ("cache_type", "enable_separate_cfg", "cfg_compute_first", "num_inference_steps")


def cache_dit():
    """cache-dit, imported quietly (its INFO log prints every context it makes, unless the user set
    ``CACHE_DIT_LOG_LEVEL``), or one clear error."""
    quiet = "CACHE_DIT_LOG_LEVEL" not in os.environ
    if quiet:
        os.environ["CACHE_DIT_LOG_LEVEL"] = "error"
    try:
        import cache_dit as module
    except ImportError as err:
        raise ValueError(f"cache-dit is not installed ({err}); install it with {INSTALL}") from None
    if quiet:  # imported before the variable was set: its loggers carry their own levels
        for name in list(logging.root.manager.loggerDict):
            if name == "CACHE_DIT" or name.startswith("cache_dit"):
                logging.getLogger(name).setLevel(logging.ERROR)
    return module


# -- calibrators (cache-dit's *CalibratorConfig) ---------------------------------------------------
class _Calibrator(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enable_calibrator: bool = True
    enable_encoder_calibrator: bool = True
    calibrator_cache_type: Literal["residual", "hidden_states"] = "residual"


class TaylorSeerCalibrator(_Calibrator):
    """TaylorSeer (arXiv 2503.06923): a Taylor expansion of the cached feature over the last computed steps."""

    name: Literal["taylorseer"] = "taylorseer"
    taylorseer_order: int = Field(default=1, ge=0)


class FoCaCalibrator(_Calibrator):
    """FoCa (arXiv 2508.16211): forecast then calibrate; no parameters of its own."""

    name: Literal["foca"] = "foca"


class DMDCalibrator(_Calibrator):
    """Dynamic Mode Decomposition of the recent computed features, extrapolated by eigenvalue powers."""

    name: Literal["dmd"] = "dmd"
    dmd_history: int = Field(default=6, ge=1)
    dmd_rank: int = Field(default=0, ge=0)
    dmd_ridge: float = Field(default=1e-8, ge=0.0)
    dmd_svd_precision: Literal["low", "medium", "high"] = "medium"


Calibrator = Annotated[Union[TaylorSeerCalibrator, FoCaCalibrator, DMDCalibrator], Field(discriminator="name")]
CALIBRATOR_CLASSES = {"taylorseer": "TaylorSeerCalibratorConfig", "foca": "FoCaCalibratorConfig",
                      "dmd": "DMDCalibratorConfig"}


# -- the shared Fn/Bn frame (cache-dit's BasicCacheConfig) -----------------------------------------
class _CacheDitSpec(ModelBoundConfig):
    """cache-dit's ``BasicCacheConfig`` fields (defaults: cache-dit's) and the enable/disable life cycle."""

    knob: ClassVar[Knob] = Knob("residual_diff_threshold", "lower", 0.0, 1.0)
    config_class: ClassVar[str]
    _guidance: float | None = PrivateAttr(default=None)
    _forwards: dict = PrivateAttr(default_factory=dict)  # id(transformer) -> its forward: one per expert
    _stats: dict = PrivateAttr(default_factory=dict)  # expert (None: one transformer) -> its last summary
    _experts: dict = PrivateAttr(default_factory=dict)  # id(transformer) -> the expert it was attached as

    Fn_compute_blocks: int = Field(default=8, ge=0, description="first blocks computed at every step")
    Bn_compute_blocks: int = Field(default=0, ge=0, description="last blocks computed at every step")
    residual_diff_threshold: float = Field(default=0.08, ge=0.0, description="relative L1 change of the Fn "
                                                                            "residual below which to cache")
    max_accumulated_residual_diff_threshold: float | None = Field(default=None, ge=0.0)
    max_warmup_steps: int = Field(default=8, ge=0, description="steps computed in full first")
    warmup_interval: int = Field(default=1, ge=1)
    max_cached_steps: int = Field(default=-1, ge=-1, description="-1: no limit")
    max_continuous_cached_steps: int = Field(default=-1, ge=-1, description="-1: no limit")
    cfg_diff_compute_separate: bool = True
    steps_computation_mask: list[Literal[0, 1]] | None = Field(default=None, description="1: compute the step")
    steps_computation_policy: Literal["dynamic", "static"] = "dynamic"
    force_refresh_step_hint: int | None = Field(default=None, ge=1)
    force_refresh_step_policy: Literal["once", "repeat"] = "once"

    def check_basic(self) -> None:
        if self._steps is not None and self.steps_computation_mask is not None \
                and len(self.steps_computation_mask) != self._steps:
            raise ValueError(f"steps_computation_mask has {len(self.steps_computation_mask)} entries; "
                             f"give one per step ({self._steps})")
        self.cache_dit_configs(separate_cfg=False)  # cache-dit's own classes reject what they would at run time

    def check_model(self) -> None:
        from ..models import FAMILIES

        family = FAMILIES.get(self._family)
        names = supported_prefixes()
        if not any(family.pipeline_class.startswith(p) for p in names):
            raise ValueError(f"cache-dit has no block adapter for {family.pipeline_class} (the {family.name} "
                             f"family); it supports: {', '.join(sorted(names))}")

    @model_validator(mode="after")
    def _bind_guidance(self, info: ValidationInfo):
        self._guidance = (info.context or {}).get("guidance_scale")
        return self

    # cache-dit's configs ---------------------------------------------------------------------------
    def cache_config_kwargs(self) -> dict:
        return self.model_dump(exclude={"name", "calibrator"})

    def cache_dit_configs(self, separate_cfg: bool) -> tuple:
        """(cache_config, calibrator_config) as cache-dit's own dataclasses; a bad value raises ValueError."""
        cd = cache_dit()
        try:
            cache = getattr(cd, self.config_class)(enable_separate_cfg=separate_cfg, cfg_compute_first=False,
                                                   num_inference_steps=self._steps, **self.cache_config_kwargs())
            calibrator = getattr(self, "calibrator", None)
            calib = None
            if calibrator is not None:
                calib = getattr(cd, CALIBRATOR_CLASSES[calibrator.name])(**calibrator.model_dump(exclude={"name"}))
        except TypeError as err:
            raise ValueError(f"cache-dit {cache_dit_version()} rejects the fields: {err}") from None
        return cache, calib

    def _separate_cfg(self, transformer: torch.nn.Module) -> bool:
        """cache-dit's even/odd CFG bookkeeping is on when the pipeline makes two calls per step."""
        if self._family is not None:
            from ..models import FAMILIES

            family = FAMILIES.get(self._family)
            if self._guidance is not None:
                return len(family.branches(self._guidance)) > 1
            return family.cfg_layout == "separate"
        from cache_dit.caching.block_adapters import BlockAdapterRegister

        return BlockAdapterRegister.has_separate_cfg(transformer)  # cache-dit's own default

    def _stacks(self, transformer: torch.nn.Module) -> list:
        from cache_dit.caching.block_adapters import BlockAdapter, BlockAdapterRegister

        adapter = BlockAdapterRegister.get_adapter(transformer, skip_post_init=True)
        blocks = adapter.blocks
        return BlockAdapter.flatten(blocks) if isinstance(blocks, (list, tuple)) else [blocks]

    # life cycle ------------------------------------------------------------------------------------
    def make_policy(self):
        return None

    def attach(self, transformer: torch.nn.Module, blocks: list[torch.nn.Module], recorder=None) -> None:
        try:
            cd = cache_dit()
            from cache_dit.caching.block_adapters import BlockAdapterRegister

            cls = type(transformer).__name__
            if not BlockAdapterRegister.is_supported(transformer):
                raise ValueError(f"cache-dit has no block adapter for {cls}; it supports: "
                                 f"{', '.join(sorted(supported_prefixes()))}")
            n = self.Fn_compute_blocks + self.Bn_compute_blocks
            for stack in self._stacks(transformer):
                if n > len(stack):
                    raise ValueError(f"Fn_compute_blocks + Bn_compute_blocks = {n} exceeds the {len(stack)} "
                                     f"blocks of a stack of {cls}; lower them")
            cache, calib = self.cache_dit_configs(self._separate_cfg(transformer))
        except ValueError as err:
            raise BenchError(f"policy {self.name}: {err}") from None
        if getattr(transformer, "_is_cached", False):
            raise BenchError(f"policy {self.name}: the transformer already has a cache-dit cache enabled")
        # the forward in place (diffusers' hook wrapper, a functools.partial): cache-dit's disable_cache
        # rebinds its saved forward with __get__, which a partial lacks, so detach restores this one itself
        self._forwards[id(transformer)] = transformer.__dict__.get("forward")
        self._experts[id(transformer)] = self._expert
        cd.enable_cache(transformer, cache_config=cache, calibrator_config=calib)
        self._note_input("cache_dit", f"cache-dit {cache_dit_version()}")  # records name the library version

    def detach(self, transformer: torch.nn.Module) -> None:
        if not getattr(transformer, "_is_cached", False):
            return
        cd = cache_dit()
        self._stats[self._experts.pop(id(transformer), None)] = cd.summary(transformer, logging=False)
        forward = self._forwards.pop(id(transformer), None)
        transformer.__dict__.pop("_original_forward", None)
        if forward is None:
            transformer.__dict__.pop("forward", None)
        else:
            transformer.forward = forward
        cd.disable_cache(transformer)

    def last_stats(self, expert: str | None = None) -> list:
        """``cache_dit.summary`` of the last video, taken at ``detach`` (cache-dit's own count); on a model with
        several experts, ``expert``'s (each expert's cache counts its own calls: :meth:`stats_per_expert`)."""
        if expert is None and len(self._stats) > 1:
            raise BenchError(f"policy {self.name}: this model has several experts ({', '.join(map(str, self._stats))}"
                             f"): ask last_stats(expert) or stats_per_expert()")
        return list(next(iter(self._stats.values()), []) if expert is None else self._stats.get(expert, []))

    def stats_per_expert(self) -> dict:
        """Each expert's ``cache_dit.summary`` of the last video, by expert name (None: a single transformer)."""
        return {e: list(v) for e, v in self._stats.items()}


def cache_dit_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cache-dit")
    except PackageNotFoundError:
        return "(version unknown)"


def supported_prefixes() -> list[str]:
    """Class-name prefixes of the pipelines and transformers cache-dit has a block adapter for."""
    from cache_dit.caching.block_adapters import BlockAdapterRegister

    cache_dit()
    return list(BlockAdapterRegister._adapters)


class DBCacheSpec(_CacheDitSpec):
    name: Literal["dbcache"] = "dbcache"
    config_class: ClassVar[str] = "DBCacheConfig"
    calibrator: Calibrator | None = Field(default=None, description="taylorseer | foca | dmd, or {name: ..., "
                                                                     "its fields}")

    @field_validator("calibrator", mode="before")
    @classmethod
    def _calibrator_by_name(cls, value):
        return {"name": value} if isinstance(value, str) else value

    def setting(self) -> str:
        """The table label: non-default fields, the calibrator as ``name(its non-default fields)``."""
        parts = [f"{k}={v}" for k, v in self.model_dump(exclude_defaults=True, exclude={"name", "calibrator"}).items()]
        if self.calibrator is not None:
            inner = ";".join(f"{k}={v}" for k, v in self.calibrator.model_dump(exclude_defaults=True).items())
            parts.append(f"calibrator={self.calibrator.name}" + (f"({inner})" if inner else ""))
        return ",".join(parts) if parts else "default"


class DBPruneSpec(_CacheDitSpec):
    name: Literal["dbprune"] = "dbprune"
    config_class: ClassVar[str] = "DBPruneConfig"
    enable_dynamic_prune_threshold: bool = False
    max_dynamic_prune_threshold: float | None = Field(default=None, ge=0.0)
    dynamic_prune_threshold_relax_ratio: float = Field(default=1.25, gt=0.0)
    non_prune_block_ids: list[int] = Field(default_factory=list, description="blocks never pruned")
    force_reduce_calibrator_vram: bool = False
