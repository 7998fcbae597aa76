"""``static``: a fixed compute schedule (every k-th step, or an explicit step list).

The simplest cache, and the framework's proof: its NFE and trace are known before the run.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from .base import CachePolicy, CallInfo, Decision, Knob, PolicyConfig, ReuseMode


class StaticConfig(PolicyConfig):
    name: Literal["static"] = "static"
    knob: ClassVar[Knob] = Knob("every", "lower", 1, 64, integer=True)  # computes ceil(steps / every) calls
    every: int | None = Field(default=None, ge=1, description="compute steps 0, k, 2k, ...; reuse the others")
    steps: list[int] | None = Field(default=None, description="explicit step indices to compute (must include 0)")
    reuse: ReuseMode = "residual"

    @model_validator(mode="after")
    def _one_schedule(self):
        if (self.every is None) == (self.steps is None):
            raise ValueError("give exactly one of 'every' (an integer >= 1) or 'steps' (a list of step indices)")
        if self.steps is not None:
            if 0 not in self.steps:
                raise ValueError("'steps' must include 0: the first call has nothing to reuse")
            if any(s < 0 for s in self.steps):
                raise ValueError("'steps' must be step indices >= 0")
        return self

    def make_policy(self) -> StaticPolicy:
        return StaticPolicy(self)

    def fixed_schedule(self) -> bool:
        return True


class StaticPolicy(CachePolicy):
    name = "static"

    def __init__(self, config: StaticConfig):
        self.config = config
        self.reuse = config.reuse
        self._steps = set(config.steps or ())

    def decide(self, state, call: CallInfo) -> Decision:
        if self.config.every is not None:
            return Decision(compute=call.index % self.config.every == 0)
        return Decision(compute=call.index in self._steps)
