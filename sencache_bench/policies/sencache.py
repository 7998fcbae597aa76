"""``sencache``: sensitivity-aware caching (Haghighi & Alahi, SenCache; shared ALGORITHMS.md, "SenCache").

At every call of a branch, with (x_ref, t_ref) the latent and timestep of that branch's last computed
call and Jx, Jt the profile's values at the timestep nearest t_ref (looked up at that refresh):

    S = Jx(t_ref) * ||x_t - x_ref||_2 + Jt(t_ref) * |t - t_ref|          (t in model units, 0..1000)
    eps_eff = eps * sqrt(numel(x_t))     (eps = eps_start for the first 20% of the steps, eps_main after)
    REUSE iff S < eps_eff and fewer than K consecutive reuses so far; else COMPUTE and refresh.

(``<`` strictly, as the official code's test; ALGORITHMS.md writes ``<=``, which differs only at equality, e.g.
eps = 0 with an unchanged latent.) Counting follows the official scripts, which count *calls*: with separate
cond/uncond calls (Wan) the warm-up is the first ``round(0.2 * 2 * steps)`` calls of the interleaved sequence, the
cond call of step i being call 2i and deciding for both branches (so eps_start holds for ``ceil(round(0.4 n) / 2)``
steps: 12 steps give 3, not round(2.4) = 2); with one batched call per step (CogVideoX, LTX-Video) it is
``round(0.2 * steps)`` steps. The family adapter's ``forced_ends(steps)`` (model knowledge in
``models/<family>.py``) gives how many steps at each end always compute: Wan 1 (ret_steps 2 calls, cutoff 2 calls
before the end), CogVideoX 1, LTX-Video ``round(0.02 * steps)`` (none at <= 25 steps, 1 at 30 and 50, 2 at >= 75).
The first call of a branch is always computed. Each CFG branch keeps its
own state. Reuse is the residual of the official code
(``reuse: residual``; the block stack's, or on LTX-Video from ``proj_in`` to ``proj_out``'s input, i.e. with
``norm_out`` and the output modulation of the computed call: the adapter's ``residual_end``; ``reuse_span: blocks``
keeps the block stack's instead) or the whole output (``reuse: output``, the paper's text). The profile (:mod:`sencache_bench.calibration.profile`) is resolved by :meth:`prepare`
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
from .base import (
    CachePolicy,
    CallInfo,
    Decision,
    Knob,
    PolicyConfig,
    ReuseMode,
    call_position,
)

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
    calibration: ClassVar[str] = "a sensitivity profile"  # one per expert on several experts (calibration/experts.py)
    per_expert: ClassVar[bool] = True
    preset: Literal["slow", "fast"] | None = Field(
        default=None, description="the paper's eps_main and K for the model family (wan, cogvideox, ltx)")
    eps_start: float = Field(default=EPS_START, ge=0.0,
                             description="per-element tolerance of the first 20% of the steps")
    eps_main: float | None = Field(default=None, ge=0.0, description="per-element tolerance after them")
    max_reuse: int | None = Field(default=None, ge=0, description="K: at most this many consecutive reuses")
    reuse: ReuseMode = "residual"
    profile: str | None = Field(default=None, description="sensitivity profile file (default: calibrate one)")
    warmup_fraction: float = Field(default=0.2, ge=0.0, le=1.0, description="share of the steps that use eps_start")
    reuse_span: Literal["official", "blocks"] = Field(
        default="official", description="residual reuse: where the official code ends the residual (LTX-Video: after "
                                        "norm_out and the output modulation) or the block stack's output")

    _profile: object = PrivateAttr(default=None)
    _profiles: dict = PrivateAttr(default_factory=dict)  # several experts: each expert's profile by name
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
        from ..calibration.experts import expert_names
        from ..calibration.profile import check_profile, load_profile
        from ..calibration.sencache import auto_profile_path, calibrate, default_source, run_schedule

        spec, log = runner.spec, runner.log
        experts = expert_names(runner)
        params = self.params(spec.family.name)
        schedule = run_schedule(runner)
        sampling = {"height": spec.sampling.height, "width": spec.sampling.width, "frames": spec.sampling.frames}
        if self.profile is not None:
            path = self._resolve_path(spec)
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
        self._profiles = {e: check_profile(load_profile(path, e, single_model=experts == [None]),
                                           model=spec.model_name, schedule=schedule, log=log, sampling=sampling)
                          for e in experts}
        profile = next(iter(self._profiles.values()))
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
        profile = self._profile
        if self._expert is not None:  # one of several experts: its own profile only
            if self._expert not in self._profiles:
                raise BenchError(f"sencache has no sensitivity profile for the expert {self._expert!r}: prepare the "
                                 f"config through `sencache-bench run` (a profile per expert)")
            profile = self._profiles[self._expert]
        adapter = sencache_adapter(profile.family)
        end = adapter.get("residual_end") if self.reuse == "residual" and self.reuse_span == "official" else None
        return SenCachePolicy(self._params, profile, self.reuse, self._num_steps,
                              forced_ends=forced_ends(profile.family), residual_end=end)


def sencache_adapter(family: str | None) -> dict:
    from ..models import FAMILIES

    if family is None or family not in FAMILIES:
        return {}
    return FAMILIES.get(family).adapters.get("sencache", {})


def forced_ends(family: str | None):
    """``steps -> k``: the official SenCache script of ``family`` computes the first and last k steps (the adapter's
    ``forced_ends``; an adapter with only ``force_last`` forces 1; none: 0, the rule alone decides)."""
    adapter = sencache_adapter(family)
    if "forced_ends" in adapter:
        return adapter["forced_ends"]
    return (lambda steps: 1) if adapter.get("force_last") else None


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
                 forced_ends=None, residual_end: str | None = None):
        self.params = params
        self.profile = profile  # anything with lookup(t) -> (Jx, Jt)
        self.reuse = reuse
        self.num_steps = num_steps
        self.forced_ends = forced_ends  # steps -> k: the first and last k steps always compute
        self.residual_end = residual_end

    def new_state(self) -> SenCacheState:
        return SenCacheState()

    def eps(self, index: int, num_steps: int | None, calls_per_step: int = 1) -> float:
        """eps_start while the step's deciding (cond) call is among the first ``round(warmup_fraction * calls)``
        calls, ``calls = calls_per_step * steps`` (the official ``threshold_switch_step``), eps_main after."""
        steps = num_steps or self.num_steps
        warm = int(round(self.params.warmup_fraction * calls_per_step * steps)) if steps else 0
        return self.params.eps_start if calls_per_step * index < warm else self.params.eps_main

    def forced(self, index: int, steps: int | None) -> bool:
        """Whether step ``index`` is one of the ``forced_ends(steps)`` first or last steps."""
        if self.forced_ends is None:
            return False
        if steps is None:
            raise RuntimeError("SenCache forces steps at the ends for this family but the step count is unknown: "
                               "bind(profile, num_steps=...)")
        k = int(self.forced_ends(steps))
        return index < k or index >= steps - k

    def decide(self, state: SenCacheState, call: CallInfo) -> Decision:
        latent = call.latent.detach().float()
        _, per_step = call_position(call)
        threshold = self.eps(call.index, call.num_steps, per_step) * math.sqrt(latent.numel())
        t = float(call.timestep)
        score = None
        forced = self.forced(call.index, call.num_steps or self.num_steps)
        if state.x_ref is not None:
            drift = float(torch.linalg.vector_norm(latent - state.x_ref))
            score = state.jx * drift + state.jt * abs(t - state.t_ref)
            below = score <= threshold if self.inclusive else score < threshold
            if not forced and below and state.reuses < self.params.max_reuse:
                state.reuses += 1
                return Decision(compute=False, score=score, threshold=threshold)
        state.x_ref, state.t_ref = latent.clone(), t
        state.jx, state.jt = (float(v) for v in self.profile.lookup(t))
        state.reuses = 0
        return Decision(compute=True, score=score, threshold=threshold)
