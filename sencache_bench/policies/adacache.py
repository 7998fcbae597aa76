"""``adacache``: Adaptive Caching with Motion Regularization (Kahatapitiya et al., arXiv 2411.02397; official code
AdaCache-DiT/AdaCache, Apache-2.0, ``opensora_base/opensora/models/stdit/stdit3.py`` and ``configs/sample_adacache*.py``).

Written on the public surface only (``sencache_bench.policy``), as a plugin would be. Per branch (``cache_context``):

- Schedule (1-based step ``s`` as the official ``fwd_id``; N steps): steps 1, N-1 and N always compute; otherwise a
  step computes when ``s == last computed + k``, k the reuse rate in force (1 at the start, so step 2 computes).
  A reused step runs no block: each block returns ``(x + a_i) + m_i``, its attention residual a_i and its
  cross-attention + MLP residual m_i cached at the last computed step (the official per-block reuse).
- At a computed step with a cached residual, the measured block's residual r (official: temporal block 13's
  attention residual, ``cache_res='t-attn'``, ``cache_loc=[13]``) gives the change rate per step
  ``c = ||r_prev - r||_1 / ||r_prev||_1 / k`` (k: the rate in force, as the official divides by it even when a
  forced step came sooner), then ``c *= moreg`` and the codebook maps c to the next k: the first
  ``(threshold, k)`` with ``c < threshold``, else the last k.
- MoReg (``apply_moreg``): inside the window ``lo <= s <= hi`` (official (10, 90) at 100 steps, (4, 26) at 30),
  ``m = mean over strides i of ||r[:, iS:] - r[:, :-iS]||_1 / (||r[:, iS:]||_1 + ||r[:, :-iS]||_1)`` (S: tokens per
  latent frame; tokens frame-major), ``moreg = (m / 0.385) ** 8 / 1``; outside it ``moreg = 1``. Then
  ``mograd = 10 * (moreg - moreg_prev) / k``, ``moreg_prev = moreg``, ``moreg += |mograd|`` (moreg_prev starts at 1).

Codebooks (official): 100 steps ``{0.03: 12, 0.05: 10, 0.07: 8, 0.09: 6, 0.11: 4, 1.00: 3}``; 30 steps fast
``{0.08: 6, 0.16: 5, 0.24: 4, 0.32: 3, 0.40: 2, 1.00: 1}``, slow ``{0.08: 3, 0.16: 2, 0.24: 1, 0.32: 1, 0.40: 1,
1.00: 1}``. The source gives no rule for other step counts, so they need ``codebook``. Budget knob (ours):
``reuse_scale`` multiplies every reuse rate, ``k' = max(1, floor(k * scale + 0.5))``: monotone in the scale for a
given c, and ``reuse_scale: 0`` computes every step (the never-reuse end). Where to split a block into its
attention and MLP parts, which block is measured and the tokens per frame are model knowledge
(``Family.adapters["adacache"]``); a family whose blocks have no separate attention residual is refused there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from diffusers.hooks import HookRegistry, ModelHook
from pydantic import Field, PrivateAttr, field_validator

from ..policy import (BLOCK_HOOK, POLICY_HOOK, BlockHook, BranchState, CachePolicy, CallInfo, Decision, Knob,
                      ModelBoundConfig, PolicyHook, family_of, remove_policy)

SPLIT_HOOK = "sencache_bench_adacache_split"
Codebook = tuple[tuple[float, int], ...]

CODEBOOKS: dict[tuple[int, str], Codebook] = {
    (100, "fast"): ((0.03, 12), (0.05, 10), (0.07, 8), (0.09, 6), (0.11, 4), (1.00, 3)),
    (30, "fast"): ((0.08, 6), (0.16, 5), (0.24, 4), (0.32, 3), (0.40, 2), (1.00, 1)),
    (30, "slow"): ((0.08, 3), (0.16, 2), (0.24, 1), (0.32, 1), (0.40, 1), (1.00, 1)),
}
MOREG_WINDOWS = {100: (10, 90), 30: (4, 26)}  # official moreg_steps, 1-based steps, inclusive


def moreg_window(steps: int) -> tuple[int, int]:
    """The published window at 100 and 30 steps; elsewhere (round(N/10), round(9N/10)), the 100-step one scaled (ours)."""
    return MOREG_WINDOWS.get(steps, (round(steps / 10), round(9 * steps / 10)))


# ---------------------------------------------------------------------------------------------------
# The equations (pure functions, tested on hand-made values)
# ---------------------------------------------------------------------------------------------------
def change_rate(current: torch.Tensor, cached: torch.Tensor, k: int) -> float:
    """c = ||cached - current||_1 / ||cached||_1 / k (official ``compute_next_step``, p = 1 over the whole tensor)."""
    cached, current = cached.float(), current.float()
    return float((cached - current).abs().sum() / cached.abs().sum()) / k


def lookup(codebook: Codebook, c: float) -> int:
    """The k of the first (threshold, k) with c < threshold, else the last k."""
    for threshold, k in codebook:
        if c < threshold:
            return k
    return codebook[-1][1]


def motion_score(residual: torch.Tensor, tokens_per_frame: int, strides=(1,)) -> float:
    """MoReg's raw score: mean over strides i of ||r[:, iS:] - r[:, :-iS]||_1 / (||r[:, iS:]||_1 + ||r[:, :-iS]||_1)."""
    r = residual.float()
    total = 0.0
    for i in strides:
        later, earlier = r[:, i * tokens_per_frame:], r[:, :-i * tokens_per_frame]
        total += float((later - earlier).abs().sum() / (later.abs().sum() + earlier.abs().sum()))
    return total / len(strides)


def moreg_factor(score: float, hyp=(0.385, 8.0, 1.0)) -> float:
    """((score / hyp0) ** hyp1) / hyp2: about 1 at the reference motion 0.385 (official ``moreg_hyp``)."""
    return ((score / hyp[0]) ** hyp[1]) / hyp[2]


def scaled(k: int, scale: float) -> int:
    """The budget knob: a reuse rate scaled and rounded half up, at least 1."""
    return max(1, int(k * scale + 0.5))


# ---------------------------------------------------------------------------------------------------
# The decision rule
# ---------------------------------------------------------------------------------------------------
@dataclass
class AdaCacheState:
    rate: int = 1  # k in force
    last: int | None = None  # 1-based step of the last computed call
    moreg_prev: float = 1.0
    score: float | None = None  # c * moreg that chose the rate in force
    measured: torch.Tensor | None = None  # the measured block's residual at the call just computed
    cached: torch.Tensor | None = None  # ... at the previous computed call
    frame_tokens: int | None = None  # tokens per latent frame of the current call
    pending: dict | None = None  # the last measurement, until a decision's detail shows it


class AdaCachePolicy(CachePolicy):
    name = "adacache"
    reuse = "residual"

    def __init__(self, codebook: Codebook, steps: int | None = None, reuse_scale: float = 1.0, moreg: bool = False,
                 window: tuple[int, int] | None = None, strides=(1,), hyp=(0.385, 8.0, 1.0), mograd_mul: float = 10.0,
                 sink: list | None = None):
        self.codebook, self.steps, self.reuse_scale = tuple(codebook), steps, float(reuse_scale)
        self.moreg, self.window, self.strides = moreg, window, tuple(strides)
        self.hyp, self.mograd_mul = tuple(hyp), float(mograd_mul)
        self.sink = sink  # every measurement's scores, for logs and tests (never read back)

    def new_state(self) -> AdaCacheState:
        return AdaCacheState()

    def decide(self, state: AdaCacheState, call: CallInfo) -> Decision:
        n = call.num_steps or self.steps
        if n is None:
            raise RuntimeError("AdaCache computes the last two steps but the step count is unknown: validate the "
                               "policy through a spec or bind(steps=...)")
        s = call.index + 1
        compute = s == 1 or s >= n - 1 or state.last is None or s >= state.last + state.rate
        detail = {"k": state.rate, "last_computed": state.last}
        if state.pending is not None:  # the first decision after a measurement carries it
            detail.update({key: v for key, v in state.pending.items() if key not in ("step", "k", "score")})
            state.pending = None
        return Decision(compute=compute, score=state.score, detail=detail)

    def after_compute(self, state: AdaCacheState, call: CallInfo, output: torch.Tensor) -> None:
        s, r = call.index + 1, state.measured
        if r is not None and state.cached is not None:
            self.measure(state, s, r, call.num_steps or self.steps)
        state.cached, state.measured, state.last = r, None, s

    def measure(self, state: AdaCacheState, s: int, r: torch.Tensor, n: int) -> None:
        """The official ``compute_next_step``: c, MoReg, the codebook, then the knob's scale."""
        k = state.rate
        c = change_rate(r, state.cached, k)
        entry = {"step": s, "c": c, "k_in_force": k}
        moreg = 1.0
        if self.moreg:
            lo, hi = self.window or moreg_window(n)
            motion = motion_score(r, state.frame_tokens, self.strides) if lo <= s <= hi else None
            moreg = moreg_factor(motion, self.hyp) if motion is not None else 1.0
            mograd = self.mograd_mul * (moreg - state.moreg_prev) / k
            state.moreg_prev = moreg
            moreg += abs(mograd)
            entry.update(motion=motion, mograd=mograd)
        state.score = c * moreg
        state.rate = scaled(lookup(self.codebook, state.score), self.reuse_scale)
        entry.update(moreg=moreg, score=state.score, k=state.rate)
        state.pending = entry
        if self.sink is not None:
            self.sink.append(entry)


# ---------------------------------------------------------------------------------------------------
# Hooks: per-block attention / MLP residuals
# ---------------------------------------------------------------------------------------------------
class SplitProbe(ModelHook):
    """On the module that receives a block's streams right after its attention residual was added."""

    def __init__(self, streams: int):
        super().__init__()
        self.streams, self.seen = streams, None

    def pre_forward(self, module, *args, **kwargs):
        self.seen = args[:self.streams]
        return args, kwargs


class StreamProbes:
    """A block whose streams enter separate modules after the attention residuals (HunyuanVideo 1.5: ``norm2`` the
    video tokens, ``norm2_context`` the text's): one :class:`SplitProbe` per module, seen together in the block's
    output order."""

    def __init__(self, probes: list[SplitProbe]):
        self.probes = probes

    @property
    def seen(self):
        parts = [p.seen for p in self.probes]
        return None if any(part is None for part in parts) else tuple(x for part in parts for x in part)

    @seen.setter
    def seen(self, value) -> None:
        for p in self.probes:
            p.seen = value


def split_probe(block, adapter: dict):
    """The probe on the adapter's split of ``block``: one module taking the ``streams`` first arguments, or a tuple
    of modules taking one stream each."""
    modules = adapter["split"](block)
    if isinstance(modules, torch.nn.Module):
        modules, probes = (modules,), [SplitProbe(adapter.get("streams", 1))]
    else:
        probes = [SplitProbe(1) for _ in modules]
    for module, probe in zip(modules, probes):
        HookRegistry.check_if_exists_or_initialize(module).register_hook(probe, SPLIT_HOOK)
    return probes[0] if len(probes) == 1 else StreamProbes(probes)


class AdaPolicyHook(PolicyHook):
    """The framework's transformer hook, keeping the call's keyword arguments for the adapter's frame layout."""

    def __init__(self, policy, recorder, label, transformer, frame_tokens):
        super().__init__(policy, recorder, label)
        self.transformer, self.frame_tokens = transformer, frame_tokens

    def new_forward(self, module, *args, **kwargs):
        state: BranchState = self.state_manager.get_state()
        state.extra["kwargs"] = kwargs
        return super().new_forward(module, *args, **kwargs)


class AdaBlockHook(BlockHook):
    """Computed call: run the block, cache (attention residual, rest); reused call: ``(x + a) + m``, nothing runs."""

    def __init__(self, policy_hook: AdaPolicyHook, index: int, count: int, probe: SplitProbe | StreamProbes,
                 measured: str | None):
        super().__init__(policy_hook, is_head=index == 0, is_tail=index == count - 1)
        self.index, self.count, self.probe, self.measured = index, count, probe, measured

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        state: BranchState = self.state_manager.get_state()
        inputs = self._inputs(args, kwargs)
        if state.skip_blocks:
            attn, rest = state.residuals[self.index]
            return self._pack(tuple((x + a) + m for x, a, m in zip(inputs, attn, rest)))
        self.probe.seen = None
        output = self.fn_ref.original_forward(*args, **kwargs)
        outputs = self._unpack(output)
        if self.probe.seen is None:
            raise RuntimeError(f"AdaCache: block {self.index}'s split module did not run (the family adapter's split)")
        mid = tuple(m.to(x.dtype) for m, x in zip(self.probe.seen, inputs))
        attn = tuple(m - x for m, x in zip(mid, inputs))
        rest = tuple(o - m for o, m in zip(outputs, mid))
        if not state.residuals:
            state.residuals = [None] * self.count
        state.residuals[self.index] = (attn, rest)
        if self.measured is not None:
            ps: AdaCacheState = state.policy_state
            ps.measured = (attn if self.measured == "attention" else rest)[0].detach()
            hook: AdaPolicyHook = self.policy_hook
            if hook.frame_tokens is not None and hook.policy.moreg:
                ps.frame_tokens = hook.frame_tokens(hook.transformer, state.extra["kwargs"])
        return output


def apply_adacache(transformer, blocks, policy: AdaCachePolicy, adapter: dict, measured: int, residual: str,
                   recorder=None, label: str = "adacache") -> AdaPolicyHook:
    hook = AdaPolicyHook(policy, recorder, label, transformer, adapter.get("frame_tokens"))
    for i, block in enumerate(blocks):
        probe = split_probe(block, adapter)
        block_hook = AdaBlockHook(hook, i, len(blocks), probe, residual if i == measured else None)
        HookRegistry.check_if_exists_or_initialize(block).register_hook(block_hook, BLOCK_HOOK)
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.register_hook(hook, POLICY_HOOK)
    registry.invalidate_child_registries_cache()
    return hook


def remove_adacache(transformer) -> None:
    remove_policy(transformer)
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.remove_hook(SPLIT_HOOK, recurse=True)
    registry.invalidate_child_registries_cache()


# ---------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------
class AdaCacheConfig(ModelBoundConfig):
    name: Literal["adacache"] = "adacache"
    knob: ClassVar[Knob] = Knob("reuse_scale", "lower", 0.0, 3.0)  # longer reuse spans reuse more
    codebook: dict[float, int] | None = Field(
        default=None, description="change-rate threshold -> steps until the next computed step (official: the "
                                  "100-step or 30-step table); needed at other step counts")
    preset: Literal["fast", "slow"] = Field(default="fast", description="which published codebook: fast or slow at "
                                            "30 steps; at 100 steps the repository's one table (fast here)")
    reuse_scale: float = Field(default=1.0, ge=0.0, description="every reuse rate times this, rounded (the budget "
                                                                "knob; 0 computes every step)")
    moreg: bool = Field(default=False, description="Motion Regularization (official sample_adacache_moreg.py)")
    moreg_window: tuple[int, int] | None = Field(
        default=None, description="1-based steps where the motion score applies (official (10, 90) at 100 steps, "
                                  "(4, 26) at 30; elsewhere round(N/10), round(9N/10), ours)")
    moreg_strides: list[int] = Field(default=[1], min_length=1)
    moreg_hyp: tuple[float, float, float] = Field(default=(0.385, 8.0, 1.0), description="normaliser, exponent, "
                                                                                        "divisor")
    mograd_mul: float = Field(default=10.0, ge=0.0)
    block: int | None = Field(default=None, ge=0, description="index in the block stack of the measured block "
                                                              "(default: the family's)")
    residual: Literal["attention", "mlp"] = Field(default="attention", description="the measured block's residual: "
                                                  "attention (official t-attn / s-attn) or cross-attention + MLP")

    _trace: list = PrivateAttr(default_factory=list)

    @field_validator("codebook")
    @classmethod
    def _codebook(cls, v):
        if v is not None and (not v or any(k < 1 for k in v.values())):
            raise ValueError("a codebook maps thresholds to reuse rates of at least 1 step")
        return v

    def check_model(self) -> None:
        self.adapter(None)
        self.resolve_codebook(self._steps)

    def adapter(self, transformer) -> dict:
        from ..models import FAMILIES

        family = FAMILIES.get(self._family) if self._family else family_of(transformer, "adacache")
        adapter = family.adapters.get("adacache")
        if adapter is None or "refused" in adapter:
            why = adapter["refused"] if adapter else "no adacache adapter (where to split its blocks)"
            raise ValueError(f"AdaCache cannot run on the {family.name} family: {why}")
        return adapter

    def resolve_codebook(self, steps: int | None) -> Codebook:
        if self.codebook is not None:
            return tuple(sorted((float(t), int(k)) for t, k in self.codebook.items()))
        if steps is None:
            raise ValueError("give policy.codebook or validate the policy through a spec (the step count picks "
                             "the published codebook)")
        if (steps, self.preset) not in CODEBOOKS:
            have = ", ".join(f"{n} steps ({p})" for n, p in CODEBOOKS)
            raise ValueError(f"AdaCache has no published codebook for {steps} steps ({self.preset}); published: "
                             f"{have}. Give policy.codebook (threshold: reuse steps)")
        return CODEBOOKS[(steps, self.preset)]

    def trace(self) -> list[dict]:
        """Every measurement since the config was attached: step, c, motion, moreg, mograd, score, chosen k."""
        return [dict(e) for e in self._trace]

    def make_policy(self):
        raise NotImplementedError("AdaCache needs the transformer: use attach()")

    def attach(self, transformer, blocks, recorder=None) -> None:
        from ..errors import BenchError

        try:
            adapter = self.adapter(transformer)
            codebook = self.resolve_codebook(self._steps)
        except ValueError as err:
            raise BenchError(f"policy adacache: {err}") from None
        measured = self.block if self.block is not None else adapter["block"](len(blocks))
        if self.moreg and adapter.get("frame_tokens") is None:
            raise BenchError("policy adacache: the family adapter gives no frame layout for MoReg: set moreg: false")
        if measured >= len(blocks):
            raise BenchError(f"policy adacache: block {measured} is past the {len(blocks)} blocks of the stack")
        self._note_input("codebook", "spec" if self.codebook is not None else
                         f"published ({self._steps} steps, {self.preset})")
        self._trace.clear()
        policy = AdaCachePolicy(codebook, self._steps, self.reuse_scale, self.moreg, self.moreg_window,
                                self.moreg_strides, self.moreg_hyp, self.mograd_mul, sink=self._trace)
        apply_adacache(transformer, blocks, policy, adapter, measured, self.residual, recorder, label=self.name)

    def detach(self, transformer) -> None:
        remove_adacache(transformer)

