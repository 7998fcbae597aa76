"""The stable surface for policy authors: everything a cache policy needs, in one import.

    from sencache_bench.policy import CachePolicy, CallInfo, Decision, Knob, PolicyConfig
    from sencache_bench.plugins import register_policy

The built-in policies (``sencache_bench/policies/*.py``) are written against the same classes. See
docs/writing-a-policy.md for a walk-through and :mod:`sencache_bench.testing` for the conformance checks.
A probe (``CachePolicy.probe_blocks``) and reuse by extrapolation (``CachePolicy.extrapolate``,
``Decision.coefficient``, :func:`extrapolate`) serve policies that look inside the block stack (DiCache,
DPCache); ``ModelBoundConfig`` is a config that knows the spec's model, family and step count.
"""

from __future__ import annotations

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

#: the two reuse modes (policies/base.py): ``output`` returns the cached transformer output (nothing runs);
#: ``residual`` runs embeddings and head, and replaces the block stack by the cached residual
REUSE_MODES: tuple[str, ...] = ("output", "residual")

__all__ = ["CachePolicy", "CallInfo", "Decision", "Extrapolate", "Knob", "ModelBoundConfig", "PolicyConfig",
           "REUSE_MODES", "ReuseMode", "extrapolate"]
