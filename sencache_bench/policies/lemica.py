"""``lemica``: LeMiCa, lexicographic minimax path caching (Gao et al., NeurIPS 2025; arXiv 2511.00090).

Cache scheduling as a path in a DAG over the timesteps: the edge ``i -> j`` computes at ``i`` and ``j`` and
reuses in between, weighted by the global error that segment alone causes in the final output,
``(1/N) ||x0^{cache(i->j)} - x0^{original}||_1`` averaged over a few prompts (measured by
``sencache-bench calibrate SPEC --policy lemica``: :mod:`..calibration.lemica`). Given a budget of ``B``
computed steps, the schedule is the path of ``B`` nodes from the first to the last step whose cache-edge
weights, sorted in descending order, are lexicographically least: first the worst segment's error is
minimised, then the next (:func:`..planning.minimax_path`). Every sample runs that schedule in every branch
(as the published LeMiCa schedules, fixed per model and budget), so NFE = B per branch.

First and last step are always computed (the path's ends, as the paper's graph and the published Wan
schedules); the family's forced steps (``adapters["sencache"]["forced"]``) too.

Several experts (Wan 2.2's two transformers): one graph per expert over its own steps (:mod:`..calibration.lemica`),
one path per expert from its first step (always computed: nothing is reused across the switch) to the next
expert's first step (or the last step). The one ``budget`` knob is split by steps: ``round(budget * m_e)``
computed calls per branch for the expert running ``m_e`` of the ``n`` steps (at least its forced steps).

Spec: ``{name: lemica, graph, budget, max_reuse, reuse}``. ``budget``: fraction of the steps computed per
branch (``B = round(budget * n)``). ``max_reuse``: only edges reusing at most that many steps (the graph
must have them; a graph measured with a bound serves that bound or a smaller one). ``graph``: the JSON of the
calibrate command; without it, a run calibrates one (O(n^3) model calls per sample: minutes on bench-t2v)
and keeps it under ``<output.dir>/profiles/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, PrivateAttr

from ..errors import BenchError
from .base import CachePolicy, Knob, ReuseMode
from .sencache_global import SchedulePolicy, budget_steps, section_forced
from .teacache import MissingFile, ModelBoundConfig


class LeMiCaConfig(ModelBoundConfig):
    name: Literal["lemica"] = "lemica"
    knob: ClassVar[Knob] = Knob("budget", "higher", 0.0, 1.0)
    calibration: ClassVar[str] = "an error table and a global plan"  # one graph and path per expert on several
    per_expert: ClassVar[bool] = True
    graph: str | None = Field(default=None, description="LeMiCa graph JSON (default: calibrate one)")
    budget: float = Field(default=0.5, ge=0.0, le=1.0, description="fraction of the steps computed per branch")
    max_reuse: int | None = Field(default=None, ge=0, description="only segments reusing at most this many steps")
    reuse: ReuseMode = "residual"

    _plan: tuple | None = PrivateAttr(default=None)
    _worst: tuple = PrivateAttr(default=())
    _plans: dict = PrivateAttr(default_factory=dict)  # expert (None: one transformer) -> its section's path

    def prepare(self, runner) -> None:
        """The graph for the runner's model and schedule (calibrated when absent), then the path."""
        from ..calibration.experts import expert_names
        from ..calibration.lemica import SAMPLES, calibrate, graph_path, load_graph
        from ..calibration.sencache import run_schedule

        spec, log = runner.spec, runner.log
        schedule = run_schedule(runner)
        if self.graph is not None:
            if spec.spec_path is not None and self._spec_dir is None:
                self._spec_dir = str(Path(spec.spec_path).parent)
            try:
                path = self.find_file(self.graph)
            except MissingFile:
                raise BenchError(f"policy.graph: {self.graph} not found: make it with `sencache-bench calibrate "
                                 f"SPEC.yaml --policy lemica --out {self.graph}` or leave policy.graph out") from None
        else:
            path = graph_path(runner, SAMPLES, self.max_reuse, self.reuse)
            if not path.is_file():
                log(f"lemica: no policy.graph given; measuring the graph first ({SAMPLES} samples, O(steps^3) "
                    f"model calls each) and keeping it at {path}")
                calibrate(runner, samples=SAMPLES, out=path, log=log, max_reuse=self.max_reuse)
        experts = expert_names(runner)
        graphs = {e: load_graph(path, model=spec.model_name, schedule=schedule, expert=e,
                                single_model=experts == [None]) for e in experts}
        graph = next(iter(graphs.values()))
        if graph.get("reuse", "residual") != self.reuse:
            raise BenchError(f"policy.reuse: {path} was measured with reuse {graph.get('reuse')}, this policy uses "
                             f"{self.reuse}: calibrate with this spec (`sencache-bench calibrate SPEC.yaml "
                             f"--policy lemica`) or set reuse: {graph.get('reuse')}")
        if graph.get("max_reuse") is not None and (self.max_reuse is None or self.max_reuse > graph["max_reuse"]):
            raise BenchError(f"policy.max_reuse: {path} holds only the edges reusing at most {graph['max_reuse']} "
                             f"steps; set max_reuse to {graph['max_reuse']} or less, or calibrate all edges")
        self._note_input("graph", path)
        self.bind_sections({e: (g["weights"], g["steps"]) for e, g in graphs.items()}, spec.family.name)
        paths = (list(self._plan) if experts == [None] else
                 "; ".join(f"{e} {list(p)}" for e, p in self._plans.items()))
        log(f"lemica: path of {len(self._plan)} of {len(graph['weights'])} steps per branch: {paths} (worst segment "
            f"error {self._worst[0] if self._worst else 0.0:.4g})")

    def bind_graph(self, weights, family: str | None) -> LeMiCaConfig:
        """The lexicographic minimax path on ``weights`` (n x n, NaN where not measured) for this budget."""
        return self.bind_sections({None: (weights, list(range(len(weights))))}, family)

    def bind_sections(self, sections: dict, family: str | None) -> LeMiCaConfig:
        """One path per expert: ``{expert: (weights n x n, its consecutive steps)}``.

        An expert with steps ``a..b-1`` gets the path from ``a`` to ``b`` (the next expert's first step, which it
        computes; for the last expert, or one transformer, to the last step, computed), with
        ``round(budget * m_e)`` of its ``m_e`` steps computed (:func:`budget_steps`): one knob, split by steps."""
        from ..planning import minimax_path

        plans, worst = {}, []
        for expert, (weights, steps) in sections.items():
            weights = np.asarray(weights, dtype=np.float64)
            n = len(weights)
            a, b = steps[0], steps[-1] + 1
            nodes = list(range(a, min(b + 1, n)))  # with the next expert's first step: this path's end
            forced = section_forced(family, n, steps, last=True)
            budget = budget_steps(self.budget, len(steps), forced, self.max_reuse)
            path, w = minimax_path(weights[np.ix_(nodes, nodes)], budget + (b < n), forced, self.max_reuse)
            plans[expert] = tuple(a + p for p in path if a + p < b)
            worst += list(w)
        self._plans = plans
        self._plan = tuple(sorted(s for p in plans.values() for s in p))
        self._worst = tuple(sorted(worst, reverse=True))
        return self

    def plan(self) -> tuple[int, ...]:
        """The computed steps of the whole generation (several experts: each expert's path; a step runs on one
        expert only, so one schedule serves every expert's hooks)."""
        if self._plan is None:
            raise BenchError("lemica has no path yet: run it through `sencache-bench run` (which prepares one) or "
                             "call config.prepare(runner) / bind_graph(weights, family)")
        return self._plan

    def make_policy(self) -> CachePolicy:
        return SchedulePolicy(self.plan(), self.reuse, name=self.name)

    def fixed_schedule(self) -> bool:
        return True
