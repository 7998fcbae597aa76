"""MagCache at Wan 2.2's expert switch (tiny-wan22, 8 steps: 5 high-noise, 3 low-noise).

The low-noise expert's first call (step 5) computes whatever the rule says (nothing of the high-noise expert is
reused: PolicyHook.decide); the rule's state must then be what that compute leaves (ratio 1, steps 0, err 0), so
the expert's later decisions are MagCache's rule applied to its own curve from a fresh state. Before the fix the
forced compute kept the accumulated step count (steps = 1 after step 5), so with K = 1 step 6 computed where the
rule reuses.
"""

from __future__ import annotations

import json

from sencache_bench.calibration import magcache as mc_cal
from sencache_bench.runner import Runner
from sencache_bench.spec import resolve

PROMPT = "a red ball"
QUIET = dict(log=lambda m: None)
THRESH, K = 10.0, 1  # a loose bound: K decides, which is where a leftover step count shows


def _spec(out, policy=None):
    return resolve({"model": {"name": "tiny-wan22"}, "prompts": [PROMPT], "sampling": {"seeds": [0], "steps": 8},
                    "policy": policy or {"name": "none"}, "output": {"dir": str(out)}})


def magcache_by_hand(gammas, thresh, k):
    """The official rule on one expert's calls from a fresh state: the first call computes, then
    ratio *= gamma, steps += 1, err += |1 - ratio|; reuse while err < thresh and steps <= K, else compute and
    reset all three."""
    ratio, steps, err, out = 1.0, 0, 0.0, [True]
    for g in gammas[1:]:
        ratio *= g
        steps += 1
        err += abs(1.0 - ratio)
        if err < thresh and steps <= k:
            out.append(False)
        else:
            ratio, steps, err = 1.0, 0, 0.0
            out.append(True)
    return out


def test_low_noise_expert_runs_the_rule_from_a_fresh_state(tmp_path):
    runner = Runner(_spec(tmp_path), **QUIET)
    path = mc_cal.calibrate(runner, 1, tmp_path / "mc.json", **QUIET)
    data = json.loads(path.read_text())["experts"]
    spec = _spec(tmp_path, {"name": "magcache", "ratios": str(path), "thresh": THRESH, "max_reuse": K,
                            "retention": 0.1})  # int(0.1 * 16) = 1 interleaved call retained: cond's step 0
    gen = runner.session.generate(PROMPT, 0, policy=spec.policy)
    for branch in ("cond", "uncond"):
        low = data["transformer_2"]["branches"][branch]
        got = [c.computed for c in gen.calls if c.expert == "transformer_2" and c.branch == branch]
        assert [c.step for c in gen.calls if c.expert == "transformer_2" and c.branch == branch] == [5, 6, 7]
        assert got == magcache_by_hand(low[5:], THRESH, K) == [True, False, True], branch
        high = data["transformer"]["branches"][branch]
        got_high = [c.computed for c in gen.calls if c.expert == "transformer" and c.branch == branch]
        assert got_high == magcache_by_hand(high[:5], THRESH, K)

