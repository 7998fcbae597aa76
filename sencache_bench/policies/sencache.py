"""``sencache``: sensitivity-aware caching (Haghighi & Alahi, SenCache; shared ALGORITHMS.md, "SenCache").

At every call of a branch, with (x_ref, t_ref) the latent and timestep of that branch's last computed
call and Jx, Jt the profile's values at the timestep nearest t_ref (looked up at that refresh):

    S = Jx(t_ref) * ||x_t - x_ref||_2 + Jt(t_ref) * |t - t_ref|          (t in model units, 0..1000)
    eps_eff = eps * sqrt(numel(x_t))     (eps = eps_start for the first 20% of the steps, eps_main after)
    REUSE iff S < eps_eff and fewer than K consecutive reuses so far; else COMPUTE and refresh.

(``<`` strictly, as the official code's test; ALGORITHMS.md writes ``<=``, which differs only at equality, e.g.
eps = 0 with an unchanged latent.) The first call of a branch is always computed; the last step too where the
official script of the family forces it (CogVideoX and LTX-Video: ``ret_steps`` 1 and ``cutoff_steps`` = steps
- 1; the family adapter's ``force_last``; Wan computes it only as the rule decides). Each CFG branch keeps its
own state. Reuse is the block
stack's residual (``reuse: residual``, the official code) or the whole output (``reuse: output``, the
paper's text). The profile (:mod:`sencache_bench.calibration.profile`) is resolved by :meth:`prepare`
before a run: the spec's ``profile`` file, checked against the model and schedule, or, without one, a
profile calibrated with the defaults and kept beside the results for the next run (on real videos where the
model has them, as the paper: :mod:`sencache_bench.calibration.sencache`). Every record names the profile and its
``calibration_source`` in its policy inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field, PrivateAttr, ValidationInfo, model_validator

from ..errors import BenchError
from .base import CachePolicy, CallInfo, Decision, Knob, PolicyConfig, ReuseMode

EPS_START = 0.01
# The paper's settings (ALGORITHMS.md, "Paper settings"): eps_main and K per model family and preset;
# eps_start = 0.01 everywhere. CogVideoX and LTX have one eps_main; slow / fast differ by K (2 / 3).
PRESETS: dict[str, dict[str, dict[str, float | int]]] = {
    "wan": {"slow": {"eps_main": 0.1, "max_reuse": 2}, "fast": {"eps_main": 0.2, "max_reuse": 3}},
    "cogvideox": {"slow": {"eps_main": 0.6, "max_reuse": 2}, "fast": {"eps_main": 0.6, "max_reuse": 3}},
    "ltx": {"slow": {"eps_main": 0.5, "max_reuse": 2}, "fast": {"eps_main": 0.5, "max_reuse": 3}},
}
CALIBRATION_SAMPLES = 8  # the paper: 8 samples suffice


@dataclass(frozen=True)
class SenCacheParams:
    """The effective parameters once the preset is resolved for a model family."""

    eps_start: float
    eps_main: float
    max_reuse: int
    warmup_fraction: float = 0.2


class SenCacheConfig(PolicyConfig):
    name: Literal["sencache"] = "sencache"
    knob: ClassVar[Knob] = Knob("eps_main", "lower", 0.0, 2.0)  # a larger tolerance reuses more
    calibration: ClassVar[str] = "a sensitivity profile"  # per transformer: refused on several experts (runner)
    preset: Literal["slow", "fast"] | None = Field(
        default=None, description="the paper's eps_main and K for the model family (wan, cogvideox, ltx)")
    eps_start: float = Field(default=EPS_START, ge=0.0,
                             description="per-element tolerance of the first 20% of the steps")
    eps_main: float | None = Field(default=None, ge=0.0, description="per-element tolerance after them")
    max_reuse: int | None = Field(default=None, ge=0, description="K: at most this many consecutive reuses")
    reuse: ReuseMode = "residual"
    profile: str | None = Field(default=None, description="sensitivity profile file (default: calibrate one)")
    warmup_fraction: float = Field(default=0.2, ge=0.0, le=1.0, description="share of the steps that use eps_start")

    _profile: object = PrivateAttr(default=None)
    _params: object = PrivateAttr(default=None)
    _num_steps: object = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _complete(self, info: ValidationInfo):
        if self.preset is None and (self.eps_main is None or self.max_reuse is None):
            missing = " and ".join(k for k in ("eps_main", "max_reuse") if getattr(self, k) is None)
            raise ValueError(f"give preset (slow or fast) or set {missing} (e.g. eps_main: 0.1, max_reuse: 2)")
        context = info.context or {}  # the spec's model family and folder, when validated as part of a spec
        family = context.get("family")
        if self.preset is not None and family is not None and family not in PRESETS:
            raise ValueError(f"preset: the paper has no SenCache setting for the {family} family (presets exist "
                             f"for {', '.join(PRESETS)}); set eps_main and max_reuse instead")
        if self.profile is not None and "spec_dir" in context:
            if _find_profile(self.profile, context["spec_dir"]) is None:
                raise ValueError(f"profile: file {self.profile!r} not found (looked in the working directory and "
                                 f"the spec's folder); make one with `sencache-bench calibrate SPEC.yaml` or leave "
                                 f"profile out to calibrate on the first run")
        return self

    # -- parameters --------------------------------------------------------------------------------
    def params(self, family: str | None = None) -> SenCacheParams:
        """eps_start, eps_main, K: the preset's for ``family``, each overridden by an explicit field."""
        values: dict = {}
        if self.preset is not None:
            table = PRESETS.get(family or "")
            if table is None:
                known = ", ".join(PRESETS)
                raise BenchError(f"policy.preset: the paper has no SenCache setting for the {family} family "
                                 f"(presets exist for {known}); set eps_main and max_reuse instead")
            values.update(table[self.preset])
        for key in ("eps_start", "eps_main", "max_reuse"):
            if getattr(self, key) is not None:
                values[key] = getattr(self, key)
        return SenCacheParams(eps_start=float(values["eps_start"]), eps_main=float(values["eps_main"]),
                              max_reuse=int(values["max_reuse"]), warmup_fraction=self.warmup_fraction)

    # -- getting ready for a run -------------------------------------------------------------------
    def bind(self, profile, params: SenCacheParams | None = None, num_steps: int | None = None) -> SenCacheConfig:
        """Use ``profile`` (a :class:`~sencache_bench.calibration.profile.SensitivityProfile`) from now on."""
        self._profile = profile
        self._params = params or self.params(profile.family)
        self._num_steps = num_steps if num_steps is not None else len(profile.timesteps)
        return self

    def prepare(self, runner) -> None:
        """Resolve the preset for the runner's model family and the sensitivity profile for its schedule.

        With ``profile``: load it (relative paths: from the working directory, then the spec's folder) and
        check it against the model and schedule. Without: use ``<output_dir>/profiles/sencache-<key>.json``
        if an earlier run or ``sencache-bench calibrate`` made it, else calibrate it now with the defaults.
        """
        from ..calibration.profile import check_profile, load_profile
        from ..calibration.sencache import auto_profile_path, calibrate, default_source, run_schedule

        spec, log = runner.spec, runner.log
        params = self.params(spec.family.name)
        schedule = run_schedule(runner)
        sampling = {"height": spec.sampling.height, "width": spec.sampling.width, "frames": spec.sampling.frames}
        if self.profile is not None:
            path = self._resolve_path(spec)
            profile = check_profile(load_profile(path), model=spec.model_name, schedule=schedule, log=log,
                                    sampling=sampling)
            log(f"sencache: using sensitivity profile {path}")
        else:
            path = auto_profile_path(runner, CALIBRATION_SAMPLES)
            if path.is_file():
                log(f"sencache: no policy.profile given; using {path}, calibrated earlier for this model and schedule")
            else:
                what = {"clips": "the model's ground-truth clips, real videos as the paper",
                        "generated": "the model's own uncached generations, not real videos"}[default_source(spec)]
                log(f"sencache: no policy.profile given; calibrating one first ({CALIBRATION_SAMPLES} samples, "
                    f"{what}) and keeping it at {path} for the next runs")
                calibrate(runner, samples=CALIBRATION_SAMPLES, out=path, log=log)
            profile = check_profile(load_profile(path), model=spec.model_name, schedule=schedule, log=log,
                                    sampling=sampling)
        self._note_input("profile", path)
        self._inputs["profile"]["calibration_source"] = calibration_source(profile)
        self.bind(profile, params, num_steps=spec.sampling.steps)

    def _resolve_path(self, spec) -> Path:
        spec_dir = Path(spec.spec_path).parent if spec.spec_path is not None else None
        return _find_profile(self.profile, spec_dir) or Path(self.profile).expanduser()

    def make_policy(self) -> SenCachePolicy:
        if self._profile is None:
            raise BenchError("sencache needs a sensitivity profile before it runs: run it through "
                             "`sencache-bench run` (which prepares one) or call config.prepare(runner) / bind(profile)")
        return SenCachePolicy(self._params, self._profile, self.reuse, self._num_steps,
                              force_last=force_last(self._profile.family))


def force_last(family: str | None) -> bool:
    """Whether the official SenCache script of ``family`` always computes the last step (the family adapter's
    ``force_last``, model knowledge kept in ``models/<family>.py``)."""
    from ..models import FAMILIES

    if family is None or family not in FAMILIES:
        return False
    return bool(FAMILIES.get(family).adapters.get("sencache", {}).get("force_last", False))


def calibration_source(profile) -> str:
    """What a profile was calibrated on: ``clips`` / ``videos`` (real videos) or ``generated`` (the model's own
    generations); ``unknown`` for a file that does not say."""
    meta = profile.meta
    return str(meta.get("calibration_source") or meta.get("source") or "unknown")


def _find_profile(profile: str, spec_dir: str | Path | None) -> Path | None:
    """A relative profile path is looked up from the working directory, then from the spec's folder."""
    path = Path(profile).expanduser()
    for cand in [path] if path.is_absolute() or spec_dir is None else [path, Path(spec_dir) / path]:
        if cand.is_file():
            return cand
    return None


@dataclass
class SenCacheState:
    """One branch's refresh point and counter."""

    x_ref: torch.Tensor | None = None
    t_ref: float | None = None
    jx: float = 0.0
    jt: float = 0.0
    reuses: int = 0  # consecutive reuses since the last compute


class SenCachePolicy(CachePolicy):
    name = "sencache"
    inclusive = False  # the official test is strict (S < eps_eff)

    def __init__(self, params: SenCacheParams, profile, reuse: ReuseMode = "residual", num_steps: int | None = None,
                 force_last: bool = False):
        self.params = params
        self.profile = profile  # anything with lookup(t) -> (Jx, Jt)
        self.reuse = reuse
        self.num_steps = num_steps
        self.force_last = force_last

    def new_state(self) -> SenCacheState:
        return SenCacheState()

    def eps(self, index: int, num_steps: int | None) -> float:
        """eps_start for the first ``round(warmup_fraction * steps)`` steps, eps_main after."""
        steps = num_steps or self.num_steps
        warm = int(round(self.params.warmup_fraction * steps)) if steps else 0
        return self.params.eps_start if index < warm else self.params.eps_main

    def decide(self, state: SenCacheState, call: CallInfo) -> Decision:
        latent = call.latent.detach().float()
        threshold = self.eps(call.index, call.num_steps) * math.sqrt(latent.numel())
        t = float(call.timestep)
        score = None
        steps = call.num_steps or self.num_steps
        if self.force_last and steps is None:
            raise RuntimeError("SenCache forces the last step of this family but the step count is unknown: "
                               "bind(profile, num_steps=...)")
        last = self.force_last and call.index >= steps - 1
        if state.x_ref is not None:
            drift = float(torch.linalg.vector_norm(latent - state.x_ref))
            score = state.jx * drift + state.jt * abs(t - state.t_ref)
            below = score <= threshold if self.inclusive else score < threshold
            if not last and below and state.reuses < self.params.max_reuse:
                state.reuses += 1
                return Decision(compute=False, score=score, threshold=threshold)
        state.x_ref, state.t_ref = latent.clone(), t
        state.jx, state.jt = (float(v) for v in self.profile.lookup(t))
        state.reuses = 0
        return Decision(compute=True, score=score, threshold=threshold)
