"""``calibrate --policy sencache-global``: the N x N displacement table the global planner needs.

SenCache's score from a refresh at step j, at step i > j, is ``S(j, i) = Jx(t_j) ||x_i - x_j|| + Jt(t_j) |t_i - t_j|``
(shared ALGORITHMS.md, "SenCache"). The profile gives Jx, Jt; the planner also needs the *typical* drift
``||x_{t_k} - x_{t_j}||`` along the sampler's trajectory for every pair of steps j < k. It is measured on
the same samples as the profile: the uncached generations of the profile's prompts and seeds (one per
sample, ``seed + k``), recording the latent each call receives (``hidden_states``, the last sample of the
batch: the one SenCache's rule looks at), first CFG branch of each step. The file
(``kind: sencache-global-table``) holds ``displacement`` (mean over samples, N x N, 2-norm over one
sample), ``dt`` (|t_k - t_j|, model units), ``per_sample``, ``numel`` (elements of one sample's latent),
the model, family and ``schedule`` (checked like a profile's), the profile it was measured beside
(path, sha256), the model calls and seconds it took; and ``single_reuse_error`` (on the first 2 samples):
per step i, the global error ``mean |x0 - x0_uncached|`` of reusing step i alone, what the policy's
``error: amplified`` model rescales the scores with (n - 1 LeMiCa edges: O(n^2) calls, not O(n^3)).

Several experts (Wan 2.2): the trajectory is recorded across the whole generation (the pipeline's step index,
shared by the experts); one file, one section per expert (:mod:`.experts`) holding its ``steps`` and the
table over them only (``displacement``, ``dt``, ``per_sample``: null outside its own pairs of steps;
``single_reuse_error``: null at its first step, never reused, and outside). Its profile is the SenCache
profile's section of the same expert.

:class:`~.schedules.Trajectory` (a temporary hook on the transformer that records each call's latent and output
per branch, and can replay stored outputs up to a step) is shared with the LeMiCa calibrator (calibration/schedules.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import BenchError
from ..results.store import sha256_file, write_json
from .experts import expert_view, per_expert_file
from .schedules import (SegmentPolicy, Trajectory, apply_everywhere, check_made_for, generate_latent, read_calibration,
                        remove_everywhere, section_steps)

Log = Callable[[str], None]
TABLE_KIND = "sencache-global-table"
TABLE_FORMAT = 1


def first_branch(latents: dict[str, list]) -> str:
    """The branch whose latents stand for the step: ``cond`` (or the batched call) when there is one."""
    for name in ("cond", "cond_uncond"):
        if name in latents:
            return name
    return next(iter(latents))


# -- the table ------------------------------------------------------------------------------------
def displacement_table(trajectories: Sequence[Sequence[torch.Tensor]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean over samples of ``||x_k - x_j||_2`` for every pair of steps, and the per-sample tables."""
    per = []
    for traj in trajectories:
        flat = torch.stack([x.flatten().double() for x in traj])  # (N, numel)
        per.append(torch.cdist(flat[None], flat[None])[0].numpy())
    per = np.stack(per)
    return per.mean(0), per


def samples_of(runner, profile, samples: int, seed: int) -> tuple[list[str], list[int]]:
    """(prompts, seeds) of the profile's generations when it has them, else the calibration prompts."""
    from .sencache import calibration_prompts

    meta = profile.meta if profile is not None else {}
    if meta.get("source") == "generated" and meta.get("prompts"):
        prompts = [str(p) for p in meta["prompts"]]
        base = int(meta.get("seed", 0))
        return prompts, [base + k for k in range(len(prompts))]
    texts = calibration_prompts(runner.spec)
    return [texts[k % len(texts)] for k in range(samples)], [seed + k for k in range(samples)]


def single_reuse_errors(runner, items: Sequence[tuple[str, int]], n: int, reuse: str, log: Log,
                        skip: frozenset[int] = frozenset()) -> tuple[list, int]:
    """Per step i >= 1: the global error ``mean |x0 - x0_uncached|`` of reusing step i alone (computed at i-1).

    LeMiCa's edge ``i-1 -> i+1`` (for i = n-1: reusing the last step), measured with the same replay, so
    ``n - 1`` segments per sample instead of LeMiCa's ``(n-1)(n-2)/2``. ``skip``: steps never reused (an
    expert's first step: nothing is reused across the switch), left None. Returns (mean per step, model calls).
    """
    session = runner.session
    per = np.full((len(items), n), np.nan)
    steps = [i for i in range(1, n) if i not in skip]
    calls = 0
    probe = Trajectory(record_outputs=True).attach(session)
    try:
        for s, (text, seed) in enumerate(items):
            probe.replay, probe.until, probe.record_outputs = None, 0, True
            probe.new_generation()
            probe.computed = 0
            x0_ref = generate_latent(runner, text, seed)
            calls += probe.computed
            stored, probe.record_outputs = probe.outputs, False
            for i in steps:
                probe.new_generation()
                probe.replay, probe.until = stored, i - 1
                segment = SegmentPolicy(i - 1, i + 1, reuse)
                apply_everywhere(session, segment)
                try:
                    x0 = generate_latent(runner, text, seed)
                finally:
                    remove_everywhere(session)
                calls += segment.computed
                per[s, i] = float((x0 - x0_ref).abs().mean())
            log(f"sencache-global calibration: single-reuse errors of sample {s + 1}/{len(items)}, "
                f"{calls} calls so far")
    finally:
        probe.detach(session)
    mean = per.mean(0)
    return [None] + [None if not np.isfinite(v) else round(float(v), 8) for v in mean[1:]], calls


def _block(table: np.ndarray, steps: Sequence[int], digits: int = 6) -> list:
    """``table`` (a vector of n, n x n, or samples x n x n) rounded, None outside one expert's ``steps``
    (its own steps, and pairs of them)."""
    table = np.asarray(table, dtype=np.float64)
    if table.ndim == 3:
        return [_block(t, steps, digits) for t in table]
    inside = np.zeros(table.shape[-1], dtype=bool)
    inside[list(steps)] = True
    keep = (np.logical_and.outer(inside, inside) if table.ndim == 2 else inside) & np.isfinite(table)
    return _nulls(np.where(keep, table.round(digits), np.nan).tolist())


def _nulls(values):
    """NaN -> None in nested lists (JSON has no NaN)."""
    if isinstance(values, list):
        return [_nulls(v) for v in values]
    return None if values != values else values


AMPLIFY_SAMPLES = 2


def calibrate(runner, samples: int = 8, out: Path | None = None, log: Log = print, profile: str | Path | None = None,
              seed: int = 0, amplify_samples: int = AMPLIFY_SAMPLES) -> Path:
    """Measure the displacement table on the profile's samples; write it (default: beside the profile).

    Also the single-reuse global errors on the first ``amplify_samples`` of them (0: not measured), which
    the ``error: amplified`` model of the policy needs."""
    from ..runner import library_versions
    from .profile import load_profile
    from .sencache import auto_profile_path, run_schedule

    spec = runner.spec
    policy = spec.policy
    if profile is None and getattr(policy, "name", None) == "sencache-global" and policy.profile is not None:
        profile = policy._resolve(policy.profile, spec)
    profile_path = Path(profile) if profile is not None else auto_profile_path(runner, samples)
    prof = load_profile(profile_path) if profile_path.is_file() else None
    prompts, seeds = samples_of(runner, prof, samples, seed)
    if out is None:
        out = table_path_for(profile_path)
    started = time.time()
    schedule = run_schedule(runner, prompts[0])
    probe = Trajectory().attach(runner.session)
    trajectories, sections = [], {}
    try:
        for k, (text, s) in enumerate(zip(prompts, seeds)):
            probe.new_generation()
            generate_latent(runner, text, s)
            branch = first_branch(probe.latents)
            trajectories.append(probe.latents[branch])
            sections = sections or probe.sections()  # each expert's steps (one transformer: all)
            log(f"sencache-global calibration: trajectory {k + 1}/{len(prompts)} (seed {s}): {text[:50]}")
    finally:
        probe.detach(runner.session)
    n = len(schedule["timesteps"])
    bad = [len(t) for t in trajectories if len(t) != n]
    if bad:
        raise BenchError(f"sencache-global calibration: a generation made {bad[0]} calls per branch, the schedule "
                         f"has {n} steps")
    mean, per = displacement_table(trajectories)
    reuse = policy.reuse if getattr(policy, "name", None) == "sencache-global" else "residual"
    starts = frozenset(steps[0] for steps in sections.values())  # an expert's first step is never reused
    single, single_calls = (single_reuse_errors(runner, list(zip(prompts, seeds))[:amplify_samples], n, reuse, log,
                                                skip=starts) if amplify_samples > 0 else (None, 0))
    ts = np.asarray(schedule["timesteps"], dtype=np.float64)
    dt = np.abs(ts[None, :] - ts[:, None])
    s = spec.sampling
    data = {"kind": TABLE_KIND, "format": TABLE_FORMAT, "policy": "sencache-global", "model": spec.model_name,
            "family": spec.family.name, "schedule": schedule,
            "sampling": {"height": s.height, "width": s.width, "frames": s.frames,
                         "guidance_scale": s.guidance_scale, "shift": s.shift},
            "numel": int(trajectories[0][0].numel()), "samples": len(trajectories), "prompts": prompts,
            "seeds": seeds, "profile": ({"path": shown(profile_path), "sha256": sha256_file(profile_path)}
                                        if profile_path.is_file() else None),
            "reuse": reuse, "single_reuse_samples": min(amplify_samples, len(trajectories)) if single else 0,
            "model_calls": int(probe.computed) + single_calls,
            "seconds": round(time.time() - started, 3), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": library_versions()}
    if list(sections) == [None]:
        data.update({"displacement": mean.round(6).tolist(), "dt": dt.round(6).tolist(),
                     "per_sample": per.round(6).tolist(), "single_reuse_error": single})
    else:  # each expert: its own steps and the pairs of them (None elsewhere)
        single_of = (lambda own: _block([np.nan if v is None else v for v in single], own[1:], 8)) if single \
            else (lambda own: None)
        data = per_expert_file(data, {e: {"steps": own, "displacement": _block(mean, own), "dt": _block(dt, own),
                                          "per_sample": _block(per, own), "single_reuse_error": single_of(own)}
                                      for e, own in sections.items()})
    out = Path(out)
    write_json(out, data)
    log(f"sencache-global calibration: {len(trajectories)} trajectories x {n} steps, {data['model_calls']} calls, "
        f"{data['seconds']:.1f} s -> {out}")
    return out


def shown(path: Path) -> str:
    """A path as stored in a file: relative to the working directory when under it (files travel with the repo)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def table_path_for(profile_path: Path) -> Path:
    """Where the table of a profile lives: beside it, ``<stem>_global.json``."""
    profile_path = Path(profile_path)
    return profile_path.with_name(f"{profile_path.stem}_global.json")


# -- reading it back --------------------------------------------------------------------------------
def load_table(path: Path, *, model: str, schedule: dict, expert: str | None = None,
               single_model: bool = False) -> dict:
    """The displacement table at ``path``, checked for the run's model and schedule; arrays as numpy.

    Several experts: ``expert``'s section (:func:`.experts.expert_view`: another expert's, or a single
    transformer's file, is refused), finite on its own ``steps`` (NaN elsewhere); one transformer: every step."""
    fix = "make it with `sencache-bench calibrate SPEC.yaml --policy sencache-global` (or leave policy.profile out)"
    data = read_calibration(path, TABLE_KIND, "sencache-global table", fix)
    check_made_for(data, path, model=model, schedule=schedule, what="sencache-global table", fix=fix)
    try:
        data = expert_view(data, expert, path, "a sencache-global table", "sencache-global", single_model=single_model)
    except ValueError as err:
        raise BenchError(str(err)) from None
    n = len(schedule["timesteps"])
    nan = lambda rows: [[np.nan if v is None else v for v in row] for row in rows]  # noqa: E731
    try:
        disp = np.asarray(nan(data["displacement"]), dtype=np.float64)
        dt = np.asarray(nan(data["dt"]), dtype=np.float64)
        numel = int(data["numel"])
    except (KeyError, TypeError, ValueError) as err:
        raise BenchError(f"{path}: malformed sencache-global table ({err}): {fix}") from None
    steps = section_steps(data, n, path, "sencache-global table", fix)
    own = np.ix_(steps, steps)
    if disp.shape != (n, n) or dt.shape != (n, n) or not np.all(np.isfinite(disp[own])) \
            or not np.all(np.isfinite(dt[own])):
        raise BenchError(f"{path}: displacement and dt must be {n} x {n} tables, finite on the steps "
                         f"{steps[0]}..{steps[-1]}: {fix}")
    single = data.get("single_reuse_error")
    if single is not None:
        single = np.array([np.nan if v is None else float(v) for v in single])
        if single.shape != (n,):
            raise BenchError(f"{path}: single_reuse_error must have {n} entries: {fix}")
    return {**data, "displacement": disp, "dt": dt, "numel": numel, "single_reuse_error": single, "steps": steps}
