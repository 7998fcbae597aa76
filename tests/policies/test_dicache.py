"""dicache: the rule on scripted probe outputs worked by hand; the framework's probe and extrapolation against
the uncached model's own stack residuals; FLOPs priced from the trace against a direct count; every tiny model."""

from __future__ import annotations

from typing import Literal

import pytest
import torch

from sencache_bench.errors import PolicyError, SpecError
from sencache_bench.measure.flops import count_flops
from sencache_bench.policies import POLICIES
from sencache_bench.policies.dicache import DiCacheConfig, DiCachePolicy, alignment
from sencache_bench.policy import CachePolicy, CallInfo, Decision, PolicyConfig
from sencache_bench.runner import Runner, price
from sencache_bench.spec import resolve
from sencache_bench.testing import Kit

TINY_MODELS = ["tiny-wan", "tiny-cogvideox", "tiny-ltx", "tiny-hunyuanvideo", "tiny-opensora"]
STEPS = 6


def tiny(out, model: str = "tiny-wan", **policy) -> dict:
    return {"model": {"name": model}, "prompts": ["a red ball"], "sampling": {"steps": STEPS},
            "policy": {"name": "dicache", "tau": 0.3, **policy}, "output": {"dir": str(out), "save_videos": False}}


def _call(index: int, h1: float, x: float = 0.0) -> CallInfo:
    return CallInfo(branch="cond", index=index, timestep=0.0, latent=torch.zeros(1),
                    probe_input=(torch.full((2, 3), x),), probe_output=(torch.full((2, 3), h1),))


# -- the rule, by hand ------------------------------------------------------------------------------------------
def test_rule_on_a_scripted_probe_sequence():
    """tau 0.25, stack input 0 (so r1 = h1). h1 grows 10% a call: delta = 0.1 each time.

    call 0: first, computes; window [2].   call 1: acc 0.1 < 0.25, reuse, one computed call: no gamma.
    call 2: acc 0.2, reuse.   call 3: acc 0.3 >= 0.25: compute, acc 0; window [2, 2.662].
    call 4: acc 0.1, reuse, gamma = |2.9282 - 2| / |2.662 - 2| = 0.9282 / 0.662 = 1.40211...
    call 5: h1 falls to 1: delta = 1.9282 / 2.9282 = 0.65849, acc 0.75849: compute."""
    policy, h = DiCachePolicy(tau=0.25), [2.0, 2.2, 2.42, 2.662, 2.9282, 1.0]
    state = policy.new_state()
    got = [policy.decide(state, _call(i, v)) for i, v in enumerate(h)]
    assert [d.compute for d in got] == [True, False, False, True, False, True]
    assert got[0].score is None
    assert [d.score for d in got[1:]] == pytest.approx([0.1, 0.2, 0.3, 0.1, 0.1 + 1.9282 / 2.9282], rel=1e-5)
    assert [d.coefficient for d in got[:4]] == [None, None, None, None]
    assert got[4].coefficient == pytest.approx(0.9282 / 0.662, rel=1e-5)
    assert got[5].coefficient is None and state.accumulated == 0.0
    assert all(d.threshold == 0.25 for d in got)


def test_gamma_uses_the_probe_residual_and_is_clipped():
    """r1 = h1 - x: a stack input that moves with h1 leaves r1 (and gamma) unchanged."""
    o, last = torch.zeros(4), torch.ones(4)
    assert alignment(torch.full((4,), 1.5), o, last) == 1.5
    assert alignment(torch.full((4,), 0.5), o, last) == 1.0  # clipped up
    assert alignment(torch.full((4,), 3.0), o, last) == 2.0  # clipped down
    assert alignment(o, o, o) == 1.0 and alignment(last, o, o) == 2.0  # zero denominator
    policy = DiCachePolicy(tau=10.0, warmup_steps=2)  # the warm-up computes calls 0 and 1: window [1, 1]
    state = policy.new_state()
    for i in range(2):
        assert policy.decide(state, _call(i, 1.0)).compute
    d = policy.decide(state, _call(2, 5.0, 3.75))  # r1 = 1.25 against window [1, 1]: zero denominator -> 2
    assert not d.compute and d.coefficient == 2.0


def test_warm_up_computes_without_accumulating():
    policy = DiCachePolicy(tau=0.5, warmup_steps=2)
    state = policy.new_state()
    got = [policy.decide(state, _call(i, v)) for i, v in enumerate([1.0, 1.01, 1.02, 1.8])]
    assert [d.compute for d in got] == [True, True, False, True]
    assert got[2].score == pytest.approx(0.01 / 1.01, rel=1e-5)  # the sum starts after the warm-up
    assert got[3].score == pytest.approx(0.01 / 1.01 + 0.78 / 1.02, rel=1e-5)


def test_config_warm_up_is_a_fraction_of_the_steps(tmp_path):
    assert POLICIES.get("dicache") is DiCacheConfig
    spec = resolve({**tiny(tmp_path), "sampling": {"steps": 50}, "policy": {"name": "dicache"}})
    policy = spec.policy.make_policy()
    assert (policy.tau, policy.probe_blocks, policy.warmup_steps) == (0.08, 1, 10)  # official Wan 2.1 defaults
    with pytest.raises(SpecError, match="tau"):
        resolve(tiny(tmp_path, tau=-1))


# -- the framework: probe and extrapolation against the uncached model -----------------------------------------
class Scripted(CachePolicy):
    """Computes calls 0 and 1 of each branch, extrapolates call 2 with c = 1.5, reuses call 3 plainly."""

    name = "scripted"
    reuse = "residual"

    def __init__(self, probe: int, mode: str, seen: list):
        self.probe_blocks, self.extrapolate, self.seen = probe, mode, seen

    def decide(self, state, call: CallInfo) -> Decision:
        if call.branch == "cond":
            self.seen.append([t.clone() for t in call.probe_output])
        return Decision(compute=call.index < 2, coefficient=1.5 if call.index == 2 else None)


class ScriptedConfig(PolicyConfig):
    name: Literal["scripted"] = "scripted"
    probe: int = 1
    mode: str = "residual"
    model_config = {"extra": "forbid", "frozen": False}

    def make_policy(self):
        self._seen = []
        return Scripted(self.probe, self.mode, self._seen)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    kit = Kit("none", steps=4, workdir=tmp_path_factory.mktemp("dicache-kit"))
    yield kit
    kit.close()


def _stack_trace(kit, config, calls):
    """Per cond call: stack input, probe output and stack output, by torch's own hooks; and the recorder's calls."""
    blocks, rows, current = kit.session.blocks, [], {}
    def enter(module, args):
        current.clear()
        current["in"] = args[0].clone()

    handles = [blocks[0].register_forward_pre_hook(enter),
               blocks[0].register_forward_hook(lambda m, a, o: current.__setitem__("probe", o.clone())),
               blocks[-1].register_forward_hook(lambda m, a, o: rows.append({**current, "out": o.clone()}))]
    try:
        _, records = kit.replay(config, calls)
    finally:
        for h in handles:
            h.remove()
    return rows, records


@pytest.mark.parametrize("mode", ["residual", "feature"])
def test_probe_and_extrapolation_against_the_uncached_stack(kit, mode):
    cond = [c for c in kit.capture("a red ball bouncing on grass") if c[0].name == "cond"]
    ref, _ = _stack_trace(kit, POLICIES.get("none")(), cond)
    config = ScriptedConfig(mode=mode)
    got, records = _stack_trace(kit, config, cond)
    assert [c.blocks_ran for c in records] == [[0, 1], [0, 1], [0], [0]]  # the probe (block 0) ran every call
    for seen, r in zip(config._seen, ref):
        assert torch.equal(seen[0], r["probe"])  # decide() saw this call's probe output
    res = [r["out"] - r["in"] for r in ref]
    if mode == "residual":
        expect2, expect3 = ref[2]["in"] + (res[0] + 1.5 * (res[1] - res[0])), ref[3]["in"] + res[1]
    else:
        expect2, expect3 = ref[0]["out"] + 1.5 * (ref[1]["out"] - ref[0]["out"]), ref[1]["out"]
    torch.testing.assert_close(got[2]["out"], expect2, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[3]["out"], expect3, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(expect2, ref[2]["out"])  # the extrapolation is not the computed call


def test_extrapolating_before_two_computes_is_one_policy_error(kit):
    class Early(Scripted):
        def decide(self, state, call):
            return Decision(compute=call.index == 0, coefficient=2.0)

    class EarlyConfig(ScriptedConfig):
        def make_policy(self):
            return Early(1, "residual", [])

    with pytest.raises(PolicyError, match="extrapolated call 1 of branch 'cond' from 1 computed call"):
        kit.replay(EarlyConfig(), kit.capture("a red ball bouncing on grass"))


def test_a_probe_as_deep_as_the_stack_is_refused(tmp_path):
    spec = resolve(tiny(tmp_path, probe=2))  # tiny-wan has 2 blocks: nothing left to skip
    runner = Runner(spec, log=lambda s: None)
    with pytest.raises(PolicyError, match="a probe of 2 block\\(s\\) needs a stack of more blocks; this "
                                          "transformer has 2"):
        runner.session.generate("a red ball", 0, policy=spec.policy)


# -- FLOPs and end to end --------------------------------------------------------------------------------------
def test_trace_prices_the_probe_as_a_direct_count_does(tmp_path):
    """Reused calls run embeddings, head and block 0: the trace (blocks_ran) prices them; a direct FlopCounterMode
    count of the whole cached generation gives the same total, and the probe's share is visible."""
    runner = Runner(resolve(tiny(tmp_path)), log=lambda s: None)
    session, prompt = runner.session, "a red ball"
    parts = session.count_flops(prompt, seed=0)
    holder = {}
    direct = count_flops(lambda: holder.setdefault("gen", session.generate(prompt, 0, policy=runner.spec.policy)))
    calls = holder["gen"].calls
    reused = [c for c in calls if not c.computed]
    assert reused and all(c.forward_ran and c.blocks_ran == [0] for c in reused)
    priced = price(parts, calls)
    assert priced["total"] == direct.total and priced["total_no_attn"] == direct.no_attn
    without_probe = price(parts, [type(c)(**{**c.__dict__, "blocks_ran": [] if not c.computed else c.blocks_ran})
                                  for c in calls])
    assert priced["total"] - without_probe["total"] == len(reused) * parts["call"]["blocks"][0][0] > 0
    assert session.decision_flops(prompt, 0, runner.spec.policy, parts["call"]) == [0, 0]


@pytest.mark.parametrize("model", TINY_MODELS)
def test_every_tiny_model_runs_it(model, tmp_path):
    spec = resolve(tiny(tmp_path, model=model, tau=0.6))
    gen = Runner(spec, log=lambda s: None).session.generate("a red ball", 0, policy=spec.policy)
    for name in {c.branch for c in gen.calls}:
        pattern = [c.computed for c in gen.calls if c.branch == name]
        assert len(pattern) == STEPS and pattern[0] and not all(pattern)


def test_shipped_bench_config_has_the_official_constants():
    from pathlib import Path

    from sencache_bench.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "configs" / "bench_dicache.yaml")
    policy = spec.policy.make_policy()
    assert (spec.model_name, policy.tau, policy.probe_blocks, policy.warmup_steps) == ("bench-t2v", 0.08, 1, 6)
