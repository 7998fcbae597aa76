"""The run of a spec, as a pipeline of stages (one module each under :mod:`sencache_bench.stages`):

1. :mod:`~sencache_bench.stages.resolve`: the spec into items (prompt, seed), reference keys, record paths;
2. :mod:`~sencache_bench.stages.references`: each item's uncached reference, made once and reused;
3. :mod:`~sencache_bench.stages.policy_runs`: the policy prepared, warmed up and timed beside baselines;
4. :mod:`~sencache_bench.stages.pricing`: FLOPs and NFE from each generation's call trace (or a counted replay);
5. :mod:`~sencache_bench.stages.scoring`: fidelity against the reference;
6. :mod:`~sencache_bench.stages.records`: one JSON record per item.

:class:`Runner` only orders them and holds what lives as long as a run (the session, the FLOP counts, whether
the policy is prepared); every stage generates through :class:`~sencache_bench.stages.session.Session`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from .measure.timing import ItemTiming
from .prompts import Prompt
from .stages import policy_runs, pricing, records, references, resolve, scoring
from .stages.pricing import FlopBook, price, price_per_expert
from .stages.pricing import nfe_summary as _nfe_summary
from .stages.records import library_versions
from .stages.resolve import check_output_dir
from .stages.resolve import short_hash as _short_hash
from .stages.session import Generation, Session, StepCallback
from .spec import ResolvedSpec

Log = Callable[[str], None]

__all__ = ["Generation", "Log", "Runner", "Session", "StepCallback", "_nfe_summary", "_short_hash",
           "check_output_dir", "library_versions", "price", "price_per_expert"]


class Runner:
    """Runs a resolved spec; writes references under ``references/`` and records under ``runs/``."""

    def __init__(self, spec: ResolvedSpec, force: bool = False, log: Log = print, layout=None):
        self.spec = spec
        self.layout = layout  # one video across ranks (parallel.Layout, set by api.run under ``parallel``), or None
        self.force = force
        self.log = log
        self.out = spec.output_dir
        self._session: Session | None = None
        self._policy_prepared = False
        self._policy_warm_up: dict = {}  # the policy's untimed warm-up generation, once per runner (empty: not yet)
        self.flops = FlopBook(spec, log, layout)
        #: keys merged into every record this runner writes (e.g. ``match``: how the setting was chosen)
        self.record_extra: dict = {}

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session(self.spec, self.layout)
        return self._session

    # -- stage 1: items, keys and paths -------------------------------------------------------------
    def items(self) -> list[tuple[Prompt, int]]:
        return resolve.items(self.spec)

    def pending(self) -> list[tuple[Prompt, int]]:
        return resolve.pending(self.spec, self.force, self.layout)

    def reference_key(self, prompt: Prompt, seed: int) -> str:
        return resolve.reference_key(self.spec, prompt, seed, self.layout)

    def run_dir(self) -> Path:
        return resolve.run_dir(self.spec)

    def record_path(self, prompt: Prompt, seed: int) -> Path:
        return resolve.record_path(self.spec, prompt, seed, self.layout)

    def flops_key(self) -> str:
        return pricing.flops_key(self.spec, self.layout)

    # -- stage 2: references ------------------------------------------------------------------------
    def reference(self, prompt: Prompt, seed: int, on_step: StepCallback | None = None) -> tuple[dict, np.ndarray]:
        """The uncached reference of one item: stored, or generated, priced and stored."""
        key = self.reference_key(prompt, seed)
        cached = references.load(self.out, key, self.log)
        if cached is not None:
            return cached
        gen, change = references.generate(self.session, prompt.text, seed, on_step=on_step)
        priced = pricing.reference_flops(self.flops_parts(prompt, seed), gen.calls)
        return references.write(self.out, key, records.common(self.spec, prompt, seed), gen, change, priced,
                                self.spec.save_videos, self.spec.sampling.fps)

    def flops_parts(self, prompt: Prompt, seed: int) -> dict:
        """The pipeline's FLOP parts, counted once per call shape and kept in ``flops/<key>.json``."""
        return self.flops.parts(self.session, prompt, seed)

    def policy_decision_flops(self, prompt: Prompt, seed: int) -> list[int]:
        """The policy's per-call decision FLOPs, counted once per call shape and setting (``flops/``)."""
        return self.flops.decision(self.session, prompt, seed)

    # -- stage 3: policy runs -----------------------------------------------------------------------
    def prepare_policy(self) -> None:
        """Once per runner: a policy config with ``prepare(runner)`` gets ready (e.g. SenCache's profile)."""
        if not self._policy_prepared:
            policy_runs.prepare(self.spec, self)
        self._policy_prepared = True

    def run_item(self, prompt: Prompt, seed: int, on_step: StepCallback | None = None) -> Path:
        return self.run_items([(prompt, seed)], on_step=on_step)[0]

    def run_items(self, items: list[tuple[Prompt, int]], on_step: StepCallback | None = None,
                  on_done: Callable[[int, Path], None] | None = None) -> list[Path]:
        """References first (untimed), then the policy runs timed beside uncached baselines; one record per item.

        ``on_done(i, path)`` after item i's record is written (records are written as their timing segment
        closes, so a run killed at any moment keeps every finished record).
        """
        if not items:
            return []
        self.prepare_policy()
        refs = [self.reference(prompt, seed, on_step=on_step) for prompt, seed in items]
        session = self.session
        if self.spec.timing.timed:
            session.warm_up(items[0][0].text)
        paths: list[Path | None] = [None] * len(items)

        def finish(i: int, gen: Generation, timing: ItemTiming, reproduced: list[bool] | None) -> None:
            paths[i] = self._record(*items[i], *refs[i], gen, timing, reproduced)
            if on_done is not None:
                on_done(i, paths[i])

        policy_runs.timed_chain(session, self.spec.policy, items, [frames for _, frames in refs], self.spec.timing,
                                finish, on_step=on_step, warmed=self._policy_warm_up)
        return paths

    # -- stages 4 to 6: pricing, scoring, the record ------------------------------------------------
    def _record(self, prompt: Prompt, seed: int, ref_meta: dict, ref_frames: np.ndarray, gen: Generation,
                timing: ItemTiming, reproduced: list[bool] | None) -> Path:
        priced = pricing.run_flops(self.flops, self.session, prompt, seed, ref_meta["flops_parts"], gen.calls)
        scored = scoring.score(self.spec, ref_frames, gen.frames)
        return records.write_run(self.record_path(prompt, seed), self.spec, prompt, seed, ref_meta, gen, timing,
                                 reproduced, self._policy_warm_up or None, priced, scored, self.record_extra,
                                 self.layout)
