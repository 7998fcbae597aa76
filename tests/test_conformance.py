"""The conformance kit (sencache_bench.testing): every built-in policy passes it; broken policies fail it.

Built-ins without a declared knob in this tree get their never-reuse setting (and, where it is one
obvious field, a knob) passed explicitly. TeaCache's calibrated tiny-wan coefficients are negative for
small changes, so thresh 0 still reuses there; its never-reuse setting uses the identity rescale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import pytest

from sencache_bench.policies import POLICIES
from sencache_bench.policy import CachePolicy, CallInfo, Decision, Knob, PolicyConfig
from sencache_bench.testing import assert_conforms, check_policy

TEA = "configs/calibrated/tiny-wan_teacache.json"
MAG = "configs/calibrated/tiny-wan_magcache.json"

BUILT_INS = {
    "none": dict(),
    "static": dict(params={"every": 2}, never_reuse={"every": 1}, knob=Knob("every", "lower", 1, 4, integer=True)),
    "sencache": dict(params={"eps_main": 0.5, "max_reuse": 2}, never_reuse={"max_reuse": 0},
                     knob=Knob("eps_main", "lower", 0.0, 2.0)),
    "teacache": dict(params={"thresh": 0.3, "coefficients": TEA},
                     never_reuse={"thresh": 0.0, "coefficients": [0, 0, 0, 1, 0]}),
    "magcache": dict(params={"thresh": 0.12, "max_reuse": 2, "ratios": MAG}, never_reuse={"thresh": 0.0},
                     knob=Knob("thresh", "lower", 0.0, 0.5)),
    "semcache": dict(never_reuse={"alpha": 0.0, "beta": 0.0, "tmm": False}),
    # 8 steps: steps 1, 2, N-1 and N always compute, so 4 would leave nothing to reuse
    "adacache": dict(steps=8, params={"codebook": {0.5: 3, 1.0: 2, 100.0: 1}, "moreg": True}),
    "fbc": dict(params={"threshold": 0.2}, never_reuse={"threshold": 0.0}, knob=Knob("threshold", "lower", 0.0, 0.5)),
    "pab": dict(params={"spatial_attention_timestep_skip_range": [-1, 1001]},
                never_reuse={"spatial_attention_block_skip_range": 1}),
    "fastercache": dict(model="tiny-cogvideox", params={"spatial_attention_timestep_skip_range": [-1, 900]},
                        never_reuse={"spatial_attention_block_skip_range": 1, "unconditional_batch_skip_range": 1}),
    "taylorseer": dict(params={"cache_interval": 2, "disable_cache_before_step": 1}, never_reuse={"cache_interval": 1}),
    "diffusers-magcache": dict(params={"ratios": [1.0] * 4, "threshold": 0.5}, never_reuse={"max_skip_steps": 0}),
    "dbcache": dict(params={"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "residual_diff_threshold": 0.5,
                            "max_warmup_steps": 1}, never_reuse={"residual_diff_threshold": 0.0}),
    "dbprune": dict(params={"Fn_compute_blocks": 1, "Bn_compute_blocks": 0, "residual_diff_threshold": 0.5,
                            "max_warmup_steps": 1}, never_reuse={"residual_diff_threshold": 0.0}),
    "sencache-global": dict(params={"budget": 0.5, "max_reuse": 2}, never_reuse={"budget": 1.0},
                            knob=Knob("budget", "higher", 0.0, 1.0)),  # plan mode: monotone (declared not: adaptive)
    "lemica": dict(params={"budget": 0.5}, never_reuse={"budget": 1.0}),
    "easycache": dict(params={"tau": 0.5}),  # declared knob tau: tau 0 never reuses
    "seacache": dict(params={"threshold": 2.0}),  # declared knob threshold: 0 never reuses
    "dicache": dict(params={"tau": 0.3}),  # declared knob tau: never-reuse at 0
    "dpcache": dict(params={"budget": 0.5}),  # declared knob budget: never-reuse at 1
}


def test_every_built_in_is_covered():
    assert sorted(n for n in POLICIES if POLICIES.source(n) == "built-in") == sorted(BUILT_INS)


@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_built_in_policies_conform(name, tmp_path):
    report = assert_conforms(name, **{"steps": 4, "workdir": tmp_path, **BUILT_INS[name]})
    checks = {c.name: c for c in report.checks}
    assert len(checks) == 7
    assert checks["never-reuse reproduces the reference bit for bit"].passed is True
    # static, lemica, dpcache and sencache-global's plan declare a fixed schedule (match tunes them on one video)
    fixed = name in ("static", "lemica", "sencache-global", "dpcache")
    assert checks["a fixed schedule is fixed"].passed is (True if fixed else None)
    separate = BUILT_INS[name].get("model", "tiny-wan") == "tiny-wan"  # Wan runs cond and uncond separately
    assert checks["branches are independent"].passed is (True if separate else None)
    # a knob given here is checked; one declared on the config (PolicyConfig.knob) is checked as well
    assert checks["the knob is monotone"].passed is (True if "knob" in BUILT_INS[name] else
                                                      (True if POLICIES.get(name).knob else None))


def test_static_knob_nfe_is_the_schedule(tmp_path):
    """every=k on 4 steps computes ceil(4/k) calls per branch: 4, 2, 2, 1."""
    report = check_policy("static", params={"every": 2}, never_reuse={"every": 1},
                          knob=Knob("every", "lower", 1, 4, integer=True), workdir=tmp_path)
    assert _status(report)["the knob is monotone"] is True
    assert {c.name: c for c in report.checks}["the knob is monotone"].detail == \
        "NFE every=1: 4, every=2: 2, every=3: 2, every=4: 1"


def test_teacache_threshold_zero_is_not_never_reuse_with_calibrated_coefficients(tmp_path):
    report = check_policy("teacache", params={"thresh": 0.3, "coefficients": TEA}, never_reuse={"thresh": 0.0},
                          workdir=tmp_path)
    assert report.checks[0].passed is False and "6 of 8 calls computed" in report.checks[0].detail


# -- policies that break one rule each: the kit must catch them -------------------------------------------------

@dataclass
class _Last:
    latent: object = None


class HiddenChangePolicy(CachePolicy):
    """Computes every call on every token but alters the output in place: a saving, or a bug, the trace cannot see."""

    name = "hidden"
    reuse = "output"

    def decide(self, state, call: CallInfo) -> Decision:
        return Decision(compute=True)

    def after_compute(self, state, call: CallInfo, output) -> None:
        output.mul_(1.5)


class HiddenChangeConfig(PolicyConfig):
    name: Literal["test-hidden"] = "test-hidden"

    def make_policy(self):
        return HiddenChangePolicy()


class SharedPolicy(CachePolicy):
    """Keeps its state on the rule object, shared by both CFG branches (the bug the kit looks for)."""

    name = "shared"
    reuse = "residual"

    def __init__(self):
        self.last = None

    def decide(self, state, call: CallInfo) -> Decision:
        prev, self.last = self.last, call.latent
        if prev is None or call.index == 0:
            return Decision(compute=True)
        drift = float((call.latent - prev).abs().mean() / prev.abs().mean())
        return Decision(compute=drift > 0.05, score=drift)  # the score is measured against the other branch


class SharedConfig(PolicyConfig):
    name: Literal["test-shared"] = "test-shared"

    def make_policy(self):
        return SharedPolicy()


class LeakyPolicy(CachePolicy):
    name = "leaky"
    reuse = "residual"

    def __init__(self, config):
        self.config = config

    def decide(self, state, call: CallInfo) -> Decision:
        self.config.seen.append(call.index)  # the config outlives the video: its count carries over
        return Decision(compute=call.index == 0 or len(self.config.seen) % 3 == 0)


class LeakyConfig(PolicyConfig):
    name: Literal["test-leaky"] = "test-leaky"
    model_config = {"extra": "forbid", "frozen": False}
    seen: ClassVar[list] = []

    def make_policy(self):
        return LeakyPolicy(self)


class ZigzagPolicy(CachePolicy):
    name = "zigzag"
    reuse = "residual"

    def __init__(self, level: int):
        self.level = level

    def decide(self, state, call: CallInfo) -> Decision:
        return Decision(compute=call.index == 0 or self.level % 2 == 0)


class ZigzagConfig(PolicyConfig):
    """NFE 4, 1, 4, 1 over level 0..3: declared monotone, it is not."""

    name: Literal["test-zigzag"] = "test-zigzag"
    level: int = 0
    knob: ClassVar[Knob] = Knob("level", "lower", 0, 3, integer=True)

    def make_policy(self):
        return ZigzagPolicy(self.level)


class DriftPolicy(CachePolicy):
    """Reuses while the latent's mean moved little since the last computed call: input-dependent, whatever
    its config claims."""

    name = "drift"
    reuse = "residual"

    def new_state(self):
        return _Last()

    def decide(self, state, call: CallInfo) -> Decision:
        # on tiny-wan step 2 moved 0.1303 (first prompt) and 0.1265 (second) from step 0: 0.128 splits them
        if state.latent is None or float((call.latent - state.latent).abs().mean()) > 0.128:
            state.latent = call.latent
            return Decision(compute=True)
        return Decision(compute=False)


class FixedClaimConfig(PolicyConfig):
    """Declares a fixed schedule that its rule (DriftPolicy) does not keep."""

    name: Literal["test-fixed-claim"] = "test-fixed-claim"

    def make_policy(self):
        return DriftPolicy()

    def fixed_schedule(self) -> bool:
        return True


class FirstReusePolicy(CachePolicy):
    """Reuses call 0 of each branch, when nothing is cached yet, in either reuse mode (and deciding in the block)."""

    name = "first-reuse"

    def __init__(self, reuse: str = "output", in_block: bool = False):
        self.reuse, self.decide_in_block = reuse, in_block

    def decide(self, state, call: CallInfo) -> Decision:
        return Decision(compute=call.index == 1)


class FirstReuseConfig(PolicyConfig):
    name: Literal["test-first-reuse"] = "test-first-reuse"
    reuse: Literal["output", "residual"] = "output"
    in_block: bool = False

    def make_policy(self):
        return FirstReusePolicy(self.reuse, self.in_block)


FIRST_REUSE = ("policy 'test-first-reuse' reused call 0 of branch 'cond' before any call was computed: "
               "a policy must compute the first call of each branch")


@pytest.fixture
def registered():
    from sencache_bench.plugins import register_policy

    names = []

    def add(name, cls):
        register_policy(name, cls)
        names.append(name)

    yield add
    for name in names:
        POLICIES.remove(name)


def _status(report) -> dict:
    return {c.name: c.passed for c in report.checks}


def test_state_shared_across_branches_fails_independence(registered, tmp_path):
    registered("test-shared", SharedConfig)
    status = _status(check_policy("test-shared", workdir=tmp_path))
    assert status["branches are independent"] is False


def test_state_leaking_across_videos_fails(registered, tmp_path):
    registered("test-leaky", LeakyConfig)
    status = _status(check_policy("test-leaky", workdir=tmp_path))
    assert status["no state leaks between videos"] is False


def test_non_monotone_knob_fails(registered, tmp_path):
    registered("test-zigzag", ZigzagConfig)
    report = check_policy("test-zigzag", workdir=tmp_path)
    assert _status(report)["the knob is monotone"] is False
    assert {c.name: c for c in report.checks}["the knob is monotone"].detail == \
        "NFE level=0: 4, level=1: 1, level=2: 4, level=3: 1"
    assert _status(report)["never-reuse reproduces the reference bit for bit"] is True  # level 0 computes all


@pytest.mark.parametrize("params", [{}, {"reuse": "residual"}, {"reuse": "residual", "in_block": True}],
                         ids=["output", "residual", "residual-in-block"])
def test_reusing_the_first_call_fails_without_stopping_the_kit(registered, tmp_path, params):
    """Check 2 names the policy, branch and call (the framework's PolicyError), not a TypeError from the hook."""
    registered("test-first-reuse", FirstReuseConfig)
    report = check_policy("test-first-reuse", params=params, workdir=tmp_path)
    check = {c.name: c for c in report.checks}["the first call of every branch computes"]
    assert check.passed is False
    assert check.detail == FIRST_REUSE
    assert len(report.checks) == 7  # a check that raises is a FAIL; the other checks still ran


def test_a_fixed_schedule_claim_that_does_not_hold_fails(registered, tmp_path):
    registered("test-fixed-claim", FixedClaimConfig)
    report = check_policy("test-fixed-claim", workdir=tmp_path)
    check = {c.name: c for c in report.checks}["a fixed schedule is fixed"]
    assert check.passed is False and "differ between two prompts" in check.detail


def test_a_change_the_trace_cannot_see_fails_the_count(registered, tmp_path):
    registered("test-hidden", HiddenChangeConfig)
    check = {c.name: c for c in check_policy("test-hidden", workdir=tmp_path).checks}["NFE and the trace are counted"]
    assert check.passed is False and "the recorder cannot see the saving" in check.detail


def test_calls_on_fewer_tokens_are_a_visible_saving(tmp_path):
    """SemCache at alpha = beta = 0 reuses nothing, but TMM computes later calls on kept tokens only: the video
    changes at NFE 4 of 4, and the trace shows those calls (before, the kit failed SemCache here)."""
    report = check_policy("semcache", params={"alpha": 0.0, "beta": 0.0, "keep_ratio": 0.5},
                          never_reuse={"alpha": 0.0, "beta": 0.0, "tmm": False}, workdir=tmp_path)
    check = {c.name: c for c in report.checks}["NFE and the trace are counted"]
    assert check.passed is True and check.detail.startswith("NFE 4 of 4 per branch, 8 calls traced, ")
    assert "on fewer tokens, video changed" in check.detail
