"""``dpcache``: DPCache, calibrated key-step caching by dynamic programming (arXiv 2602.22654).

Written on the public surface (:mod:`sencache_bench.policy`). Offline, uncached generations of the model's
calibration prompts give the error of predicting each step's block-stack output (the feature) linearly from
two earlier computed steps (``sencache-bench calibrate SPEC --policy dpcache``:
:mod:`..calibration.dpcache`, which also holds the cost definition and the dynamic programme). For a budget
of ``K = round(budget * n)`` computed steps, the exact DP picks the ``K`` keys of least total calibrated
error; steps 0 and 1 are always keys. At run time, in every branch, a key step computes; any other step
``t`` runs embeddings and head with the current timestep and replaces the block stack's output by
``h_i + c (h_j - h_i)``, ``c = (t - i) / (j - i)``, from the branch's last two computed steps ``i < j``
(``extrapolate = "feature"``, :func:`sencache_bench.policy.extrapolate`). NFE = K per branch; the trace
carries the calibrated error of each predicted step.

Spec: ``{name: dpcache, budget, errors}``. ``errors``: the calibrate command's JSON; without it, a run
calibrates one (``4`` uncached generations) and keeps it under ``<output.dir>/profiles/``. A file made on
another model or step count is refused with one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, PrivateAttr

from sencache_bench.errors import BenchError
from sencache_bench.policy import (
    CachePolicy,
    CallInfo,
    Decision,
    Knob,
    ModelBoundConfig,
)


@dataclass
class DPCacheState:
    computed: list = field(default_factory=list)  # the last two computed step indices


class DPCachePolicy(CachePolicy):
    """Computes the planned keys; predicts the feature of every other step from the last two computed."""

    name = "dpcache"
    reuse = "residual"
    extrapolate = "feature"

    def __init__(self, keys, errors: np.ndarray | None = None):
        self.keys = frozenset(int(k) for k in keys)
        self.errors = errors  # E[i, j, t], for the trace's score
        if not {0, 1} <= self.keys:
            raise BenchError(f"dpcache: a plan computes steps 0 and 1 (the first prediction needs two); "
                             f"got {sorted(self.keys)}")

    def new_state(self) -> DPCacheState:
        return DPCacheState()

    def decide(self, state: DPCacheState, call: CallInfo) -> Decision:
        t = call.index
        n = None if self.errors is None else len(self.errors)
        if t in self.keys or (n is not None and t >= n):
            state.computed = [*state.computed[-1:], t]
            return Decision(compute=True)
        i, j = state.computed
        score = float(self.errors[i, j, t]) if self.errors is not None else None
        return Decision(compute=False, score=score, coefficient=(t - i) / (j - i))


class DPCacheConfig(ModelBoundConfig):
    name: Literal["dpcache"] = "dpcache"
    knob: ClassVar[Knob] = Knob("budget", "higher", 0.0, 1.0)  # K = round(budget * n): NFE moves with it
    budget: float = Field(default=0.5, ge=0.0, le=1.0, description="fraction of the steps computed per branch")
    errors: str | None = Field(default=None, description="dpcache calibration JSON (default: calibrate one)")

    _plan: tuple | None = PrivateAttr(default=None)
    _errors: object = PrivateAttr(default=None)

    def prepare(self, runner) -> None:
        """The step errors for the runner's model and schedule (calibrated when absent), then the plan."""
        from sencache_bench.calibration.dpcache import (
            SAMPLES,
            calibrate,
            errors_path,
            load_errors,
        )
        from sencache_bench.calibration.sencache import run_schedule

        spec, log = runner.spec, runner.log
        schedule = run_schedule(runner)
        if self.errors is not None:
            if spec.spec_path is not None and self._spec_dir is None:
                self._spec_dir = str(Path(spec.spec_path).parent)
            try:
                path = self.find_file(self.errors)
            except ValueError:
                raise BenchError(f"policy.errors: {self.errors} not found: make it with `sencache-bench calibrate "
                                 f"SPEC.yaml --policy dpcache --out {self.errors}` or leave policy.errors out") from None
        else:
            path = errors_path(runner, SAMPLES)
            if not path.is_file():
                log(f"dpcache: no policy.errors given; calibrating first ({SAMPLES} uncached generations) and "
                    f"keeping the step errors at {path}")
                calibrate(runner, samples=SAMPLES, out=path, log=log)
        errors, switches = load_errors(path, model=spec.model_name, schedule=schedule,
                                       experts=len(runner.session.recorder.experts))
        self._note_input("errors", path)
        self.bind_errors(errors, switches)
        log(f"dpcache: {len(self._plan)} of {len(errors)} steps computed per branch: {list(self._plan)}")

    def bind_errors(self, errors: np.ndarray, switches: tuple[int, ...] = ()) -> DPCacheConfig:
        """The DP plan on step errors ``E`` (n x n x n, NaN outside ``i < j < t``) for this budget.

        ``switches``: steps where another expert takes over (Wan 2.2); the first two steps of each later expert
        are keys, so no prediction reads a feature of the other expert. One budget for the whole generation:
        ``K = round(budget * n)`` keys, at least the forced ones."""
        from sencache_bench.calibration.dpcache import (
            ANCHORS,
            budget_steps,
            expert_keys,
            plan_keys,
            triple_costs,
        )

        n = len(errors)
        forced = expert_keys(switches, n)
        budget = max(budget_steps(self.budget, n), len(set(ANCHORS) | set(forced)))
        self._plan, _ = plan_keys(triple_costs(errors), budget, forced=forced)
        self._errors = np.asarray(errors)
        return self

    def plan(self) -> tuple[int, ...]:
        if self._plan is None:
            raise BenchError("dpcache has no plan yet: run it through `sencache-bench run` (which prepares one) or "
                             "call config.prepare(runner) / bind_errors(errors)")
        return self._plan

    def make_policy(self) -> DPCachePolicy:
        return DPCachePolicy(self.plan(), self._errors)

    def fixed_schedule(self) -> bool:
        return True  # the plan comes from the calibration file, not from the video
