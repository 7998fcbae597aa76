"""AdaCache (policies/adacache.py): the equations on hand-made values, the schedule worked out by hand, a tiny-opensora
run against the schedule its own recorded residuals give, FLOPs against a direct count, and the refused family."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sencache_bench.errors import SpecError
from sencache_bench.policies.adacache import (CODEBOOKS, AdaCachePolicy, change_rate, lookup, moreg_factor,
                                              motion_score, scaled)
from sencache_bench.policy import CallInfo

FAST30 = CODEBOOKS[(30, "fast")]
TINY_BOOK = {0.5: 3, 1.0: 2, 100.0: 1}


def test_codebook_lookup_first_threshold_above_c_else_last():
    book = CODEBOOKS[(100, "fast")]  # {0.03: 12, 0.05: 10, 0.07: 8, 0.09: 6, 0.11: 4, 1.00: 3}
    assert [lookup(book, c) for c in (0.0, 0.0299, 0.03, 0.06, 0.108, 0.5, 7.0)] == [12, 12, 10, 8, 4, 3, 3]
    assert [lookup(FAST30, c) for c in (0.07, 0.2, 0.39, 0.41)] == [6, 4, 2, 1]


def test_change_rate_and_knob_by_hand():
    cached, current = torch.tensor([1.0, -2.0, 3.0, 0.0]), torch.tensor([1.0, -1.0, 1.0, 1.0])
    assert change_rate(current, cached, 2) == pytest.approx(4 / 6 / 2)  # |diff| = 0 + 1 + 2 + 1, ||cached|| = 6
    assert [scaled(6, s) for s in (0.0, 0.25, 0.5, 1.0, 1.5)] == [1, 2, 3, 6, 9]  # floor(6 s + 0.5), at least 1


def test_motion_score_by_hand():
    # 3 frames of 2 tokens (1 channel), frame-major: [1, 2 | 2, 2 | 2, 4]
    r = torch.tensor([1.0, 2.0, 2.0, 2.0, 2.0, 4.0]).reshape(1, 6, 1)
    # later frames [2, 2, 2, 4], earlier [1, 2, 2, 2]: |diff| = 1 + 0 + 0 + 2 = 3, norms 10 and 7
    assert motion_score(r, 2) == pytest.approx(3 / 17)
    # stride 2: frame 2 against frame 0: |[2, 4] - [1, 2]| = 3 over 6 + 3
    assert motion_score(r, 2, strides=(1, 2)) == pytest.approx((3 / 17 + 3 / 9) / 2)
    assert moreg_factor(0.385) == pytest.approx(1.0)
    assert moreg_factor(3 / 17) == pytest.approx(((3 / 17) / 0.385) ** 8)


def _replay(policy: AdaCachePolicy, steps: int, values: dict[int, float]) -> list[int]:
    """Drive the rule over ``steps`` calls; a computed step s has the measured residual [values[s]]."""
    state, computed = policy.new_state(), []
    for i in range(steps):
        call = CallInfo(branch="cond", index=i, timestep=0.0, latent=torch.zeros(1), num_steps=steps)
        if policy.decide(state, call).compute:
            computed.append(i + 1)
            state.measured = torch.tensor([values[i + 1]])
            policy.after_compute(state, call, torch.zeros(1))
    return computed


def test_schedule_worked_by_hand():
    # 12 steps, the 30-step fast codebook. Steps 1 and N-1, N always compute; the rate starts at 1.
    #   s=1  r=1.0                  no cache yet                       next = 1 + 1 = 2
    #   s=2  r=1.5   c = 0.5/1.0/1 = 0.5    >= 0.40       -> k = 1     next = 3
    #   s=3  r=1.6   c = 0.1/1.5/1 = 0.067  < 0.08        -> k = 6     next = 9 (4..8 reused)
    #   s=9  r=3.52  c = 1.92/1.6/6 = 0.2   < 0.24        -> k = 4     next = 13, but s=11 is forced
    #   s=11 r=3.52  c = 0                                -> k = 6;    s=12 forced
    values = {1: 1.0, 2: 1.5, 3: 1.6, 9: 3.52, 11: 3.52, 12: 3.52}
    sink = []
    assert _replay(AdaCachePolicy(FAST30, sink=sink), 12, values) == [1, 2, 3, 9, 11, 12]
    assert [(e["step"], e["k"]) for e in sink] == [(2, 1), (3, 6), (9, 4), (11, 6), (12, 6)]
    assert [e["c"] for e in sink[:3]] == pytest.approx([0.5, 0.1 / 1.5, 0.2])
    # the knob halves every rate (6 -> 3, 4 -> 2): s=3 gives k=3; s=6: c = 0.96/1.6/3 = 0.2 -> 4 -> k = 2;
    # s=8: c = 0 -> 6 -> k = 3, next 11 (forced anyway)
    half = {1: 1.0, 2: 1.5, 3: 1.6, 6: 2.56, 8: 2.56, 11: 2.56, 12: 2.56}
    assert _replay(AdaCachePolicy(FAST30, reuse_scale=0.5), 12, half) == [1, 2, 3, 6, 8, 11, 12]
    assert _replay(AdaCachePolicy(FAST30, reuse_scale=0.0), 12, dict.fromkeys(range(1, 13), 1.0)) == list(range(1, 13))


def test_moreg_scales_c_with_the_motion_gradient():
    # two frames of one token; inside the window moreg = (m / 0.385)^8, then + |10 (moreg - prev) / k|
    policy = AdaCachePolicy(((1e9, 1),), moreg=True, window=(2, 3), sink=(sink := []))
    state = policy.new_state()
    state.frame_tokens, state.cached, state.rate = 1, torch.tensor([[[1.0], [1.0]]]), 2
    r = torch.tensor([[[1.0], [3.0]]])  # m = 2 / 4 = 0.5; c = (0 + 2) / 2 / 2 = 0.5
    policy.measure(state, 2, r, 10)
    moreg = (0.5 / 0.385) ** 8
    expected = moreg + abs(10 * (moreg - 1.0) / 2)
    assert sink[0]["motion"] == pytest.approx(0.5) and sink[0]["moreg"] == pytest.approx(expected)
    assert sink[0]["score"] == pytest.approx(0.5 * expected)
    policy.measure(state, 4, r, 10)  # outside the window: moreg 1, gradient against the last moreg
    assert sink[1]["motion"] is None and sink[1]["moreg"] == pytest.approx(1 + abs(10 * (1 - moreg) / 1))


@pytest.fixture(scope="module")
def kit():
    from sencache_bench.testing import Kit

    k = Kit("adacache", model="tiny-opensora", steps=10, params={"codebook": TINY_BOOK})
    yield k
    k.close()


class _Residuals:
    """Independent of the policy's hooks: the measured block's attention residual (its attn2 input minus the block's
    input) at every call where the block really ran, by plain torch hooks."""

    def __init__(self, block):
        self.x_in, self.values = None, []
        self.handles = [block.register_forward_pre_hook(lambda m, a: setattr(self, "x_in", a[0])),
                        block.attn2.register_forward_pre_hook(lambda m, a: self.values.append(a[0] - self.x_in))]

    def close(self):
        for h in self.handles:
            h.remove()


def test_tiny_opensora_run_follows_the_hand_schedule(kit):
    prompt = next(iter(kit.reference))
    blocks = kit.session.blocks
    probe = _Residuals(blocks[1])  # temporal block 0: Open-Sora's block 13 of 28 at depth 2
    stack = []  # (stack input, stack output) of every call, computed or reused
    handles = [blocks[0].register_forward_pre_hook(lambda m, a: stack.append([a[0]])),
               blocks[-1].register_forward_hook(lambda m, a, out: stack[-1].append(out))]
    try:
        config = kit.config()
        gen = kit.generate(prompt, config)
    finally:
        probe.close()
        for h in handles:
            h.remove()
    computed = [c.step + 1 for c in gen.calls if c.computed]
    assert len(probe.values) == len(computed)
    # the schedule by hand from the recorded residuals: c = |r - r_prev|_1 / |r_prev|_1 / k, k from TINY_BOOK
    book = sorted(TINY_BOOK.items())
    k, last, prev, expected, hand, residuals = 1, None, None, [], [], iter(probe.values)
    for s in range(1, 11):
        if s in (1, 9, 10) or s >= last + k:
            expected.append(s)
            r = next(residuals).float()
            if prev is not None:
                c = float((prev - r).abs().sum() / prev.abs().sum()) / k
                k = next((v for t, v in book if c < t), book[-1][1])
                hand.append((s, c, k))
            prev, last = r, s
    assert computed == expected
    assert len(computed) < 10  # it reused something
    assert not np.array_equal(gen.frames, kit.reference[prompt].frames)
    trace = config.trace()  # every measurement: c, moreg, chosen k; the next decision's detail in the record
    assert [(e["step"], e["k"]) for e in trace] == [(s, k) for s, _, k in hand]
    assert [e["c"] for e in trace] == pytest.approx([c for _, c, _ in hand], rel=1e-5)
    shown = [c.detail for c in gen.calls if "c" in c.detail]
    assert [(d["c"], d["k"]) for d in shown] == [(e["c"], e["k"]) for e in trace[:len(shown)]]
    assert len(shown) == len(trace) - 1  # the last step's measurement has no decision after it
    # a reused call adds every block's cached attention and MLP residuals: the stack moves its input by what it
    # moved it at the last computed call (sum of the per-block residuals, up to rounding)
    last = None
    for s, (x_in, x_out) in enumerate(stack, start=1):
        if s in computed:
            last = x_out - x_in
        else:
            torch.testing.assert_close(x_out - x_in, last, rtol=1e-4, atol=1e-5)


def test_flops_priced_from_the_trace_match_a_direct_count(kit):
    assert_priced_like_a_direct_count(kit)


def assert_priced_like_a_direct_count(kit) -> None:
    """A MoReg run reuses, and its FLOPs priced from the trace equal FlopCounterMode over the cached generation."""
    from sencache_bench.runner import price

    prompt = next(iter(kit.reference))
    config = kit.config(moreg=True)
    gen = kit.generate(prompt, config)
    assert sum(c.computed for c in gen.calls) < len(gen.calls)
    traced = price(kit.session.count_flops(prompt, 0), gen.calls)
    direct = kit.session.count_generation(prompt, 0, config)  # FlopCounterMode over the whole cached generation
    assert traced["transformer"] == direct["transformer"] and traced["total"] == direct["total"]
    assert traced["total_no_attn"] == direct["total_no_attn"]


def test_refused_family_is_one_line():
    from sencache_bench.spec import resolve

    spec = {"model": {"name": "tiny-hunyuanvideo"}, "prompts": ["a cat"], "policy": {"name": "adacache"},
            "output": {"dir": "unused"}}
    with pytest.raises(SpecError) as err:
        resolve(spec)
    line = str(err.value)
    assert "\n" not in line and "single-stream blocks fuse attention and MLP" in line


def test_unpublished_step_count_needs_a_codebook():
    from sencache_bench.spec import resolve

    spec = {"model": {"name": "tiny-opensora"}, "sampling": {"steps": 7}, "prompts": ["a cat"],
            "policy": {"name": "adacache"}, "output": {"dir": "unused"}}
    with pytest.raises(SpecError, match="no published codebook for 7 steps"):
        resolve(spec)
    spec["sampling"]["steps"] = 30
    assert resolve(spec).policy.resolve_codebook(30) == FAST30
