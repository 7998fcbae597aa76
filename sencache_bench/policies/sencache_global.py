"""``sencache-global``: SenCache's score with a global error budget over the timesteps (our construction).

Source of the idea: the SenCache supplement ("SenCache vs Global Timestep Optimization Methods"; shared
ALGORITHMS.md, "SenCache": "a global scheduler that hands SenCache a time-varying eps(t)"). No public
implementation exists; the math and its assumptions are in ``docs/global-schedules.md``. In short, on
the schedule's n steps, with Jx, Jt the sensitivity profile and the calibrated *typical* trajectory
(``D[j, i]`` = mean ||x_i - x_j||, ``dt[j, i]`` = |t_i - t_j|; :mod:`..calibration.sencache_global`):

    S(j, i) = Jx(t_j) D[j, i] + Jt(t_j) dt[j, i]           SenCache's score at step i from a refresh at j
    cost(j, k) = sum_{i=j+1..k} S(j, i)                      predicted error of computing j, reusing j+1..k
    plan = argmin over compute sets P of size B (0 and forced steps in P, runs of reuses <= K)
           of sum over P's segments of cost                  (:func:`..planning.plan_min_total`, O(n^2 B))

Assumptions: the first-order bound of SenCache holds along the typical trajectory; the errors of the
reused steps add (no interaction between segments, no propagation factor); the profile's Jx, Jt and the
mean displacement stand for every sample.

Error models (``error``). ``score`` (default): as above. ``amplified``: ``cost(j, k) = sum_i a_i S(j, i)`` with
``a_i = w_i / S(i-1, i)``, ``w_i`` the measured global error of reusing step i alone (the table's
``single_reuse_error``): each step's local score rescaled by how much of it reaches the final latent. On
bench-t2v the plain score ranks segments of one length against their measured global error with Spearman
~0 (early reuse costs far more in x0 than its local score says); see ``docs/global-schedules.md``.

Modes. ``plan``: every sample runs the plan (NFE = B per branch). ``adaptive``: the plan becomes
eps(t_i) (:func:`..planning.plan_thresholds`: the predicted score the plan accepts at step i, scaled by
``eps_scale``) and SenCache's own rule decides per sample: REUSE iff S <= eps(t_i) (and fewer than K
reuses in a row), so a sample that drifts less than the typical one reuses more, one that drifts more
computes more. Forced steps always compute: step 0, and the family's ``adapters["sencache"]["forced"]``
(``{"first": a, "last": b}``: the first a and last b steps; default first 1, last 0, as ``sencache``).

Several experts (Wan 2.2's two transformers): each expert plans on its own steps with its own profile and its
block of the table (:mod:`..calibration.sencache_global`), its first step forced (nothing is reused across the
switch); the one ``budget`` knob gives ``round(budget * m_e)`` computed steps per branch to the expert running
``m_e`` of the ``n`` (at least its forced steps); in adaptive mode each expert's hooks score with its profile.

Spec: ``{name: sencache-global, profile, table, mode: plan|adaptive, budget, max_reuse, reuse, eps_scale}``;
``budget`` is the fraction of the steps computed per branch (``B = round(budget * n)``, raised to what the
forced steps and K need). Without ``profile`` the run calibrates SenCache's profile (as ``sencache``) and the
table on its samples, and keeps both under ``<output.dir>/profiles/``; ``table`` defaults to the file
beside the profile (``<profile stem>_global.json``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, PrivateAttr

from ..errors import BenchError
from .base import CachePolicy, CallInfo, Decision, Knob, ReuseMode
from .sencache import CALIBRATION_SAMPLES, SenCacheParams, SenCachePolicy
from .teacache import MissingFile, ModelBoundConfig

DEFAULT_FORCED = {"first": 1, "last": 0}


def forced_steps(family: str | None, steps: int) -> set[int]:
    """Step 0 and the steps the family always computes: SenCache's ``force_last`` (the official CogVideoX and
    LTX-Video scripts compute the last step too), or an explicit ``adapters["sencache"]["forced"]``."""
    rule = dict(DEFAULT_FORCED)
    if family is not None:
        from ..models import FAMILIES

        if family in FAMILIES:
            adapter = FAMILIES.get(family).adapters.get("sencache", {})
            if adapter.get("force_last"):
                rule["last"] = 1
            rule.update(adapter.get("forced", {}))
    first, last = int(rule.get("first", 1)), int(rule.get("last", 0))
    return {0} | set(range(min(first, steps))) | set(range(max(0, steps - last), steps))


def budget_steps(budget: float, steps: int, forced: set[int], max_reuse: int | None) -> int:
    """Computed steps per branch for a budget fraction: ``round(budget * n)`` within what is feasible."""
    low = max(len(forced), 1, -(-steps // (max_reuse + 1)) if max_reuse is not None else 1)
    return int(min(steps, max(low, round(budget * steps))))


def section_forced(family: str | None, n: int, steps: list[int], last: bool = False) -> set[int]:
    """The forced steps of one expert's section ``steps`` (consecutive), local to it: its first step (an expert's
    first call always computes: nothing is reused across the switch), the family's forced steps within it, and
    with ``last`` the generation's last step if the section holds it. One transformer: :func:`forced_steps`."""
    a, b = steps[0], steps[-1] + 1
    return {s - a for s in forced_steps(family, n) | {a} | ({n - 1} if last else set()) if a <= s < b}


class SchedulePolicy(CachePolicy):
    """Runs a fixed compute schedule in every branch; the trace carries the plan's predicted score."""

    name = "schedule"

    def __init__(self, steps, reuse: ReuseMode = "residual", predicted: np.ndarray | None = None,
                 name: str = "schedule"):
        self.steps = frozenset(int(s) for s in steps)
        self.reuse = reuse
        self.predicted = predicted
        self.name = name

    def decide(self, state, call: CallInfo) -> Decision:
        n = len(self.predicted) if self.predicted is not None else None
        compute = call.index in self.steps or (n is not None and call.index >= n)
        score = float(self.predicted[call.index]) if n is not None and call.index < n and not compute else None
        return Decision(compute=compute, score=score)


class AdaptivePolicy(SenCachePolicy):
    """SenCache's rule with eps(t) from the plan (per-element, as SenCache's eps) and forced computes."""

    name = "sencache-global"
    inclusive = True  # eps(t) is the very score the plan accepts: reuse at equality, as the plan does

    def __init__(self, eps_t: np.ndarray, forced: set[int], profile, max_reuse: int, reuse: ReuseMode = "residual"):
        super().__init__(SenCacheParams(eps_start=0.0, eps_main=0.0, max_reuse=max_reuse), profile, reuse,
                         len(eps_t))
        self.eps_t = np.asarray(eps_t, dtype=np.float64)
        self.must_compute = frozenset(forced)  # not "forced": SenCachePolicy.forced() is its ends rule

    def eps(self, index: int, num_steps: int | None, calls_per_step: int = 1) -> float:  # the plan is per step
        if index in self.must_compute:
            return -1.0  # below any score: compute
        return float(self.eps_t[index]) if index < len(self.eps_t) else -1.0


class SenCacheGlobalConfig(ModelBoundConfig):
    name: Literal["sencache-global"] = "sencache-global"
    # plan mode: NFE = B, monotone in budget; adaptive mode: the per-sample rule need not be, so match scans
    knob: ClassVar[Knob] = Knob("budget", "higher", 0.0, 1.0, monotone=False)
    calibration: ClassVar[str] = "a sensitivity profile and a global plan"  # one profile, table, plan per expert
    per_expert: ClassVar[bool] = True
    profile: str | None = Field(default=None, description="SenCache sensitivity profile (default: calibrate one)")
    table: str | None = Field(default=None, description="displacement table (default: beside the profile)")
    mode: Literal["plan", "adaptive"] = Field(default="plan", description="run the plan, or SenCache's rule "
                                                                          "with the plan's eps(t)")
    budget: float = Field(default=0.5, ge=0.0, le=1.0, description="fraction of the steps computed per branch")
    max_reuse: int | None = Field(default=3, ge=0, description="K: most consecutive reuses (null: no bound "
                                                                "in plan mode)")
    reuse: ReuseMode = "residual"
    eps_scale: float = Field(default=1.0, ge=0.0, description="adaptive mode: eps(t) multiplied by this")
    error: Literal["score", "amplified"] = Field(
        default="score", description="segment cost: the summed scores, or each score times its step's measured "
                                     "amplification into the final latent (the table's single-reuse errors)")

    _plan: tuple | None = PrivateAttr(default=None)
    _eps_t: object = PrivateAttr(default=None)
    _predicted: object = PrivateAttr(default=None)
    _forced: set = PrivateAttr(default_factory=set)
    _profile_obj: object = PrivateAttr(default=None)
    _plans: dict = PrivateAttr(default_factory=dict)  # expert (None: one transformer) -> its section's plan
    _profiles: dict = PrivateAttr(default_factory=dict)  # expert -> its sensitivity profile (adaptive mode)

    def check_basic(self) -> None:
        if self.mode == "adaptive" and self.max_reuse is None:
            raise ValueError("mode adaptive needs max_reuse (SenCache's K), e.g. max_reuse: 3")

    def _resolve(self, value: str, spec=None) -> Path:
        if spec is not None and self._spec_dir is None and spec.spec_path is not None:
            self._spec_dir = str(Path(spec.spec_path).parent)
        try:
            return self.find_file(value)
        except MissingFile:
            return Path(value).expanduser()

    # -- getting ready for a run -------------------------------------------------------------------
    def prepare(self, runner) -> None:
        """Profile and table for the runner's model and schedule (calibrated when absent), then the plan."""
        from ..calibration.experts import expert_names
        from ..calibration.profile import check_profile, load_profile
        from ..calibration.sencache import auto_profile_path, calibrate, run_schedule
        from ..calibration.sencache_global import calibrate as calibrate_table
        from ..calibration.sencache_global import load_table, table_path_for

        spec, log = runner.spec, runner.log
        schedule = run_schedule(runner)
        if self.profile is not None:
            profile_path = self._resolve(self.profile, spec)
        else:
            profile_path = auto_profile_path(runner, CALIBRATION_SAMPLES)
            if not profile_path.is_file():
                log(f"sencache-global: no policy.profile given; calibrating SenCache's profile first "
                    f"({CALIBRATION_SAMPLES} samples) and keeping it at {profile_path}")
                calibrate(runner, samples=CALIBRATION_SAMPLES, out=profile_path, log=log)
        experts = expert_names(runner)
        single = experts == [None]
        profiles = {e: check_profile(load_profile(profile_path, e, single_model=single), model=spec.model_name,
                                     schedule=schedule, log=log) for e in experts}
        table_path = self._resolve(self.table, spec) if self.table is not None else table_path_for(profile_path)
        if not table_path.is_file():
            if self.table is not None:
                raise BenchError(f"policy.table: {table_path} not found: make it with `sencache-bench calibrate "
                                 f"SPEC.yaml --policy sencache-global` or leave policy.table out")
            log(f"sencache-global: no displacement table beside {profile_path}; measuring it on the profile's "
                f"samples and keeping it at {table_path}")
            calibrate_table(runner, samples=CALIBRATION_SAMPLES, out=table_path, log=log, profile=profile_path)
        tables = {e: load_table(table_path, model=spec.model_name, schedule=schedule, expert=e, single_model=single)
                  for e in experts}
        self._note_input("profile", profile_path)
        self._note_input("table", table_path)
        if self.error == "amplified" and any(t.get("single_reuse_error") is None for t in tables.values()):
            raise BenchError(f"policy.error amplified: {table_path} has no single-reuse errors; recalibrate it with "
                             f"`sencache-bench calibrate SPEC.yaml --policy sencache-global`")
        table = tables[experts[0]]
        self.bind_sections({e: (profiles[e], t["displacement"], t["dt"], t.get("single_reuse_error"), t["steps"])
                            for e, t in tables.items()}, table["numel"], spec.family.name, spec.sampling.steps)
        plans = list(self._plan) if single else "; ".join(f"{e} {list(p)}" for e, p in self._plans.items())
        log(f"sencache-global: plan of {len(self._plan)} of {spec.sampling.steps} steps per branch ({self.mode}): "
            f"{plans}")

    def bind_inputs(self, profile, displacement: np.ndarray, dt: np.ndarray, numel: int, family: str | None,
                    steps: int | None = None, single=None) -> SenCacheGlobalConfig:
        """Plan from a profile (with ``jx``, ``jt`` on the schedule's timesteps) and a displacement table
        (``single``: the single-reuse errors, for ``error: amplified``)."""
        own = list(range(len(displacement)))
        return self.bind_sections({None: (profile, displacement, dt, single, own)}, numel, family, steps)

    def bind_sections(self, sections: dict, numel: int, family: str | None,
                      steps: int | None = None) -> SenCacheGlobalConfig:
        """One plan per expert: ``{expert: (profile, displacement, dt, single, its consecutive steps)}``.

        An expert with steps ``a..b-1`` plans on its own block of the tables with its own profile, its first step
        forced (nothing is reused across the switch) and its last segment closing at ``b - 1`` (the next expert
        computes ``b``); the one ``budget`` knob is split by steps: ``round(budget * m_e)`` computed calls per
        branch for the expert running ``m_e`` of the ``n`` steps (:func:`budget_steps`, Python's round)."""
        from ..planning import amplified_scores, plan_min_total, plan_thresholds, segment_costs, sencache_scores

        plans, profiles, forced_all = {}, {}, set()
        predicted = None
        for expert, (profile, displacement, dt, single, own) in sections.items():
            n = len(displacement)
            if steps is not None and steps != n:
                raise BenchError(f"sencache-global: the table has {n} steps, the run {steps}: recalibrate it")
            if len(profile.jx) != n:
                raise BenchError(f"sencache-global: the profile has {len(profile.jx)} timesteps, the table {n}")
            predicted = np.zeros(n) if predicted is None else predicted
            a, b = own[0], own[-1] + 1
            score = sencache_scores(profile.jx, profile.jt, displacement, dt)[a:b, a:b]
            forced = section_forced(family, n, own)
            budget = budget_steps(self.budget, len(own), forced, self.max_reuse)
            if self.error == "amplified":
                if single is None:
                    raise BenchError("sencache-global: error amplified needs the table's single-reuse errors")
                cost = segment_costs(amplified_scores(score, np.asarray(single, dtype=np.float64)[a:b]))
            else:
                cost = segment_costs(score)
            plan, _ = plan_min_total(cost, budget, forced, self.max_reuse)
            predicted[a:b] = plan_thresholds(score, plan)
            plans[expert], profiles[expert] = tuple(a + p for p in plan), profile
            forced_all |= {a + f for f in forced}
        self._plans, self._profiles, self._forced = plans, profiles, forced_all
        self._plan = tuple(sorted(s for p in plans.values() for s in p))
        self._profile_obj = next(iter(profiles.values()))
        self._eps_t = self.eps_scale * predicted / math.sqrt(numel)
        self._predicted = predicted
        return self

    def plan(self) -> tuple[int, ...]:
        if self._plan is None:
            raise BenchError("sencache-global has no plan yet: run it through `sencache-bench run` (which "
                             "prepares one) or call config.prepare(runner) / bind_inputs(...)")
        return self._plan

    def fixed_schedule(self) -> bool:
        return self.mode == "plan"  # adaptive: SenCache's rule on the inputs decides between the plan's points

    def make_policy(self) -> CachePolicy:
        """Plan mode: the whole generation's plan (each expert's hooks see only its own steps). Adaptive: the
        attached expert's profile (several experts: each expert's hooks score with their own)."""
        plan = self.plan()
        if self.mode == "plan":
            return SchedulePolicy(plan, self.reuse, self._predicted, name=self.name)
        profile = self._profile_obj
        if self._expert is not None:
            if self._expert not in self._profiles:
                raise BenchError(f"sencache-global has no plan for the expert {self._expert!r}: prepare the config "
                                 f"through `sencache-bench run` (a profile and table per expert)")
            profile = self._profiles[self._expert]
        return AdaptivePolicy(self._eps_t, self._forced, profile, self.max_reuse, self.reuse)
