"""Paired timing: the uncached baseline is timed beside the policy run, interleaved in time.

A stored reference video is a fidelity cache, not a timing baseline: it may come from another process,
another moment or another machine. So the speedup of every run item is measured against baseline
(uncached) generations timed in the same session, on the same device, in the schedule

    B_0  P_0 .. P_{k-1}  B_k  P_k .. P_{2k-1}  B_2k  ...  B_end          (k = ``baseline_every``)

where each P is repeated ``repeats`` times. An item's baseline is the mean of the two baselines that
bracket its segment, so a drift that is linear in time cancels (the A B B A idea; each B serves two
segments, so k = 1 costs one baseline generation per item). A segment whose two bracketing baselines
differ by more than ``tolerance`` (relative) was timed while the machine changed under it (another job
started or stopped): it is timed again, up to ``retries`` times; if it stays unsteady it is kept, marked
``steady: false``, and the table leaves it out of the speedup.

Before B_0, an optional untimed ``warm_up`` (the runner: one policy generation) pays the policy's first-use work,
as the uncached pipeline's is paid by the session's warm-up, so P_0 is not slower than the P that follow.

The schedule is pure bookkeeping over two callables, so it is tested with a scripted clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import fmean, median

from pydantic import BaseModel, ConfigDict, Field


class TimingConfig(BaseModel):
    """The spec's ``timing`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    repeats: int = Field(default=1, ge=1, le=100, description="timed policy generations per item (median kept)")
    baseline_every: int = Field(default=1, ge=1, description="re-time the uncached baseline every k-th item")
    tolerance: float = Field(default=0.05, gt=0.0, le=1.0,
                             description="largest relative gap between the two baselines bracketing a segment")
    retries: int = Field(default=2, ge=0, le=10, description="re-timings of a segment whose baselines disagree")
    timed: bool = Field(default=True, description=(
        "false: one policy generation per item, no warm-up and no uncached baselines (NFE, FLOPs and fidelity "
        "only; the record has no speedup): a quality or pricing run, about a quarter of a timed run's generations"))


@dataclass
class Sample:
    """One timed generation: wall seconds, its phase split, CUDA-event seconds on CUDA."""

    seconds: float
    phases: dict[str, float] = field(default_factory=dict)
    cuda_s: float | None = None


@dataclass
class ItemTiming:
    policy: list[Sample]
    baseline: tuple[Sample, Sample] | tuple[()]  # () when untimed (TimingConfig.timed false)
    steady: bool
    rejected: list[dict] = field(default_factory=list)  # earlier unsteady attempts: their seconds

    @property
    def policy_s(self) -> list[float]:
        return [s.seconds for s in self.policy]

    @property
    def baseline_s(self) -> list[float]:
        return [s.seconds for s in self.baseline]

    @property
    def latency_s(self) -> float:
        """The item's policy latency: the median of its timed samples."""
        return median(self.policy_s)

    @property
    def baseline_latency_s(self) -> float | None:
        return fmean(self.baseline_s) if self.baseline else None

    @property
    def speedup(self) -> float | None:
        return self.baseline_latency_s / self.latency_s if self.baseline else None

    def baseline_phases(self) -> dict[str, float]:
        if not self.baseline:
            return {}
        keys = set(self.baseline[0].phases) & set(self.baseline[1].phases)
        return {k: fmean(s.phases[k] for s in self.baseline) for k in sorted(keys)}

    def policy_phases(self) -> dict[str, float]:
        """The phase split of the median sample (the lower middle one for an even count)."""
        ordered = sorted(self.policy, key=lambda s: s.seconds)
        return dict(ordered[(len(ordered) - 1) // 2].phases)

    def to_json(self, config: TimingConfig) -> dict:
        if not self.baseline:
            return {"timed": False, "statistic": "one untimed policy generation", "policy_s": self.policy_s,
                    "speedup": None, "policy_phases": [s.phases for s in self.policy]}
        out = {"statistic": "median of policy_s", "policy_s": self.policy_s, "baseline_s": self.baseline_s,
               "speedup": self.speedup, "steady": self.steady, "gap": gap(*self.baseline_s),
               "policy_phases": [s.phases for s in self.policy], "baseline_phases": [s.phases for s in self.baseline],
               "repeats": config.repeats, "baseline_every": config.baseline_every, "tolerance": config.tolerance}
        if any(s.cuda_s is not None for s in self.policy):
            out["policy_cuda_s"] = [s.cuda_s for s in self.policy]
            out["baseline_cuda_s"] = [s.cuda_s for s in self.baseline]
        if self.rejected:
            out["rejected"] = self.rejected
        return out


def gap(a: float, b: float) -> float:
    """Relative difference of two timings of the same work."""
    return abs(a - b) / min(a, b)


def paired_schedule(n: int, config: TimingConfig, time_baseline: Callable[[int], Sample],
                    time_policy: Callable[[int], Sample], on_item: Callable[[int, ItemTiming], None],
                    warm_up: Callable[[], None] | None = None) -> None:
    """Time items ``0..n-1`` in the interleaved schedule; ``on_item(i, timing)`` as soon as item i's segment closes.

    ``time_baseline(i)`` times one uncached generation of item i's prompt and seed (the runner also checks its
    frames against the stored reference), ``time_policy(i)`` one policy generation of item i. ``warm_up()``, if
    given, runs once before the first baseline, untimed (outside every segment).
    """
    if n <= 0:
        return
    if not config.timed:  # no baselines, no warm-up: each item's one generation, its seconds kept but not compared
        for i in range(n):
            on_item(i, ItemTiming(policy=[time_policy(i)], baseline=(), steady=True))
        return
    if warm_up is not None:
        warm_up()
    k = config.baseline_every
    before = time_baseline(0)
    start = 0
    while start < n:
        segment = range(start, min(start + k, n))
        closing = min(start + k, n - 1)  # the next segment's first item, or the last item again
        rejected = []
        for attempt in range(config.retries + 1):
            samples = {i: [time_policy(i) for _ in range(config.repeats)] for i in segment}
            after = time_baseline(closing)
            steady = gap(before.seconds, after.seconds) <= config.tolerance
            if steady or attempt == config.retries:
                break
            rejected.append({"policy_s": {str(i): [s.seconds for s in samples[i]] for i in segment},
                             "baseline_s": [before.seconds, after.seconds]})
            before = after
        for i in segment:
            on_item(i, ItemTiming(policy=samples[i], baseline=(before, after), steady=steady, rejected=rejected))
        before = after
        start += k
