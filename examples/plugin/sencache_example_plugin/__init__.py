"""latent-drift: an example cache policy, packaged as a sencache-bench plugin.

The rule: reuse the cached block-stack residual while the latent x_t has drifted little since the last
computed call, i.e. while ``|x_t - x_last|_1 / |x_last|_1 < threshold``, and never more than
``max_reuse`` calls in a row. It is deliberately simple; the point is the plugin's shape.
"""

# `from __future__ import annotations` lets the type hints below name classes without evaluating them.
from __future__ import annotations

# dataclass: the per-branch state is a plain record; ClassVar/Literal: typing for the config's fields.
from dataclasses import dataclass
from typing import ClassVar, Literal

# pydantic's Field gives each spec key a default, bounds (validated before anything runs) and a description.
from pydantic import Field

# register_policy: the plugin entry into the harness (a decorator here).
from sencache_bench.plugins import register_policy

# The stable public surface for policy authors: the config base, the decision rule base, what a decision sees
# (CallInfo), what it returns (Decision), and the budget knob `match` and the conformance kit use.
from sencache_bench.policy import CachePolicy, CallInfo, Decision, Knob, PolicyConfig


# The decorator registers the config class under the spec name "latent-drift" (policy.name in a spec).
@register_policy("latent-drift")
class LatentDriftConfig(PolicyConfig):
    """The spec's ``policy:`` section. Unknown keys and out-of-range values are spec errors (PolicyConfig)."""

    # The `name` field must be the registered name, as a Literal with that default.
    name: Literal["latent-drift"] = "latent-drift"
    # The threshold on the relative L1 drift of x_t; 0 never reuses (the comparison below is strict).
    threshold: float = Field(default=0.1, ge=0.0, description="reuse while the relative L1 drift of x_t is below")
    # K: at most this many consecutive reuses, so errors cannot pile up without bound.
    max_reuse: int = Field(default=2, ge=0, description="K: at most this many consecutive reuses")
    # The budget knob: lower threshold = more compute; `match` searches 0..1, the kit checks NFE is monotone.
    knob: ClassVar[Knob] = Knob("threshold", "lower", 0.0, 1.0)

    # The harness calls make_policy() for each generation: a fresh rule object, so no state survives a video.
    def make_policy(self) -> LatentDriftPolicy:
        return LatentDriftPolicy(self.threshold, self.max_reuse)


# The per-branch state: diffusers keeps one per cache_context (cond / uncond), so branches never mix.
@dataclass
class DriftState:
    # x_t of the last computed call (None before the first call).
    last_latent: object = None
    # Reuses in a row since that call.
    reuses: int = 0


class LatentDriftPolicy(CachePolicy):
    """The decision rule: COMPUTE or REUSE, one transformer call of one branch at a time."""

    # The name recorded in traces.
    name = "latent-drift"
    # "residual": on a reuse, embeddings and head run with the current t and the block stack is replaced by
    # the residual cached at the last computed call ("output" would return the cached output as is).
    reuse = "residual"

    def __init__(self, threshold: float, max_reuse: int):
        self.threshold, self.max_reuse = threshold, max_reuse

    # A fresh state for each branch, created at its first call.
    def new_state(self) -> DriftState:
        return DriftState()

    def decide(self, state: DriftState, call: CallInfo) -> Decision:
        # The first call of a branch has nothing cached: it must compute.
        if state.last_latent is None:
            state.last_latent = call.latent
            return Decision(compute=True)
        # The relative L1 drift of x_t since the last computed call (float64 for a stable sum).
        prev = state.last_latent.double()
        drift = float((call.latent.double() - prev).abs().sum() / prev.abs().sum().clamp_min(1e-12))
        # Reuse while the drift is below the threshold and fewer than K reuses happened in a row.
        if drift < self.threshold and state.reuses < self.max_reuse:
            state.reuses += 1
            # score/threshold go into the run record's trace, so a table can show why each call was reused.
            return Decision(compute=False, score=drift, threshold=self.threshold)
        # Otherwise compute, and measure the next drift from this call's latent.
        state.last_latent, state.reuses = call.latent, 0
        return Decision(compute=True, score=drift, threshold=self.threshold)
