"""Policy registry: a policy is a typed config (``PolicyConfig``) whose ``make_policy`` builds the rule.

A new policy is one module plus one line here.
"""

from __future__ import annotations

from ..registry import Registry
from .base import PolicyConfig

POLICIES: Registry[type[PolicyConfig]] = Registry("policy", entry_points="sencache_bench.policies")
for _name, _target, _aliases in [
    ("none", "sencache_bench.policies.none:NoneConfig", ("vanilla",)),
    ("static", "sencache_bench.policies.static:StaticConfig", ()),
    ("sencache", "sencache_bench.policies.sencache:SenCacheConfig", ()),
    ("sencache-global", "sencache_bench.policies.sencache_global:SenCacheGlobalConfig", ()),
    ("lemica", "sencache_bench.policies.lemica:LeMiCaConfig", ()),
    ("dicache", "sencache_bench.policies.dicache:DiCacheConfig", ()),  # Bu et al., ICLR 2026
    ("dpcache", "sencache_bench.policies.dpcache:DPCacheConfig", ()),  # arXiv 2602.22654 (sglang, Apache-2.0)
    ("teacache", "sencache_bench.policies.teacache:TeaCacheConfig", ()),
    ("magcache", "sencache_bench.policies.magcache:MagCacheConfig", ()),
    ("semcache", "sencache_bench.policies.semcache:SemCacheConfig", ()),
    ("easycache", "sencache_bench.policies.easycache:EasyCacheConfig", ()),
    ("adacache", "sencache_bench.policies.adacache:AdaCacheConfig", ()),
    ("fbc", "sencache_bench.policies.builtins:FirstBlockCacheSpec", ("first-block-cache",)),
    ("pab", "sencache_bench.policies.builtins:PyramidAttentionBroadcastSpec", ()),
    ("fastercache", "sencache_bench.policies.builtins:FasterCacheSpec", ()),
    ("taylorseer", "sencache_bench.policies.builtins:TaylorSeerSpec", ()),
    ("diffusers-magcache", "sencache_bench.policies.builtins:DiffusersMagCacheSpec", ()),
    ("seacache", "sencache_bench.policies.builtins:SeaCacheSpec", ()),
    ("dbcache", "sencache_bench.policies.cachedit:DBCacheSpec", ()),
    ("dbprune", "sencache_bench.policies.cachedit:DBPruneSpec", ()),
]:
    POLICIES.add(_name, _target, _aliases)
