"""Per-expert calibration on Wan 2.2's two experts (tiny-wan22, 8 steps: 5 high-noise, 3 low-noise).

Each expert's TeaCache polynomial, MagCache ratio curve and SenCache profile is made from that expert's own
calls (no pair across the switch) and read only by that expert's hooks; a part made for one expert, or a file
made for a single transformer, is refused. The calibrated policies then run on both experts, priced as a direct
FlopCounterMode count of the whole cached generation, and never reuse across the switch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sencache_bench.calibration import magcache as mc_cal
from sencache_bench.calibration import sencache as sc_cal
from sencache_bench.calibration import teacache as tc_cal
from sencache_bench.calibration.profile import load_profile
from sencache_bench.calibration.teacache import calibration_items
from sencache_bench.errors import BenchError
from sencache_bench.policies.base import POLICY_HOOK
from sencache_bench.results.tables import aggregate, columns, experts_cell
from sencache_bench.runner import Runner
from sencache_bench.spec import resolve
from tests.measure.test_calls import assert_parts_equal, direct_count

PROMPT = "a red ball"
HIGH = 5  # tests/models/test_wan22.py: 1000 986 968 942 902 | 833 684 126
QUIET = dict(log=lambda m: None)


def _spec(out, policy=None, model="tiny-wan22"):
    return resolve({"model": {"name": model}, "prompts": [PROMPT], "sampling": {"seeds": [0], "steps": 8},
                    "policy": policy or {"name": "none"}, "output": {"dir": str(out)}})


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One runner on tiny-wan22 and its three per-expert calibrations (the calibrators' own code)."""
    d = tmp_path_factory.mktemp("wan22cal")
    runner = Runner(_spec(d), **QUIET)
    files = {"teacache": tc_cal.calibrate(runner, 2, d / "tc.json", **QUIET),
             "magcache": mc_cal.calibrate(runner, 1, d / "mc.json", **QUIET),
             "sencache": sc_cal.calibrate(runner, 1, d / "sc.json", **QUIET)}
    return runner, files, d


def _outputs(session, text, seed):
    """(expert, branch, step) -> the transformer's output and block-stack residual of an uncached generation,
    seen by plain torch hooks (a second method beside the calibrators' probe)."""
    outs, seen, handles = [], {}, []
    for name, transformer, blocks in session.recorder.experts:
        handles.append(transformer.register_forward_hook(lambda m, a, k, o: outs.append(o[0].detach().clone()),
                                                         with_kwargs=True))
        handles.append(blocks[0].register_forward_pre_hook(
            lambda m, a, k: seen.__setitem__("in", k.get("hidden_states", a[0] if a else None).clone()),
            with_kwargs=True))
        handles.append(blocks[-1].register_forward_hook(
            lambda m, a, k, o: seen.setdefault("res", []).append(o - seen["in"]), with_kwargs=True))
    try:
        gen = session.generate(text, seed)
    finally:
        for h in handles:
            h.remove()
    keys = [(c.expert, c.branch, c.step) for c in gen.calls]
    return dict(zip(keys, outs)), dict(zip(keys, seen["res"]))


def test_teacache_coefficients_are_a_polyfit_of_each_experts_own_pairs(made):
    runner, files, _ = made
    data = json.loads(files["teacache"].read_text())
    assert data["model"] == "tiny-wan22" and set(data["experts"]) == {"transformer", "transformer_2"}
    for expert, part in data["experts"].items():
        assert part["expert"] == expert
        pts = part["points"]
        # numpy's polyfit on this expert's pairs alone, done here
        assert np.allclose(part["coefficients"], np.polyfit(pts["x"], pts["y"], 4), rtol=1e-9, atol=1e-12)
        # no pair spans the switch: the low-noise expert's first step (5) has no previous call of its own
        assert set(pts["step"]) == ({1, 2, 3, 4} if expert == "transformer" else {6, 7})
        assert len(pts["x"]) == 2 * 2 * (4 if expert == "transformer" else 2)  # samples x branches x pairs
    # y (the output change) by hand for the first sample, from plain torch hooks on each transformer
    text, seed = calibration_items(runner, 2)[0]
    out, _ = _outputs(runner.session, text, seed)
    part = data["experts"]["transformer_2"]["points"]
    for i, (branch, step) in enumerate(zip(part["branch"][:4], part["step"][:4])):
        cur, prev = out[("transformer_2", branch, step)], out[("transformer_2", branch, step - 1)]
        assert part["y"][i] == pytest.approx(float((cur - prev).abs().mean() / prev.abs().mean()), rel=1e-5)


def test_magcache_ratios_per_expert_by_hand(made):
    runner, files, _ = made
    data = json.loads(files["magcache"].read_text())
    text, seed = calibration_items(runner, 1)[0]
    _, res = _outputs(runner.session, text, seed)
    for branch in ("cond", "uncond"):
        hi, lo = (data["experts"][e]["branches"][branch] for e in ("transformer", "transformer_2"))
        assert hi[HIGH:] == [1.0] * 3 and lo[:HIGH + 1] == [1.0] * (HIGH + 1)  # other expert's steps, first call
        for expert, curve, steps in (("transformer", hi, range(1, HIGH)), ("transformer_2", lo, range(HIGH + 1, 8))):
            for s in steps:
                r, p = res[(expert, branch, s)], res[(expert, branch, s - 1)]
                assert curve[s] == pytest.approx(float((r.norm(dim=-1) / p.norm(dim=-1)).mean()), abs=2e-6)
        assert data["experts"]["transformer_2"]["steps_run"][branch] == [5, 6, 7]


def test_sencache_profile_per_expert_from_its_own_transformer(made):
    _, files, _ = made
    hi, lo = (load_profile(files["sencache"], e) for e in ("transformer", "transformer_2"))
    assert hi.timesteps == lo.timesteps and len(hi.timesteps) == 8
    assert hi.jx != lo.jx  # the experts differ in weights: their sensitivities differ
    with pytest.raises(BenchError, match="single transformer|one transformer"):
        load_profile(files["sencache"], None, single_model=True)


POLICIES = {"teacache": {"name": "teacache", "thresh": 0.5}, "magcache": {"name": "magcache", "thresh": 0.5,
            "max_reuse": 2, "retention": 0.1}, "sencache": {"name": "sencache", "eps_main": 1.0, "max_reuse": 2}}
FILE_FIELD = {"teacache": "coefficients", "magcache": "ratios", "sencache": "profile"}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_calibrated_policy_runs_on_two_experts(name, made):
    """Each expert's hooks hold their own expert's calibration; FLOPs equal a direct count; the low-noise expert's
    first call computes and its reuse comes from its own computed calls."""
    runner, files, d = made
    spec = _spec(d, {**POLICIES[name], FILE_FIELD[name]: str(files[name])})
    run = Runner(spec, **QUIET)
    run._session = session = runner.session
    run.prepare_policy()
    policy = spec.policy
    session.attach(policy)
    try:
        rules = [HookRegistryOf(t).get_hook(POLICY_HOOK).policy for _, t, _ in session.recorder.experts]
    finally:
        session.detach(policy)
    data = json.loads(files[name].read_text())["experts"]
    if name == "teacache":
        assert [list(r.rescale.coeffs) for r in rules] == [data[e]["coefficients"] for e in data]
    elif name == "magcache":
        assert [r.curves["cond"].tolist() for r in rules] == [data[e]["branches"]["cond"] for e in data]
    else:
        assert [list(r.profile.jx) for r in rules] == [data[e]["Jx"] for e in data]
    rec = json.loads(run.run_item(*run.items()[0]).read_text())
    holder = {}
    direct = direct_count(session, lambda: holder.setdefault("gen", session.generate(PROMPT, 0, policy=policy)))
    calls = holder["gen"].calls
    assert_parts_equal(rec["flops"], direct)  # decisions included (TeaCache's indicator, SenCache's norms)
    assert sum(v["cond"] for v in rec["nfe_per_expert"].values()) == rec["nfe_per_branch"]["cond"] < 8
    assert any(not c.computed for c in calls), "the policy reused nothing: the test proves nothing"
    switch = [c for c in calls if c.expert == "transformer_2"]
    assert all(c.computed for c in switch[:2]) and all(c.step >= HIGH for c in switch)
    # the table's NFE per expert: each expert's computed calls per branch, counted here from the trace
    (row,) = aggregate([rec])
    by_hand = {e: sum(c.computed for c in calls if c.expert == e) / 2 for e in ("transformer", "transformer_2")}
    assert row["nfe_per_expert"] == by_hand and sum(by_hand.values()) == rec["nfe"]
    assert "nfe_experts" in columns(False, rows=[row]) and "nfe_experts" not in columns(False, rows=[{}])
    assert experts_cell(row) == f"{by_hand['transformer']:.1f}/{by_hand['transformer_2']:.1f}"


def HookRegistryOf(module):
    from diffusers.hooks import HookRegistry

    return HookRegistry.check_if_exists_or_initialize(module)


def _rewrite(src, dst, keep):
    data = json.loads(src.read_text())
    data["experts"] = {e: v for e, v in data["experts"].items() if e in keep}
    dst.write_text(json.dumps(data))
    return dst


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_a_file_for_one_expert_is_refused_for_the_other(name, made):
    runner, files, d = made
    only_high = _rewrite(files[name], d / f"{name}-high.json", {"transformer"})
    spec = _spec(d, {**POLICIES[name], FILE_FIELD[name]: str(only_high)})
    run = Runner(spec, **QUIET)
    run._session = runner.session
    with pytest.raises(BenchError, match=r"made for the expert\(s\) transformer of tiny-wan22, not for "
                                         r"'transformer_2'"):
        run.prepare_policy()
        runner.session.attach(spec.policy)
    runner.session.detach(spec.policy)


def test_a_single_transformer_file_is_refused_on_an_expert(made):
    runner, files, d = made
    data = json.loads(files["teacache"].read_text())
    single = {k: v for k, v in data.items() if k != "experts"} | data["experts"]["transformer"]
    single.pop("expert")
    (d / "single.json").write_text(json.dumps(single))
    spec = _spec(d, {"name": "teacache", "thresh": 0.5, "coefficients": str(d / "single.json")})
    with pytest.raises(BenchError, match="made for a single transformer"):
        runner.session.attach(spec.policy)
    runner.session.detach(spec.policy)


def match_on_tiny_wan22(policy: dict, tmp_path, steps: int = 8):
    """`match --nfe 0.5` of one tiny-wan22 spec (one tuning prompt): the match point, after checking that the tuned
    NFE (total per branch, both experts) is within one step of 0.5 x steps, and its one record."""
    import yaml

    from sencache_bench.matching import Target, run_match

    spec = {"model": {"name": "tiny-wan22"}, "prompts": [PROMPT], "sampling": {"seeds": [0], "steps": steps},
            "policy": policy, "output": {"dir": str(tmp_path / "results")}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    tune = tmp_path / "tune.txt"
    tune.write_text("a cat walking on a fence\n")
    (point,) = run_match([path], [Target("nfe", 0.5)], tune_file=tune, log=lambda s: None)
    assert point.search.value is not None and abs(point.search.achieved - steps / 2) <= 1
    (rec_path,) = point.records
    return point, json.loads(rec_path.read_text())


def test_match_tunes_one_shared_threshold_over_both_experts(made, tmp_path):
    """`match` on tiny-wan22: TeaCache's thresh, one knob applied to both experts' accumulators (docs/models.md);
    the record's setting is the one value both experts' hooks used."""
    _, files, _ = made
    point, rec = match_on_tiny_wan22({"name": "teacache", "thresh": 0.2, "coefficients": str(files["teacache"])},
                                     tmp_path)
    assert rec["policy_params"]["thresh"] == rec["match"]["value"] == point.search.value
    assert set(rec["nfe_per_expert"]) == {"transformer", "transformer_2"}
