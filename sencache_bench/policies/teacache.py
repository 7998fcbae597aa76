"""``teacache``: TeaCache (Liu et al., CVPR 2025; github ali-vilab/TeaCache), as in the source.

Per branch (CFG ``cache_context``), at the head block of every call:

- the model's *indicator* is read: the modulated input of the first block (HunyuanVideo, LTX-Video) or
  the timestep embedding (CogVideoX ``time_embedding(t)``; Wan ``e``, or ``e0`` in "ret steps" mode).
  It is model knowledge, so it lives in the family module (``Family.adapters["teacache"]``);
- ``rel = mean|in_t - in_prev| / mean|in_prev|`` (computed in float32), ``acc += poly(rel)`` with the
  model's polynomial (numpy ``poly1d`` order: highest power first);
- REUSE the cached residual while ``acc < thresh``; otherwise COMPUTE and ``acc = 0``. The residual is the
  block stack's, except where the source caches more: LTX-Video caches it after ``norm_out`` and the output
  modulation (a reused call returns ``proj_out(proj_in(x) + residual)``; the adapter's ``residual_end``;
  ``reuse_span: blocks`` keeps the block stack's and modulates with the current t);
- forced COMPUTE (and ``acc = 0``) for the first call(s) of the branch and the last step, as the source
  does per model (Wan default: first and last step; Wan ``e0``: first 5 steps, last not);
- the previous indicator is updated at every call, computed or reused.

Spec: ``{name: teacache, thresh, preset: slow|fast, coefficients, indicator, reuse_span}``. ``preset`` takes the
published threshold (and coefficients) of the spec's registered model; ``coefficients`` is a list of 5
floats (highest power first) or the path of a JSON written by ``sencache-bench calibrate SPEC --policy
teacache``. Models without published coefficients (all tiny models, LTX-Video's other versions...) need
``coefficients`` and ``thresh``. Published coefficients fitted at one size (Wan 14B: 1280x720) are used at
any size, with a warning (logged and kept in the record's policy inputs) when the run's size differs.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from .base import CachePolicy, CallInfo, Decision, Knob, PolicyConfig, apply_policy

REPO_ROOT = Path(__file__).resolve().parents[2]
COEFFICIENTS_KIND = "teacache_coefficients"


# ---------------------------------------------------------------------------------------------------
# Model context: what a policy config knows about the spec it was validated in
# ---------------------------------------------------------------------------------------------------
class MissingFile(ValueError):
    """A calibrated file the spec names does not exist (yet): checked again when the policy is attached."""


class ModelBoundConfig(PolicyConfig):
    """A policy config that knows the spec's model, family and step count.

    ``spec.resolve`` validates the policy with the pydantic context ``{model, family, steps, spec_dir}``;
    with it, model-dependent settings (presets, published curves, files made for another model) are
    resolved and checked at validation, so a bad spec fails before anything runs. Without it (a config
    built in code), the family is found from the transformer at attach time and a preset needs ``model``.
    """

    _model: str | None = PrivateAttr(default=None)
    _family: str | None = PrivateAttr(default=None)
    _steps: int | None = PrivateAttr(default=None)
    _spec_dir: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _bind_spec_context(self, info: ValidationInfo):
        ctx = info.context or {}
        self._model, self._family = ctx.get("model"), ctx.get("family")
        self._steps, self._spec_dir = ctx.get("steps"), ctx.get("spec_dir")
        self.check_basic()
        if self._family is not None:
            try:
                self.check_model()
            except MissingFile:
                pass  # `sencache-bench calibrate` loads this spec to make it; attach() reports it if still missing
        return self

    def bind(self, model: str | None = None, family: str | None = None, steps: int | None = None,
             spec_dir: str | None = None):
        """A copy bound to a model context (what ``spec.resolve`` does), for configs built in code."""
        return type(self).model_validate(self.model_dump(), context={
            "model": model, "family": family, "steps": steps, "spec_dir": spec_dir})

    def setting(self) -> str:
        """Only the parameters that differ from the defaults (the table's label)."""
        parts = [f"{k}={v}" for k, v in self.model_dump(exclude_defaults=True).items() if k != "name"]
        return ",".join(parts) if parts else "default"

    def check_basic(self) -> None:
        """Checks that need no model; raise ValueError."""

    def check_model(self) -> None:
        """Resolve what depends on the model; raise ValueError with a message for the user."""

    def expert_part(self, data: dict, path: Path, what: str) -> dict:
        """The part of a calibrated file for the expert being attached (calibration/experts.py): a file made
        for another expert, or for a single transformer on an expert (and the reverse), is refused."""
        from ..calibration.experts import expert_view
        from ..models import MODELS

        model = registered_name(self._model)
        single = model in MODELS and len(MODELS.get(model).experts) == 1
        return expert_view(data, self._expert, path, what, self.name, single_model=single)

    def find_file(self, path: str) -> Path:
        """A relative path is looked up in the working directory, beside the spec, then in the repository."""
        p = Path(path).expanduser()
        if p.is_absolute():
            candidates = [p]
        else:
            bases = [Path.cwd()] + ([Path(self._spec_dir)] if self._spec_dir else []) + [REPO_ROOT]
            candidates = [b / p for b in bases]
        for c in candidates:
            if c.is_file():
                return c
        raise MissingFile(f"file {path!r} not found (looked in: {', '.join(str(c.parent) for c in candidates)}); "
                          f"make it with `sencache-bench calibrate SPEC.yaml --policy {self.name} --out {path}`")


def registered_name(model: str | None) -> str | None:
    """The registered model name for a registered name or the hub id of a registered model."""
    if model is None:
        return None
    from ..models import MODELS

    if model in MODELS:
        return MODELS.get(model).name
    for name in MODELS:
        if MODELS.get(name).repo_id == model:
            return name
    return model


def family_of(transformer: torch.nn.Module, adapter_key: str):
    """The family whose ``adapters[adapter_key]`` names this transformer's class (configs built in code)."""
    from ..models import FAMILIES

    cls = type(transformer).__name__
    for name in FAMILIES:
        family = FAMILIES.get(name)
        adapter = family.adapters.get(adapter_key)
        if adapter and adapter.get("transformer_class") == cls:
            return family
    raise ValueError(f"no model family with a {adapter_key} adapter for transformer class {cls}")


def read_json(path: Path, kind: str) -> dict:
    """A calibrated file of ``kind``, or one line naming it and the command that remakes it."""
    remake = f"remake it with {calibrate_hint(kind.split('_')[0])}"
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as err:  # ValueError: JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"{path}: not a readable JSON file ({err.__class__.__name__}): {remake}") from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        found = data.get("kind") if isinstance(data, dict) else None
        raise ValueError(f"{path}: not a {kind} file (its 'kind' is {found!r}): {remake}")
    return data


def check_made_for(path: Path, data: dict, model: str | None, family: str | None, what: str) -> None:
    """Refuse a calibrated file made for another model (or family)."""
    f_model, f_family = registered_name(data.get("model")), data.get("family")
    if family is not None and f_family is not None and f_family != family:
        raise ValueError(f"{path} holds {what} for the {f_family} family ({data.get('model')}), not for {family}")
    if model is not None and f_model is not None and f_model != registered_name(model):
        raise ValueError(f"{path} holds {what} calibrated on {data.get('model')}, not {model}: calibrate this model "
                         f"with `sencache-bench calibrate SPEC.yaml --policy {data.get('policy', '...')}`")


# ---------------------------------------------------------------------------------------------------
# Published coefficients and thresholds (ALGORITHMS.md, TeaCache; keyed by registered model and indicator)
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Published:
    coefficients: tuple[float, ...]
    thresholds: dict[str, float]  # preset -> thresh
    resolution: str | None = None  # "WxH" the source fitted them at, where it says (a run elsewhere is warned)


PUBLISHED: dict[str, dict[str, Published]] = {
    "wan2.1-t2v-1.3b": {
        "e": Published((2.39676752e+03, -1.31110545e+03, 2.01331979e+02, -8.29855975e+00, 1.37887774e-01),
                       {"slow": 0.05, "fast": 0.08}),
        "e0": Published((-5.21862437e+04, 9.23041404e+03, -5.28275948e+02, 1.36987616e+01, -4.99875664e-02),
                        {"slow": 0.05, "fast": 0.10}),
    },
    "wan2.1-t2v-14b": {
        # fitted at 1280x720 (TeaCache4Wan2.1, the 14B's size; 1.3B at 832x480)
        "e": Published((-5784.54975374, 5449.50911966, -1811.16591783, 256.27178429, -13.02252404),
                       {"slow": 0.14, "fast": 0.20}, "1280x720"),
        "e0": Published((-3.03318725e+05, 4.90537029e+04, -2.65530556e+03, 5.87365115e+01, -3.15583525e-01),
                        {"slow": 0.10, "fast": 0.20}, "1280x720"),
    },
    "cogvideox-2b": {"emb": Published(
        (-3.10658903e+01, 2.54732368e+01, -5.92380459e+00, 1.75769064e+00, -3.61568434e-03),
        {"slow": 0.1, "fast": 0.2})},
    "cogvideox-5b": {"emb": Published(
        (-1.53880483e+03, 8.43202495e+02, -1.34363087e+02, 7.97131516e+00, -5.23162339e-02),
        {"slow": 0.1, "fast": 0.2})},
    "cogvideox1.5-5b": {"emb": Published(
        (2.50210439e+02, -1.65061612e+02, 3.57804877e+01, -7.81551492e-01, 3.58559703e-02),
        {"slow": 0.1, "fast": 0.2})},
    "ltx-video": {"modulated": Published(
        (2.14700694e+01, -1.28016453e+01, 2.31279151e+00, 7.92487521e-01, 9.69274326e-03),
        {"slow": 0.03, "fast": 0.05})},
    "hunyuanvideo": {"modulated": Published(
        (7.33226126e+02, -4.01131952e+02, 6.75869174e+01, -3.14987800e+00, 9.61237896e-02),
        {"slow": 0.10, "fast": 0.15})},
    "opensora-1.2": {"modulated": Published(
        (2.17546007e+02, -1.18329252e+02, 2.68662585e+01, -4.59364272e-02, 4.84426240e-02),
        {"slow": 0.1, "fast": 0.2})},
}


def resolution_warning(policy: str, what: str, calibrated: str | None, height: int, width: int) -> str | None:
    """A warning line when ``what`` (published coefficients, a ratio curve) was fitted at ``calibrated`` ("WxH")
    and is used at another size: the indicator's or the residual's statistics change with the token count."""
    if not calibrated or calibrated == f"{width}x{height}":
        return None
    return (f"warning: {what} were calibrated at {calibrated} and are used at {width}x{height}: the fit may not "
            f"hold at this size (calibrate at this size with {calibrate_hint(policy)})")


def warn_resolution(config: PolicyConfig, runner, what: str, calibrated: str | None) -> None:
    """Log :func:`resolution_warning` and keep it among the config's recorded inputs."""
    s = runner.spec.sampling
    message = resolution_warning(config.name, what, calibrated, s.height, s.width)
    if message is not None:
        runner.log(message)
        config._inputs["resolution_warning"] = {"source": message}


def calibrate_hint(policy: str) -> str:
    return f"`sencache-bench calibrate SPEC.yaml --policy {policy}`"


# ---------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resolved:
    indicator: str
    fn: Callable
    warmup: int
    force_last: bool
    coefficients: tuple[float, ...]
    thresh: float
    source: str  # where the coefficients come from


class TeaCacheConfig(ModelBoundConfig):
    name: Literal["teacache"] = "teacache"
    knob: ClassVar[Knob] = Knob("thresh", "lower", 0.0, 1.0)  # a larger bound on acc reuses more
    calibration: ClassVar[str] = "rescaling coefficients"  # a file's coefficients per expert on several experts
    per_expert: ClassVar[bool] = True
    thresh: float | None = Field(default=None, ge=0.0, description="accumulated rescaled distance below which "
                                                                   "the residual is reused (overrides the preset's)")
    preset: Literal["slow", "fast"] | None = Field(default=None, description="the published threshold (and "
                                                                              "coefficients) of the spec's model")
    coefficients: list[float] | str | None = Field(
        default=None, description="rescale polynomial, 5 floats highest power first, or a calibrated JSON path")
    indicator: str | None = Field(default=None, description="the model's indicator variant (Wan: e or e0); "
                                                            "default: the family's first")
    reuse_span: Literal["official", "blocks"] = Field(
        default="official", description="where the reused residual ends: as the official script of the family "
                                        "(LTX-Video: after norm_out and the output modulation) or after the blocks")

    @field_validator("coefficients")
    @classmethod
    def _five(cls, v):
        if isinstance(v, list) and len(v) != 5:
            raise ValueError(f"expected 5 polynomial coefficients, highest power first (found {len(v)})")
        return v

    def check_basic(self) -> None:
        if self.thresh is None and self.preset is None:
            raise ValueError("give thresh (e.g. 0.1) or preset (slow or fast)")

    def check_model(self) -> None:
        self.resolve(self._model, self._family_obj())

    def _family_obj(self, transformer: torch.nn.Module | None = None):
        from ..models import FAMILIES

        if self._family is not None:
            return FAMILIES.get(self._family)
        return family_of(transformer, "teacache")

    def resolve(self, model: str | None, family) -> Resolved:
        adapter = family.adapters.get("teacache")
        if not adapter:
            raise ValueError(f"TeaCache has no indicator for the {family.name} family")
        indicators = adapter["indicators"]
        indicator = self.indicator or next(iter(indicators))
        if indicator not in indicators:
            raise ValueError(f"indicator {indicator!r} is not one of {family.name}'s: {', '.join(indicators)}")
        spec = indicators[indicator]
        model = registered_name(model)
        published = PUBLISHED.get(model or "", {}).get(indicator)

        if isinstance(self.coefficients, list):
            coefficients, source = tuple(self.coefficients), "spec"
        elif isinstance(self.coefficients, str):
            path = self.find_file(self.coefficients)
            data = read_json(path, COEFFICIENTS_KIND)
            check_made_for(path, data, model, family.name, "TeaCache coefficients")
            data = self.expert_part(data, path, "TeaCache coefficients")
            if data.get("indicator", indicator) != indicator:
                raise ValueError(f"{path} was fitted for indicator {data['indicator']!r}, not {indicator!r} "
                                 f"(set policy.indicator: {data['indicator']})")
            coefficients, source = tuple(float(c) for c in data["coefficients"]), str(path)
            if len(coefficients) != 5:
                raise ValueError(f"{path}: expected 5 coefficients (found {len(coefficients)})")
        elif published is not None:
            coefficients, source = published.coefficients, f"published ({model}, {indicator})"
        else:
            have = ", ".join(f"{m} ({'/'.join(v)})" for m, v in PUBLISHED.items())
            raise ValueError(
                f"TeaCache has no published coefficients for {model or 'this model'} (indicator {indicator}); "
                f"published for: {have}. Give policy.coefficients: 5 floats (highest power first) or the JSON "
                f"written by {calibrate_hint('teacache')}, and policy.thresh")

        if self.thresh is not None:
            thresh = self.thresh
        elif published is not None and coefficients == published.coefficients:
            thresh = published.thresholds[self.preset]
        else:
            raise ValueError(f"preset {self.preset} has a published threshold only with the published coefficients "
                             f"of a model that has them; with these coefficients give policy.thresh")
        return Resolved(indicator, spec["fn"], int(spec["warmup"]), bool(spec["force_last"]), coefficients,
                        float(thresh), source)

    def prepare(self, runner) -> None:
        """Before a run: warn when published coefficients are used at another size than they were fitted at."""
        r = self.resolve(self._model, self._family_obj())
        published = PUBLISHED.get(registered_name(self._model) or "", {}).get(r.indicator)
        if published is not None and r.coefficients == published.coefficients:
            warn_resolution(self, runner, f"TeaCache coefficients of {registered_name(self._model)}",
                            published.resolution)

    def make_policy(self) -> TeaCachePolicy:
        raise NotImplementedError("TeaCache needs the transformer: use attach()")

    def attach(self, transformer: torch.nn.Module, blocks: list[torch.nn.Module], recorder=None) -> None:
        try:
            r = self.resolve(self._model, self._family_obj(transformer))
        except ValueError as err:
            from ..errors import BenchError

            raise BenchError(f"policy teacache: {err}") from None
        self._note_input("coefficients", r.source)
        head = blocks[0]
        signature = inspect.signature(type(head).forward)
        params = list(signature.parameters.values())[1:]
        names = ([p.name for p in params] if all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params)
                 else None)

        def indicator(call: CallInfo) -> torch.Tensor:
            args, kwargs = call.block_args, call.block_kwargs
            if names is not None and len(args) <= len(names):  # by name, without bind (~10 us a call)
                return r.fn(transformer, {**dict(zip(names, args)), **kwargs}, call)
            bound = signature.bind(head, *args, **kwargs)
            return r.fn(transformer, dict(bound.arguments), call)

        policy = TeaCachePolicy(indicator, r.coefficients, r.thresh, warmup=r.warmup, force_last=r.force_last,
                                num_steps=self._steps)
        if self.reuse_span == "official":  # the adapter's residual_end (LTX-Video: proj_out's input)
            policy.residual_end = self._family_obj(transformer).adapters["teacache"].get("residual_end")
        apply_policy(transformer, blocks, policy, recorder, label=self.name)


# ---------------------------------------------------------------------------------------------------
# Policy
# ---------------------------------------------------------------------------------------------------
@dataclass
class TeaCacheState:
    previous: torch.Tensor | None = None
    accumulated: float = 0.0


class TeaCachePolicy(CachePolicy):
    """The decision rule; ``indicator(call)`` returns the model's indicator tensor for a call."""

    name = "teacache"
    reuse = "residual"
    decide_in_block = True

    def __init__(self, indicator: Callable[[CallInfo], torch.Tensor], coefficients, thresh: float,
                 warmup: int = 1, force_last: bool = True, num_steps: int | None = None):
        self.indicator = indicator
        self.rescale = np.poly1d(np.asarray(coefficients, dtype=np.float64))
        self._horner = tuple(float(c) for c in self.rescale.coeffs)  # poly1d's own (leading zeros trimmed)
        self.thresh = float(thresh)
        self.warmup = max(1, int(warmup))
        self.force_last = force_last
        self.num_steps = num_steps

    def new_state(self) -> TeaCacheState:
        return TeaCacheState()

    def rescaled(self, x: float) -> float:
        """``float(self.rescale(x))`` without numpy's per-call overhead: np.polyval's Horner scheme (y = 0, then
        y = y * x + c per coefficient, highest power first), in the same float64 operations."""
        y = 0.0
        for c in self._horner:
            y = y * x + c
        return y

    @staticmethod
    def relative_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
        current, previous = current.float(), previous.float()
        return float((current - previous).abs().mean() / previous.abs().mean())

    def decide(self, state: TeaCacheState, call: CallInfo) -> Decision:
        with torch.no_grad():
            current = self.indicator(call).detach()
        steps = call.num_steps or self.num_steps
        if self.force_last and steps is None:
            raise RuntimeError("TeaCache forces the last step but the step count is unknown: validate the policy "
                               "through a spec (spec.resolve) or bind(steps=...)")
        forced = (state.previous is None or call.index < self.warmup
                  or (self.force_last and call.index >= steps - 1))
        if forced:
            state.accumulated = 0.0
            decision = Decision(compute=True, score=None, threshold=self.thresh)
        else:
            state.accumulated += self.rescaled(self.relative_l1(current, state.previous))
            if state.accumulated < self.thresh:
                decision = Decision(compute=False, score=state.accumulated, threshold=self.thresh)
            else:
                decision = Decision(compute=True, score=state.accumulated, threshold=self.thresh)
                state.accumulated = 0.0
        state.previous = current.clone()
        return decision


def describe(config: TeaCacheConfig) -> dict[str, Any]:
    """What a validated config resolves to for its spec's model (for logs and records)."""
    from ..models import FAMILIES

    r = config.resolve(config._model, FAMILIES.get(config._family))
    return {"indicator": r.indicator, "coefficients": list(r.coefficients), "thresh": r.thresh, "source": r.source,
            "warmup": r.warmup, "force_last": r.force_last}
