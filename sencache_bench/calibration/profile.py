"""SenCache sensitivity profiles: Jx(t), Jt(t) per timestep of one model's sampling schedule, as JSON.

A profile is measured once per (model, schedule) by :mod:`sencache_bench.calibration.sencache` and read
by the ``sencache`` policy, which looks Jx and Jt up by nearest timestep at every refresh
(shared ALGORITHMS.md, "SenCache"). The file keeps what produced it, so a run can refuse a profile
made for another model or schedule:

- ``kind`` ("sensitivity-profile"), ``format`` (1), ``policy`` ("sencache"), ``method``;
- ``model``, ``family``, ``model_identity``, ``sampling`` (size, guidance) and ``schedule``
  (``steps``, ``shift``, ``scheduler`` class, ``timesteps`` in model units 0..1000, ``sigmas``);
- ``timesteps``, ``Jx``, ``Jt``, ``counts`` (samples that gave a finite value at each timestep),
  ``per_sample`` (``Jx`` and ``Jt``: one row per sample, ``null`` where a sample gave none);
- ``samples``, ``source`` ("generated" or "videos"), ``inputs`` (prompts / video files), ``seed``,
  ``spec_hash``, ``created``, ``versions``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import BenchError
from ..results.store import write_json
from .experts import expert_view

PROFILE_KIND = "sensitivity-profile"
PROFILE_FORMAT = 1
METHOD = "secant-forward-difference"
TIMESTEP_TOLERANCE = 0.01  # model units: two schedules whose timesteps differ by less are the same

Log = Callable[[str], None]


@dataclass(frozen=True)
class SensitivityProfile:
    timesteps: tuple[float, ...]
    jx: tuple[float, ...]
    jt: tuple[float, ...]
    counts: tuple[int, ...]
    model: str
    family: str
    schedule: dict
    meta: dict = field(default_factory=dict)  # everything else in the file, kept as is
    path: Path | None = None
    remapped_from: int | None = None  # step count of the file when the table was remapped to this run's

    def __post_init__(self):
        n = len(self.timesteps)
        if n == 0 or not (len(self.jx) == len(self.jt) == len(self.counts) == n):
            raise ValueError("timesteps, Jx, Jt and counts must be non-empty lists of the same length")

    # -- lookup -----------------------------------------------------------------------------------
    def nearest_index(self, t: float) -> int:
        """Index of the measured timestep nearest to ``t`` (ties: the first, i.e. the noisier one)."""
        return min(range(len(self.timesteps)), key=lambda i: abs(self.timesteps[i] - t))

    def lookup(self, t: float) -> tuple[float, float]:
        """(Jx, Jt) at the measured timestep nearest to ``t`` (model units)."""
        i = self.nearest_index(t)
        return self.jx[i], self.jt[i]

    def remap(self, timesteps: Sequence[float]) -> SensitivityProfile:
        """The table on another schedule's timesteps, each taking its nearest measured timestep's values."""
        idx = [self.nearest_index(float(t)) for t in timesteps]
        return replace(self, timesteps=tuple(float(t) for t in timesteps), jx=tuple(self.jx[i] for i in idx),
                       jt=tuple(self.jt[i] for i in idx), counts=tuple(self.counts[i] for i in idx),
                       remapped_from=len(self.timesteps))

    # -- files ------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"kind": PROFILE_KIND, "format": PROFILE_FORMAT, "policy": "sencache",
                "model": self.model, "family": self.family, "schedule": self.schedule,
                "timesteps": list(self.timesteps), "Jx": list(self.jx), "Jt": list(self.jt),
                "counts": list(self.counts), **self.meta}

    def save(self, path: Path) -> Path:
        path = Path(path)
        write_json(path, self.to_json())
        return path

    @classmethod
    def from_json(cls, data: Any, path: Path | None = None) -> SensitivityProfile:
        where = str(path) if path else "profile"
        if not isinstance(data, dict) or data.get("kind") != PROFILE_KIND:
            raise BenchError(f"{where} is not a sensitivity profile (no kind: {PROFILE_KIND}); "
                             f"make one with `sencache-bench calibrate SPEC.yaml`")
        if data.get("format") != PROFILE_FORMAT:
            raise BenchError(f"{where}: profile format {data.get('format')!r} is not supported (expected "
                             f"{PROFILE_FORMAT}); recalibrate with `sencache-bench calibrate SPEC.yaml`")
        missing = [k for k in ("model", "family", "schedule", "timesteps", "Jx", "Jt", "counts") if k not in data]
        if missing:
            raise BenchError(f"{where}: sensitivity profile lacks {', '.join(missing)}; recalibrate it")
        known = {"kind", "format", "policy", "model", "family", "schedule", "timesteps", "Jx", "Jt", "counts"}
        try:
            profile = cls(timesteps=tuple(float(t) for t in data["timesteps"]),
                          jx=tuple(float(v) for v in data["Jx"]), jt=tuple(float(v) for v in data["Jt"]),
                          counts=tuple(int(c) for c in data["counts"]), model=str(data["model"]),
                          family=str(data["family"]), schedule=dict(data["schedule"]),
                          meta={k: v for k, v in data.items() if k not in known}, path=path)
        except (TypeError, ValueError) as err:
            raise BenchError(f"{where}: malformed sensitivity profile ({err}); recalibrate it") from None
        bad = [i for i, (a, b) in enumerate(zip(profile.jx, profile.jt)) if not (math.isfinite(a) and math.isfinite(b))]
        if bad:
            raise BenchError(f"{where}: Jx/Jt are not finite at timestep {profile.timesteps[bad[0]]:g} "
                             f"(no sample gave a value there); recalibrate with more samples")
        return profile


def load_profile(path: str | Path, expert: str | None = None, single_model: bool = False) -> SensitivityProfile:
    """The profile at ``path``; for ``expert``'s hooks (several experts), that expert's part of a per-expert
    file (:func:`.experts.expert_view`: another expert's, or a single transformer's, is refused)."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"sensitivity profile {path} not found: make one with `sencache-bench calibrate SPEC.yaml` "
                         f"(or leave policy.profile out to calibrate on the first run)")
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as err:  # ValueError: JSONDecodeError and UnicodeDecodeError
        raise BenchError(f"sensitivity profile {path} is unreadable ({err.__class__.__name__}): "
                         f"remake it with `sencache-bench calibrate SPEC.yaml --policy sencache`") from None
    if isinstance(data, dict):
        try:
            data = expert_view(data, expert, path, "sensitivity profiles", "sencache", single_model=single_model)
        except ValueError as err:
            raise BenchError(f"policy.profile: {err}") from None
    return SensitivityProfile.from_json(data, path)


def schedule_record(scheduler, steps: int, shift: float | None) -> dict:
    """What identifies a sampling schedule: steps, shift, scheduler class and its timesteps (model units)."""
    timesteps = [float(t) for t in scheduler.timesteps]
    sigmas = getattr(scheduler, "sigmas", None)
    return {"steps": int(steps), "shift": shift, "scheduler": type(scheduler).__name__, "timesteps": timesteps,
            "sigmas": [float(s) for s in sigmas] if sigmas is not None else None}


def check_profile(profile: SensitivityProfile, *, model: str, schedule: dict, log: Log = print,
                  sampling: dict | None = None) -> SensitivityProfile:
    """The profile to use for a run of ``model`` on ``schedule`` (see :func:`schedule_record`).

    Another model, scheduler or shift: refused (BenchError). Another step count only: remapped to this
    run's timesteps by nearest timestep, and said so. Identical: used as is.
    """
    where = str(profile.path) if profile.path else "the sensitivity profile"
    fix = "calibrate one for this spec with `sencache-bench calibrate SPEC.yaml` (or leave policy.profile out)"
    if profile.model != model:
        raise BenchError(f"policy.profile: {where} was measured on {profile.model}, not {model}: {fix}")
    mine, theirs = schedule, profile.schedule
    for key, what in (("scheduler", "scheduler"), ("shift", "shift")):
        if theirs.get(key) != mine.get(key):
            raise BenchError(f"policy.profile: {where} was measured with {what} {theirs.get(key)}, this run uses "
                             f"{mine.get(key)}: {fix}")
    run_t = [float(t) for t in mine["timesteps"]]
    if len(run_t) != len(profile.timesteps):
        log(f"sencache: {where} was measured on {len(profile.timesteps)} steps, this run has {len(run_t)}: "
            f"Jx, Jt remapped to this run's timesteps by nearest timestep")
        return profile.remap(run_t)
    worst = max(abs(a - b) for a, b in zip(run_t, profile.timesteps))
    if worst > TIMESTEP_TOLERANCE:
        raise BenchError(f"policy.profile: {where} was measured on other timesteps (they differ by up to {worst:.3g}; "
                         f"another resolution or schedule?): {fix}")
    if sampling and profile.meta.get("sampling"):
        theirs_s = profile.meta["sampling"]
        diff = [k for k in ("height", "width", "frames") if k in theirs_s and theirs_s[k] != sampling.get(k)]
        if diff:
            log(f"sencache: note: {where} was measured at {theirs_s.get('width')}x{theirs_s.get('height')}x"
                f"{theirs_s.get('frames')}, this run is {sampling.get('width')}x{sampling.get('height')}x"
                f"{sampling.get('frames')}")
    return profile


def profile_key(model_identity: dict, sampling: dict, samples: int, source: str = "generated",
                inputs: Sequence[str] = ()) -> str:
    """Short hash of what a calibration depends on (not the policy's eps or K, nor the run's seeds)."""
    s = {k: v for k, v in sampling.items() if k not in ("seeds", "fps")}
    blob = {"model": model_identity, "sampling": s, "samples": samples, "method": METHOD, "source": source,
            "inputs": list(inputs)}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def default_profile_path(output_dir: Path, key: str) -> Path:
    """Where a run stores (and finds again) the profile it calibrated itself: beside the results."""
    return Path(output_dir) / "profiles" / f"sencache-{key}.json"
