"""FLOPs of a run priced from its call trace equal a direct count of the whole generation."""

from __future__ import annotations

import json

import pytest

from sencache_bench.measure.flops import count_flops
from sencache_bench.policies.static import StaticConfig
from sencache_bench.runner import Session, price
from sencache_bench.spec import resolve


@pytest.mark.parametrize("name", ["tiny-wan", "tiny-hunyuanvideo", "tiny-cogvideox", "tiny-opensora"])
@pytest.mark.parametrize("reuse", ["residual", "output", None])
def test_priced_trace_matches_direct_count(name, reuse, tiny_spec):
    """Second method: FlopCounterMode over the whole generation, with the policy attached."""
    session = Session(resolve(tiny_spec(model={"name": name}, sampling={"steps": 4})))
    parts = session.count_flops("a red ball", seed=0)
    policy = StaticConfig(every=2, reuse=reuse) if reuse else None
    holder = {}
    direct = count_flops(lambda: holder.setdefault("gen", session.generate("a red ball", seed=0, policy=policy)))
    priced = price(parts, holder["gen"].calls)
    assert priced["total"] == direct.total
    assert priced["total"] - priced["total_no_attn"] == direct.attention
    if reuse is not None:
        full = price(parts, session.generate("a red ball", seed=0).calls)
        assert priced["transformer"] < full["transformer"]


def test_attention_is_counted_on_cpu_tiny_wan(tiny_spec):
    """Hand formula 4*B*H*Sq*Sk*D per attention: self-attention over 12 video tokens, cross over 16 text tokens."""
    session = Session(resolve(tiny_spec()))
    parts = session.count_flops("a red ball", seed=0)
    heads, dim, video, text = 2, 12, 3 * 2 * 2, 16  # latent 3x4x4 with patch (1,2,2); max_sequence_length 16
    per_block = 4 * heads * video * video * dim + 4 * heads * video * text * dim
    assert [b[1] for b in parts["call"]["blocks"]] == [per_block, per_block]
    assert parts["call"]["outside"][1] == 0


EVERY_POLICY = [
    ("tiny-wan", {"name": "none"}),
    ("tiny-wan", {"name": "static", "every": 2}),
    ("tiny-wan", {"name": "sencache", "eps_main": 0.3, "max_reuse": 2}),
    ("tiny-wan", {"name": "teacache", "thresh": 0.2, "coefficients": "configs/calibrated/tiny-wan_teacache.json"}),
    ("tiny-wan", {"name": "magcache", "ratios": "configs/calibrated/tiny-wan_magcache.json"}),
    ("tiny-wan", {"name": "semcache"}),
    ("tiny-wan", {"name": "fbc", "threshold": 0.5}),
    ("tiny-wan", {"name": "pab", "spatial_attention_block_skip_range": 2,
                  "spatial_attention_timestep_skip_range": [-1, 1001]}),
    ("tiny-cogvideox", {"name": "fastercache", "spatial_attention_timestep_skip_range": [-1, 900]}),
    ("tiny-wan", {"name": "taylorseer", "cache_interval": 2, "disable_cache_before_step": 1}),
    ("tiny-wan", {"name": "taylorseer", "cache_interval": 2, "disable_cache_before_step": 1, "use_lite_mode": True}),
    ("tiny-wan", {"name": "diffusers-magcache", "ratios": "configs/calibrated/tiny-wan_magcache.json"}),
]


@pytest.mark.parametrize("model,policy", EVERY_POLICY, ids=lambda v: v if isinstance(v, str) else
                         "-".join(f"{k}={x}" for k, x in v.items() if k in ("name", "use_lite_mode")))
def test_every_policy_records_the_flops_its_generation_executes(model, policy, tiny_spec):
    """The record's FLOPs (priced from the trace, or by the replay for in-block caches) equal a direct
    FlopCounterMode count of the whole cached generation, attention included and apart."""
    from sencache_bench.runner import Runner

    spec = resolve(tiny_spec(model={"name": model}, sampling={"steps": 4}, prompts=["a red ball"], policy=policy))
    runner = Runner(spec)
    rec = json.loads(runner.run_item(*runner.items()[0]).read_text())
    holder = {}
    direct = count_flops(lambda: holder.setdefault("gen", runner.session.generate("a red ball", 0, policy=spec.policy)))
    assert {c.branch: sum(x.computed for x in holder["gen"].calls if x.branch == c.branch)
            for c in holder["gen"].calls} == rec["nfe_per_branch"], "the counted generation made the same decisions"
    assert rec["flops"]["total"] == direct.total
    assert rec["flops"]["total"] - rec["flops"]["total_no_attn"] == direct.attention
    assert rec["flops_method"] == ("replay" if spec.policy.priced_by_replay() else "trace")
    if policy["name"] in ("pab", "fastercache", "taylorseer"):  # work skipped inside the blocks is priced
        assert rec["flops"]["transformer"] < rec["reference"]["flops"]["transformer"]
