"""diffusers' MagCache on Wan 2.2's two experts (tiny-wan22, 8 steps: 5 high-noise, 3 low-noise).

diffusers' hook counts its own calls against ``num_inference_steps`` (diffusers #14025): each expert therefore
gets its own MagCacheConfig, with the steps it runs and its own calibrated curve over them. The decisions equal
diffusers' rule (hooks/mag_cache.py) applied here by hand to each expert's curve, with a local step counter.
"""

from __future__ import annotations

import json

import pytest

from sencache_bench.calibration import magcache as mc_cal
from sencache_bench.errors import BenchError
from sencache_bench.runner import Runner
from sencache_bench.spec import resolve

PROMPT = "a red ball"
QUIET = dict(log=lambda m: None)
SETTINGS = {"threshold": 0.5, "max_skip_steps": 2, "retention_ratio": 0.2}


def _spec(out, policy=None):
    return resolve({"model": {"name": "tiny-wan22"}, "prompts": [PROMPT], "sampling": {"seeds": [0], "steps": 8},
                    "policy": policy or {"name": "none"}, "output": {"dir": str(out)}})


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    d = tmp_path_factory.mktemp("dmc")
    runner = Runner(_spec(d), **QUIET)
    return runner, mc_cal.calibrate(runner, 1, d / "mc.json", **QUIET), d


def diffusers_rule(curve, threshold, max_skip, retention):
    """MagCacheHeadHook's decisions on one expert's calls, by hand: local step s, retention int(r * k + 0.5),
    accumulate after it, reuse while err <= threshold and steps <= K with a residual kept; reset on compute."""
    k = len(curve)
    keep = int(retention * k + 0.5)
    ratio, steps, err, have, out = 1.0, 0, 0.0, False, []
    for s in range(k):
        compute = True
        if s >= keep:
            ratio *= curve[s]
            steps += 1
            err += abs(1.0 - ratio)
            if have and err <= threshold and steps <= max_skip:
                compute = False
            else:
                ratio, steps, err = 1.0, 0, 0.0
        have = have or compute
        out.append(compute)
    return out


def test_each_expert_runs_diffusers_rule_on_its_own_steps_and_curve(made):
    runner, path, d = made
    spec = _spec(d, {"name": "diffusers-magcache", "ratios": str(path), **SETTINGS})
    gen = runner.session.generate(PROMPT, 0, policy=spec.policy)
    data = json.loads(path.read_text())["experts"]
    reused = 0
    for expert, part in data.items():
        steps = part["steps_run"]["cond"]
        assert steps == (list(range(5)) if expert == "transformer" else [5, 6, 7])
        own = [part["branches"]["cond"][i] for i in steps]  # one curve for every branch (policy.branch)
        expected = diffusers_rule(own, **{"threshold": 0.5, "max_skip": 2, "retention": 0.2})
        for branch in ("cond", "uncond"):
            got = [c.computed for c in gen.calls if c.expert == expert and c.branch == branch]
            assert got == expected, (expert, branch)
            reused += got.count(False)
    assert reused > 0, "nothing reused: the test proves nothing"
    # the first call after the switch computes
    assert next(c for c in gen.calls if c.expert == "transformer_2").computed


def test_the_same_generation_twice_decides_the_same(made):
    """Each expert's counter ends at its own step count and resets (diffusers' _advance_step): no leak."""
    runner, path, d = made
    spec = _spec(d, {"name": "diffusers-magcache", "ratios": str(path), **SETTINGS})
    policy = spec.policy
    runner.session.attach(policy)
    try:
        first = [[c.computed for c in runner.session.generate(PROMPT, s).calls] for s in (0, 1)]
    finally:
        runner.session.detach(policy)
    fresh = [c.computed for c in runner.session.generate(PROMPT, 1, policy=_spec(d, {
        "name": "diffusers-magcache", "ratios": str(path), **SETTINGS}).policy).calls]
    assert first[0] == first[1] == fresh


def test_a_single_curve_is_refused_on_two_experts(made):
    runner, _, d = made
    spec = _spec(d, {"name": "diffusers-magcache", "ratios": [1.0] * 8, **SETTINGS})
    with pytest.raises(BenchError, match="must be a per-expert calibrated file of 8 steps"):
        runner.session.attach(spec.policy)
    runner.session.detach(spec.policy)


def test_priced_as_a_direct_count_and_conforms(made, tmp_path):
    """The record's FLOPs equal a FlopCounterMode count of the whole cached generation; the conformance kit
    passes on tiny-wan22 at the file's 8 steps."""
    from sencache_bench.testing import assert_conforms
    from tests.measure.test_calls import assert_parts_equal, direct_count

    runner, path, d = made
    spec = _spec(d, {"name": "diffusers-magcache", "ratios": str(path), **SETTINGS})
    run = Runner(spec, **QUIET)
    run._session = session = runner.session
    rec = json.loads(run.run_item(*run.items()[0]).read_text())
    holder = {}
    direct = direct_count(session, lambda: holder.setdefault("gen", session.generate(PROMPT, 0, policy=spec.policy)))
    assert_parts_equal(rec["flops"], direct)
    assert rec["nfe"] < 8 and set(rec["nfe_per_expert"]) == {"transformer", "transformer_2"}
    report = assert_conforms("diffusers-magcache", model="tiny-wan22", steps=8, workdir=tmp_path,
                             params={"ratios": str(path), **SETTINGS}, never_reuse={"max_skip_steps": 0})
    assert {c.name: c.passed for c in report.checks}["branches are independent"] is True
