"""``calibrate --policy magcache``: a model's magnitude-ratio curve, per CFG branch, from uncached runs.

As the source's calibration mode (Zehong-Ma/MagCache, ``magcache_calibration``): for every uncached call
of a branch, ``r_i`` = block-stack residual (hidden output of the last block minus hidden input of the
first); for step i >= 1

    gamma_i = mean over tokens of ||r_i|| / ||r_{i-1}||      (norm over the channel dimension)

and gamma_0 = 1.0 (no previous residual; the source pads the same way). The curve written is the mean
over the samples per step and branch (the source uses one prompt; more samples average it), with the
per-sample curves and the schedule's timesteps. The JSON (``kind: magcache_ratios``, the schema of the
shipped curves) is what a spec's ``policy.ratios`` points to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import BenchError
from ..policies.magcache import RATIOS_KIND
from .teacache import Log, calibration_items, header, run_uncached, write


def _ratio(current: torch.Tensor, previous: torch.Tensor) -> float:
    return float((current.float().norm(dim=-1) / previous.float().norm(dim=-1)).mean())


def calibrate(runner, samples: int, out: Path, log: Log = print, prompts: str = "calibration") -> Path:
    """Measure the ratio curve on ``samples`` uncached generations; write the JSON at ``out``."""
    steps = runner.spec.sampling.steps
    per_sample: dict[str, list[list[float]]] = {}
    timesteps: dict[str, list[float]] = {}
    previous: dict[str, torch.Tensor] = {}

    def on_call(record: dict) -> None:
        branch, step = record["branch"], record["step"]
        residual = record.get("residual")
        if residual is None:
            raise BenchError("magcache calibration: the block stack did not run in an uncached call")
        curves = per_sample.setdefault(branch, [])
        if step == 0:
            curves.append([])
            timesteps.setdefault(branch, [])
        ratio = 1.0 if step == 0 or branch not in previous else _ratio(residual, previous[branch])
        curves[-1].append(ratio)
        if len(curves) == 1:
            timesteps[branch].append(record["timestep"])
        previous[branch] = residual

    items = calibration_items(runner, samples, prompts)
    run_uncached(runner, items, on_call, log, "magcache calibration", before_each=previous.clear)
    branches = {}
    for branch, curves in per_sample.items():
        bad = [len(c) for c in curves if len(c) != steps]
        if bad:
            raise BenchError(f"magcache calibration: branch {branch} had {bad[0]} calls in a generation, "
                             f"expected {steps}")
        branches[branch] = np.mean(np.array(curves), axis=0).round(6).tolist()
    data = header(runner, "magcache", RATIOS_KIND, samples, items)
    data.update({"branches": branches, "timesteps": timesteps, "per_sample": per_sample})
    path = write(out, data)
    summary = ", ".join(f"{b}: {min(v[1:] or [1.0]):.4f}..{max(v[1:] or [1.0]):.4f}" for b, v in branches.items())
    log(f"magcache calibration: {len(items)} samples x {steps} steps, ratios {summary} -> {path}")
    return path
