"""``calibrate --policy lemica``: LeMiCa's error-weighted DAG over the timesteps (Gao et al., NeurIPS 2025).

From the paper (arXiv 2511.00090) and its project page: a node per timestep; the edge ``i -> j`` computes
at ``i`` and ``j`` and reuses the cache in between; its weight is the *global* error that this one cached
segment causes in the final output,

    w(i -> j) = (1/N) || x0^{cache(i -> j)} - x0^{original} ||_1        (N = elements of x0),

averaged over a few prompts. Here x0 is the final latent (``output_type="latent"``, before the VAE), every
other step is computed, both CFG branches follow the same segment, and the reuse is the policy's
(``residual`` by default, as the other policies). The paper's code for building the graph is not public
(its repository lists "DAG Construction Code" as to do); this is our own construction.

Cost: an edge restarts the uncached trajectory at step ``i`` (the stored outputs of steps ``< i`` are
replayed by :class:`~.schedules.Trajectory`, no model call), computes ``i`` and ``j..n-1``:
``branches * (n - j + 1)`` model calls, so ``branches * (C(n+1, 3) - n + 1)`` for all edges of ``n`` steps,
O(n^3) calls per sample (SenCache's profile: ``3 n`` calls per sample, O(n)). ``max_reuse`` measures only the
edges that reuse at most that many steps. The JSON (``kind: lemica-graph``) keeps the weights (``null``:
not measured), the per-sample weights, the schedule (checked like a profile's), the calls and seconds.

Several experts (Wan 2.2): the trajectory is recorded and replayed across the whole generation (the pipeline's
step index, shared by the experts), and each expert's graph holds only the edges over its own steps ``a..b-1``,
ending at most at ``b``, the next expert's first step (it computes: nothing is reused across the switch). One
file, one section per expert (:mod:`.experts`: ``steps``, ``edges``, ``weights``, ``per_sample``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import BenchError
from ..results.store import write_json
from .experts import expert_view, per_expert_file
from .schedules import (SegmentPolicy, Trajectory, apply_everywhere, check_made_for, generate_latent, read_calibration,
                        remove_everywhere, section_steps)

Log = Callable[[str], None]
GRAPH_KIND = "lemica-graph"
GRAPH_FORMAT = 1
SAMPLES = 4  # "a few prompts"


def edges(n: int, max_reuse: int | None = None, steps: list[int] | None = None) -> list[tuple[int, int]]:
    """Every cache edge ``i -> j`` (``j >= i + 2``, ``j <= n - 1``) reusing at most ``max_reuse`` steps.

    ``steps``: one expert's (contiguous) steps: edges from them to them or to the next expert's first step
    (computed by it, the end of this expert's path); none crosses the switch further."""
    steps = list(range(n)) if steps is None else steps
    end = min(steps[-1] + 1, n - 1)
    return [(i, j) for i in steps for j in range(i + 2, end + 1)
            if max_reuse is None or j - i - 1 <= max_reuse]


def calibrate(runner, samples: int = SAMPLES, out: Path | None = None, log: Log = print,
              max_reuse: int | None = None, prompts: str = "calibration") -> Path:
    """Measure every edge's global error on ``samples`` prompts; write the graph at ``out``."""
    from ..runner import library_versions
    from .sencache import run_schedule
    from .teacache import calibration_items

    spec = runner.spec
    policy = spec.policy
    reuse = getattr(policy, "reuse", "residual") if getattr(policy, "name", None) == "lemica" else "residual"
    if max_reuse is None and getattr(policy, "name", None) == "lemica":
        max_reuse = policy.max_reuse
    items = calibration_items(runner, samples, prompts)
    schedule = run_schedule(runner, items[0][0])
    n = len(schedule["timesteps"])
    if out is None:
        out = graph_path(runner, samples, max_reuse, reuse)
    session = runner.session
    started = time.time()
    per = np.full((len(items), n, n), np.nan)
    calls = 0
    sections: dict = {}
    pairs: list[tuple[int, int]] = []
    log(f"lemica calibration: {spec.model_name}, {n} steps x {len(items)} samples, reuse {reuse}")
    probe = Trajectory(record_outputs=True).attach(session)
    try:
        for s, (text, seed) in enumerate(items):
            probe.replay, probe.until = None, 0
            probe.new_generation()
            probe.computed = 0
            x0_ref = generate_latent(runner, text, seed)
            calls += probe.computed
            probe.computed = 0
            stored = probe.outputs
            branches = len(stored)
            if any(len(v) != n for v in stored.values()):
                raise BenchError(f"lemica calibration: a generation made {[len(v) for v in stored.values()]} calls "
                                 f"per branch, the schedule has {n} steps")
            if not sections:  # each expert's own steps (one transformer: all); its edges stay inside them
                sections = probe.sections()
                pairs = [e for steps in sections.values() for e in edges(n, max_reuse, steps)]
            probe.record_outputs = False
            for i, j in pairs:
                probe.new_generation()
                probe.replay, probe.until = stored, i
                segment = SegmentPolicy(i, j, reuse)
                apply_everywhere(session, segment)
                try:
                    x0 = generate_latent(runner, text, seed)
                finally:
                    remove_everywhere(session)
                calls += segment.computed
                per[s, i, j] = float((x0 - x0_ref).abs().mean())
            probe.record_outputs = True
            log(f"lemica calibration: sample {s + 1}/{len(items)} ({branches} branch(es)), {len(pairs)} edges, "
                f"{calls} model calls so far, {time.time() - started:.0f} s: {text[:48]}")
    finally:
        probe.detach(session)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the edges not measured stay NaN
        mean = np.nanmean(per, axis=0)
    rows = lambda a: [[None if not np.isfinite(v) else round(float(v), 8) for v in row] for row in a]  # noqa: E731
    s_ = spec.sampling
    data = {"kind": GRAPH_KIND, "format": GRAPH_FORMAT, "policy": "lemica", "model": spec.model_name,
            "family": spec.family.name, "schedule": schedule,
            "sampling": {"height": s_.height, "width": s_.width, "frames": s_.frames,
                         "guidance_scale": s_.guidance_scale, "shift": s_.shift},
            "reuse": reuse, "max_reuse": max_reuse, "error": "mean |x0_cached - x0_uncached| of the final latent",
            "samples": len(items), "prompts": [t for t, _ in items], "seeds": [sd for _, sd in items],
            "model_calls": int(calls), "seconds": round(time.time() - started, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": library_versions()}
    parts = {}
    for expert, steps in sections.items():  # each expert's edges only (NaN elsewhere): its own table
        own = edges(n, max_reuse, steps)
        mask = np.full((n, n), np.nan)
        for i, j in own:
            mask[i, j] = 0.0
        parts[expert] = {"steps": steps, "edges": len(own), "weights": rows(mean + mask),
                         "per_sample": [rows(p + mask) for p in per]}
    if list(parts) == [None]:
        data.update({k: v for k, v in parts[None].items() if k != "steps"})
    else:
        data = per_expert_file(data, parts)
    out = Path(out)
    write_json(out, data)
    counts = ", ".join(f"{e}: {part['edges']}" for e, part in parts.items())
    per_expert = "" if list(parts) == [None] else f" ({counts})"
    log(f"lemica calibration: {len(pairs)} edges{per_expert} x {len(items)} samples, {calls} model calls, "
        f"{data['seconds']:.1f} s -> {out}")
    return out


def graph_path(runner, samples: int, max_reuse: int | None, reuse: str) -> Path:
    """Where a run without ``policy.graph`` keeps (and finds) the graph it calibrated: beside the results."""
    from .sencache import calibration_key

    key = calibration_key(runner, samples)
    tail = "" if max_reuse is None else f"-k{max_reuse}"
    return Path(runner.spec.output_dir) / "profiles" / f"lemica-{reuse}{tail}-{key}.json"


def load_graph(path: Path, *, model: str, schedule: dict, expert: str | None = None,
               single_model: bool = False) -> dict:
    """The graph at ``path`` checked for the run's model and schedule; ``weights`` as an array (NaN: none).

    Several experts: ``expert``'s section (:func:`.experts.expert_view`: another expert's, or a single
    transformer's file, is refused), with ``steps`` the expert's steps; one transformer: every step."""
    fix = "make it with `sencache-bench calibrate SPEC.yaml --policy lemica` (or leave policy.graph out)"
    data = read_calibration(path, GRAPH_KIND, "lemica graph", fix)
    check_made_for(data, path, model=model, schedule=schedule, what="lemica graph", fix=fix)
    try:
        data = expert_view(data, expert, path, "a lemica graph", "lemica", single_model=single_model)
    except ValueError as err:
        raise BenchError(str(err)) from None
    n = len(schedule["timesteps"])
    try:
        weights = np.array([[np.nan if v is None else float(v) for v in row] for row in data["weights"]])
    except (KeyError, TypeError, ValueError) as err:
        raise BenchError(f"{path}: malformed lemica graph ({err}): {fix}") from None
    if weights.shape != (n, n):
        raise BenchError(f"{path}: weights must be an {n} x {n} table: {fix}")
    steps = section_steps(data, n, path, "lemica graph", fix)
    return {**data, "weights": weights, "steps": steps}
