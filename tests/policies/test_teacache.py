"""TeaCache: the accumulation by hand, forced steps on the tiny models, indicators, presets and errors."""

from __future__ import annotations

import pytest
import torch

from sencache_bench.errors import SpecError
from sencache_bench.models.wan import teacache_time_embedding
from sencache_bench.policies.base import CallInfo
from sencache_bench.policies.teacache import PUBLISHED, TeaCachePolicy, describe
from sencache_bench.runner import Session
from sencache_bench.spec import resolve

TINY_MODELS = ["tiny-wan", "tiny-cogvideox", "tiny-ltx", "tiny-hunyuanvideo", "tiny-opensora"]


def _call(i: int, branch: str = "cond", steps: int = 7) -> CallInfo:
    return CallInfo(branch=branch, index=i, timestep=1000.0 - i, latent=None, num_steps=steps)


def test_accumulation_against_a_hand_computed_sequence():
    values = [1.0, 1.1, 1.21, 1.0, 1.05, 2.0, 2.0]
    # poly(x) = x + 0.01 (highest power first), thresh 0.25:
    # i=1: rel .1 -> acc .11 reuse; i=2: rel .1 (prev is the reused call's 1.1) -> .22 reuse;
    # i=3: rel .21/1.21 -> .22 + .183553 = .403553 compute, acc = 0; i=4: rel .05 -> .06 reuse;
    # i=5: rel .95/1.05 -> .06 + .914762 compute; i=6: last step, forced.
    policy = TeaCachePolicy(lambda call: torch.full((2, 3), values[call.index]), [0, 0, 0, 1, 0.01], thresh=0.25)
    state = policy.new_state()
    decisions = [policy.decide(state, _call(i)) for i in range(7)]
    assert [d.compute for d in decisions] == [True, False, False, True, False, True, True]
    expected = [None, 0.11, 0.22, 0.22 + 0.21 / 1.21 + 0.01, 0.06, 0.06 + 0.95 / 1.05 + 0.01, None]
    for d, e in zip(decisions, expected):
        assert (d.score is None) if e is None else d.score == pytest.approx(e, abs=1e-6)
    assert policy.rescale(2.0) == pytest.approx(2.01)
    assert TeaCachePolicy(lambda c: None, [1, 0, 0, 0, 0], 0.1).rescale(2.0) == 16.0  # numpy poly1d order


def test_branches_keep_their_own_state():
    seq = {"cond": [1.0, 1.01, 1.02, 1.03, 1.04], "uncond": [1.0, 2.0, 4.0, 8.0, 16.0]}
    policy = TeaCachePolicy(lambda call: torch.tensor([seq[call.branch][call.index]]), [0, 0, 0, 1, 0], thresh=0.5)
    states = {b: policy.new_state() for b in seq}
    got = {b: [] for b in seq}
    for i in range(5):
        for b in seq:
            got[b].append(policy.decide(states[b], _call(i, b, steps=5)).compute)
    assert got == {"cond": [True, False, False, False, True], "uncond": [True, True, True, True, True]}


@pytest.mark.parametrize("name", TINY_MODELS)
def test_first_and_last_step_forced_on_tiny_models(name, tiny_spec):
    """poly = -1 everywhere: the accumulated distance never reaches the threshold, so only forced calls compute."""
    steps = 5
    spec = resolve(tiny_spec(model={"name": name}, sampling={"steps": steps},
                             policy={"name": "teacache", "thresh": 0.0, "coefficients": [0, 0, 0, 0, -1]}))
    gen = Session(spec).generate("a red ball", seed=0, policy=spec.policy)
    branches = {c.branch for c in gen.calls}
    for branch in branches:
        computed = [c.computed for c in gen.calls if c.branch == branch]
        assert computed == [True] + [False] * (steps - 2) + [True], branch
    assert spec.policy.inputs() == {"coefficients": {"source": "spec"}}  # what records keep as policy_inputs


def test_wan_ret_steps_indicator_forces_five_first_steps_not_the_last(tiny_spec):
    spec = resolve(tiny_spec(sampling={"steps": 7}, policy={
        "name": "teacache", "thresh": 0.0, "coefficients": [0, 0, 0, 0, -1], "indicator": "e0"}))
    gen = Session(spec).generate("a red ball", seed=0, policy=spec.policy)
    for branch in ("cond", "uncond"):
        assert [c.computed for c in gen.calls if c.branch == branch] == [True] * 5 + [False] * 2


def test_wan_time_embedding_indicator_is_the_models_own(tiny_spec):
    tr = Session(resolve(tiny_spec())).transformer
    text = torch.randn(1, 16, 32)
    with torch.no_grad():
        temb = tr.condition_embedder(torch.tensor([733.25]), text)[0]
        mine = teacache_time_embedding(tr, {"hidden_states": torch.zeros(1, 4, 8)},
                                       CallInfo(branch="cond", index=0, timestep=733.25, latent=None))
    torch.testing.assert_close(mine, temb, atol=0, rtol=0)


def test_presets_take_the_published_coefficients_and_thresholds(tiny_spec):
    def described(model, **p):
        return describe(resolve(tiny_spec(model={"name": model}, sampling={}, policy={"name": "teacache", **p})).policy)

    d = described("wan2.1-t2v-1.3b", preset="fast")
    assert (d["indicator"], d["thresh"], d["warmup"], d["force_last"]) == ("e", 0.08, 1, True)
    assert d["coefficients"] == list(PUBLISHED["wan2.1-t2v-1.3b"]["e"].coefficients)
    assert described("wan-1.3b", preset="fast", indicator="e0")["thresh"] == 0.10
    assert described("wan2.1-t2v-14b", preset="slow")["thresh"] == 0.14
    assert described("cogvideox1.5-5b", preset="fast")["coefficients"][0] == 2.50210439e+02
    assert described("ltx-video", preset="slow")["thresh"] == 0.03
    assert described("hunyuanvideo", preset="fast", thresh=0.2)["thresh"] == 0.2  # thresh overrides the preset


@pytest.mark.parametrize("policy, message", [
    ({"preset": "slow"}, "no published coefficients for tiny-wan .* calibrate SPEC.yaml --policy teacache"),
    ({"coefficients": [0, 0, 0, 1, 0]}, "give thresh"),
    ({"thresh": 0.1, "coefficients": [1, 2, 3]}, "expected 5 polynomial coefficients"),
    ({"thresh": 0.1, "coefficients": [0, 0, 0, 1, 0], "indicator": "modulated"}, "not one of wan's: e, e0"),
    ({"preset": "slow", "coefficients": [0, 0, 0, 1, 0]}, "give policy.thresh"),
])
def test_spec_errors(policy, message, tiny_spec):
    with pytest.raises(SpecError, match=message):
        resolve(tiny_spec(policy={"name": "teacache", **policy}))


def test_wan_time_embedding_indicator_is_float32_on_a_bf16_model(tiny_spec):
    """The official code autocasts the time embedding to float32: on a bf16 model the indicator is the float32
    computation on the model's (bf16) weights, not a bf16 one."""
    import copy

    tr = copy.deepcopy(Session(resolve(tiny_spec())).transformer).to(torch.bfloat16)
    reference = copy.deepcopy(tr.condition_embedder).float()  # the same weights, computed in float32
    text = torch.randn(1, 16, 32)
    with torch.no_grad():
        expected = reference(torch.tensor([733.25]), text)[0]
        bf16 = tr.condition_embedder(torch.tensor([733.25]), text.to(torch.bfloat16))[0]
        mine = teacache_time_embedding(tr, {"hidden_states": torch.zeros(1, 4, 8, dtype=torch.bfloat16)},
                                       CallInfo(branch="cond", index=0, timestep=733.25, latent=None))
    assert mine.dtype == torch.float32
    torch.testing.assert_close(mine, expected, atol=1e-6, rtol=1e-6)
    assert (bf16.float() - expected).abs().max() > 1e-4  # the bf16 path would differ: the test can tell


@pytest.mark.parametrize("policy", [{"name": "teacache", "preset": "slow"}, {"name": "magcache", "preset": "fast"}])
def test_wan_14b_published_fits_warn_at_another_size(policy, tiny_spec):
    """Wan 14B's TeaCache coefficients and MagCache curve were calibrated at 1280x720: a run at 832x480 (the
    registered default) logs one warning and records it in the policy inputs; at 1280x720 nothing."""
    from sencache_bench.runner import Runner

    for (height, width), warned in (((480, 832), True), ((720, 1280), False)):
        spec = resolve(tiny_spec(model={"name": "wan2.1-t2v-14b"}, sampling={"height": height, "width": width},
                                 policy=policy))
        lines: list[str] = []
        Runner(spec, log=lines.append).prepare_policy()
        hits = [line for line in lines if "calibrated at 1280x720" in line and f"{width}x{height}" in line]
        assert len(hits) == int(warned), lines
        assert ("resolution_warning" in spec.policy.inputs()) == warned


def test_rescaled_is_numpys_poly1d_to_the_last_bit():
    """The pure-Python Horner scheme the decision uses equals ``float(np.poly1d(c)(x))`` bit for bit, for the
    published polynomials and hand-made ones (leading zeros trimmed as poly1d does)."""
    import numpy as np

    sets = [list(p.coefficients) for per_model in PUBLISHED.values() for p in per_model.values()]
    sets += [[0, 0, 0, 1, 0.01], [1, 0, 0, 0, 0], [0, 0, 0, 0, -1], [0, 0, 0, 0, 0]]
    xs = [0.0, 1e-9, 0.003, 0.05, 0.1234567, 0.5, 1.0, 2.75, 40.0] + list(np.random.default_rng(0).random(200))
    for coefficients in sets:
        policy = TeaCachePolicy(lambda c: None, coefficients, 0.1)
        for x in xs:
            assert policy.rescaled(float(x)) == float(policy.rescale(float(x))), (coefficients, x)
