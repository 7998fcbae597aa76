"""The stable surface for policy authors: everything a cache policy needs, in one import.

    from sencache_bench.policy import CachePolicy, CallInfo, Decision, Knob, PolicyConfig
    from sencache_bench.plugins import register_policy

The built-in policies (``sencache_bench/policies/*.py``) are written against the same classes. See
docs/writing-a-policy.md for a walk-through and :mod:`sencache_bench.testing` for the conformance checks.
``ModelBoundConfig``: a ``PolicyConfig`` that knows the spec's model, family and step count (``_model``,
``_family``, ``_steps``), for rules that need the step count when the pipeline's ``cache_context`` omits it.
``PolicyError``: raise it (one line) when a model cannot take the policy.
A probe (``CachePolicy.probe_blocks``) and reuse by extrapolation (``CachePolicy.extrapolate``,
``Decision.coefficient``, :func:`extrapolate`) serve policies that look inside the block stack (DiCache,
DPCache).
"""

from __future__ import annotations

from .errors import PolicyError
from .policies.base import (
    CachePolicy,
    CallInfo,
    Decision,
    Extrapolate,
    Knob,
    PolicyConfig,
    ReuseMode,
    extrapolate,
)
from .policies.teacache import ModelBoundConfig

#: the reuse modes (policies/base.py): ``output`` returns the cached transformer output (nothing runs);
#: ``residual`` runs embeddings and head, and replaces the block stack by the cached residual;
#: ``transform`` returns the current input plus ``y - x`` of the branch's last computed call (nothing runs)
REUSE_MODES: tuple[str, ...] = ("output", "residual", "transform")

__all__ = ["CachePolicy", "CallInfo", "Decision", "Extrapolate", "Knob", "ModelBoundConfig", "PolicyConfig",
           "PolicyError", "REUSE_MODES", "ReuseMode", "extrapolate"]
