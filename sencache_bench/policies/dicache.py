"""``dicache``: DiCache, "let the diffusion model determine its own cache" (Bu et al., ICLR 2026).

Written on the public surface (:mod:`sencache_bench.policy`), as a policy outside the package would be.
Per branch (CFG ``cache_context``), at every call:

- *online probe profiling*: the first block (``probe`` blocks) runs at every call; on its output h1,
  ``delta_t = ||h1_t - h1_prev||_1 / ||h1_prev||_1`` (mean absolute values, float32) is accumulated, with
  ``h1_prev`` the probe output of the previous call, computed or reused;
- REUSE while the sum stays below ``tau``; otherwise COMPUTE (the stack resumes from the probe's output,
  nothing runs twice) and reset the sum to 0;
- *dynamic cache trajectory alignment*: a reused call's stack residual is
  ``R = R_{k-1} + gamma (R_k - R_{k-1})`` from the last two computed calls' stack residuals, with
  ``gamma = ||r1_now - r1_{k-1}||_1 / ||r1_k - r1_{k-1}||_1`` clipped to [1, 2], r1 = h1 - x the probe's
  residual (x the stack input) now and at those two calls; with one computed call so far, ``R = R_k``;
- warm-up: the first ``int(warmup * n)`` steps compute (the official ``ret_ratio`` 0.2), the probe output
  still tracked; the first call of each branch always computes.

Constants from the official Wan 2.1 script (Bujiazi/DiCache ``WAN2.1/run_wan_dicache.py``: tau 0.08,
probe depth 1, ret_ratio 0.2; no licence, so facts only). gamma with a zero denominator: 1 when the
numerator is 0 too, else 2 (the clip of +inf). FLOPs: the probe's blocks run on reused calls and the call
trace records them, so a reused call is priced as embeddings, head and the probe.

Spec: ``{name: dicache, tau, probe, warmup}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from pydantic import Field

from sencache_bench.errors import BenchError
from sencache_bench.policy import (
    CachePolicy,
    CallInfo,
    Decision,
    Knob,
    ModelBoundConfig,
)

TAU = 0.08  # official Wan 2.1 default (--rel_l1_thresh)
WARMUP = 0.2  # official --ret_ratio


def relative_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """``mean|a - b| / mean|b|`` in float32 (the probe's change, DiCache's delta_t)."""
    current, previous = current.float(), previous.float()
    return float((current - previous).abs().mean() / previous.abs().mean())


def alignment(now: torch.Tensor, older: torch.Tensor, last: torch.Tensor) -> float:
    """gamma = ||r_now - r_{k-1}||_1 / ||r_k - r_{k-1}||_1 clipped to [1, 2] (mean absolute values)."""
    num = float((now.float() - older.float()).abs().mean())
    den = float((last.float() - older.float()).abs().mean())
    if den == 0.0:
        return 1.0 if num == 0.0 else 2.0
    return min(2.0, max(1.0, num / den))


@dataclass
class DiCacheState:
    previous: torch.Tensor | None = None  # h1 of the previous call
    accumulated: float = 0.0
    window: list = field(default_factory=list)  # r1 of the last two computed calls, oldest first


class DiCachePolicy(CachePolicy):
    name = "dicache"
    reuse = "residual"
    extrapolate = "residual"

    def __init__(self, tau: float, probe: int = 1, warmup_steps: int = 0):
        self.tau = float(tau)
        self.probe_blocks = int(probe)
        self.warmup_steps = int(warmup_steps)

    def new_state(self) -> DiCacheState:
        return DiCacheState()

    def decide(self, state: DiCacheState, call: CallInfo) -> Decision:
        h1, x = call.probe_output[0].detach(), call.probe_input[0].detach()
        if state.previous is None or call.index < self.warmup_steps:
            compute, score, gamma = True, None, None
            state.accumulated = 0.0
        else:
            state.accumulated += relative_l1(h1, state.previous)
            score = state.accumulated
            compute = not score < self.tau  # a NaN change (a zero probe output) computes
            gamma = None
            if compute:
                state.accumulated = 0.0
            elif len(state.window) == 2:
                gamma = alignment(h1 - x, *state.window)
        if compute:
            state.window = [*state.window[-1:], h1 - x]
        state.previous = h1
        return Decision(compute=compute, score=score, threshold=self.tau, coefficient=gamma)


class DiCacheConfig(ModelBoundConfig):
    name: Literal["dicache"] = "dicache"
    knob: ClassVar[Knob] = Knob("tau", "lower", 0.0, 1.0)  # a larger bound on the accumulated change reuses more
    tau: float = Field(default=TAU, ge=0.0, description="accumulated probe change below which the call is reused")
    probe: int = Field(default=1, ge=1, description="probe depth: the first blocks, run at every call")
    warmup: float = Field(default=WARMUP, ge=0.0, le=1.0, description="fraction of the steps computed first "
                                                                      "(the official ret_ratio)")

    def make_policy(self) -> DiCachePolicy:
        steps = self._steps
        if self.warmup > 0 and steps is None:
            raise BenchError("dicache's warm-up is a fraction of the step count: validate the policy through a "
                             "spec or bind(steps=...)")
        return DiCachePolicy(self.tau, self.probe, int(self.warmup * steps) if steps else 0)
