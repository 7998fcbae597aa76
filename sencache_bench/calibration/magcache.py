"""``calibrate --policy magcache``: a model's magnitude-ratio curve, per CFG branch, from uncached runs.

As the source's calibration mode (Zehong-Ma/MagCache, ``magcache_calibration``): for every uncached call
of a branch, ``r_i`` = block-stack residual (hidden output of the last block minus hidden input of the
first); for step i >= 1

    gamma_i = mean over tokens of ||r_i|| / ||r_{i-1}||      (norm over the channel dimension)

and gamma_0 = 1.0 (no previous residual; the source pads the same way). The curve written is the mean
over the samples per step and branch (the source uses one prompt; more samples average it), with the
per-sample curves and the schedule's timesteps. The JSON (``kind: magcache_ratios``, the schema of the
shipped curves) is what a spec's ``policy.ratios`` points to. Several experts: one curve per expert (:mod:`.experts`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import BenchError
from ..policies.magcache import RATIOS_KIND
from .experts import expert_names, per_expert_file
from .teacache import Log, calibration_items, header, run_uncached, write


def _ratio(current: torch.Tensor, previous: torch.Tensor) -> float:
    return float((current.float().norm(dim=-1) / previous.float().norm(dim=-1)).mean())


def calibrate(runner, samples: int, out: Path, log: Log = print, prompts: str = "calibration") -> Path:
    """Measure the ratio curve on ``samples`` uncached generations; write the JSON at ``out``.

    Several experts: one curve per expert and branch, indexed by the generation's step; each ratio divides by
    the same expert's previous residual, and an expert's first call (and the steps it does not run) is 1.0."""
    steps = runner.spec.sampling.steps
    experts = expert_names(runner)
    per_sample: dict[tuple, list[list[float]]] = {}  # (expert, branch) -> one curve of `steps` per sample
    timesteps: dict[tuple, list[float]] = {}
    previous: dict[tuple, torch.Tensor] = {}
    calls: list[dict[str, int]] = []  # per generation: calls per branch

    def on_call(record: dict) -> None:
        branch, step, expert = record["branch"], record["step"], record["expert"]
        residual = record.get("residual")
        if residual is None:
            raise BenchError("magcache calibration: the block stack did not run in an uncached call")
        if step == 0:
            for e in experts:
                per_sample.setdefault((e, branch), []).append([1.0] * steps)
                timesteps.setdefault((e, branch), [None] * steps)
            if not calls or branch in calls[-1]:
                calls.append({})
            calls[-1][branch] = 0
        calls[-1][branch] += 1
        key = (expert, branch)
        if step < steps:
            per_sample[key][-1][step] = 1.0 if key not in previous else _ratio(residual, previous[key])
            timesteps[key][step] = timesteps[key][step] if timesteps[key][step] is not None else record["timestep"]
        previous[key] = residual

    items = calibration_items(runner, samples, prompts)
    run_uncached(runner, items, on_call, log, "magcache calibration", before_each=previous.clear)
    bad = {b: n for counts in calls for b, n in counts.items() if n != steps}
    if bad:
        branch, n = next(iter(bad.items()))
        raise BenchError(f"magcache calibration: branch {branch} had {n} calls in a generation, expected {steps}")
    parts = {}
    for e in experts:
        part = {k[1]: np.mean(np.array(v), axis=0).round(6).tolist() for k, v in per_sample.items() if k[0] == e}
        ran = {k[1]: list(v) for k, v in timesteps.items() if k[0] == e}
        parts[e] = {"branches": part, "timesteps": ran,
                    "per_sample": {k[1]: v for k, v in per_sample.items() if k[0] == e}}
        if e is not None:  # the steps this expert ran (its curve is 1.0 elsewhere, never read there)
            parts[e]["steps_run"] = {b: [i for i, t in enumerate(v) if t is not None] for b, v in ran.items()}
    data = header(runner, "magcache", RATIOS_KIND, samples, items)
    path = write(out, per_expert_file(data, parts) if experts != [None] else {**data, **parts[None]})
    for e, part in parts.items():
        summary = ", ".join(f"{b}: {min(v[1:] or [1.0]):.4f}..{max(v[1:] or [1.0]):.4f}"
                            for b, v in part["branches"].items())
        log(f"magcache calibration{f' ({e})' if e else ''}: {len(items)} samples x {steps} steps, ratios {summary} "
            f"-> {path}")
    return path
