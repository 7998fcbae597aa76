"""SemCache's spec (``{name: semcache, ...}``): validation against the family, building the policy, attaching
its hooks, and pricing TMM's fewer-token calls (package docstring: the parameters and their defaults)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, PrivateAttr

from ..base import Knob
from ..teacache import ModelBoundConfig, family_of
from .hooks import apply_semcache, remove_semcache
from .policy import SemCachePolicy
from .tmm import forced_keep_first


class SemCacheConfig(ModelBoundConfig):
    name: Literal["semcache"] = "semcache"
    knob: ClassVar[Knob] = Knob("ps_scale", "lower", 0.0, 4.0)  # p_s scaled: a larger threshold reuses more
    alpha: float | None = Field(default=None, ge=0.0, description="weight of the magnitude term M_norm "
                                                                  "(default: the family's published value)")
    beta: float | None = Field(default=None, ge=0.0, description="weight of the direction term D_norm "
                                                                 "(default: the family's published value)")
    s_m: float = Field(default=1.0, gt=0.0, description="magnitude scale: M_norm = tanh(M_raw / s_m)")
    layers: int = Field(default=15, ge=1, description="l: text-mixing attention layers hooked (a third shallow, "
                                                      "middle, deep; all when the model has fewer)")
    warmup: int = Field(default=2, ge=1, description="first calls of each branch always computed, without TMM")
    tmm: bool = Field(default=True, description="temporal motion metric: computed calls compute only moving frames")
    keep_ratio: float = Field(default=0.75, gt=0.0, le=1.0, description="r: share of frames TMM computes")
    motion: Literal["frames", "steps"] = Field(default="frames", description="S_m between consecutive latent "
                                                                             "frames, or a frame across steps")
    error: Literal["paper", "relative"] = Field(
        default="paper", description="Eq. 8: paper (model input/output, as written) or relative (ours; module doc)")
    ps_scale: float = Field(default=1.0, ge=0.0, description="p_s multiplied by this (alpha, beta scaled): "
                                                             "the budget knob of `sencache-bench match`")

    _reduced_blocks: dict = PrivateAttr(default_factory=dict)  # kept tokens -> per-block FLOPs (price_parts)

    def check_basic(self) -> None:
        if (self.alpha is None) != (self.beta is None):
            raise ValueError("give both alpha and beta (or neither, for the family's published pair)")

    def check_model(self) -> None:
        self.resolve(self._family_obj())

    def _family_obj(self, transformer: torch.nn.Module | None = None):
        from ...models import FAMILIES

        if self._family is not None:
            return FAMILIES.get(self._family)
        return family_of(transformer, "semcache")

    def resolve(self, family) -> tuple[dict, float, float]:
        """(adapter, alpha, beta) for a family, or ValueError with what to change."""
        adapter = family.adapters.get("semcache")
        if not adapter:
            raise ValueError(f"SemCache has no text-attention mapping for the {family.name} family")
        if self.alpha is not None:
            alpha, beta = self.alpha, self.beta
        elif adapter.get("preset"):
            alpha, beta = adapter["preset"]["alpha"], adapter["preset"]["beta"]
        else:
            raise ValueError(f"SemCache has no published (alpha, beta) for the {family.name} family (published: "
                             f"wan 0.2/0.8, hunyuanvideo 0.4/0.6): give alpha and beta")
        if self.tmm and adapter.get("select") is None:
            raise ValueError(f"TMM cannot drop frame tokens on the {family.name} family: set tmm: false")
        return adapter, float(alpha), float(beta)

    def make_policy(self) -> SemCachePolicy:
        raise NotImplementedError("SemCache needs the transformer: use attach()")

    def build(self, transformer: torch.nn.Module, force_keep=None) -> SemCachePolicy:
        try:
            adapter, alpha, beta = self.resolve(self._family_obj(transformer))
        except ValueError as err:
            from ...errors import BenchError

            raise BenchError(f"policy semcache: {err}") from None
        alpha, beta = alpha * self.ps_scale, beta * self.ps_scale  # p_s is linear in (alpha, beta)
        return SemCachePolicy(adapter, transformer, alpha, beta, s_m=self.s_m, warmup=self.warmup, tmm=self.tmm,
                              keep_ratio=self.keep_ratio, motion=self.motion, error=self.error,
                              force_keep=force_keep)

    def attach(self, transformer: torch.nn.Module, blocks: list[torch.nn.Module], recorder=None) -> None:
        apply_semcache(transformer, blocks, self.build(transformer), recorder, layers=self.layers)

    def detach(self, transformer: torch.nn.Module) -> None:
        remove_semcache(transformer)

    # -- pricing TMM's calls ------------------------------------------------------------------------
    def price_parts(self, session, parts: dict, calls: list) -> dict:
        """``parts`` (the reference's FLOP parts) with the block stack counted at every kept-token count of
        ``calls``: a 1-step generation under FlopCounterMode with the first ``kept`` video tokens computed,
        once per distinct count (kept for the runner's next items)."""
        needed = sorted({c.tokens[0] for c in calls if c.computed and c.tokens and c.tokens[0] < c.tokens[1]})
        if not needed:
            return parts
        cache = self._reduced_blocks  # per config instance: one spec, one model
        call = dict(parts["call"])
        reduced = dict(call.get("reduced", {}))
        for kept in needed:
            if str(kept) not in reduced:
                if kept not in cache:
                    cache[kept] = count_kept_blocks(session, self, kept, session.spec.prompts[0].text)
                reduced[str(kept)] = cache[kept]
        call["reduced"] = reduced
        return {**parts, "call": call}


def count_kept_blocks(session, config: SemCacheConfig, kept: int, prompt: str) -> list:
    """Per-block FLOPs (total, attention) of a call whose block stack computes ``kept`` video tokens."""
    transformer = session.transformer
    policy = config.build(transformer, force_keep=forced_keep_first(kept))
    apply_semcache(transformer, session.blocks, policy)
    try:
        counted = session.count_flops(prompt, seed=0)
    finally:
        remove_semcache(transformer)
    return counted["call"]["blocks"]


def describe(config: SemCacheConfig, family) -> dict[str, Any]:
    """What a config resolves to for a family (for logs)."""
    adapter, alpha, beta = config.resolve(family)
    return {"alpha": alpha, "beta": beta, "mapping": adapter.get("mapping"), "tmm": config.tmm}
