"""``semcache``: prompt-semantic-aware caching with a temporal motion metric (SemCache, anonymous ICLR 2026
submission; shared ALGORITHMS.md, "SemCache"). Residual reuse over the block stack, per CFG branch.

PSA, the threshold. On ``l`` text-mixing attention layers (default 15: 5 shallow, 5 middle, 5 deep; all of them
when the model has fewer), at every computed call from the branch's second call on, with Z_in / Z_out the layer
inputs / outputs (video tokens) averaged over the l layers (elementwise, tokens kept; :func:`layer_average`)::

    M_raw = (||Z_out||_F - ||Z_in||_F) / (||Z_in||_F + 1e-8)        M_norm = tanh(M_raw / s_m)
    cos   = <Z_in, Z_out> / (||Z_in||_F ||Z_out||_F)                  D_norm = (1 - cos) / 2
    p_s   = alpha * M_norm + beta * D_norm

Which layers "mix text" is model knowledge (``Family.adapters["semcache"]``): Wan and LTX-Video: the
cross-attention ``attn2`` of each block (Z_in its input, Z_out its output); HunyuanVideo: the joint attention of
each dual-stream block; CogVideoX: the joint attention ``attn1`` of each block (Z_in / Z_out: the video tokens
entering / leaving that attention; the text tokens are left out).

The error E (Eq. 8)::

    E_t = E_{t-1} + (||O_t - I_t||_1 / ||O_{t-1} - I_{t-1}||_1) * (||O_t - O_{t-1}||_1 / ||I_t - I_{t-1}||_1)

(:func:`eq8_rate` is the increment). Two readings (``error``):

- ``paper`` (default): as the paper writes it. I and O are the model's input latent and its output (the
  sentence after Eq. 8), t and t-1 consecutive calls of the branch; Algorithm 1's order: test ``E < p_s``; if
  it holds, REUSE and then add this step's increment against the previous call (the reused call's O is the
  transformer's output built from the cached residual at the current t); otherwise COMPUTE and ``E = 0``.
- ``relative`` (ours, not in the paper: an EasyCache-style runtime estimator): I / O are the block stack's input
  and output (video tokens); the rate ``rate_r`` of Eq. 8 is measured at each computed call against the
  previous computed one (true tensors both), and a candidate call adds
  ``rate_r * ||I_t - I_{t-1}||_1 / ||O_r||_1`` (the refresh's rate times the step's relative input change)
  before the test ``E < p_s``. Under residual reuse the stack's ``O_t = I_t + (O_r - I_r)`` makes both factors
  of Eq. 8 identically 1 at a candidate call, so this reading needs the refresh's rate; per-step values are a
  few 1e-2. (Adding ``rate_r`` alone, an earlier ``literal`` reading, gave 1 to 3 per step, above any
  ``p_s <= alpha + beta``: it never reused, so it is gone.)

The first ``warmup`` calls of a branch (at least 1) compute, and so does any call before p_s exists (two
computed calls) and, for ``relative``, the rate. ``alpha = beta = 0`` gives ``p_s = 0`` and never reuses. The
decision trace notes ``score = E`` at the test and ``threshold = p_s``.

TMM, which frames a computed call computes. Per post-patch latent frame f (``frames`` of the family adapter)::

    S_m(f) = ||f_t - f_{t-1}||_2 / (||f_t||_2 + ||f_{t-1}||_2 + 1e-8)
    tau = percentile_{(1 - r) * 100}(S_m)   (numpy's linear percentile); frames with S_m > tau compute

``motion: frames`` (default): f_t, f_{t-1} are consecutive latent frames of the call's input latent (motion
between frames); frame 0 has no predecessor and is always computed, tau is taken over frames 1..F'-1.
Frames whose score exceeds tau strictly compute (as the paper writes it); ``keep_ratio = 1`` computes every
frame, and so does a call where no score exceeds tau (all equal).
``motion: steps``: the same frame at this call and at the branch's previous call. ``r = keep_ratio``.
TMM applies on computed calls after the warm-up; the other frames' tokens LEAVE the block stack: the head block
gathers the kept tokens, every block gets the kept positions' RoPE / mask / per-token inputs (the family's
``select``), and the tail block scatters the result back, the dropped frames taking ``I + cached residual``. The
cached residual is refreshed for the kept tokens only. The recorder notes ``tokens = [kept, all]`` video tokens
per call, which prices the call (:meth:`SemCacheConfig.price_parts` counts the block stack at that token count
with FlopCounterMode, once per distinct count) and gives the effective NFE.

TMM support: Wan, HunyuanVideo (dual- and single-stream blocks; the text tokens always compute), CogVideoX (2B:
absolute positions are embedded before the blocks; 5B / 1.5: RoPE sliced) and LTX-Video. A family without a
``select`` in its adapter refuses ``tmm: true``.

Spec: ``{name: semcache, alpha, beta, s_m, layers, warmup, tmm, keep_ratio, motion, error}``; alpha / beta
default to the family's published pair (Wan 0.2 / 0.8, HunyuanVideo 0.4 / 0.6), other families need both.
Not given by the sources, so defaults of ours: ``s_m = 1``, ``warmup = 2`` (the fewest calls that give p_s),
``keep_ratio = 0.75``, ``motion``; ``error: paper`` is the paper's reading. On a TMM call the hooked layers see
the kept tokens only, so that call's p_s is computed on them.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal

import numpy as np
import torch
from diffusers.hooks import HookRegistry, ModelHook
from pydantic import Field, PrivateAttr

from .base import (BLOCK_HOOK, POLICY_HOOK, BlockHook, BranchState, CachePolicy, CallInfo, Decision, Knob,
                   PolicyHook, first_tensor, remove_policy)
from .teacache import ModelBoundConfig, family_of

ATTENTION_HOOK = "sencache_bench_semcache_attention"
EPS = 1e-8


# ---------------------------------------------------------------------------------------------------
# The equations, as pure functions of tensors (tested on hand-made values)
# ---------------------------------------------------------------------------------------------------
def _l1(x: torch.Tensor) -> float:
    return float(x.float().abs().sum())


def _fro(x: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x.float()))


def magnitude(z_in: torch.Tensor, z_out: torch.Tensor, s_m: float) -> tuple[float, float]:
    """(M_raw, M_norm): relative change of the Frobenius norm through the layer, squashed by tanh(. / s_m)."""
    n_in, n_out = _fro(z_in), _fro(z_out)
    m_raw = (n_out - n_in) / (n_in + EPS)
    return m_raw, math.tanh(m_raw / s_m)


def direction(z_in: torch.Tensor, z_out: torch.Tensor) -> tuple[float, float]:
    """(cos, D_norm): cosine between the flattened input and output, D_norm = (1 - cos) / 2 in [0, 1]."""
    denom = _fro(z_in) * _fro(z_out)
    cos = float((z_in.float() * z_out.float()).sum()) / denom if denom > 0 else 0.0
    return cos, (1.0 - cos) / 2.0


def semantic_threshold(z_in: torch.Tensor, z_out: torch.Tensor, alpha: float, beta: float,
                       s_m: float) -> dict[str, float]:
    """p_s = alpha * M_norm + beta * D_norm, with its parts."""
    m_raw, m_norm = magnitude(z_in, z_out, s_m)
    cos, d_norm = direction(z_in, z_out)
    return {"m_raw": m_raw, "m_norm": m_norm, "cos": cos, "d_norm": d_norm, "p_s": alpha * m_norm + beta * d_norm}


def layer_average(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Z_in, Z_out averaged over the hooked layers (elementwise)."""
    z_in = torch.stack([p[0].float() for p in pairs]).mean(0)
    z_out = torch.stack([p[1].float() for p in pairs]).mean(0)
    return z_in, z_out


def eq8_rate(o_t: torch.Tensor, i_t: torch.Tensor, o_p: torch.Tensor, i_p: torch.Tensor) -> float:
    """Eq. 8's increment: (||O_t - I_t||_1 / ||O_p - I_p||_1) * (||O_t - O_p||_1 / ||I_t - I_p||_1)."""
    return (_l1(o_t - i_t) / max(_l1(o_p - i_p), EPS)) * (_l1(o_t - o_p) / max(_l1(i_t - i_p), EPS))


def motion_scores(frames: torch.Tensor, previous: torch.Tensor | None = None) -> np.ndarray:
    """S_m per frame of ``frames`` (B, F, D): against the preceding frame (``previous`` None; frame 0 gets NaN)
    or against the same frame of ``previous`` (B, F, D)."""
    x = frames.float()
    if previous is None:
        cur, prev = x[:, 1:], x[:, :-1]
    else:
        cur, prev = x, previous.float()
    num = torch.linalg.vector_norm(cur - prev, dim=(0, 2))
    den = torch.linalg.vector_norm(cur, dim=(0, 2)) + torch.linalg.vector_norm(prev, dim=(0, 2)) + EPS
    scores = (num / den).cpu().double().numpy()
    return np.concatenate([[np.nan], scores]) if previous is None else scores


def frames_to_keep(scores: np.ndarray, keep_ratio: float) -> list[int]:
    """Frames with S_m > tau (strictly), tau the (1 - r) * 100 percentile of the finite scores; NaN frames always
    kept. Every frame with r = 1, or when none exceeds tau (all scores equal)."""
    finite = np.isfinite(scores)
    if not finite.any() or keep_ratio >= 1.0:
        return list(range(len(scores)))
    tau = np.percentile(scores[finite], (1.0 - keep_ratio) * 100.0)
    kept = [f for f in range(len(scores)) if not finite[f] or scores[f] > tau]
    return kept if any(finite[f] for f in kept) else list(range(len(scores)))


def select_layers(available: int, wanted: int) -> list[int]:
    """``wanted`` layer indices of ``available``: a third shallow (from the first), a third in the middle, a third
    deep (to the last); the remainder goes to the shallow, then the deep group. All layers if there are fewer."""
    if wanted >= available:
        return list(range(available))
    base, extra = divmod(wanted, 3)
    n_shallow, n_middle, n_deep = base + (extra > 0), base, base + (extra > 1)
    start = (available - n_middle) // 2
    picked = sorted(set(range(n_shallow)) | set(range(start, start + n_middle))
                    | set(range(available - n_deep, available)))
    if len(picked) < wanted or (n_shallow and start < n_shallow) or start + n_middle > available - n_deep:
        picked = sorted({int(round(x)) for x in np.linspace(0, available - 1, wanted)})
    return picked


# ---------------------------------------------------------------------------------------------------
# Token selection (TMM): which tokens run the block stack, and the model's per-block inputs that follow them
# ---------------------------------------------------------------------------------------------------
class TokenSelection:
    """The kept video tokens of one call; ``take`` slices any per-token block input the same way (memoised, as
    every block receives the same RoPE table / mask objects)."""

    def __init__(self, keep: torch.Tensor, n_video: int, frames: list[int] | None = None):
        self.keep, self.n_video, self.frames = keep, n_video, frames
        self._memo: dict[tuple[int, int, bool], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def kept(self) -> int:
        return int(self.keep.numel())

    def _index(self, x: torch.Tensor, dim: int, tail: bool) -> torch.Tensor:
        index = self.keep.to(x.device)
        if tail:  # the sequence is [video, rest]: keep the rest
            index = torch.cat([index, torch.arange(self.n_video, x.shape[dim], device=x.device)])
        return index

    def take(self, x: torch.Tensor, dim: int, tail: bool = False) -> torch.Tensor:
        key = (id(x), dim, tail)
        hit = self._memo.get(key)
        if hit is not None and hit[0] is x:
            return hit[1]
        out = x.index_select(dim, self._index(x, dim, tail))
        self._memo[key] = (x, out)
        return out

    def take_with_tail(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        return self.take(x, dim, tail=True)

    def scatter(self, computed: torch.Tensor, full_input: torch.Tensor,
                residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(full output, full residual): kept tokens from ``computed``, the others ``input + cached residual``
        (zero without a cache); the residual is refreshed for the kept tokens only."""
        keep = self.keep.to(computed.device)
        old = residual if residual is not None else torch.zeros_like(full_input)
        out = full_input + old
        out.index_copy_(1, keep, computed.to(out.dtype))
        new = old.clone()
        new.index_copy_(1, keep, computed.to(new.dtype) - full_input.index_select(1, keep))
        return out, new


# ---------------------------------------------------------------------------------------------------
# The decision rule
# ---------------------------------------------------------------------------------------------------
@dataclass
class SemCacheState:
    threshold: float | None = None  # p_s of the last computed call (from the branch's second call on)
    error: float = 0.0  # E since the last refresh
    rate: float | None = None  # Eq. 8 at the last refresh (relative)
    prev_model: tuple | None = None  # (O, I) of the branch's previous call: model output and input latent (paper)
    ref_input: torch.Tensor | None = None  # I at the last computed call
    ref_output_l1: float = 0.0  # ||O_r||_1
    prev_input: torch.Tensor | None = None  # I at the branch's previous call
    prev_frames: torch.Tensor | None = None  # latent frames at the previous call (motion: steps)
    current_input: torch.Tensor | None = None  # I of the call being decided (set by the head block)
    kwargs: dict = field(default_factory=dict)  # the transformer call's keyword arguments
    selection: TokenSelection | None = None  # TMM's kept tokens of the current call (None: all)
    z_sum: list = field(default_factory=list)  # running [sum Z_in, sum Z_out] over the hooked layers (float32)
    z_count: int = 0  # hooked layers seen in the current call
    last: dict = field(default_factory=dict)  # diagnostics of the last threshold update


class SemCachePolicy(CachePolicy):
    """Decides at the head block (it needs I_t); the block hooks apply TMM and report O and I."""

    name = "semcache"
    reuse = "residual"
    decide_in_block = True

    def __init__(self, adapter: dict, transformer: torch.nn.Module, alpha: float, beta: float, s_m: float = 1.0,
                 warmup: int = 2, tmm: bool = True, keep_ratio: float = 0.75,
                 motion: Literal["frames", "steps"] = "frames", error: Literal["paper", "relative"] = "paper",
                 force_keep: Callable[[int, int], torch.Tensor] | None = None):
        self.adapter, self.transformer = adapter, transformer
        self.alpha, self.beta, self.s_m = float(alpha), float(beta), float(s_m)
        self.warmup = max(1, int(warmup))
        self.tmm, self.keep_ratio, self.motion, self.error_mode = tmm, float(keep_ratio), motion, error
        self.force_keep = force_keep  # (frames, tokens per frame) -> kept token indices: every call computes them

    def new_state(self) -> SemCacheState:
        return SemCacheState()

    # -- decision ---------------------------------------------------------------------------------
    def decide(self, state: SemCacheState, call: CallInfo) -> Decision:
        current = state.current_input
        frames = None
        if self.force_keep is not None or self.tmm:
            frames, per_frame = self.adapter["frames"](self.transformer, state.kwargs)
        state.selection = None
        if self.force_keep is not None:
            keep = self.force_keep(frames.shape[1], per_frame)
            state.selection = TokenSelection(keep.to(torch.long), current.shape[1])
            state.prev_input = current
            return Decision(compute=True)
        if self.error_mode == "paper":
            ready = state.threshold is not None and state.prev_model is not None
        else:
            ready = state.threshold is not None and state.rate is not None and state.prev_input is not None
        if call.index < self.warmup or not ready:
            state.error = 0.0
            decision = Decision(compute=True, score=None, threshold=state.threshold)
        else:
            if self.error_mode == "relative":
                state.error += state.rate * _l1(current - state.prev_input) / max(state.ref_output_l1, EPS)
            if state.error < state.threshold:
                decision = Decision(compute=False, score=state.error, threshold=state.threshold)
            else:
                decision = Decision(compute=True, score=state.error, threshold=state.threshold)
                state.error = 0.0
        if decision.compute and self.tmm and call.index >= self.warmup and (
                self.motion == "frames" or state.prev_frames is not None):
            kept = frames_to_keep(motion_scores(frames, state.prev_frames if self.motion == "steps" else None),
                                  self.keep_ratio)
            if len(kept) < frames.shape[1]:
                keep = torch.cat([torch.arange(f * per_frame, (f + 1) * per_frame) for f in kept])
                state.selection = TokenSelection(keep, current.shape[1], kept)
        state.prev_input = current
        if frames is not None and self.motion == "steps":
            state.prev_frames = frames.detach().clone()
        return decision

    # -- after a call -----------------------------------------------------------------------------
    def after_call(self, state: SemCacheState, decision: Decision | None, model_input: torch.Tensor,
                   model_output: torch.Tensor) -> None:
        """``paper``: a reused call adds Eq. 8's increment against the previous call (model input latent I,
        model output O); every call becomes the next one's previous."""
        if self.error_mode != "paper" or self.force_keep is not None or decision is None:
            return
        with torch.no_grad():
            # one float32 copy each (``.float().clone()`` copied a bf16 tensor twice)
            i_t, o_t = (x.detach().to(torch.float32, copy=True) for x in (model_input, model_output))
            if o_t.shape[1] > i_t.shape[1]:  # a learned-variance output (Open-Sora: [velocity, sigma]): its prediction
                o_t = o_t[:, : i_t.shape[1]]
            if not decision.compute and state.prev_model is not None:
                state.error += eq8_rate(o_t, i_t, *state.prev_model)
            state.prev_model = (o_t, i_t)

    def after_stack(self, state: SemCacheState, call: CallInfo, inputs: torch.Tensor, outputs: torch.Tensor,
                    previous_residual: torch.Tensor | None) -> None:
        """The block stack's full input and output (video tokens) of a computed call: refresh the rate and p_s."""
        if self.force_keep is not None:
            return
        with torch.no_grad():
            if state.ref_input is not None and previous_residual is not None:
                state.rate = eq8_rate(outputs, inputs, state.ref_input + previous_residual, state.ref_input)
            state.ref_input = inputs
            state.ref_output_l1 = _l1(outputs)
            if call.index >= 1 and state.z_count:
                z_in, z_out = (z / state.z_count for z in state.z_sum)
                state.last = semantic_threshold(z_in, z_out, self.alpha, self.beta, self.s_m)
                state.last["rate"] = state.rate
                state.threshold = state.last["p_s"]
        state.z_sum, state.z_count = [], 0

    @staticmethod
    def add_layer(state: SemCacheState, z_in: torch.Tensor, z_out: torch.Tensor) -> None:
        """One hooked layer's (Z_in, Z_out) of the current call, summed in float32 (the average of
        :func:`layer_average` without keeping every layer's tensors)."""
        if not state.z_sum:
            state.z_sum = [z_in.detach().to(torch.float32, copy=True), z_out.detach().to(torch.float32, copy=True)]
        else:  # in place, promoted to float32 without a temporary copy
            state.z_sum[0].add_(z_in.detach())
            state.z_sum[1].add_(z_out.detach())
        state.z_count += 1


# ---------------------------------------------------------------------------------------------------
# Hooks
# ---------------------------------------------------------------------------------------------------
class SemPolicyHook(PolicyHook):
    """The framework's transformer hook, keeping the call's keyword arguments for the frame layout, and handing
    the policy the call's model input and output (Eq. 8, ``error: paper``)."""

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        state = self.state_manager.get_state()
        state.extra["kwargs"] = kwargs
        output = super().new_forward(module, *args, **kwargs)
        if isinstance(state.policy_state, SemCacheState):
            mark = self.mark()  # the policy's own work, outside decide: the record's hook_s
            self.policy.after_call(state.policy_state, state.decision, kwargs["hidden_states"], first_tensor(output))
            self.note(mark)
        return output

    def note(self, mark) -> None:
        if mark is not None:
            self.recorder.note_span(mark, "hook_s")


class SemBlockHook(BlockHook):
    """Residual reuse (as :class:`BlockHook`) plus TMM: gather the kept tokens at the head, give every block
    the kept positions' per-token inputs, scatter at the tail; report the stack's input and output."""

    def __init__(self, policy_hook: SemPolicyHook, is_head: bool, is_tail: bool, select: Callable | None):
        super().__init__(policy_hook, is_head, is_tail)
        self.policy: SemCachePolicy = policy_hook.policy
        self.select = select
        self.signature = None
        self.names: list[str] | None = None  # forward's parameter names when all can be passed by keyword

    def initialize_hook(self, module):
        super().initialize_hook(module)
        self.signature = inspect.signature(type(module).forward)
        params = list(self.signature.parameters.values())[1:]
        if all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params):
            self.names = [p.name for p in params]
        return module

    def _kept_arguments(self, module, args, kwargs, selection: TokenSelection) -> tuple[tuple, dict]:
        if self.names is not None and len(args) <= len(self.names):  # every argument by name: no bind (per block
            bound, arguments = None, {**dict(zip(self.names, args)), **kwargs}  # and call, it cost ~10 us each)
        else:
            bound = self.signature.bind(module, *args, **kwargs)
            arguments = bound.arguments
        if self.is_head:
            name = self.meta.hidden_states_argument_name
            arguments[name] = arguments[name].index_select(1, selection.keep.to(arguments[name].device))
        self.select(arguments, selection)
        return ((), arguments) if bound is None else (bound.args[1:], bound.kwargs)

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        state: BranchState = self.state_manager.get_state()
        ps: SemCacheState = state.policy_state
        inputs = self._inputs(args, kwargs)
        if self.is_head and state.decision is None:
            ps.current_input, ps.kwargs = inputs[0], state.extra.get("kwargs", {})
            state.call.block_args, state.call.block_kwargs = args, kwargs
            self.policy_hook.decide(state, state.call)
            recorder = self.policy_hook.recorder
            if ps.selection is not None and recorder is not None and hasattr(recorder, "note_tokens"):
                recorder.note_tokens(ps.selection.kept, ps.selection.n_video)
        if state.skip_blocks:
            if self.is_head:
                inputs = tuple(x + r for x, r in zip(inputs, state.residuals))
            return self._pack(inputs)
        selection = ps.selection
        if self.is_head:
            state.stack_inputs = inputs
        if selection is not None:
            mark = self.policy_hook.mark()
            args, kwargs = self._kept_arguments(module, args, kwargs, selection)
            self.policy_hook.note(mark)
        output = self.fn_ref.original_forward(*args, **kwargs)
        if self.is_tail:
            mark = self.policy_hook.mark()
            outs = list(self._unpack(output))
            full_in = state.stack_inputs
            previous = state.residuals[0] if state.residuals else None
            if selection is not None:
                outs[0], video_residual = selection.scatter(outs[0], full_in[0], previous)
            else:
                video_residual = outs[0] - full_in[0]
            residuals = [video_residual] + [o - i for o, i in zip(outs[1:], full_in[1:])]
            self.policy.after_stack(ps, state.call, full_in[0], outs[0], previous)
            state.residuals, state.stack_inputs = tuple(residuals), ()
            output = self._pack(tuple(outs))
            self.policy_hook.note(mark)
        return output


class TextAttentionHook(ModelHook):
    """On a text-mixing attention layer: keep (Z_in, Z_out) of computed calls from the branch's second call on."""

    _is_stateful = True

    def __init__(self, policy_hook: SemPolicyHook):
        super().__init__()
        self.policy_hook = policy_hook
        self.state_manager = policy_hook.state_manager

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        output = self.fn_ref.original_forward(*args, **kwargs)
        state: BranchState = self.state_manager.get_state()
        decision, ps = state.decision, state.policy_state
        if decision is not None and decision.compute and state.call is not None and state.call.index >= 1 \
                and isinstance(ps, SemCacheState):
            mark = self.policy_hook.mark()
            z_in = args[0] if args else kwargs["hidden_states"]
            z_out = output[0] if isinstance(output, (tuple, list)) else output
            SemCachePolicy.add_layer(ps, z_in, z_out)
            self.policy_hook.note(mark)
        return output

    def reset_state(self, module):
        return module


def apply_semcache(transformer: torch.nn.Module, blocks: list[torch.nn.Module], policy: SemCachePolicy,
                   recorder=None, layers: int = 15) -> SemPolicyHook:
    """Attach the policy: transformer hook, block hooks (residual reuse + TMM), hooks on ``layers`` text-mixing
    attention layers (none when the policy forces its kept tokens)."""
    hook = SemPolicyHook(policy, recorder)
    select = policy.adapter.get("select")
    for i, block in enumerate(blocks):
        block_hook = SemBlockHook(hook, is_head=i == 0, is_tail=i == len(blocks) - 1, select=select)
        HookRegistry.check_if_exists_or_initialize(block).register_hook(block_hook, BLOCK_HOOK)
    if policy.force_keep is None:
        attention = policy.adapter["text_attention"](transformer)
        for i in select_layers(len(attention), layers):
            HookRegistry.check_if_exists_or_initialize(attention[i]).register_hook(TextAttentionHook(hook),
                                                                                   ATTENTION_HOOK)
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.register_hook(hook, POLICY_HOOK)
    registry.invalidate_child_registries_cache()
    return hook


def remove_semcache(transformer: torch.nn.Module) -> None:
    remove_policy(transformer)
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    registry.remove_hook(ATTENTION_HOOK, recurse=True)
    registry.invalidate_child_registries_cache()


def forced_keep_first(tokens: int) -> Callable[[int, int], torch.Tensor]:
    """A ``force_keep`` that computes the first ``tokens`` video tokens (FLOPs depend on the count only)."""
    return lambda frames, per_frame: torch.arange(tokens)


def forced_keep_frames(frames: list[int]) -> Callable[[int, int], torch.Tensor]:
    """A ``force_keep`` that computes the given post-patch frames."""
    return lambda n, per_frame: torch.cat([torch.arange(f * per_frame, (f + 1) * per_frame) for f in frames])


# ---------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------
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
        from ..models import FAMILIES

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
            from ..errors import BenchError

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
    def price_parts(self, runner, parts: dict, calls: list) -> dict:
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
                    cache[kept] = count_kept_blocks(runner.session, self, kept, runner.spec.prompts[0].text)
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
