"""MagCache: the published counts from the shipped curves, the rule per branch, presets and curve files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from sencache_bench.errors import SpecError
from sencache_bench.policies.base import CallInfo
from sencache_bench.policies.magcache import (
    MagCachePolicy,
    nearest_interp,
    shipped_curve,
    simulate,
)
from sencache_bench.runner import Session
from sencache_bench.spec import resolve


@pytest.mark.parametrize("k, reused", [(2, 25), (4, 29)])
def test_published_wan_1_3b_curve_reuses_25_and_29_of_50(k, reused):
    """ALGORITHMS.md: Wan 1.3B E012K2R02 skips 25 of 50 calls per branch, E012K4R02 29."""
    curve = shipped_curve("wan2.1-t2v-1.3b")
    assert set(curve["branches"]) == {"cond", "uncond"}
    for branch in ("cond", "uncond"):
        computed = simulate(curve["branches"][branch], thresh=0.12, max_reuse=k, retention=0.2)
        assert len(computed) == 50
        assert computed.count(False) == reused
        assert all(computed[:10])  # int(50 * 0.2) retained calls


def test_published_hunyuanvideo_curve_reuses_31_of_50():
    computed = simulate(shipped_curve("hunyuanvideo")["branches"]["cond"], thresh=0.24, max_reuse=6, retention=0.2)
    assert computed.count(False) == 31


def test_shipped_curves_name_their_source():
    for name in ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "hunyuanvideo", "hunyuanvideo-544p"):
        data = shipped_curve(name)
        assert data["source"]["repository"].endswith("Zehong-Ma/MagCache") and data["source"]["line"] > 0
        assert all(len(v) == 50 and v[0] == 1.0 for v in data["branches"].values())


def test_nearest_interp_is_the_sources():
    src = np.arange(50, dtype=float)
    assert nearest_interp(src, 50).tolist() == src.tolist()
    # round(arange(n) * (len - 1) / (n - 1))
    assert nearest_interp(src, 25).tolist() == np.round(np.arange(25) * 49 / 24).tolist()
    assert nearest_interp(src, 1).tolist() == [49.0]
    assert nearest_interp(src, 99)[[0, -1]].tolist() == [0.0, 49.0]


def test_rule_by_hand_and_k_bound():
    # ratios 0.9: acc_ratio .9, .81, .729 -> err .1, .29, .561; thresh .3, K 5, retention 0.25 of 8 -> 2 kept
    computed = simulate([1.0] + [0.9] * 7, thresh=0.3, max_reuse=5, retention=0.25)
    assert computed == [True, True, False, False, True, False, False, True]
    # ratio 1 everywhere: the error never grows, so only K limits the reuses
    computed = simulate([1.0] * 12, thresh=0.1, max_reuse=3, retention=0.0)
    assert computed == [True, False, False, False, True, False, False, False, True, False, False, False]


def test_policy_branches_are_independent_and_follow_the_rule():
    rng = np.random.default_rng(0)
    curves = {"cond": 1.06 + rng.normal(0, 0.01, 20), "uncond": 1 + rng.normal(0, 0.001, 20)}
    policy = MagCachePolicy(curves, thresh=0.1, max_reuse=2, retention=0.2, num_steps=20)
    states = {b: policy.new_state() for b in curves}
    got = {b: [] for b in curves}
    for i in range(20):  # interleaved, as a CFG pipeline calls them
        for b in ("cond", "uncond"):
            got[b].append(policy.decide(states[b], CallInfo(branch=b, index=i, timestep=0.0, latent=None)).compute)
    for b in curves:
        assert got[b] == simulate(curves[b], 0.1, 2, 0.2, branch=b)
        run = 0
        for c in got[b]:
            run = 0 if c else run + 1
            assert run <= 2
    assert got["cond"] != got["uncond"]


def test_presets_and_resolution(tiny_spec):
    def policy(model, **p):
        return resolve(tiny_spec(model={"name": model}, sampling={}, policy={"name": "magcache", **p})).policy

    curves, thresh, k, retention, source = policy("wan2.1-t2v-1.3b", preset="fast").resolve()
    assert (thresh, k, retention, source) == (0.12, 4, 0.2, "wan2.1-t2v-1.3b")
    assert policy("wan-1.3b", preset="slow").resolve()[1:4] == (0.12, 2, 0.2)
    assert policy("hunyuanvideo", preset="fast").resolve()[1:4] == (0.24, 6, 0.2)
    assert policy("wan2.1-t2v-1.3b", preset="slow", max_reuse=3).resolve()[2] == 3
    with pytest.raises(SpecError, match="no published slow setting"):
        policy("wan2.1-t2v-14b", preset="slow")
    with pytest.raises(SpecError, match="calibrate SPEC.yaml --policy magcache"):
        policy("tiny-wan")
    with pytest.raises(SpecError, match="wan family, not hunyuanvideo"):
        policy("hunyuanvideo", ratios="wan2.1-t2v-1.3b")


def test_calibrated_file_for_another_model_is_refused(tiny_spec, tmp_path):
    path = tmp_path / "ratios.json"
    path.write_text(json.dumps({"kind": "magcache_ratios", "model": "wan2.1-t2v-14b", "family": "wan",
                                "steps": 6, "branches": {"cond": [1.0] * 6}}))
    with pytest.raises(SpecError, match="calibrated on wan2.1-t2v-14b, not tiny-wan"):
        resolve(tiny_spec(policy={"name": "magcache", "ratios": str(path)}))
    with pytest.raises(SpecError, match="for the wan family"):
        resolve(tiny_spec(model={"name": "tiny-ltx"}, policy={"name": "magcache", "ratios": str(path)}))
    # the 14B's own spec accepts it, by hub id too
    assert resolve(tiny_spec(model={"name": "Wan-AI/Wan2.1-T2V-14B-Diffusers", "family": "wan"},
                             policy={"name": "magcache", "ratios": str(path)})).policy.resolve()[4] == str(path)


def test_tiny_wan_run_follows_the_curve(tiny_spec):
    """configs/tiny_magcache.yaml's calibrated curve on tiny-wan, remapped to 8 steps: trace = simulation."""
    spec = resolve(tiny_spec(sampling={"steps": 8}, policy={
        "name": "magcache", "thresh": 0.12, "max_reuse": 2, "ratios": "configs/calibrated/tiny-wan_magcache.json"}))
    curves = spec.policy.resolve()[0]
    gen = Session(spec).generate("a red ball", seed=0, policy=spec.policy)
    for branch in ("cond", "uncond"):
        computed = [c.computed for c in gen.calls if c.branch == branch]
        # retention int(2 * 8 * 0.2) = 3 interleaved calls: cond keeps steps 0-1, uncond step 0
        assert computed[:2] == [True, branch == "cond"]
        assert computed == simulate(curves[branch], 0.12, 2, 0.2, steps=8, branch=branch)
        assert 1 <= sum(computed) < 8
    used = spec.policy.inputs()["ratios"]  # what records keep as policy_inputs
    ratios = Path("configs/calibrated/tiny-wan_magcache.json")
    assert Path(used["path"]).resolve() == ratios.resolve()
    assert used["sha256"] == hashlib.sha256(ratios.read_bytes()).hexdigest()
