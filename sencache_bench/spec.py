"""The experiment spec: YAML in, a validated and fully resolved :class:`ResolvedSpec` out.

Precedence: ``--set`` overrides on the command line > the YAML file > a registered model's own
sampling defaults > the field defaults below. Every error names the field path, what was expected
and what was found, and is raised before anything runs or is written (exit code 2).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import BenchError, SpecError
from .metrics.definitions import FIDELITY_METRICS
from .measure.timing import TimingConfig
from .parallel import ParallelSpec, check_spec as check_parallel
from .models import FAMILIES, MODELS, family_for_pipeline_class
from .models.base import Family, ModelEntry
from .models.conditioning import ConditioningImage, entry_for_image, load_image
from .policies import POLICIES
from .policies.base import PolicyConfig
from .prompts import Prompt, load_prompts
from .spec_files import apply_overrides, format_validation_error, read_yaml

METRICS = (*FIDELITY_METRICS, "vbench")  # fidelity names and their definitions: metrics/definitions.py
REPO_ROOT = Path(__file__).resolve().parent.parent


def portable_identity(identity: dict) -> dict:
    """``identity`` with a weights folder inside the repository written relative to it (no machine's absolute
    paths in keys or shipped files)."""
    out = dict(identity)
    source = out.get("source")
    if isinstance(source, str) and Path(source).is_absolute():
        try:
            out["source"] = Path(source).resolve().relative_to(REPO_ROOT).as_posix()
        except ValueError:
            pass
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    name: str = Field(description="a registered model name, a hub id (org/name) or a local diffusers directory")
    path: str | None = Field(default=None, description="local directory or hub id holding a registered model's weights")
    family: str | None = Field(default=None, description="pipeline family for an unregistered hub id")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"


class SamplingSpec(_Strict):
    steps: int | None = Field(default=None, ge=1, le=1000)
    height: int | None = Field(default=None, ge=8, le=4096)
    width: int | None = Field(default=None, ge=8, le=4096)
    frames: int | None = Field(default=None, ge=1, le=1024)
    guidance_scale: float | None = Field(default=None, ge=0.0, le=50.0)
    shift: float | None = Field(default=None, gt=0.0, le=100.0)
    seeds: list[int] = Field(default=[0], min_length=1)
    negative_prompt: str | None = None
    text_length: int | None = Field(default=None, ge=1, le=4096, description="max_sequence_length of the text encoder")
    fps: int | None = Field(default=None, ge=1, le=120)
    image: str | None = Field(default=None, description="image-to-video: the conditioning first frame (PNG/JPEG) "
                                                        "for every prompt; see docs/specs.md")
    guidance_scale_2: float | None = Field(default=None, ge=0.0, le=50.0,
                                           description="CFG scale of a two-expert model's second (low-noise) expert")


class PromptFileSpec(_Strict):
    file: str
    groups: list[str] | None = None
    limit: int | None = Field(default=None, ge=1)


class OutputSpec(_Strict):
    dir: str | None = None
    save_videos: bool = True


class VBenchSpec(_Strict):
    """``metrics: [..., vbench]``: VBench over the saved videos, in its own environment (metrics/vbench.py)."""

    dimensions: list[str] = Field(default=["temporal_flickering"], min_length=1)
    mode: Literal["custom_input", "vbench_standard"] = "custom_input"
    device: str = "auto"


class Spec(_Strict):
    model: ModelSpec
    sampling: SamplingSpec = SamplingSpec()
    prompts: str | list[str] | PromptFileSpec
    policy: dict[str, Any] = {"name": "none"}
    metrics: list[str] = ["psnr", "ssim", "lpips"]
    output: OutputSpec = OutputSpec()
    vbench: VBenchSpec | None = None
    timing: TimingConfig = TimingConfig()
    parallel: ParallelSpec | None = None  # one video across ranks (sencache_bench/parallel.py)
    plugins: list[str] = Field(default=[], description="modules imported before validation (their policies and "
                                                        "models register themselves; see sencache_bench.plugins)")


@dataclass(frozen=True)
class Sampling:
    steps: int
    height: int
    width: int
    frames: int
    guidance_scale: float
    shift: float | None
    seeds: tuple[int, ...]
    negative_prompt: str | None
    text_length: int | None
    fps: int
    guidance_scale_2: float | None = None  # in keys only when set (sampling_dict), so older keys stay valid


@dataclass
class ResolvedSpec:
    raw: dict
    model_name: str  # registered name, or the hub id / directory for an unregistered model
    entry: ModelEntry | None  # None for an unregistered hub id / directory
    family: Family
    source: str | None  # where pretrained weights come from (None: built in code)
    dtype: str
    device: str
    sampling: Sampling
    prompts: list[Prompt]
    policy: PolicyConfig
    metrics: list[str]
    output_dir: Path
    save_videos: bool
    spec_path: Path | None = None
    vbench: VBenchSpec | None = None  # set when metrics has vbench (``metrics`` holds the fidelity ones only)
    timing: TimingConfig = TimingConfig()
    parallel: ParallelSpec | None = None
    image: ConditioningImage | None = None  # sampling.image, decoded

    @property
    def hash(self) -> str:
        return spec_hash(self.raw)

    def model_identity(self) -> dict:
        """What decides the reference videos besides sampling, prompt and seed. Portable: a weights folder inside
        the repository (bench-t2v's) is named relative to it, so keys made in one checkout (the shipped tuning
        file, stored references) hold in another."""
        identity = portable_identity({"model": self.model_name, "source": self.source, "dtype": self.dtype,
                                      "device": self.device.split(":")[0]})
        if self.image is not None:  # the conditioning image's pixels, not its path
            identity["image"] = self.image.sha256
        return identity

    def pipeline_inputs(self) -> dict:
        """Call arguments that are not plain values (kept out of call_kwargs, which keys hash): the image."""
        return {"image": self.image.pil()} if self.image is not None else {}

    def generation_kwargs(self) -> dict:
        """Everything a generation passes the pipeline besides prompt, generator and output type: the call
        arguments and the image (every pipeline call of a run or a calibration: an I2V pipeline needs it)."""
        return {**self.call_kwargs(), **self.pipeline_inputs()}

    def call_kwargs(self) -> dict:
        """Pipeline call arguments common to every prompt of this spec."""
        s = self.sampling
        kwargs = dict(self.entry.call_kwargs if self.entry else {})
        kwargs.update(height=s.height, width=s.width, num_frames=s.frames, num_inference_steps=s.steps,
                      guidance_scale=s.guidance_scale)
        if s.negative_prompt is not None:
            kwargs["negative_prompt"] = s.negative_prompt
        if s.text_length is not None:
            kwargs["max_sequence_length"] = s.text_length
        if s.guidance_scale_2 is not None:
            kwargs["guidance_scale_2"] = s.guidance_scale_2
        return kwargs


def spec_hash(raw: dict) -> str:
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_spec(path: str | Path, overrides: list[str] = ()) -> ResolvedSpec:
    path = Path(path)
    data = apply_overrides(read_yaml(path), list(overrides))
    return resolve(data, spec_dir=path.parent, spec_path=path)


def override_list(overrides: list[str] | Mapping[str, Any] | None) -> list[str]:
    """``--set`` items from a list of them or a ``{"a.b": value}`` dict (the Python API's)."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]  # JSON is YAML: values keep their types
    return list(overrides)


def load_source(spec: str | Path | Mapping, overrides: list[str] | Mapping[str, Any] | None = None) -> ResolvedSpec:
    """A spec from a path, a YAML string or a dict (what the Python API and ``match`` accept); ``overrides`` as
    ``["a.b=v", ...]`` or ``{"a.b": v}`` (``--set`` on the command line)."""
    sets = override_list(overrides)
    if isinstance(spec, Mapping):
        return resolve(apply_overrides(dict(spec), sets))
    text = str(spec)
    if not (isinstance(spec, str) and ("\n" in text or (":" in text and not Path(text).exists()))):
        return load_spec(spec, sets)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(f"spec: not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise SpecError(f"spec: expected a path, a YAML mapping or a dict (found {type(data).__name__})")
    return resolve(apply_overrides(data, sets))


def _resolve_model(m: ModelSpec) -> tuple[str, ModelEntry | None, Family, str | None]:
    if m.name in MODELS:
        entry = MODELS.get(m.name)
        source = m.path or entry.repo_id if entry.build is None else m.path
        return entry.name, entry, entry.family, source
    looks_like_source = "/" in m.name or os.path.isdir(m.name)
    if not looks_like_source:
        try:
            MODELS.canonical(m.name)
        except BenchError as err:
            raise SpecError(f"model.name: {err}; or give a hub id (org/name) or a local directory") from None
    if m.family is not None:
        try:
            family = FAMILIES.get(m.family)
        except BenchError as err:
            raise SpecError(f"model.family: {err}") from None
    elif os.path.isdir(m.name):
        index = Path(m.name) / "model_index.json"
        if not index.is_file():
            raise SpecError(f"model.name: {m.name} has no model_index.json; give a diffusers pipeline directory")
        cls = json.loads(index.read_text()).get("_class_name", "?")
        family = family_for_pipeline_class(cls)
        if family is None:
            raise SpecError(f"model.name: {m.name} holds a {cls}, which no backend supports "
                            f"(supported families: {', '.join(FAMILIES.names())})")
    else:
        raise SpecError(f"model.family: required for hub id {m.name!r} (one of {', '.join(FAMILIES.names())})")
    return m.name, None, family, m.name


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SpecError(f"model.device: {device!r} requested but no CUDA device is available (use cpu or auto)")
        return device
    if device != "cpu":
        raise SpecError(f"model.device: expected auto, cpu, cuda or cuda:N (found {device!r})")
    return device


def _load_plugins(data: dict, spec_dir: Path) -> None:
    """``plugins: [module, ...]``: imported before the spec is validated, so their names validate like built-ins.
    Modules are found on sys.path, then in the spec's folder and the working directory."""
    modules = data.get("plugins", [])
    if not isinstance(modules, list) or not all(isinstance(m, str) and m for m in modules):
        raise SpecError(f"plugins: expected a list of importable module names (found {modules!r})")
    if modules:
        from .plugins import load_spec_plugins

        load_spec_plugins(modules, search=[spec_dir, Path.cwd()])


def resolve(data: dict, spec_dir: Path = Path("."), spec_path: Path | None = None) -> ResolvedSpec:
    _load_plugins(data, spec_dir)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, model=Spec)) from None

    model_name, entry, family, source = _resolve_model(spec.model)
    image = load_image(spec.sampling.image, [Path.cwd(), spec_dir]) if spec.sampling.image is not None else None
    entry = entry_for_image(entry, model_name, image is not None, family)
    family = entry.family if entry is not None else family
    device = _resolve_device(spec.model.device)
    dtype = spec.model.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"

    s = spec.sampling
    d = entry.defaults if entry else None
    missing = [f for f in ("steps", "height", "width", "frames", "guidance_scale") if getattr(s, f) is None and d is None]
    if missing:
        raise SpecError(f"sampling.{missing[0]}: required for an unregistered model (no defaults to take it from)")
    pick = lambda f: getattr(s, f) if getattr(s, f) is not None else getattr(d, f)  # noqa: E731
    sampling = Sampling(steps=pick("steps"), height=pick("height"), width=pick("width"), frames=pick("frames"),
                        guidance_scale=pick("guidance_scale"), shift=s.shift if s.shift is not None else
                        (d.shift if d else None), seeds=tuple(s.seeds), negative_prompt=s.negative_prompt,
                        text_length=s.text_length,
                        fps=s.fps or (d.fps if d else 8), guidance_scale_2=s.guidance_scale_2)
    if s.guidance_scale_2 is not None and (entry is None or len(entry.experts) < 2):
        raise SpecError(f"sampling.guidance_scale_2: {model_name} has one transformer; the second scale is for a "
                        f"two-expert model (e.g. wan2.2-t2v-a14b); use sampling.guidance_scale")
    problems = family.check_sampling(sampling.height, sampling.width, sampling.frames)
    if problems:
        raise SpecError("\n".join(f"{field}: {msg}" for field, msg in problems))
    if len(set(sampling.seeds)) != len(sampling.seeds):
        raise SpecError(f"sampling.seeds: seeds must be distinct (found {list(sampling.seeds)})")

    prompts = load_prompts(spec.prompts, search=[Path.cwd(), spec_dir, REPO_ROOT])

    policy_data = dict(spec.policy)
    if "name" not in policy_data:
        raise SpecError(f"policy.name: required (one of {', '.join(POLICIES.names())})")
    try:
        config_cls = POLICIES.get(str(policy_data["name"]))
    except BenchError as err:
        raise SpecError(f"policy.name: {err}") from None
    policy_data["name"] = POLICIES.canonical(str(policy_data["name"]))
    try:
        policy = config_cls.model_validate(policy_data, context={"model": model_name, "family": family.name,
                                                                "steps": sampling.steps, "spec_dir": str(spec_dir),
                                                                "guidance_scale": sampling.guidance_scale})
    except ValidationError as err:
        raise SpecError(format_validation_error(err, prefix="policy", model=config_cls)) from None

    for i, metric in enumerate(spec.metrics):
        if metric not in METRICS:
            raise SpecError(f"metrics[{i}]: unknown metric {metric!r} (valid: {', '.join(METRICS)})")
    vbench = _resolve_vbench(spec)

    out = Path(spec.output.dir) if spec.output.dir else Path("results") / model_name.replace("/", "--")
    raw = spec.model_dump(mode="json")
    if raw.get("vbench") is None:
        raw.pop("vbench", None)  # specs without VBench keep the hash they had
    if raw.get("parallel") is None:
        raw.pop("parallel", None)  # nor do specs without a parallel section
    else:
        check_parallel(spec.parallel, device, policy)
    if not raw.get("plugins"):
        raw.pop("plugins", None)  # nor do specs without plugins change theirs
    for key in ("image", "guidance_scale_2"):
        if raw["sampling"].get(key) is None:
            raw["sampling"].pop(key, None)  # nor do specs without them
    raw["policy"] = policy.model_dump(mode="json")
    return ResolvedSpec(raw=raw, model_name=model_name, entry=entry, family=family, source=source, dtype=dtype,
                        device=device, sampling=sampling, prompts=prompts, policy=policy,
                        metrics=[m for m in dict.fromkeys(spec.metrics) if m != "vbench"], output_dir=out,
                        save_videos=spec.output.save_videos, spec_path=spec_path, vbench=vbench,
                        timing=spec.timing, parallel=spec.parallel, image=image)


def _resolve_vbench(spec: Spec) -> VBenchSpec | None:
    from .metrics.vbench import check_dimensions

    if "vbench" not in spec.metrics:
        if spec.vbench is not None:
            raise SpecError("vbench: given, but metrics has no vbench; add vbench to metrics or remove the section")
        return None
    vb = spec.vbench or VBenchSpec()
    try:
        dims = check_dimensions(vb.dimensions, vb.mode)
    except BenchError as err:
        raise SpecError(f"vbench.dimensions: {err}") from None
    if not spec.output.save_videos:
        raise SpecError("metrics: vbench scores the saved videos; set output.save_videos: true")
    if vb.device not in ("auto", "cpu") and not vb.device.startswith("cuda"):
        raise SpecError(f"vbench.device: expected auto, cpu, cuda or cuda:N (found {vb.device!r})")
    return vb.model_copy(update={"dimensions": dims})


def sampling_dict(s: Sampling) -> dict:
    d = asdict(s)
    if d["guidance_scale_2"] is None:
        d.pop("guidance_scale_2")  # absent when unset: the keys of specs without it are unchanged
    return d
