"""The one orchestrator: spec -> pipeline -> uncached references -> policy runs -> records.

For each (prompt, seed) the uncached reference is generated once and reused across policies and
reruns (keyed by model, sampling, prompt and seed); then the policy run is generated, timed,
priced in FLOPs from its call trace, scored against the reference and written as one JSON record.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .errors import BenchError, SpecError
from .measure.calls import CallRecorder
from .measure.flops import CallCost, call_cost, count_flops
from .measure.output_change import OutputChangeProbe
from .metrics.fidelity import compute_fidelity
from .metrics.video_io import frames_to_uint8, write_mp4
from .models.base import DTYPES, load_pretrained, set_eval
from .prompts import Prompt
from .results.store import SCHEMA_VERSION, load_reference, record_done, write_frames, write_json
from .spec import ResolvedSpec, sampling_dict

StepCallback = Callable[[int, int], None]  # (step done, total steps)
Log = Callable[[str], None]


@dataclass
class Generation:
    frames: np.ndarray  # uint8 (F, H, W, 3)
    calls: list
    latency: dict[str, float]
    peak_memory_mb: float
    memory_kind: str


def _short_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _slug(text: str, limit: int = 48) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.=,-]+", "_", text)
    return slug if len(slug) <= limit else f"{slug[:limit - 13]}-{_short_hash(text)}"


def library_versions() -> dict[str, str]:
    import diffusers
    import transformers

    return {"sencache_bench": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "numpy": np.__version__, "python": platform.python_version()}


def _set_shift(pipe, shift: float | None) -> None:
    """Apply the spec's scheduler shift through whichever key the scheduler's config uses."""
    if shift is None:
        return
    cfg = pipe.scheduler.config
    key = "shift" if "shift" in cfg else "flow_shift" if "flow_shift" in cfg else None
    if key is None:
        raise SpecError(f"sampling.shift: the scheduler {type(pipe.scheduler).__name__} has no shift; remove it")
    pipe.scheduler = type(pipe.scheduler).from_config(cfg, **{key: shift})


class Session:
    """A loaded pipeline with the call recorder attached; generates and prices videos."""

    def __init__(self, spec: ResolvedSpec):
        self.spec = spec
        family = spec.family
        dtype = DTYPES[spec.dtype]
        if spec.entry is not None and spec.entry.build is not None and spec.source is None:
            pipe = spec.entry.build(0)
            set_eval(pipe)
            if dtype != torch.float32:
                pipe.to(dtype=dtype)
        else:
            pipe = load_pretrained(family, spec.source, dtype,
                                   missing_hint=spec.entry.missing_hint if spec.entry else "")
        pipe.to(spec.device)
        pipe.set_progress_bar_config(disable=True)
        _set_shift(pipe, spec.sampling.shift)
        self.pipe = pipe
        self.transformer = pipe.transformer
        self.block_names = [name for name, _ in family.blocks(self.transformer)]
        self.blocks = [block for _, block in family.blocks(self.transformer)]
        self.recorder = CallRecorder(self.transformer, self.blocks)
        self.recorder.attach_markers()
        self.cuda = spec.device.startswith("cuda")
        self._warm = False

    def _call(self, prompt: str, seed: int, steps: int | None = None, on_step: StepCallback | None = None):
        kwargs = self.spec.call_kwargs()
        if steps is not None:
            kwargs["num_inference_steps"] = steps
        total = kwargs["num_inference_steps"]

        def callback(pipe, i, t, cb_kwargs):
            if on_step is not None:
                on_step(i + 1, total)
            return cb_kwargs

        # A CPU generator: the same initial noise on every device.
        generator = torch.Generator("cpu").manual_seed(seed)
        with torch.no_grad():
            return self.pipe(prompt=prompt, generator=generator, output_type="np", callback_on_step_end=callback,
                             **kwargs).frames[0]

    def warm_up(self, prompt: str) -> None:
        """One short untimed generation, so the first timed one does not pay lazy initialisation."""
        if not self._warm:
            self._call(prompt, seed=0, steps=min(2, self.spec.sampling.steps))
            self._warm = True

    def generate(self, prompt: str, seed: int, policy=None, on_step: StepCallback | None = None) -> Generation:
        if policy is not None:
            policy.attach(self.transformer, self.blocks, self.recorder)
        self.recorder.attach_outer()
        self.recorder.start()
        try:
            if self.cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            video = self._call(prompt, seed, on_step=on_step)
            if self.cuda:
                torch.cuda.synchronize()
            end = time.perf_counter()
        finally:
            self.recorder.detach_outer()
            if policy is not None:
                policy.detach(self.transformer)
        rec = self.recorder
        first, last = rec.first_call_start or start, rec.last_call_end or end
        latency = {"total_s": end - start, "encode_s": first - start, "denoise_s": last - first,
                   "decode_s": end - last}
        if self.cuda:
            peak, kind = torch.cuda.max_memory_allocated() / 2**20, "cuda_max_allocated"
        else:
            peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_peak_rss"
        return Generation(frames=frames_to_uint8(video, layout="FHWC"), calls=list(rec.calls), latency=latency,
                          peak_memory_mb=peak, memory_kind=kind)

    def count_flops(self, prompt: str, seed: int) -> dict:
        """Price the pipeline's parts from one untimed 1-step generation under the FLOP counter.

        Text encoding and VAE decoding happen once per video whatever the step count; the
        transformer's per-call cost (split into block stack and the rest) prices any call trace.
        """
        self.recorder.attach_outer()
        self.recorder.start()
        try:
            count = count_flops(lambda: self._call(prompt, seed, steps=1))
        finally:
            self.recorder.detach_outer()
        calls = len(self.recorder.calls)
        root = type(self.transformer).__name__
        cost = call_cost(count, root, [f"{root}.{name}" for name in self.block_names], calls)
        text = [0, 0]
        for name, comp in self.pipe.components.items():
            if name.startswith("text_encoder") and isinstance(comp, torch.nn.Module):
                tot, att = count.module(type(comp).__name__)
                text[0] += tot
                text[1] += att
        t_tot, t_att = count.module(root)
        rest = [count.total - text[0] - t_tot, count.attention - text[1] - t_att]
        return {"text_encoder": text, "vae_decode": rest, "call": cost.to_dict()}


def price(flops: dict, calls: list) -> dict:
    """FLOPs of one generation, in both conventions: with attention ("total") and without ("no_attn")."""
    cost = CallCost.from_dict(flops["call"])
    transformer = [0, 0]
    computed = [0, 0, 0]  # FLOPs (total, attention) and count of the computed calls
    for c in calls:
        tot, att = cost.price(c.forward_ran, c.blocks_ran, getattr(c, "tokens", None))
        transformer[0] += tot
        transformer[1] += att
        if c.computed:
            computed[0], computed[1], computed[2] = computed[0] + tot, computed[1] + att, computed[2] + 1
    parts = {"text_encoder": flops["text_encoder"], "transformer": transformer, "vae_decode": flops["vae_decode"]}
    out = {}
    for name, (tot, att) in parts.items():
        out[name] = tot
        out[f"{name}_no_attn"] = tot - att
    out["total"] = sum(tot for tot, _ in parts.values())
    out["total_no_attn"] = sum(tot - att for tot, att in parts.values())
    out["per_call_full"], out["per_call_full_no_attn"] = cost.full[0], cost.full[0] - cost.full[1]
    n = max(1, computed[2])  # mean over computed calls: below per_call_full when a policy dropped tokens
    out["per_computed_call"], out["per_computed_call_no_attn"] = computed[0] // n, (computed[0] - computed[1]) // n
    return out


def _nfe_summary(calls: list) -> dict:
    per_branch: dict[str, int] = {}
    calls_per_branch: dict[str, int] = {}
    effective: dict[str, float] = {}  # computed calls weighted by their share of computed tokens
    for c in calls:
        per_branch[c.branch] = per_branch.get(c.branch, 0) + int(c.computed)
        calls_per_branch[c.branch] = calls_per_branch.get(c.branch, 0) + 1
        effective[c.branch] = effective.get(c.branch, 0.0) + (getattr(c, "token_fraction", 1.0) if c.computed else 0.0)
    mean = sum(per_branch.values()) / max(1, len(per_branch))
    return {"nfe_per_branch": per_branch, "calls_per_branch": calls_per_branch,
            "nfe_total": sum(per_branch.values()), "nfe": mean,
            "nfe_effective_per_branch": {b: round(v, 6) for b, v in effective.items()},
            "nfe_effective": round(sum(effective.values()) / max(1, len(effective)), 6)}


class Runner:
    """Runs a resolved spec; writes references under ``references/`` and records under ``runs/``."""

    def __init__(self, spec: ResolvedSpec, force: bool = False, log: Log = print):
        self.spec = spec
        self.force = force
        self.log = log
        self.out = spec.output_dir
        self._session: Session | None = None
        self._policy_prepared = False

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session(self.spec)
        return self._session

    # -- keys and paths -------------------------------------------------------------------------
    def reference_key(self, prompt: Prompt, seed: int) -> str:
        s = sampling_dict(self.spec.sampling)
        s.pop("seeds")
        s.pop("fps")
        return _short_hash({"model": self.spec.model_identity(), "sampling": s, "prompt": prompt.text, "seed": seed})

    def run_dir(self) -> Path:
        policy = self.spec.policy
        return self.out / "runs" / _slug(f"{policy.name}-{policy.setting()}")

    def record_path(self, prompt: Prompt, seed: int) -> Path:
        return self.run_dir() / f"p{prompt.index:03d}-s{seed}-{self.reference_key(prompt, seed)}.json"

    def items(self) -> list[tuple[Prompt, int]]:
        return [(p, seed) for p in self.spec.prompts for seed in self.spec.sampling.seeds]

    def pending(self) -> list[tuple[Prompt, int]]:
        if self.force:
            return self.items()
        return [(p, s) for p, s in self.items() if not record_done(self.record_path(p, s))]

    # -- references -----------------------------------------------------------------------------
    def reference(self, prompt: Prompt, seed: int, on_step: StepCallback | None = None) -> tuple[dict, np.ndarray]:
        key = self.reference_key(prompt, seed)
        base = self.out / "references" / key
        meta_path, frames_path = base.with_suffix(".json"), base.with_suffix(".npz")
        cached = load_reference(meta_path, frames_path, log=self.log)  # checked: sha256 and shape of the frames
        if cached is not None:
            return cached
        session = self.session
        session.warm_up(prompt.text)
        with OutputChangeProbe(session.transformer, session.recorder) as change:  # |f_k - f_k-1| per step
            gen = session.generate(prompt.text, seed, policy=None, on_step=on_step)
        flops = session.count_flops(prompt.text, seed)
        meta = {"kind": "reference", "schema_version": SCHEMA_VERSION, "key": key,
                **self._common(prompt, seed), **_nfe_summary(gen.calls), "flops_parts": flops,
                "flops": price(flops, gen.calls), "latency": gen.latency,
                "peak_memory_mb": gen.peak_memory_mb, "memory_kind": gen.memory_kind,
                "trace": [c.to_json() for c in gen.calls], "output_change": change.to_json()}
        meta["frames_file"] = write_frames(frames_path, gen.frames)
        if self.spec.save_videos:
            write_mp4(base.with_suffix(".mp4"), gen.frames, fps=self.spec.sampling.fps)
        write_json(meta_path, meta)
        return meta, gen.frames

    def _common(self, prompt: Prompt, seed: int) -> dict:
        spec = self.spec
        return {"model": spec.model_name, "family": spec.family.name, "source": spec.source, "dtype": spec.dtype,
                "device": spec.device, "device_name": _device_name(spec.device),
                "sampling": {k: v for k, v in sampling_dict(spec.sampling).items() if k != "seeds"},
                "prompt": prompt.text, "prompt_index": prompt.index, "prompt_group": prompt.group, "seed": seed,
                "versions": library_versions()}

    # -- policy runs ----------------------------------------------------------------------------
    def prepare_policy(self) -> None:
        """Once per runner: a policy config with ``prepare(runner)`` gets ready (e.g. SenCache's profile)."""
        prepare = getattr(self.spec.policy, "prepare", None)
        if prepare is not None and not self._policy_prepared:
            prepare(self)
        self._policy_prepared = True

    def run_item(self, prompt: Prompt, seed: int, on_step: StepCallback | None = None) -> Path:
        spec = self.spec
        self.prepare_policy()
        ref_meta, ref_frames = self.reference(prompt, seed, on_step=on_step)
        session = self.session
        session.warm_up(prompt.text)
        gen = session.generate(prompt.text, seed, policy=spec.policy, on_step=on_step)
        flops_parts = ref_meta["flops_parts"]
        if hasattr(spec.policy, "price_parts"):  # a policy that ran calls on fewer tokens counts those calls
            flops_parts = spec.policy.price_parts(self, flops_parts, gen.calls)
        fidelity = compute_fidelity(ref_frames, gen.frames, spec.metrics)
        path = self.record_path(prompt, seed)
        video = None
        if spec.save_videos:
            video = path.with_suffix(".mp4")
            write_mp4(video, gen.frames, fps=spec.sampling.fps)
        record = {
            "kind": "run", "schema_version": SCHEMA_VERSION, "spec": spec.raw, "spec_hash": spec.hash,
            "spec_path": str(spec.spec_path) if spec.spec_path else None,
            **self._common(prompt, seed),
            "policy": spec.policy.name, "policy_params": spec.policy.model_dump(mode="json"),
            "setting": spec.policy.setting(), "policy_inputs": spec.policy.inputs(),
            **_nfe_summary(gen.calls),
            "flops": price(flops_parts, gen.calls),
            "latency": gen.latency, "peak_memory_mb": gen.peak_memory_mb, "memory_kind": gen.memory_kind,
            "metrics": fidelity.values, "metric_notes": fidelity.notes, "metrics_per_frame": fidelity.per_frame,
            "identical_to_reference": bool(np.array_equal(ref_frames, gen.frames)),
            "reference": {"key": ref_meta["key"], "nfe": ref_meta["nfe"], "nfe_per_branch": ref_meta["nfe_per_branch"],
                          "flops": ref_meta["flops"], "latency": ref_meta["latency"],
                          "peak_memory_mb": ref_meta["peak_memory_mb"]},
            "video": str(video) if video else None,
            "trace": [c.to_json() for c in gen.calls],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_json(path, record)
        return path


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def check_output_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BenchError(f"output.dir {out} exists and is not a directory: choose another output.dir")


