"""The loaded pipeline: one generation timed, its call trace recorded, its FLOPs counted.

Every stage of a run generates through a :class:`Session` (references, the timed policy chain, FLOP counts);
it knows the pipeline, not the spec's items or records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .. import parallel
from ..errors import BenchError, PolicyError, SpecError
from ..measure.calls import CallRecorder
from ..measure.flops import CallCost, FlopCount, call_cost, count_flops
from ..measure.memory import PeakMemory
from ..measure.timing import Sample
from ..metrics.video_io import frames_to_uint8
from ..models.base import DTYPES, load_pretrained, set_eval
from ..spec import ResolvedSpec
from .pricing import priced

StepCallback = Callable[[int, int], None]  # (step done, total steps)


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
        self.recorder.latents = family.adapters.get("latents")
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
        #: purpose -> [pipeline calls, seconds, denoising steps]: what this session's generations were for
        self.spent: dict[str, list] = {}

    def _call(self, prompt: str, seed: int, steps: int | None = None, on_step: StepCallback | None = None,
              output_type: str = "np", purpose: str = "other"):
        """One pipeline call; its count, seconds and steps go to :attr:`spent` under ``purpose``."""
        kwargs = self.spec.generation_kwargs()
        if steps is not None:
            kwargs["num_inference_steps"] = steps
        total = kwargs["num_inference_steps"]

        def callback(pipe, i, t, cb_kwargs):
            if on_step is not None:
                on_step(i + 1, total)
            return cb_kwargs

        # A CPU generator: the same initial noise on every device.
        generator = torch.Generator("cpu").manual_seed(seed)
        start = time.perf_counter()
        try:
            with torch.no_grad(), parallel.synchronised(self.layout):
                return self.pipe(prompt=prompt, generator=generator, output_type=output_type,
                                 callback_on_step_end=callback, **kwargs).frames[0]
        finally:
            entry = self.spent.setdefault(purpose, [0, 0.0, 0])
            entry[0] += 1
            entry[1] += time.perf_counter() - start
            entry[2] += total

    def spent_line(self) -> str:
        """The session's generations by purpose, most seconds first: where a run's time went."""
        rows = sorted(self.spent.items(), key=lambda kv: -kv[1][1])
        total = sum(v[1] for _, v in rows)
        return (f"generations: {sum(v[0] for _, v in rows)} in {total:.0f} s (" + "; ".join(
            f"{name} {n} in {sec:.1f} s" for name, (n, sec, _) in rows) + ")")

    def warm_up(self, prompt: str) -> None:
        """One short untimed generation, so the first timed one does not pay lazy initialisation."""
        if not self._warm:
            self._call(prompt, seed=0, steps=min(2, self.spec.sampling.steps), purpose="session warm-up")
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
                 output_type: str = "np", purpose: str = "other") -> Generation:
        """One generation, timed: perf_counter around the pipeline call (and CUDA events on CUDA, synchronised);
        the phases come from the call recorder's first and last transformer call. Its own peak memory.
        ``output_type="latent"``: no VAE decode and no frames (``match``'s tuning counts calls only).
        ``purpose``: what the generation is for (:attr:`spent`: a baseline, a policy run, a reference, ...)."""
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
                video = self._call(prompt, seed, on_step=on_step, output_type=output_type, purpose=purpose)
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
            count = count_flops(lambda: self._call(prompt, seed, steps=1, purpose="FLOP parts"))
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
                self._call(prompt, seed, steps=1, output_type="latent", purpose="decision FLOPs")
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
        count = count_flops(lambda: holder.setdefault("gen", self.generate(prompt, seed, policy=policy,
                                                                          purpose="FLOP replay")))
        text, transformer, rest = self.split_count(count)
        computed = max(1, sum(c.computed for c in holder["gen"].calls))
        return priced({"text_encoder": text, "transformer": transformer, "vae_decode": rest},
                      full=None, computed=(transformer[0], transformer[1], computed))


def refuse_calibrated(policy, experts: list[str]) -> None:
    """Refuse a policy calibrated for one transformer on a model with several experts (unless it calibrates
    per expert: ``PolicyConfig.per_expert``)."""
    if len(experts) > 1 and getattr(policy, "calibration", None) is not None \
            and not getattr(policy, "per_expert", False):
        raise PolicyError(f"policy {policy.name!r} uses {policy.calibration} made for one transformer; this "
                          f"model has {len(experts)} experts ({', '.join(experts)}) and "
                          f"this policy does not calibrate per expert yet")
