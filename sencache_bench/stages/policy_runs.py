"""Stage 3, policy runs: the policy prepared, warmed up, then timed in a chain beside uncached baselines.

The chain is :func:`sencache_bench.measure.timing.paired_schedule`: policy generations interleaved with
uncached baselines of the same items, so a speedup is a ratio of times taken moments apart. Each baseline's
frames are checked against the stored reference (a reproduced reference means the comparison is fair).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..measure.timing import ItemTiming, Sample, TimingConfig, paired_schedule
from ..prompts import Prompt
from ..spec import ResolvedSpec
from .session import Generation, Session, StepCallback, refuse_calibrated

#: ``finish(i, generation, timing, reproduced)``: item i's policy run once its timing segment closes
Finish = Callable[[int, Generation, ItemTiming, "list[bool] | None"], None]


def prepare(spec: ResolvedSpec, runner) -> None:
    """A policy config with ``prepare(runner)`` gets ready (e.g. SenCache's profile); before any reference.

    A policy calibrated for one transformer is refused first on a model with several experts."""
    if spec.entry is not None:
        refuse_calibrated(spec.policy, list(spec.entry.experts))
    prepare_policy = getattr(spec.policy, "prepare", None)
    if prepare_policy is not None:
        prepare_policy(runner)


def warm_up(session: Session, policy, prompt: Prompt, seed: int) -> dict:
    """One untimed full generation with the policy attached; what the record says of it.

    The first timed policy generation would otherwise pay the policy's first-use work (its hooks' and
    decisions' first kernels, cache-dit's first cached pass, lazy imports) that the baselines do not: their
    pipeline path is warmed by :meth:`Session.warm_up`. Full length, so the reuse path runs too."""
    gen = session.generate(prompt.text, seed, policy=policy)
    return {"generations": 1, "prompt_index": prompt.index, "seed": seed, "seconds": gen.latency["total_s"],
            "timed": False}


def timed_chain(session: Session, policy, items: list[tuple[Prompt, int]], reference_frames: list[np.ndarray],
                config: TimingConfig, finish: Finish, on_step: StepCallback | None = None,
                warmed: dict | None = None) -> None:
    """Time every item's policy run beside uncached baselines; ``finish`` each as its segment closes.

    ``warmed``: what the policy's untimed warm-up generation (:func:`warm_up`, on the first item) recorded, held
    by the caller for every chain of one policy setting: an empty dict is filled here, a filled one means done."""
    runs: dict[int, Generation] = {}
    reproduced: dict[int, list[bool]] = {}

    def time_baseline(i: int) -> Sample:
        gen = session.generate(items[i][0].text, items[i][1], policy=None, on_step=on_step)
        reproduced.setdefault(i, []).append(bool(np.array_equal(gen.frames, reference_frames[i])))
        return gen.sample()

    def time_policy(i: int) -> Sample:
        runs[i] = session.generate(items[i][0].text, items[i][1], policy=policy, on_step=on_step)
        return runs[i].sample()

    def close(i: int, timing: ItemTiming) -> None:
        finish(i, runs.pop(i), timing, reproduced.get(i))

    def warm() -> None:
        warmed.update(warm_up(session, policy, *items[0]))

    paired_schedule(len(items), config, time_baseline, time_policy, close,
                    warm_up=warm if warmed is not None and not warmed else None)
