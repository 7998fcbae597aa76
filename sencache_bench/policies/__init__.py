"""Policy registry: a policy is a typed config (``PolicyConfig``) whose ``make_policy`` builds the rule.

A new policy is one module plus one line here.
"""

from __future__ import annotations

from ..registry import Registry
from .base import PolicyConfig

POLICIES: Registry[type[PolicyConfig]] = Registry("policy", entry_points="sencache_bench.policies")
#: where each built-in policy's method comes from (``sencache-bench policies``); a plugin's row shows its package
METHODS: dict[str, str] = {}
for _name, _target, _aliases, _method in [
    ("none", "sencache_bench.policies.none:NoneConfig", ("vanilla",), "no cache"),
    ("static", "sencache_bench.policies.static:StaticConfig", (), "a fixed schedule"),
    ("sencache", "sencache_bench.policies.sencache:SenCacheConfig", (), "SenCache (vita-epfl/SenCache)"),
    ("sencache-global", "sencache_bench.policies.sencache_global:SenCacheGlobalConfig", (),
     "SenCache's profile, planned for a budget (ours)"),
    ("lemica", "sencache_bench.policies.lemica:LeMiCaConfig", (), "LeMiCa (UnicomAI/LeMiCa)"),
    ("dicache", "sencache_bench.policies.dicache:DiCacheConfig", (), "DiCache (ICLR 2026; from the paper)"),
    ("dpcache", "sencache_bench.policies.dpcache:DPCacheConfig", (), "DPCache (arXiv 2602.22654; sglang)"),
    ("teacache", "sencache_bench.policies.teacache:TeaCacheConfig", (), "TeaCache (ali-vilab/TeaCache)"),
    ("magcache", "sencache_bench.policies.magcache:MagCacheConfig", (), "MagCache (Zehong-Ma/MagCache)"),
    ("semcache", "sencache_bench.policies.semcache:SemCacheConfig", (), "SemCache (PSA + TMM; the paper)"),
    ("easycache", "sencache_bench.policies.easycache:EasyCacheConfig", (),
     "EasyCache (arXiv 2507.02860; H-EmbodVis/EasyCache)"),
    ("adacache", "sencache_bench.policies.adacache:AdaCacheConfig", (),
     "AdaCache + MoReg (arXiv 2411.02397; AdaCache-DiT)"),
    ("fbc", "sencache_bench.policies.builtins:FirstBlockCacheSpec", ("first-block-cache",),
     "diffusers FirstBlockCache"),
    ("pab", "sencache_bench.policies.builtins:PyramidAttentionBroadcastSpec", (), "diffusers PAB"),
    ("fastercache", "sencache_bench.policies.builtins:FasterCacheSpec", (), "diffusers FasterCache"),
    ("taylorseer", "sencache_bench.policies.builtins:TaylorSeerSpec", (), "diffusers TaylorSeer"),
    ("diffusers-magcache", "sencache_bench.policies.builtins:DiffusersMagCacheSpec", (), "diffusers MagCache"),
    ("seacache", "sencache_bench.policies.builtins:SeaCacheSpec", (),
     "SeaCache (arXiv 2602.18993; diffusers SeaCacheConfig)"),
    ("dbcache", "sencache_bench.policies.cachedit:DBCacheSpec", (), "cache-dit DBCache (vipshop/cache-dit)"),
    ("dbprune", "sencache_bench.policies.cachedit:DBPruneSpec", (), "cache-dit DBPrune (vipshop/cache-dit)"),
]:
    POLICIES.add(_name, _target, _aliases)
    METHODS[_name] = _method
