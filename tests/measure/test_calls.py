"""FLOPs of a run priced from its call trace equal a direct count of the whole generation."""

from __future__ import annotations

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
