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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__, parallel
from .errors import BenchError, PolicyError, SpecError
from .measure.calls import CallRecorder
from .measure.flops import CallCost, FlopCount, call_cost, count_flops
from .measure.memory import PeakMemory
from .measure.output_change import OutputChangeProbe
from .measure.timing import ItemTiming, Sample, paired_schedule
from .metrics.fidelity import compute_fidelity
from .metrics.video_io import frames_to_uint8, write_mp4
from .models.base import DTYPES, load_pretrained, set_eval
from .prompts import Prompt
from .results.store import SCHEMA_VERSION, load_reference, read_json, record_done, write_frames, write_json
from .spec import ResolvedSpec, sampling_dict

StepCallback = Callable[[int, int], None]  # (step done, total steps)
Log = Callable[[str], None]


@dataclass
class Generation:
    frames: np.ndarray | None  # uint8 (F, H, W, 3); None when not decoded
    calls: list
    latency: dict[str, float]  # total_s and its phases: encode_s, denoise_s, decode_s
    peak_memory_mb: float
    memory_kind: str
    memory_above_start_mb: float = 0.0
    cuda_s: float | None = None  # CUDA-event time of the whole generation (synchronised), on CUDA

    def sample(self) -> Sample:
        return Sample(seconds=self.latency["total_s"], phases=dict(self.latency), cuda_s=self.cuda_s)


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

    def __init__(self, spec: ResolvedSpec, layout=None):
        self.spec = spec
        self.layout = layout  # one video across ranks (parallel.Layout), or None
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
        experts = family.experts(pipe)
        for name, expert in experts[1:]:  # Wan 2.2: the low-noise expert, recorded in the same trace
            if expert.config != self.transformer.config:
                raise BenchError(f"{name} differs in architecture from the first transformer: calls are priced "
                                 f"with one per-call cost, so experts must share their configuration")
            self.recorder.add_expert(name, expert, [block for _, block in family.blocks(expert)], first=experts[0][0])
        self.recorder.attach_markers()
        if layout is not None:
            for _, expert, _ in self.recorder.experts:
                parallel.enable_context_parallel(layout, expert)
        self.cuda = spec.device.startswith("cuda")
        self._warm = False

    def _call(self, prompt: str, seed: int, steps: int | None = None, on_step: StepCallback | None = None,
              output_type: str = "np"):
        kwargs = {**self.spec.call_kwargs(), **self.spec.pipeline_inputs()}
        if steps is not None:
            kwargs["num_inference_steps"] = steps
        total = kwargs["num_inference_steps"]

        def callback(pipe, i, t, cb_kwargs):
            if on_step is not None:
                on_step(i + 1, total)
            return cb_kwargs

        # A CPU generator: the same initial noise on every device.
        generator = torch.Generator("cpu").manual_seed(seed)
        with torch.no_grad(), parallel.synchronised(self.layout):
            return self.pipe(prompt=prompt, generator=generator, output_type=output_type,
                             callback_on_step_end=callback, **kwargs).frames[0]

    def warm_up(self, prompt: str) -> None:
        """One short untimed generation, so the first timed one does not pay lazy initialisation."""
        if not self._warm:
            self._call(prompt, seed=0, steps=min(2, self.spec.sampling.steps))
            self._warm = True

    def attach(self, policy) -> None:
        """The policy's hooks on every expert, each with its own state: nothing one expert cached is reused by
        another (the first call after the switch computes: policies/base.py PolicyHook.decide)."""
        self.check_policy(policy)
        several = len(self.recorder.experts) > 1
        for name, transformer, blocks in self.recorder.experts:
            if hasattr(policy, "for_expert"):  # per-expert calibration: each expert's hooks read their own part
                policy.for_expert(name if several else None)
            if self.layout is None:
                policy.attach(transformer, blocks, self.recorder)
            else:  # inside the context-parallel split/gather hooks
                parallel.attach_inside(self.layout, transformer,
                                       lambda: policy.attach(transformer, blocks, self.recorder), policy)
        if hasattr(policy, "for_expert"):
            policy.for_expert(None)

    def check_policy(self, policy) -> None:
        refuse_calibrated(policy, [str(e[0]) for e in self.recorder.experts])

    def detach(self, policy) -> None:
        for _, transformer, _ in self.recorder.experts:
            policy.detach(transformer)

    def generate(self, prompt: str, seed: int, policy=None, on_step: StepCallback | None = None,
                 output_type: str = "np") -> Generation:
        """One generation, timed: perf_counter around the pipeline call (and CUDA events on CUDA, synchronised);
        the phases come from the call recorder's first and last transformer call. Its own peak memory.
        ``output_type="latent"``: no VAE decode and no frames (``match``'s tuning counts calls only)."""
        if policy is not None:
            self.attach(policy)
        self.recorder.attach_outer()
        self.recorder.start()
        events = None
        try:
            with PeakMemory(self.spec.device) as memory:
                if self.cuda:
                    torch.cuda.synchronize()
                    events = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    events[0].record()
                start = time.perf_counter()
                video = self._call(prompt, seed, on_step=on_step, output_type=output_type)
                if self.cuda:
                    events[1].record()
                    torch.cuda.synchronize()
                end = time.perf_counter()
                if self.layout is not None:  # a video is done when its last rank is: every rank times the same
                    end = start + parallel.video_seconds(self.layout, end - start)
        finally:
            self.recorder.detach_outer()
            if policy is not None:
                self.detach(policy)
        rec = self.recorder
        rec.resolve(events[0] if events else None, start)  # CUDA: the per-call events, read after the region
        first, last = rec.first_call_start or start, rec.last_call_end or end
        latency = {"total_s": end - start, "encode_s": first - start, "denoise_s": last - first,
                   "decode_s": end - last}
        frames = frames_to_uint8(video, layout="FHWC") if output_type == "np" else None
        return Generation(frames=frames, calls=list(rec.calls), latency=latency,
                          peak_memory_mb=memory.peak_mb, memory_kind=memory.kind,
                          memory_above_start_mb=memory.above_start_mb,
                          cuda_s=events[0].elapsed_time(events[1]) / 1000 if events else None)

    def count_flops(self, prompt: str, seed: int) -> dict:
        """Price the pipeline's parts from one untimed 1-step generation under the FLOP counter.

        Text encoding and VAE decoding happen once per video whatever the step count; the
        transformer's per-call cost (split into block stack and the rest) prices any call trace.
        The parts depend on the call shape (model, sampling, text length), not on the prompt's words:
        the text encoders pad to a fixed length, so the runner counts once per shape.
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
        text, _, rest = self.split_count(count)
        return {"text_encoder": text, "vae_decode": rest, "call": cost.to_dict()}

    def decision_flops(self, prompt: str, seed: int, policy, call: dict) -> list[int]:
        """FLOPs a policy spends deciding, per call (e.g. TeaCache's indicator): a counted 1-step generation with
        the policy attached (its first call always computes), less the uncached call's cost, per call."""
        holder = {}

        def one_step():
            self.attach(policy)
            self.recorder.attach_outer()
            self.recorder.start()
            try:
                self._call(prompt, seed, steps=1, output_type="latent")
                holder["calls"] = len(self.recorder.calls)
            finally:
                self.recorder.detach_outer()
                self.detach(policy)

        count = count_flops(one_step)
        full = CallCost.from_dict(call).full
        tot, att = count.module(type(self.transformer).__name__)
        calls = max(1, holder["calls"])
        return [max(0, tot - full[0] * calls) // calls, max(0, att - full[1] * calls) // calls]

    def split_count(self, count: FlopCount) -> tuple[list[int], list[int], list[int]]:
        """(text encoders, transformer, the rest: VAE decoding) of a whole-generation count, each [total, attention]."""
        text = [0, 0]
        for name, comp in self.pipe.components.items():
            if name.startswith("text_encoder") and isinstance(comp, torch.nn.Module):
                tot, att = count.module(type(comp).__name__)
                text[0] += tot
                text[1] += att
        transformer = list(count.module(type(self.transformer).__name__))
        rest = [count.total - text[0] - transformer[0], count.attention - text[1] - transformer[1]]
        return text, transformer, rest

    def count_generation(self, prompt: str, seed: int, policy) -> dict:
        """FLOPs of a whole cached generation by an untimed counted replay, for policies that skip work inside
        the blocks (where the call trace cannot see it). Deterministic policies replay the same work."""
        holder = {}
        count = count_flops(lambda: holder.setdefault("gen", self.generate(prompt, seed, policy=policy)))
        text, transformer, rest = self.split_count(count)
        computed = max(1, sum(c.computed for c in holder["gen"].calls))
        return _priced({"text_encoder": text, "transformer": transformer, "vae_decode": rest},
                       full=None, computed=(transformer[0], transformer[1], computed))


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
    decision = flops.get("decision")  # what the policy spends deciding, on every call
    if decision:
        transformer = [transformer[0] + decision[0] * len(calls), transformer[1] + decision[1] * len(calls)]
    parts = {"text_encoder": flops["text_encoder"], "transformer": transformer, "vae_decode": flops["vae_decode"]}
    return _priced(parts, full=cost.full, computed=tuple(computed))


def _priced(parts: dict, full: tuple[int, int] | None, computed: tuple[int, int, int]) -> dict:
    out = {}
    for name, (tot, att) in parts.items():
        out[name] = tot
        out[f"{name}_no_attn"] = tot - att
    out["total"] = sum(tot for tot, _ in parts.values())
    out["total_no_attn"] = sum(tot - att for tot, att in parts.values())
    if full is not None:
        out["per_call_full"], out["per_call_full_no_attn"] = full[0], full[0] - full[1]
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
    out = {"nfe_per_branch": per_branch, "calls_per_branch": calls_per_branch,
           "nfe_total": sum(per_branch.values()), "nfe": mean,
           "nfe_effective_per_branch": {b: round(v, 6) for b, v in effective.items()},
           "nfe_effective": round(sum(effective.values()) / max(1, len(effective)), 6)}
    experts = sorted({c.expert for c in calls if getattr(c, "expert", None) is not None})
    if experts:  # a model with several experts: the same counts per expert ("nfe" stays the total per branch)
        out["nfe_per_expert"] = {e: {b: sum(int(c.computed) for c in calls if c.expert == e and c.branch == b)
                                     for b in per_branch} for e in experts}
        out["calls_per_expert"] = {e: {b: sum(1 for c in calls if c.expert == e and c.branch == b)
                                       for b in per_branch} for e in experts}
    return out


def price_per_expert(flops: dict, calls: list) -> dict | None:
    """Transformer FLOPs (both conventions) of each expert's calls; None on a single-transformer model."""
    experts = sorted({c.expert for c in calls if getattr(c, "expert", None) is not None})
    if not experts:
        return None
    out = {}
    for e in experts:
        priced = price(flops, [c for c in calls if c.expert == e])
        out[e] = {"transformer": priced["transformer"], "transformer_no_attn": priced["transformer_no_attn"]}
    return out


def refuse_calibrated(policy, experts: list[str]) -> None:
    """Refuse a policy calibrated for one transformer on a model with several experts (unless it calibrates
    per expert: ``PolicyConfig.per_expert``)."""
    if len(experts) > 1 and getattr(policy, "calibration", None) is not None \
            and not getattr(policy, "per_expert", False):
        raise PolicyError(f"policy {policy.name!r} uses {policy.calibration} made for one transformer; this "
                          f"model has {len(experts)} experts ({', '.join(experts)}) and "
                          f"this policy does not calibrate per expert yet")


def _per_expert_flops(parts: dict, calls: list) -> dict:
    per_expert = price_per_expert(parts, calls)
    return {} if per_expert is None else {"flops_per_expert": per_expert}


class Runner:
    """Runs a resolved spec; writes references under ``references/`` and records under ``runs/``."""

    def __init__(self, spec: ResolvedSpec, force: bool = False, log: Log = print):
        self.spec = spec
        self.force = force
        self.log = log
        self.out = spec.output_dir
        self._session: Session | None = None
        self.layout = None  # one video across ranks (parallel.Layout): set by api.run under ``parallel``
        self._policy_prepared = False
        self._policy_warm_up: dict | None = None  # the policy's untimed warm-up generation, once per runner
        self._flops: dict[str, dict] = {}
        #: keys merged into every record this runner writes (e.g. ``match``: how the setting was chosen)
        self.record_extra: dict = {}

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = Session(self.spec, self.layout)
        return self._session

    # -- keys and paths -------------------------------------------------------------------------
    def reference_key(self, prompt: Prompt, seed: int) -> str:
        s = sampling_dict(self.spec.sampling)
        s.pop("seeds")
        s.pop("fps")
        return _short_hash({"model": self.spec.model_identity(), "sampling": s, "prompt": prompt.text, "seed": seed,
                            **parallel.key(self.layout)})

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
        """The uncached reference of one item (a fidelity cache: made once, reused by every policy and rerun).

        Its generation carries the output-change probe, so it is not a timing sample: speedups come from the
        baselines timed beside each policy run (:mod:`sencache_bench.measure.timing`)."""
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
        flops = self.flops_parts(prompt, seed)
        meta = {"kind": "reference", "schema_version": SCHEMA_VERSION, "key": key,
                **self._common(prompt, seed), **_nfe_summary(gen.calls), "flops_parts": flops,
                "flops": price(flops, gen.calls), **_per_expert_flops(flops, gen.calls), "latency": {**gen.latency, "note": "probed generation, not a "
                                                                                     "timing baseline"},
                "peak_memory_mb": gen.peak_memory_mb, "memory_kind": gen.memory_kind,
                "trace": [c.to_json() for c in gen.calls], "output_change": change.to_json()}
        meta["frames_file"] = write_frames(frames_path, gen.frames)
        if self.spec.save_videos:
            write_mp4(base.with_suffix(".mp4"), gen.frames, fps=self.spec.sampling.fps)
        write_json(meta_path, meta)
        return meta, gen.frames

    def flops_key(self) -> str:
        """What the FLOPs of a call depend on: model, sampling (not seeds, fps) and the pipeline's call arguments."""
        s = sampling_dict(self.spec.sampling)
        for k in ("seeds", "fps", "negative_prompt"):
            s.pop(k)
        return _short_hash({"model": self.spec.model_identity(), "sampling": s, **parallel.key(self.layout),
                            "call": {k: v for k, v in self.spec.call_kwargs().items() if k != "negative_prompt"}})

    def flops_parts(self, prompt: Prompt, seed: int) -> dict:
        """The pipeline's FLOP parts, counted once per call shape and kept in ``flops/<key>.json`` for later runs."""
        key = self.flops_key()
        if key in self._flops:
            return self._flops[key]
        path = self.out / "flops" / f"{key}.json"
        parts = self._read_cached(path, "parts")
        if parts is None:
            parts = self.session.count_flops(prompt.text, seed)
            write_json(path, {"key": key, "model": self.spec.model_name, "sampling": self._common(prompt, seed)
                              ["sampling"], "counted_with": {"prompt": prompt.text, "seed": seed, "steps": 1},
                              "parts": parts})
        self._flops[key] = parts
        return parts

    def _read_cached(self, path: Path, field: str):
        """A FLOP count kept in ``flops/``; a damaged file is counted again (with one warning line)."""
        if not path.exists():
            return None
        try:
            return read_json(path)[field]
        except (OSError, ValueError, KeyError, TypeError) as err:
            self.log(f"warning: FLOP count {path} is damaged ({type(err).__name__}): counting it again")
            return None

    def policy_decision_flops(self, prompt: Prompt, seed: int) -> list[int]:
        """The policy's per-call decision FLOPs, counted once per call shape and setting (``flops/``)."""
        policy = self.spec.policy
        key = f"{self.flops_key()}-{_slug(f'{policy.name}-{policy.setting()}')}"
        if key not in self._flops:
            path = self.out / "flops" / f"{key}.json"
            self._flops[key] = self._read_cached(path, "decision")
            if self._flops[key] is None:
                parts = self.flops_parts(prompt, seed)
                self._flops[key] = self.session.decision_flops(prompt.text, seed, policy, parts["call"])
                write_json(path, {"key": key, "policy": policy.name, "setting": policy.setting(),
                                  "decision": self._flops[key], "per": "transformer call"})
        return self._flops[key]

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
        if not self._policy_prepared and self.spec.entry is not None:  # before calibrating or any reference
            refuse_calibrated(self.spec.policy, list(self.spec.entry.experts))
        prepare = getattr(self.spec.policy, "prepare", None)
        if prepare is not None and not self._policy_prepared:
            prepare(self)
        self._policy_prepared = True

    def warm_up_policy(self, prompt: Prompt, seed: int) -> None:
        """Once per runner (one policy setting): one untimed full generation with the policy attached.

        The first timed policy generation would otherwise pay the policy's first-use work (its hooks' and
        decisions' first kernels, cache-dit's first cached pass, lazy imports) that the baselines do not: their
        pipeline path is warmed by :meth:`Session.warm_up`. Full length, so the reuse path runs too."""
        if self._policy_warm_up is None:
            gen = self.session.generate(prompt.text, seed, policy=self.spec.policy)
            self._policy_warm_up = {"generations": 1, "prompt_index": prompt.index, "seed": seed,
                                    "seconds": gen.latency["total_s"], "timed": False}

    def run_item(self, prompt: Prompt, seed: int, on_step: StepCallback | None = None) -> Path:
        return self.run_items([(prompt, seed)], on_step=on_step)[0]

    def run_items(self, items: list[tuple[Prompt, int]], on_step: StepCallback | None = None,
                  on_done: Callable[[int, Path], None] | None = None) -> list[Path]:
        """References first (untimed), then the policy runs timed beside uncached baselines; one record per item.

        ``on_done(i, path)`` after item i's record is written (records are written as their timing segment
        closes, so a run killed at any moment keeps every finished record).
        """
        if not items:
            return []
        self.prepare_policy()
        refs = [self.reference(prompt, seed, on_step=on_step) for prompt, seed in items]
        session = self.session
        if self.spec.timing.timed:
            session.warm_up(items[0][0].text)
        policy = self.spec.policy
        runs: dict[int, Generation] = {}
        reproduced: dict[int, list[bool]] = {}
        paths: list[Path | None] = [None] * len(items)

        def time_baseline(i: int) -> Sample:
            gen = session.generate(items[i][0].text, items[i][1], policy=None, on_step=on_step)
            reproduced.setdefault(i, []).append(bool(np.array_equal(gen.frames, refs[i][1])))
            return gen.sample()

        def time_policy(i: int) -> Sample:
            runs[i] = session.generate(items[i][0].text, items[i][1], policy=policy, on_step=on_step)
            return runs[i].sample()

        def finish(i: int, timing: ItemTiming) -> None:
            paths[i] = self._write_record(*items[i], *refs[i], runs.pop(i), timing, reproduced.get(i))
            if on_done is not None:
                on_done(i, paths[i])

        warm_up = None if self._policy_warm_up is not None else lambda: self.warm_up_policy(*items[0])
        paired_schedule(len(items), self.spec.timing, time_baseline, time_policy, finish, warm_up=warm_up)
        return paths

    def _write_record(self, prompt: Prompt, seed: int, ref_meta: dict, ref_frames: np.ndarray, gen: Generation,
                      timing: ItemTiming, reproduced: list[bool] | None) -> Path:
        spec = self.spec
        if spec.policy.priced_by_replay():  # work skipped inside the blocks: count what the generation executes
            flops = self.session.count_generation(prompt.text, seed, spec.policy)
        else:
            flops_parts = {**ref_meta["flops_parts"], "decision": self.policy_decision_flops(prompt, seed)}
            if hasattr(spec.policy, "price_parts"):  # a policy that ran calls on fewer tokens counts those calls
                flops_parts = spec.policy.price_parts(self, flops_parts, gen.calls)
            flops = price(flops_parts, gen.calls)
        fidelity = compute_fidelity(ref_frames, gen.frames, spec.metrics, device=spec.device)
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
            "flops": flops, "flops_method": "replay" if spec.policy.priced_by_replay() else "trace",
            **({} if spec.policy.priced_by_replay() else _per_expert_flops(flops_parts, gen.calls)),
            "latency": {"total_s": timing.latency_s, **{k: v for k, v in timing.policy_phases().items()
                                                        if k != "total_s"}, "statistic": "median of timing.policy_s"},
            "timing": {**timing.to_json(spec.timing),
                       "reference_reproduced": all(reproduced) if reproduced else None,
                       "policy_warm_up": self._policy_warm_up},
            "baseline": {"latency_s": timing.baseline_latency_s, "phases": timing.baseline_phases()},
            "peak_memory_mb": gen.peak_memory_mb, "memory_above_start_mb": gen.memory_above_start_mb,
            "memory_kind": gen.memory_kind,
            "metrics": fidelity.values, "metric_notes": fidelity.notes, "metrics_per_frame": fidelity.per_frame,
            "identical_to_reference": bool(np.array_equal(ref_frames, gen.frames)),
            "reference": {"key": ref_meta["key"], "nfe": ref_meta["nfe"], "nfe_per_branch": ref_meta["nfe_per_branch"],
                          "flops": ref_meta["flops"], "latency": ref_meta["latency"],
                          "peak_memory_mb": ref_meta["peak_memory_mb"]},
            "video": str(video) if video else None,
            "trace": [c.to_json() for c in gen.calls],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        record.update(self.record_extra)
        if self.layout is not None:
            record["parallel"] = parallel.record(self.layout, record)
        write_json(path, record)
        return path


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def check_output_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BenchError(f"output.dir {out} exists and is not a directory: choose another output.dir")


