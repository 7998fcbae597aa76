"""SemCache's decision rule (PSA threshold against the accumulated Eq. 8 error, TMM on computed calls) and its
per-branch state; the hooks in :mod:`.hooks` feed it (package docstring: the equations and the source)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch

from ..base import CachePolicy, CallInfo, Decision
from .measures import EPS, _l1, eq8_increment, eq8_rate, semantic_threshold
from .tmm import TokenSelection, frames_to_keep, motion_scores


@dataclass
class SemCacheState:
    threshold: float | None = None  # p_s of the last computed call (from the branch's second call on)
    error: float = 0.0  # E since the last refresh
    rate: float | None = None  # Eq. 8 at the last refresh (relative)
    prev_model: tuple | None = None  # (O, I) of the branch's previous call: model output and input latent (paper)
    prev_gap: float | None = None  # ||O - I||_1 of that call when its increment measured it (paper), else None
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
        #: the family's (transformer, model input) -> the noisy latents, where the input also carries conditioning
        #: channels (image-to-video): Eq. 8 compares what the sampler updates, not the constant condition
        self.noisy_latents = adapter.get("noisy_latents")

    def new_state(self) -> SemCacheState:
        return SemCacheState()

    # -- decision ---------------------------------------------------------------------------------
    def decide(self, state: SemCacheState, call: CallInfo) -> Decision:
        current = state.current_input
        frames = per_frame = None
        if self.force_keep is not None or (self.tmm and self.motion == "steps"):  # "frames": only where TMM runs
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
            if frames is None:
                frames, per_frame = self.adapter["frames"](self.transformer, state.kwargs)
            kept = frames_to_keep(motion_scores(frames, state.prev_frames if self.motion == "steps" else None),
                                  self.keep_ratio)
            if len(kept) < frames.shape[1]:
                keep = (torch.tensor(kept).unsqueeze(1) * per_frame + torch.arange(per_frame)).reshape(-1)
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
            if self.noisy_latents is not None:
                model_input = self.noisy_latents(self.transformer, model_input)
            # one float32 copy each (``.float().clone()`` copied a bf16 tensor twice)
            i_t, o_t = (x.detach().to(torch.float32, copy=True) for x in (model_input, model_output))
            if o_t.shape[1] > i_t.shape[1]:  # a learned-variance output (Open-Sora: [velocity, sigma]): its prediction
                o_t = o_t[:, : i_t.shape[1]]
            gap = None
            if not decision.compute and state.prev_model is not None:
                increment, gap = eq8_increment(o_t, i_t, *state.prev_model, gap_p=state.prev_gap)
                state.error += increment
            state.prev_model, state.prev_gap = (o_t, i_t), gap

    def after_stack(self, state: SemCacheState, call: CallInfo, inputs: torch.Tensor, outputs: torch.Tensor,
                    previous_residual: torch.Tensor | None) -> None:
        """The block stack's full input and output (video tokens) of a computed call: refresh p_s and (``error:
        relative``, the only reading that uses them) the rate and ||O_r||_1."""
        if self.force_keep is not None:
            return
        with torch.no_grad():
            if self.error_mode == "relative":
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
