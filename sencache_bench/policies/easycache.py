"""``easycache``: EasyCache (Zhou et al., arXiv 2507.02860; github H-EmbodVis/EasyCache, Apache-2.0).

Written on the public surface only (``sencache_bench.policy``), as a policy outside the package would be.
The rule, as in ``EasyCache4Wan2.1/easycache_generate.py`` (``easycache_forward``), per step of the
deciding branch (the conditional call; the unconditional call follows it, as the source's even/odd call
counter does: cond is call 2i, uncond 2i+1, and only even calls decide):

- transformation rate, refreshed at every computed call after the first:
  ``k = ||y_a - y_b||_1 / ||x_a - x_b||_1`` between the last two computed calls a, b (``||.||_1``: a mean
  absolute value, over the call's whole input / output);
- at a later call, ``eps_t = k * ||x_t - x_prev||_1 / ||y_last||_1`` with ``x_prev`` the input of the branch's
  previous call (computed or reused: the source stores ``previous_raw_input_even`` at every even call) and
  ``y_last`` the output of the last computed call; ``E += eps_t``. REUSE while ``E < tau``, else COMPUTE and
  ``E = 0``. No k yet (one computed call so far): COMPUTE;
- the first ``R`` steps and the last step always compute (``E = 0``). The source hard-codes ``ret_steps`` 10 of
  Wan 2.1's 50 steps (``10 * 2`` calls): ``warmup`` is that ratio, ``R = max(1, round(0.2 * steps))``;
- a reused call returns ``x_t + (y - x)`` of its branch's last computed call (reuse mode ``transform``): nothing
  runs. Models whose output is not shaped like the input (Open-Sora's learned sigma) are refused.

Default ``tau`` 0.05 (the source's ``--thresh``; README: 0.1 about 2x, 0.2 about 3x on Wan 2.1). With batched CFG
(one ``cond_uncond`` call) the one decision covers the batch and ``||.||_1`` runs over the whole batch output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from pydantic import Field

from ..policy import CachePolicy, CallInfo, Decision, Knob, ModelBoundConfig

WARMUP = 10 / 50  # ret_steps of the official Wan 2.1 script, as a fraction of its 50 steps


def mean_abs(x: torch.Tensor) -> float:
    return float(x.float().abs().mean())


def ratio(num: float, den: float) -> float:
    """num / den, infinite for a zero denominator (then the bound is crossed and the call computes)."""
    return num / den if den > 0 else float("inf")


@dataclass
class EasyCacheState:
    """One branch's history (the source's ``*_even`` attributes)."""

    prev_input: torch.Tensor | None = None  # x of the branch's previous call, computed or reused
    last_input: torch.Tensor | None = None  # x of the last computed call
    last_output: torch.Tensor | None = None  # y of the last computed call
    k: float | None = None  # transformation rate between the last two computed calls
    acc: float = 0.0  # accumulated eps since the last computed call


class EasyCacheConfig(ModelBoundConfig):
    name: Literal["easycache"] = "easycache"
    knob: ClassVar[Knob] = Knob("tau", "lower", 0.0, 0.5)  # a larger bound reuses more
    tau: float = Field(default=0.05, ge=0.0, description="bound on the accumulated estimated output change")
    warmup: float = Field(default=WARMUP, ge=0.0, le=1.0,
                          description="fraction of the steps computed first (official Wan 2.1: 10 of 50)")

    def make_policy(self) -> EasyCachePolicy:
        return EasyCachePolicy(self.tau, self.warmup, num_steps=self._steps)  # the spec's sampling.steps


class EasyCachePolicy(CachePolicy):
    name = "easycache"
    reuse = "transform"
    decide_on = "cond"

    def __init__(self, tau: float, warmup: float = WARMUP, num_steps: int | None = None):
        self.tau, self.warmup, self.num_steps = tau, warmup, num_steps

    def new_state(self) -> EasyCacheState:
        return EasyCacheState()

    def warmup_steps(self, steps: int) -> int:
        return max(1, int(self.warmup * steps + 0.5))

    def decide(self, state: EasyCacheState, call: CallInfo) -> Decision:
        steps = call.num_steps or self.num_steps
        if steps is None:
            raise RuntimeError("EasyCache needs the step count: validate the policy through a spec (spec.resolve) "
                               "or bind(steps=...)")
        x = call.latent.float()
        prev, state.prev_input = state.prev_input, x
        if call.index < self.warmup_steps(steps) or call.index >= steps - 1:
            state.acc = 0.0
            return Decision(compute=True)
        if state.k is None or prev is None:
            return Decision(compute=True)
        eps = ratio(state.k * mean_abs(x - prev), mean_abs(state.last_output))
        state.acc += eps
        if state.acc < self.tau:
            return Decision(compute=False, score=state.acc, threshold=self.tau)
        score, state.acc = state.acc, 0.0
        return Decision(compute=True, score=score, threshold=self.tau)

    def after_compute(self, state: EasyCacheState, call: CallInfo, output: torch.Tensor) -> None:
        x, y = call.latent.float(), output.detach().float()
        if state.last_output is not None and state.last_input is not None:
            state.k = ratio(mean_abs(y - state.last_output), mean_abs(x - state.last_input))
        state.last_input, state.last_output = x, y
