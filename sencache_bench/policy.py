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
A policy that works inside the blocks (docs/writing-a-policy.md, "Hooks inside the blocks"; ``adacache`` is
written this way) also uses: ``ModelBoundConfig`` (a config that knows the spec's model, family and step count),
``family_of`` (the family whose adapter names a transformer's class), and the hook framework it extends:
``PolicyHook`` (transformer level: decides, counts, keeps per-branch ``BranchState``), ``BlockHook`` (on each
block), the registry names ``POLICY_HOOK`` / ``BLOCK_HOOK`` and ``remove_policy``.
"""

from __future__ import annotations

from .errors import PolicyError
from .policies.base import (BLOCK_HOOK, POLICY_HOOK, BlockHook, BranchState, CachePolicy, CallInfo, Decision,
                            Extrapolate, Knob, PolicyConfig, PolicyHook, ReuseMode, extrapolate, remove_policy)
from .policies.teacache import ModelBoundConfig, family_of

#: the reuse modes (policies/base.py): ``output`` returns the cached transformer output (nothing runs);
#: ``residual`` runs embeddings and head, and replaces the block stack by the cached residual;
#: ``transform`` returns the current input plus ``y - x`` of the branch's last computed call (nothing runs)
REUSE_MODES: tuple[str, ...] = ("output", "residual", "transform")

__all__ = ["BLOCK_HOOK", "POLICY_HOOK", "BlockHook", "BranchState", "CachePolicy", "CallInfo", "Decision",
           "Extrapolate", "Knob", "ModelBoundConfig", "PolicyConfig", "PolicyError", "PolicyHook", "REUSE_MODES",
           "ReuseMode", "extrapolate", "family_of", "remove_policy"]
