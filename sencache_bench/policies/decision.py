"""What a policy sees and answers at one transformer call: :class:`CallInfo` in, :class:`Decision` out, the rule
itself (:class:`CachePolicy`) and the arithmetic of reuse by extrapolation (:func:`extrapolate`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

ReuseMode = Literal["output", "residual", "transform"]
Extrapolate = Literal["residual", "feature"]


@dataclass
class CallInfo:
    """What a policy may look at when it decides: one transformer call of one branch."""

    branch: str
    index: int  # calls so far in this branch = denoising step index (over the whole generation, all experts)
    timestep: float  # model units (0..1000)
    latent: torch.Tensor  # x_t of one sample (CFG-batched calls repeat it)
    num_steps: int | None = None
    block_args: tuple = ()  # the head block's inputs, for policies that decide in the block
    block_kwargs: dict = field(default_factory=dict)
    probe_input: tuple = ()  # with a probe: the block stack's input (hidden[, encoder])
    probe_output: tuple = ()  # with a probe: the probe blocks' output, this call


@dataclass
class Decision:
    compute: bool
    score: float | None = None
    threshold: float | None = None
    detail: dict | None = None  # other measured values for the trace (AdaCache: c, motion score, chosen k); JSON-able
    #: a reuse that extrapolates (``CachePolicy.extrapolate``): ``prev + coefficient * (last - prev)`` of the
    #: last two computed calls' kept values; None reuses the last one as is
    coefficient: float | None = None


def extrapolate(previous: torch.Tensor, last: torch.Tensor, coefficient: float) -> torch.Tensor:
    """``previous + c * (last - previous)``: c = 1 is ``last``, c = 2 continues the line one more gap.

    DiCache's trajectory alignment (R_{k-1} + gamma (R_k - R_{k-1})) and DPCache's linear prediction
    (``c = (t - i) / (j - i)`` for steps i < j < t) are both this; calibrations call it too, so a plan is
    scored with the very arithmetic the run uses."""
    return previous + coefficient * (last - previous)


class CachePolicy(ABC):
    """A decision rule. Subclasses hold their config and keep per-branch state in ``new_state()``."""

    name: ClassVar[str]
    reuse: ReuseMode = "residual"
    decide_in_block: bool = False  # decide at the head block (sees its inputs) instead of before the forward
    #: the branch whose decision the other branches follow at the same step index (None: each decides alone);
    #: EasyCache decides on "cond" and applies it to "uncond". See PolicyHook.leader_decision.
    decide_on: str | None = None
    probe_blocks: int = 0  # residual reuse: the first n blocks run at every call; decide after them
    extrapolate: Extrapolate | None = None  # keep the last two computed calls' residuals (or stack outputs)
    #: residual reuse only: the transformer submodule (dotted path) whose *input* ends the cached residual, when
    #: the official code spans more than the block stack (LTX-Video: ``proj_out``, after norm_out and modulation)
    residual_end: str | None = None
    #: under ``parallel`` (sencache_bench/parallel.py): "vote" takes the decision every rank of the video agrees on
    #: (compute when any would); None opts out (then the all-gather check catches any disagreement)
    reduction: str | None = "vote"

    def new_state(self) -> Any:
        return None

    @abstractmethod
    def decide(self, state: Any, call: CallInfo) -> Decision: ...

    def restart(self, state: Any, call: CallInfo) -> Any:
        """The state after the hook computed a call the rule would have reused: an expert's first call (Wan 2.2,
        nothing the other expert cached is reused). Default: a fresh state, what a compute resets an accumulator
        to (MagCache's ratio, steps, err): the expert then runs the rule as if alone, its first call computed."""
        return self.new_state()

    def after_compute(self, state: Any, call: CallInfo, output: torch.Tensor) -> None:
        """Called after a computed call with the transformer's output sample."""


def call_position(call: CallInfo) -> tuple[int, int]:
    """(position, calls per step) of a call as the official scripts count it: one counter over the interleaved
    cond/uncond calls of separate-CFG pipelines (cond first: Wan's ``cnt``, even = cond), the step itself for a
    batched or single branch."""
    if call.branch in ("cond", "uncond"):
        return 2 * call.index + (call.branch == "uncond"), 2
    return call.index, 1
