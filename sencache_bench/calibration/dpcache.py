"""``calibrate --policy dpcache``: DPCache's calibrated step errors, and its exact dynamic programme.

DPCache (arXiv 2602.22654; sglang ``multimodal_gen/runtime/cache/dpcache.py``, Apache-2.0) computes ``K``
of the ``n`` steps and, at every other step ``t``, predicts the block stack's output (the *feature*, the
input of the output head) linearly from the last two computed steps ``i < j``:

    h_t ~ h_i + c (h_j - h_i),   c = (t - i) / (j - i)                 (:func:`~..policies.base.extrapolate`)

Calibration (here): uncached generations of the model's calibration prompts record ``h`` at every step of
every CFG branch; the *step error* of predicting ``t`` from keys ``i < j`` is

    E[i, j, t] = mean |h_i + c (h_j - h_i) - h_t|                      (mean over elements, branches, samples)

and a key triple's cost ``C[i, j, k] = sum_{j < t < k} E[i, j, t]`` (``k = n``: the steps after the last key;
only predicted steps are scored, as sglang's cost, not the paper's proxy at the endpoint). The schedule of
``K`` keys minimising ``sum C`` over consecutive key triples is found exactly by a dynamic programme over
the last two keys (:func:`plan_keys`, O(K n^3)). Steps 0 and 1 are always keys (the first prediction needs
two), as in sglang (which forces 0, 1, 2). Time runs in step indices, as sglang's predictor.

The file (``kind: dpcache-errors``) holds ``errors[i][j - i - 1][t - j - 1] = E[i, j, t]`` (triangular), the
model, family and ``schedule`` (checked like a profile's: another model or step count is refused), samples,
prompts, seeds, calls and seconds. The plan for a budget is made at run time from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from diffusers.hooks._helpers import TransformerBlockRegistry

from ..errors import BenchError
from ..policies.base import extrapolate
from ..results.store import write_json
from .sencache_global import check_made_for, read_calibration

Log = Callable[[str], None]
KIND = "dpcache-errors"
FORMAT = 1
SAMPLES = 4  # "a few prompts"
ANCHORS = (0, 1)
FIX = "make it with `sencache-bench calibrate SPEC.yaml --policy dpcache` (or leave policy.errors out)"


# -- the cost table ----------------------------------------------------------------------------------
def step_errors(features: Sequence[torch.Tensor]) -> np.ndarray:
    """``E[i, j, t]`` (NaN unless ``i < j < t``) for one trajectory of per-step features."""
    n = len(features)
    errors = np.full((n, n, n), np.nan)
    for i in range(n):
        for j in range(i + 1, n):
            for t in range(j + 1, n):
                predicted = extrapolate(features[i], features[j], (t - i) / (j - i))
                errors[i, j, t] = float((predicted.float() - features[t].float()).abs().mean())
    return errors


def triple_costs(errors: np.ndarray) -> np.ndarray:
    """``C[i, j, k] = sum_{j < t < k} E[i, j, t]`` for ``i < j < k <= n`` (0 when ``k = j + 1``), else +inf."""
    n = errors.shape[0]
    costs = np.full((n, n, n + 1), np.inf)
    for i in range(n):
        for j in range(i + 1, n):
            costs[i, j, j + 1] = 0.0
            costs[i, j, j + 2:] = np.cumsum(errors[i, j, j + 1:])
    return costs


def plan_keys(costs: np.ndarray, budget: int, forced: Iterable[int] = ()) -> tuple[tuple[int, ...], float]:
    """The ``budget`` keys (computed steps) minimising ``sum C[k_{m-2}, k_{m-1}, k_m]`` (with ``k_K = n``).

    ``D[i, j]``: least cost of a key prefix of the current size ending with keys ``i < j``; it starts at
    ``D[0, 1] = 0`` and grows one key at a time, ``D'[j, k] = min_i D[i, j] + C[i, j, k]``; the answer adds
    ``C[i, j, n]``. Exact because a triple's cost depends on the last two keys only. ``forced`` steps are
    keys (no transition jumps over one). Ties go to the smallest predecessor, then the smallest final pair.
    """
    costs = np.array(costs, dtype=np.float64)
    n = costs.shape[0]
    if costs.shape != (n, n, n + 1):
        raise BenchError(f"dpcache: the cost table must be n x n x (n + 1) (found {costs.shape})")
    forced = set(ANCHORS) | {int(f) for f in forced}
    if n < 2 or not all(0 <= f < n for f in forced):
        raise BenchError(f"dpcache: a plan needs at least 2 steps and forced steps inside them (n = {n})")
    if not len(forced) <= budget <= n:
        raise BenchError(f"dpcache: a budget of {budget} computed steps of {n} cannot hold the {len(forced)} "
                         f"forced ones {sorted(forced)}; give between {len(forced)} and {n}")
    for j in range(n):  # a transition j -> k may not skip a forced step
        for f in forced:
            if f > j:
                costs[:, j, f + 1:] = np.inf
    best = np.full((n, n), np.inf)
    best[0, 1] = 0.0
    back = []
    for _ in range(2, budget):
        total = best[:, :, None] + costs[:, :, :n]  # (i, j, k)
        arg = np.argmin(total, axis=0)  # first minimum: the smallest i
        best = np.take_along_axis(total, arg[None], axis=0)[0]
        back.append(arg)
    final = best + costs[:, :, n]
    flat = int(np.argmin(final))
    cost = float(final.flat[flat])
    if not np.isfinite(cost):
        raise BenchError(f"dpcache: no schedule of {budget} computed steps of {n} has a finite cost")
    i, j = divmod(flat, n)
    keys = [i, j]
    for arg in reversed(back):
        i, j = int(arg[i, j]), i
        keys.insert(0, i)
    return tuple(keys), cost


def budget_steps(budget: float, n: int) -> int:
    """Computed steps per branch for a budget fraction: ``round(budget * n)``, at least the two anchors."""
    return int(min(n, max(len(ANCHORS), round(budget * n))))


# -- calibration ------------------------------------------------------------------------------------
def calibrate(runner, samples: int = SAMPLES, out: Path | None = None, log: Log = print,
              prompts: str = "calibration") -> Path:
    """Record the per-step features of uncached generations and write their mean step errors at ``out``."""
    from ..runner import library_versions
    from .sencache import run_schedule
    from .teacache import calibration_items, run_uncached

    spec = runner.spec
    items = calibration_items(runner, samples, prompts)
    schedule = run_schedule(runner, items[0][0])
    n = len(schedule["timesteps"])
    if n < 3:
        raise BenchError(f"dpcache calibration: {n} steps leave nothing to predict (the first two are computed)")
    out = Path(out) if out is not None else errors_path(runner, samples)
    hidden = TransformerBlockRegistry.get(type(runner.session.blocks[0])).hidden_states_argument_name
    trajectories: dict[tuple[int, str], list[torch.Tensor]] = {}
    step_experts: dict[int, str | None] = {}  # which expert ran each step (Wan 2.2: the switch is a forced key)
    sample = [-1]

    def on_call(record: dict) -> None:
        feature = (record["inputs"][hidden] + record["residual"]).detach().float()
        trajectories.setdefault((sample[0], record["branch"]), []).append(feature)
        step_experts[record["step"]] = record["expert"]

    def next_sample() -> None:
        sample[0] += 1

    started = time.time()
    log(f"dpcache calibration: {spec.model_name}, {n} steps, {len(items)} samples")
    run_uncached(runner, items, on_call, log, "dpcache calibration", before_each=next_sample)
    bad = [len(t) for t in trajectories.values() if len(t) != n]
    if bad:
        raise BenchError(f"dpcache calibration: a generation made {bad[0]} calls per branch, the schedule has {n}")
    errors = np.mean([step_errors(t) for t in trajectories.values()], axis=0)
    s = spec.sampling
    data = {"kind": KIND, "format": FORMAT, "policy": "dpcache", "model": spec.model_name,
            "family": spec.family.name, "schedule": schedule,
            "sampling": {"height": s.height, "width": s.width, "frames": s.frames,
                         "guidance_scale": s.guidance_scale, "shift": s.shift},
            "error": "mean |h_i + c (h_j - h_i) - h_t|, c = (t - i)/(j - i), h the block stack's output",
            "samples": len(items), "branches": sorted({b for _, b in trajectories}),
            "prompts": [t for t, _ in items], "seeds": [sd for _, sd in items],
            "errors": to_triangle(errors), "step_experts": [step_experts[t] for t in range(n)],
            "model_calls": sum(len(t) for t in trajectories.values()),
            "seconds": round(time.time() - started, 3), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": library_versions()}
    write_json(out, data)
    log(f"dpcache calibration: {len(trajectories)} trajectories x {n} steps, {data['seconds']:.1f} s -> {out}")
    return out


def to_triangle(errors: np.ndarray) -> list:
    n = errors.shape[0]
    return [[[round(float(errors[i, j, t]), 9) for t in range(j + 1, n)] for j in range(i + 1, n)]
            for i in range(n)]


def from_triangle(rows: list, n: int) -> np.ndarray:
    errors = np.full((n, n, n), np.nan)
    for i in range(n):
        for j in range(i + 1, n):
            values = rows[i][j - i - 1]
            if len(values) != n - j - 1:
                raise ValueError(f"row ({i}, {j}) has {len(values)} entries, not {n - j - 1}")
            errors[i, j, j + 1:] = [float(v) for v in values]
    return errors


def errors_path(runner, samples: int) -> Path:
    """Where a run without ``policy.errors`` keeps (and finds) what it calibrated: beside the results."""
    from .sencache import calibration_key

    return Path(runner.spec.output_dir) / "profiles" / f"dpcache-{calibration_key(runner, samples)}.json"


def load_errors(path: Path, *, model: str, schedule: dict, experts: int = 1) -> tuple[np.ndarray, tuple[int, ...]]:
    """The step errors at ``path``, checked for the run's model and schedule (one line if not), and the steps
    where another expert takes over (``experts`` > 1: Wan 2.2; a file without its experts per step is refused)."""
    data = read_calibration(path, KIND, "dpcache calibration", FIX)
    check_made_for(data, path, model=model, schedule=schedule, what="dpcache calibration", fix=FIX)
    n = len(schedule["timesteps"])
    try:
        errors = from_triangle(data["errors"], n)
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise BenchError(f"{path}: malformed dpcache calibration ({err}): {FIX}") from None
    ran = data.get("step_experts")
    if experts > 1 and (not isinstance(ran, list) or len(ran) != n or len(set(ran)) != experts):
        raise BenchError(f"{path} does not say which of the model's {experts} experts ran each step (made before "
                         f"dpcache planned per expert): {FIX}")
    return errors, expert_switches(ran) if experts > 1 else ()


def expert_switches(step_experts: list) -> tuple[int, ...]:
    """The steps whose expert differs from the previous step's."""
    return tuple(t for t in range(1, len(step_experts)) if step_experts[t] != step_experts[t - 1])


def expert_keys(switches: Iterable[int], n: int) -> tuple[int, ...]:
    """Keys forced by expert switches: the first two steps of every later expert. Nothing cached by one expert
    is reused by the other (issue 24), so each expert's predictions need two computed steps of its own."""
    return tuple(sorted({k for s in switches for k in (s, s + 1) if k < n}))
