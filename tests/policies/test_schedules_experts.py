"""lemica and sencache-global on Wan 2.2's two experts (tiny-wan22, 8 steps).

Each expert's graph / displacement table is made on the calls that expert ran (the trajectory recorded across
the whole generation, the pipeline's step index shared) and planned on its own steps: the high-noise expert's
path ends at the low-noise expert's first step, which always computes; the one budget knob gives
``round(budget * m_e)`` computed steps to the expert with ``m_e`` of the steps. Checked here against the
boundary worked out from the scheduler, a second measuring method, plans found by brute force, the run's
decisions, a direct FlopCounterMode count, and the refusal of a file made for another expert.
"""

from __future__ import annotations

import copy
import itertools
import json

import numpy as np
import pytest
import torch
from diffusers.hooks import HookRegistry

from sencache_bench.calibration import lemica as lm_cal
from sencache_bench.calibration import sencache as sc_cal
from sencache_bench.calibration import sencache_global as sg_cal
from sencache_bench.calibration.schedules import SegmentPolicy, generate_latent
from sencache_bench.errors import BenchError
from sencache_bench.policies.base import POLICY_HOOK, apply_policy, remove_policy
from sencache_bench.runner import Runner
from sencache_bench.spec import resolve
from tests.calibration.test_two_experts_calibration import match_on_tiny_wan22
from tests.measure.test_calls import assert_parts_equal, direct_count

PROMPT = "a red ball"
QUIET = dict(log=lambda m: None)
STEPS, BUDGET, K = 8, 0.6, 2  # high: round(0.6 * 5) = 3 computed steps, low: round(0.6 * 3) = round(1.8) = 2


def _spec(out, policy=None):
    return resolve({"model": {"name": "tiny-wan22"}, "prompts": [PROMPT], "sampling": {"seeds": [0], "steps": STEPS},
                    "policy": policy or {"name": "none"}, "output": {"dir": str(out)}})


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """One runner on tiny-wan22: the LeMiCa graph, SenCache's profile and the sencache-global table (1 sample)."""
    d = tmp_path_factory.mktemp("sched22")
    runner = Runner(_spec(d), **QUIET)
    profile = sc_cal.calibrate(runner, 1, d / "sc.json", **QUIET)
    files = {"graph": lm_cal.calibrate(runner, samples=1, out=d / "graph.json", **QUIET), "profile": profile,
             "table": sg_cal.calibrate(runner, samples=1, out=d / "table.json", profile=profile, amplify_samples=1,
                                       **QUIET)}
    return runner, files, d


def boundary(runner) -> int:
    """The low-noise expert's first step by hand: the first timestep below boundary_ratio * num_train_timesteps
    (diffusers' WanPipeline: ``transformer`` runs t >= boundary), on a copy of the pipeline's scheduler."""
    pipe = runner.session.pipe
    scheduler = copy.deepcopy(pipe.scheduler)
    scheduler.set_timesteps(STEPS)
    cut = pipe.config.boundary_ratio * scheduler.config.num_train_timesteps
    return next(i for i, t in enumerate(scheduler.timesteps) if float(t) < cut)


def _run(runner, policy):
    """(record, calls of the generation priced by a direct FlopCounterMode count, that count)."""
    spec = _spec(runner.spec.output_dir, policy)
    run = Runner(spec, **QUIET)
    run._session = session = runner.session
    rec = json.loads(run.run_item(*run.items()[0]).read_text())
    holder = {}
    direct = direct_count(session, lambda: holder.setdefault("gen", session.generate(PROMPT, 0, policy=spec.policy)))
    return rec, holder["gen"].calls, direct, spec.policy


def _computed(calls, expert, branch):
    return [c.step for c in calls if c.expert == expert and c.branch == branch and c.computed]


# -- lemica ---------------------------------------------------------------------------------------
def test_lemica_graph_has_a_section_per_expert_over_its_own_steps(made):
    runner, files, _ = made
    b = boundary(runner)
    assert b == 5  # 1000 986 968 942 902 | 833 684 126 (tests/models/test_wan22.py), boundary 875
    data = json.loads(files["graph"].read_text())
    high, low = data["experts"]["transformer"], data["experts"]["transformer_2"]
    assert high["steps"] == list(range(b)) and low["steps"] == list(range(b, STEPS))
    measured = {e: {(i, j) for i, row in enumerate(p["weights"]) for j, v in enumerate(row) if v is not None}
                for e, p in data["experts"].items()}
    # high: every i -> j with j >= i + 2 up to the low expert's first step (it computes); low: 5 -> 7 only
    assert measured["transformer"] == {(i, j) for i in range(b) for j in range(i + 2, b + 1)}
    assert measured["transformer_2"] == {(5, 7)}
    assert (high["edges"], low["edges"]) == (10, 1)
    # per branch: the uncached run (8 calls), then edge i -> j computes i and j..7: 1 + 8 - j calls
    per_branch = STEPS + sum(1 + STEPS - j for e in measured.values() for _, j in e)
    assert data["model_calls"] == 2 * per_branch == 2 * (8 + 50 + 2)


def test_lemica_edge_weights_by_a_second_method(made):
    """Rerun the whole trajectory with only i+1..j-1 reused on both experts (no replay of stored outputs)."""
    runner, files, _ = made
    data = json.loads(files["graph"].read_text())
    session = runner.session
    text, seed = data["prompts"][0], data["seeds"][0]
    x0 = generate_latent(runner, text, seed)
    for expert, (i, j) in [("transformer", (0, 2)), ("transformer", (2, 5)), ("transformer", (0, 5)),
                           ("transformer_2", (5, 7))]:
        for _, transformer, blocks in session.recorder.experts:
            apply_policy(transformer, blocks, SegmentPolicy(i, j))
        try:
            cached = generate_latent(runner, text, seed)
        finally:
            for _, transformer, _ in session.recorder.experts:
                remove_policy(transformer)
        expected = float((cached - x0).abs().mean())
        assert expected > 0
        assert data["experts"][expert]["weights"][i][j] == pytest.approx(expected, rel=1e-5, abs=1e-9)


def leximax_by_brute_force(weights, nodes, budget, forced):
    """Every path over ``nodes`` with ``budget`` nodes holding ``forced``: the one whose cache-edge weights,
    sorted descending and padded with zeros, are least."""
    best = None
    inner = [v for v in nodes if v not in forced]
    for pick in itertools.combinations(inner, budget - len(forced)):
        path = sorted(set(pick) | forced)
        key = sorted((weights[a][c] for a, c in zip(path, path[1:]) if c > a + 1), reverse=True)
        key = tuple(key + [0.0] * (len(nodes) - len(key)))
        if best is None or key < best[0]:
            best = (key, path)
    return best[1]


def test_lemica_runs_each_experts_path(made):
    runner, files, _ = made
    rec, calls, direct, policy = _run(runner, {"name": "lemica", "budget": BUDGET, "graph": str(files["graph"])})
    data = json.loads(files["graph"].read_text())["experts"]
    w_high, w_low = data["transformer"]["weights"], data["transformer_2"]["weights"]
    # high: 3 computed of steps 0..4 plus the low expert's 5 (the path's end); low: 2 of 5..7, 5 and 7 forced
    high = leximax_by_brute_force(w_high, range(6), 3 + 1, {0, 5})[:-1]
    low = leximax_by_brute_force(w_low, range(5, 8), 2, {5, 7})
    assert len(high) == 3 and low == [5, 7]
    assert policy._plans == {"transformer": tuple(high), "transformer_2": tuple(low)}
    for branch in ("cond", "uncond"):
        assert _computed(calls, "transformer", branch) == high
        assert _computed(calls, "transformer_2", branch) == low  # its first call (5) computes
    assert rec["nfe_per_expert"] == {"transformer": {"cond": 3, "uncond": 3}, "transformer_2": {"cond": 2,
                                                                                                "uncond": 2}}
    assert_parts_equal(rec["flops"], direct)


def _rewrite(src, dst, keep=None, single=None):
    data = json.loads(src.read_text())
    if single is not None:  # the expert's section as a single-transformer file
        data = {k: v for k, v in data.items() if k != "experts"} | data["experts"][single]
        data.pop("expert")
    else:
        data["experts"] = {e: v for e, v in data["experts"].items() if e in keep}
    dst.write_text(json.dumps(data))
    return str(dst)


@pytest.mark.parametrize("name", ["lemica", "sencache-global"])
def test_a_file_for_another_expert_is_refused(name, made):
    runner, files, d = made
    field = "graph" if name == "lemica" else "table"
    extra = {} if name == "lemica" else {"profile": str(files["profile"]), "max_reuse": K}
    cases = [(_rewrite(files[field], d / f"{name}-high.json", keep={"transformer"}),
              r"made for the expert\(s\) transformer of tiny-wan22, not for 'transformer_2'"),
             (_rewrite(files[field], d / f"{name}-single.json", single="transformer"),
              r"made for a single transformer \(tiny-wan22\), not for the expert 'transformer'")]
    for path, message in cases:
        spec = _spec(d, {"name": name, "budget": BUDGET, field: path, **extra})
        run = Runner(spec, **QUIET)
        run._session = runner.session
        with pytest.raises(BenchError, match=message) as err:
            run.prepare_policy()
        assert "\n" not in str(err.value)


# -- sencache-global ------------------------------------------------------------------------------
def test_sencache_global_table_per_expert(made):
    runner, files, _ = made
    data = json.loads(files["table"].read_text())
    high, low = data["experts"]["transformer"], data["experts"]["transformer_2"]
    assert high["steps"] == list(range(5)) and low["steps"] == [5, 6, 7]
    # own pairs only: the high expert's block 0..4, the low expert's 5..7, null across the switch
    for part, own in ((high, range(5)), (low, range(5, 8))):
        for j in range(STEPS):
            for k in range(STEPS):
                assert (part["displacement"][j][k] is not None) == (j in own and k in own)
    # single-reuse errors: never at an expert's first step (0, 5), which is never reused
    assert [v is not None for v in high["single_reuse_error"]] == [False, True, True, True, True] + [False] * 3
    assert [v is not None for v in low["single_reuse_error"]] == [False] * 6 + [True, True]
    # calls: the trajectory (16), the uncached reference (16), and per branch, reusing step i alone computes i-1
    # and i+1..7: 8 - i calls, for i in 1..4 and 6..7
    assert data["model_calls"] == 16 + 16 + 2 * sum(STEPS - i for i in (1, 2, 3, 4, 6, 7)) == 82
    # D[j][k] = ||x_k - x_j|| of the cond branch's latents, from plain hooks on the calibration's sample
    text, seed = data["prompts"][0], data["seeds"][0]
    x = []
    session = runner.session
    handles = [t.register_forward_pre_hook(lambda m, a, k: x.append(k["hidden_states"][-1:].double()),
                                           with_kwargs=True) for _, t, _ in session.recorder.experts]
    try:
        generate_latent(runner, text, seed)
    finally:
        for h in handles:
            h.remove()
    cond = [x[2 * s] for s in range(STEPS)]  # cond, then uncond, at every step
    for part, (j, k) in ((high, (0, 4)), (high, (1, 3)), (low, (5, 7)), (low, (6, 7))):
        assert part["displacement"][j][k] == pytest.approx(float(torch.linalg.vector_norm(cond[k] - cond[j])),
                                                           rel=1e-5, abs=1e-6)


def min_total_by_brute_force(score, own, budget, forced, max_reuse):
    """The compute set of ``budget`` of the steps ``own`` (holding ``forced``; runs of reuses <= K) least in
    the sum over segments (compute j, reuse j+1..k, k before the next compute or the section's end) of S(j, i)."""
    best = None
    inner = [s for s in own if s not in forced]
    for pick in itertools.combinations(inner, budget - len(forced)):
        plan = sorted(set(pick) | forced)
        bounds = plan + [own[-1] + 1]
        if any(c - a - 1 > max_reuse for a, c in zip(bounds, bounds[1:])):
            continue
        total = sum(score[a][i] for a, c in zip(bounds, bounds[1:]) for i in range(a + 1, c))
        if best is None or total < best[0]:
            best = (total, plan)
    return best[1]


@pytest.mark.parametrize("mode", ["plan", "adaptive"])
def test_sencache_global_plans_and_runs_per_expert(mode, made):
    runner, files, _ = made
    policy = {"name": "sencache-global", "budget": BUDGET, "max_reuse": K, "mode": mode,
              "profile": str(files["profile"]), "table": str(files["table"])}
    if mode == "adaptive":
        policy["eps_scale"] = 2.0  # a looser eps(t) than the plan's, so the rule reuses on this sample
    rec, calls, direct, config = _run(runner, policy)
    profile = json.loads(files["profile"].read_text())["experts"]
    table = json.loads(files["table"].read_text())["experts"]
    plans = {}
    for expert, own, budget in (("transformer", list(range(5)), 3), ("transformer_2", [5, 6, 7], 2)):
        jx, jt, part = profile[expert]["Jx"], profile[expert]["Jt"], table[expert]
        # S(j, i) = Jx(t_j) ||x_i - x_j|| + Jt(t_j) |t_i - t_j|, with this expert's own profile and block
        score = {j: {i: jx[j] * part["displacement"][j][i] + jt[j] * part["dt"][j][i] for i in own} for j in own}
        plans[expert] = plan = tuple(min_total_by_brute_force(score, own, budget, {own[0]}, K))
        # eps(t_i) the plan accepts (score units): a reused step its score from the segment's compute, a compute
        # after reuses the last reused step's, else 0; the expert's first step 0
        anchor, eps = own[0], [0.0]
        for i in own[1:]:
            eps.append(score[anchor][i] if i not in plan else score[anchor][i - 1] if i - 1 > anchor else 0.0)
            anchor = i if i in plan else anchor
        assert config._predicted[own[0]:own[-1] + 1] == pytest.approx(eps, rel=1e-9, abs=1e-12)
    assert config._plans == plans
    assert_parts_equal(rec["flops"], direct)
    for branch in ("cond", "uncond"):
        assert _computed(calls, "transformer_2", branch)[0] == 5  # the low expert's first call computes
    if mode == "plan":
        for expert, plan in plans.items():
            assert [tuple(_computed(calls, expert, b)) for b in ("cond", "uncond")] == [plan, plan]
        return
    # adaptive: each expert's hooks score with that expert's own profile
    runner.session.attach(config)
    try:
        rules = {e: HookRegistry.check_if_exists_or_initialize(t).get_hook(POLICY_HOOK).policy
                 for e, t, _ in runner.session.recorder.experts}
    finally:
        runner.session.detach(config)
    assert {e: list(r.profile.jx) for e, r in rules.items()} == {e: profile[e]["Jx"] for e in profile}
    # SenCache's rule per call with the attached expert's own profile (REUSE iff S <= eps(t_i), fewer than
    # K reuses in a row), S from the refresh point's Jx, Jt, applied here by hand to the run's latents
    x = _latents_of_run(runner.session, config)
    eps = config._eps_t
    reused = 0
    for expert, own in (("transformer", range(5)), ("transformer_2", range(5, 8))):
        jx, jt = profile[expert]["Jx"], profile[expert]["Jt"]
        ts = profile[expert]["timesteps"]
        for branch in ("cond", "uncond"):
            ref, run_length, expected = None, 0, []
            for i in own:
                xi = x[(expert, branch, i)]
                if ref is not None and i != own[0]:
                    s = jx[ref] * float(torch.linalg.vector_norm(xi - x[(expert, branch, ref)])) + jt[ref] * abs(
                        ts[i] - ts[ref])
                    if s <= eps[i] * np.sqrt(xi.numel()) and run_length < K:
                        expected.append(False)
                        run_length += 1
                        continue
                expected.append(True)
                ref, run_length = i, 0
            got = [c.computed for c in calls if c.expert == expert and c.branch == branch]
            assert got == expected, (expert, branch)
            reused += expected.count(False)
    assert reused > 0, "the adaptive rule reused nothing: the test proves nothing"


def _latents_of_run(session, config):
    """The latent each call of a cached generation received, by plain torch hooks (the policy attached)."""
    seen, handles = [], []
    for _, transformer, _ in session.recorder.experts:
        handles.append(transformer.register_forward_pre_hook(
            lambda m, a, k: seen.append(k["hidden_states"][-1:].float().clone()), with_kwargs=True, prepend=True))
    try:
        gen = session.generate(PROMPT, 0, policy=config)
    finally:
        for h in handles:
            h.remove()
    return {(c.expert, c.branch, c.step): v for c, v in zip(gen.calls, seen)}


@pytest.mark.parametrize("name", ["lemica", "sencache-global"])
def test_conforms_on_two_experts(name, made, tmp_path):
    """The conformance kit on tiny-wan22 at the files' 8 steps: budget 1.0 reproduces the reference bit for bit,
    the fixed schedule is fixed, the branches are independent, nothing leaks between videos, the knob is
    monotone (one budget over both experts)."""
    from sencache_bench.policy import Knob
    from sencache_bench.testing import assert_conforms

    _, files, _ = made
    params = ({"graph": str(files["graph"])} if name == "lemica" else
              {"profile": str(files["profile"]), "table": str(files["table"]), "max_reuse": K})
    knob = {} if name == "lemica" else {"knob": Knob("budget", "higher", 0.0, 1.0)}  # plan mode: monotone
    report = assert_conforms(name, model="tiny-wan22", steps=STEPS, workdir=tmp_path,
                             params={"budget": BUDGET, **params}, never_reuse={"budget": 1.0}, **knob)
    checks = {c.name: c.passed for c in report.checks}
    assert checks["a fixed schedule is fixed"] is True and checks["branches are independent"] is True
    assert checks["the knob is monotone"] is True


def test_match_tunes_the_one_budget_over_both_experts(made, tmp_path):
    """`match` on tiny-wan22: lemica's budget, one knob split over the experts by steps; the record's budget is the
    one both paths used."""
    _, files, _ = made
    point, rec = match_on_tiny_wan22({"name": "lemica", "budget": 0.9, "graph": str(files["graph"])}, tmp_path,
                                     steps=STEPS)
    assert rec["policy_params"]["budget"] == rec["match"]["value"] == point.search.value
    per = rec["nfe_per_expert"]
    high = max(1, round(point.search.value * 5))  # the split by hand: round(budget * m_e), each >= its forced
    low = max(2, round(point.search.value * 3))  # the low expert's first and the last step
    assert (per["transformer"]["cond"], per["transformer_2"]["cond"]) == (high, low)
