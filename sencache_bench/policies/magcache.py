"""``magcache``: MagCache (Ma et al., 2025; github Zehong-Ma/MagCache), as in the source.

Per branch (CFG ``cache_context``), at call ``i`` of ``n`` with the branch's magnitude-ratio curve ``gamma``
(``gamma_i`` = mean over tokens of ``||r_i|| / ||r_{i-1}||``, r the block-stack residual):

- the first ``int(c * n * retention)`` calls are always computed (retention ratio, default 0.2), counted as the
  official Wan script counts them: over the interleaved cond/uncond calls (``c`` = 2 calls per step, cond's call
  of step i being 2i, uncond's 2i + 1), so with an odd count cond keeps one step more (13 steps: int(5.2) = 5
  calls, cond steps 0-2, uncond 0-1); one batched or single branch (HunyuanVideo) has ``c`` = 1;
- after them: ``acc_ratio *= gamma_i``, ``acc_steps += 1``, ``acc_err += |1 - acc_ratio|``; REUSE the cached
  residual while ``acc_err < thresh`` and ``acc_steps <= K``; else COMPUTE and reset all three
  (``acc_ratio = 1``, ``acc_steps = 0``, ``acc_err = 0``). (``<`` as the Wan code; the HunyuanVideo code
  has ``<=``, which gives the same 31 reuses of 50 on its curve.) The first call always computes.

The curve has ``n`` entries per branch; a curve made for another step count is remapped by nearest
interpolation (``round(arange(n) * (len - 1) / (n - 1))``, the source's ``nearest_interp``). Published
curves ship under ``policies/data/`` (Wan 2.1 T2V 1.3B and 14B, HunyuanVideo 720p and 544p: copied from the
official repository, file and line noted in each JSON); other models need
``sencache-bench calibrate SPEC.yaml --policy magcache``, whose JSON ``ratios`` then points to.

Spec: ``{name: magcache, thresh, max_reuse (K), retention, ratios, preset, ratio_exponent}``.
``ratios``: a shipped curve name (``wan2.1-t2v-1.3b``, ``wan2.1-t2v-14b``, ``hunyuanvideo``,
``hunyuanvideo-544p``) or the path of a calibrated JSON; default: the spec model's shipped curve.
``preset``: the published settings of the curve (Wan 1.3B slow E012K2R02, fast E012K4R02; Wan 14B and
HunyuanVideo fast E024K6R02). Without preset: thresh 0.12, K 2, retention 0.2 (the source's defaults).
``ratio_exponent: 0.5`` uses ``gamma ** 0.5`` (the smoothing some of the paper's evaluations use).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from .base import CachePolicy, CallInfo, Decision, Knob, call_position
from .teacache import (ModelBoundConfig, calibrate_hint, check_made_for, read_json, registered_name,
                       warn_resolution)

RATIOS_KIND = "magcache_ratios"
DATA_DIR = Path(__file__).resolve().parent / "data"
SHIPPED = ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "hunyuanvideo", "hunyuanvideo-544p")
DEFAULT_CURVE = {"wan2.1-t2v-1.3b": "wan2.1-t2v-1.3b", "wan2.1-t2v-14b": "wan2.1-t2v-14b",
                 "hunyuanvideo": "hunyuanvideo"}
# shipped curve -> preset -> (thresh, K, retention), the official README's settings (E{thresh}K{K}R{retention})
PRESETS: dict[str, dict[str, tuple[float, int, float]]] = {
    "wan2.1-t2v-1.3b": {"slow": (0.12, 2, 0.2), "fast": (0.12, 4, 0.2)},
    "wan2.1-t2v-14b": {"fast": (0.24, 6, 0.2)},
    "hunyuanvideo": {"fast": (0.24, 6, 0.2)},
    "hunyuanvideo-544p": {"fast": (0.24, 6, 0.2)},
}
DEFAULTS = (0.12, 2, 0.2)


def shipped_path(name: str) -> Path:
    return DATA_DIR / f"magcache_{name}.json"


def nearest_interp(curve, length: int) -> np.ndarray:
    """The source's nearest interpolation of a ratio curve to ``length`` steps."""
    curve = np.asarray(curve, dtype=np.float64)
    if length == len(curve):
        return curve.copy()
    if length == 1:
        return curve[-1:].copy()
    scale = (len(curve) - 1) / (length - 1)
    return curve[np.round(np.arange(length) * scale).astype(int)]


@dataclass
class MagCacheState:
    ratio: float = 1.0  # accumulated magnitude ratio since the last computed call
    steps: int = 0  # consecutive reuses (+1 for the call being decided)
    err: float = 0.0  # accumulated error
    curve: np.ndarray | None = None  # this branch's ratios, remapped to the step count


def magcache_step(state: MagCacheState, index: int, gamma: float, retention_steps: int, thresh: float,
                  max_reuse: int) -> Decision:
    """One decision of the rule (pure function of the state; the policy and the simulations share it)."""
    if index == 0 or index < retention_steps:
        return Decision(compute=True, score=None, threshold=thresh)
    state.ratio *= gamma
    state.steps += 1
    state.err += abs(1.0 - state.ratio)
    err = state.err
    if err < thresh and state.steps <= max_reuse:
        return Decision(compute=False, score=err, threshold=thresh)
    state.ratio, state.steps, state.err = 1.0, 0, 0.0
    return Decision(compute=True, score=err, threshold=thresh)


def retained(branch: str, index: int, steps: int, retention: float) -> bool:
    """Whether call ``index`` of ``branch`` is kept by the retention: the official ``cnt < int(calls * retention)``,
    ``cnt`` counted over the interleaved cond/uncond calls (:func:`~.base.call_position`); a branch's first call
    always computes."""
    position, per_step = call_position(CallInfo(branch, index, 0.0, None))
    return index == 0 or position < int(per_step * steps * retention)


def simulate(curve, thresh: float, max_reuse: int, retention: float, steps: int | None = None,
             branch: str = "cond_uncond") -> list[bool]:
    """The compute pattern the rule gives on a ratio curve alone (True = computed), for the calls of ``branch``
    (default: one branch, one call per step)."""
    steps = steps or len(curve)
    gammas = nearest_interp(curve, steps)
    state = MagCacheState()
    return [retained(branch, i, steps, retention)
            or magcache_step(state, i, float(gammas[i]), 0, thresh, max_reuse).compute for i in range(steps)]


def load_ratios(path: Path) -> dict:
    data = read_json(path, RATIOS_KIND)
    parts = data["experts"].values() if isinstance(data.get("experts"), dict) else [data]  # per expert: each
    for part in parts:
        branches = part.get("branches") if isinstance(part, dict) else None
        if not isinstance(branches, dict) or not branches or not all(
                isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v) for v in branches.values()):
            raise ValueError(f"{path}: 'branches' must map branch names to lists of ratios")
    return data


class MagCacheConfig(ModelBoundConfig):
    name: Literal["magcache"] = "magcache"
    knob: ClassVar[Knob] = Knob("thresh", "lower", 0.0, 1.0)  # a larger error bound reuses more
    calibration: ClassVar[str] = "magnitude-ratio curves"  # a file's curves per expert on several experts
    per_expert: ClassVar[bool] = True
    thresh: float | None = Field(default=None, ge=0.0, description="accumulated error bound (default 0.12)")
    max_reuse: int | None = Field(default=None, ge=0, description="K: most consecutive reuses (default 2)")
    retention: float | None = Field(default=None, ge=0.0, le=1.0,
                                    description="fraction of first calls always computed (default 0.2)")
    ratios: str | None = Field(default=None, description=f"shipped curve ({', '.join(SHIPPED)}) or calibrated "
                                                         "JSON path; default: the model's shipped curve")
    preset: Literal["slow", "fast"] | None = Field(default=None, description="the published settings of the curve")
    ratio_exponent: float = Field(default=1.0, gt=0.0, description="use gamma ** exponent (0.5: the paper's smoothing)")

    def check_model(self) -> None:
        self.resolve()

    def _curve_source(self) -> tuple[Path, str | None]:
        """(file, shipped name or None)."""
        model = registered_name(self._model)
        name = self.ratios
        if name is None:
            name = DEFAULT_CURVE.get(model or "")
            if name is None:
                raise ValueError(f"MagCache has no published ratio curve for {model or 'this model'} (published: "
                                 f"{', '.join(SHIPPED)}): run {calibrate_hint('magcache')} and set policy.ratios "
                                 f"to the JSON it writes")
        if name in SHIPPED:
            return shipped_path(name), name
        return self.find_file(name), None

    def resolve(self) -> tuple[dict[str, np.ndarray], float, int, float, str]:
        """(curves per branch, thresh, K, retention, source)."""
        path, shipped = self._curve_source()
        data = load_ratios(path)
        if shipped is None:
            check_made_for(path, data, self._model, self._family, "MagCache ratios")
        elif self._family is not None and data.get("family") != self._family:
            raise ValueError(f"the shipped curve {shipped} is for the {data.get('family')} family, not {self._family}")
        data = self.expert_part(data, path, "MagCache ratios" if shipped is None else f"the MagCache ratios {shipped}")
        if self.preset is not None:
            presets = PRESETS.get(shipped or "", {})
            if self.preset not in presets:
                have = ", ".join(f"{c}: {'/'.join(p)}" for c, p in PRESETS.items())
                raise ValueError(f"no published {self.preset} setting for the curve {shipped or path} (published: "
                                 f"{have}); give thresh, max_reuse and retention")
            thresh, k, retention = presets[self.preset]
        else:
            thresh, k, retention = DEFAULTS
        thresh = self.thresh if self.thresh is not None else thresh
        k = self.max_reuse if self.max_reuse is not None else k
        retention = self.retention if self.retention is not None else retention
        curves = {b: np.asarray(v, dtype=np.float64) ** self.ratio_exponent for b, v in data["branches"].items()}
        return curves, float(thresh), int(k), float(retention), shipped or str(path)

    def prepare(self, runner) -> None:
        """Before a run: warn when a shipped curve is used at another size than it was calibrated at."""
        path, shipped = self._curve_source()
        if shipped is not None:
            warn_resolution(self, runner, f"the MagCache ratios {shipped}", shipped_curve(shipped).get("resolution"))

    def make_policy(self) -> MagCachePolicy:
        from ..errors import BenchError

        try:
            curves, thresh, k, retention, source = self.resolve()
        except ValueError as err:
            raise BenchError(f"policy magcache: {err}") from None
        self._note_input("ratios", source)
        return MagCachePolicy(curves, thresh, k, retention, num_steps=self._steps, source=source)


class MagCachePolicy(CachePolicy):
    name = "magcache"
    reuse = "residual"

    def __init__(self, curves: dict[str, np.ndarray], thresh: float, max_reuse: int, retention: float,
                 num_steps: int | None = None, source: str = ""):
        self.curves = curves
        self.thresh, self.max_reuse, self.retention = thresh, max_reuse, retention
        self.num_steps = num_steps
        self.source = source

    def new_state(self) -> MagCacheState:
        return MagCacheState()

    def curve_for(self, branch: str, steps: int) -> np.ndarray:
        """The branch's curve (a single-branch curve, or the cond curve, serves any branch), remapped to ``steps``."""
        if branch in self.curves:
            curve = self.curves[branch]
        elif len(self.curves) == 1:
            curve = next(iter(self.curves.values()))
        elif "cond" in self.curves:
            curve = self.curves["cond"]
        else:
            raise RuntimeError(f"MagCache ratios from {self.source} have branches {', '.join(self.curves)}, "
                               f"none for the pipeline's branch {branch!r}")
        return nearest_interp(curve, steps)

    def decide(self, state: MagCacheState, call: CallInfo) -> Decision:
        steps = call.num_steps or self.num_steps
        if steps is None:
            raise RuntimeError("MagCache needs the step count: validate the policy through a spec (spec.resolve) "
                               "or bind(steps=...)")
        if state.curve is None:
            state.curve = self.curve_for(call.branch, steps)
        if retained(call.branch, call.index, steps, self.retention):
            return Decision(compute=True, score=None, threshold=self.thresh)
        gamma = float(state.curve[min(call.index, len(state.curve) - 1)])
        return magcache_step(state, call.index, gamma, 0, self.thresh, self.max_reuse)


def shipped_curve(name: str) -> dict:
    """A shipped curve's JSON (branches, source...)."""
    return json.loads(shipped_path(name).read_text())
