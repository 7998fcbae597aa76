"""SenCache calibration: Jx(t) and Jt(t) of a model on its sampling schedule (shared ALGORITHMS.md, "SenCache").

For each clean latent x0 and each timestep t of the schedule (conditional branch only, as the paper):

- ``x_t`` = x0 forward-noised to t: ``(1 - s) x0 + s noise`` with the scheduler's sigma s for flow
  matching, ``scheduler.add_noise`` otherwise (fresh seeded noise per timestep);
- Jx(t) ~ ||f(x_next, t) - f(x_t, t)|| / ||x_next - x_t||, with ``x_next = scheduler.step(f(x_t, t), t, x_t)``
  (a secant along the sampler's own step; the step is taken from a fresh copy of the scheduler, so a
  multistep solver takes its first-order step);
- Jt(t) ~ ||f(x_t, t_next) - f(x_t, t)|| / |t_next - t|, t_next the schedule's next timestep (0 after
  the last one; where that equals t, the previous timestep: a backward difference).

Norms are over one whole sample; t is in model units (0..1000). Three transformer calls per
(sample, timestep). The profile keeps the mean over samples per timestep, the counts and every
per-sample value (:mod:`.profile`). A model with several experts gets one profile per expert, each
measured with that expert's transformer on the whole schedule, in one file keyed by expert (:mod:`.experts`);
an expert's hooks read only its own part.

Clean latents, from one of three sources (``calibration_source`` in the profile, and in every record that
uses it through the policy inputs):

- ``clips``: real videos, as the paper (Fig. 4) and the official code calibrate: the model's own ground-truth
  clips (``ModelEntry.calibration_clips``, e.g. bench-t2v's procedural renderer) of its calibration prompts,
  one seed per sample, VAE-encoded. The default for a model that has them;
- ``videos``: real videos from a folder (``videos``), VAE-encoded (a video's prompt is the text of a ``.txt``
  file with the same name beside it, else a calibration prompt);
- ``generated``: the final latents (``output_type="latent"``) of the model's own uncached generations of a
  calibration prompt set (:data:`CALIBRATION_PROMPTS`, one seed per sample). The default for a model without
  clips when no ``videos`` are given: not the paper's inputs, and the profile says so. What depends on the model family (the conditional call's
inputs, VAE encoding) comes from the family's ``adapters["sencache"]``, a dict of functions:

``conditioning(pipe, prompt, call_kwargs, latents) -> dict``
    transformer keyword arguments of the conditional branch for one sample, besides ``hidden_states``
    and ``timestep`` (``call_kwargs``: the run's, the image of an image-to-video spec included). Its
    ``"condition"``, if any, is not a keyword: the channels the pipeline appends to the noisy latents, the
    same at every step (HunyuanVideo 1.5: [condition, mask]; Wan I2V: [mask, image latents]); the
    sensitivities stay those of the latents;
``encode_video(pipe, video, call_kwargs) -> Tensor``
    ``video`` (1, 3, F, H, W) in [-1, 1] -> latents in the layout and scale the transformer takes;
``step(scheduler, model_output, timestep, sample, index) -> Tensor`` (optional)
    for schedulers whose ``step`` has another signature.

(The same dict's ``force_last`` is the policy's: the family's official script always computes the last step.)
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import BenchError
from ..results.store import write_json
from .experts import per_expert_file
from .profile import METHOD, SensitivityProfile, default_profile_path, profile_key, schedule_record

Log = Callable[[str], None]
PER_EXPERT = ("timesteps", "Jx", "Jt", "counts", "per_sample", "seconds")  # a profile's per-expert part
Denoise = Callable[[torch.Tensor, float, int], torch.Tensor]  # (x_t, t, sample index) -> f(x_t, t)
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi")

# Eight diverse scenes (static / moderate / fast motion, people, animals, nature, city, close-ups),
# kept apart from the evaluation prompt files so that a profile is not fitted on the test prompts.
CALIBRATION_PROMPTS = (
    "a steaming cup of coffee on a wooden desk next to an open notebook, soft morning light",
    "a golden retriever running through a shallow stream, water splashing, slow motion",
    "aerial view of a busy city intersection at night with cars and neon signs",
    "a chef chopping vegetables quickly on a cutting board in a restaurant kitchen",
    "snow-covered pine forest with falling snow, camera slowly panning right",
    "a surfer riding a large ocean wave at sunset",
    "close-up of a hummingbird hovering near a red flower",
    "an old man playing chess in a park, leaves falling around him",
)


class _Captured(Exception):
    """Raised by the schedule probe at the first transformer call."""


# -- the measurement ------------------------------------------------------------------------------
def is_flow_matching(scheduler) -> bool:
    cfg = scheduler.config
    return (type(scheduler).__name__.startswith("FlowMatch") or bool(cfg.get("use_flow_sigmas", False))
            or cfg.get("prediction_type") == "flow_prediction")


def noised(scheduler, x0: torch.Tensor, noise: torch.Tensor, index: int) -> torch.Tensor:
    """x0 forward-noised to the schedule's ``index``-th timestep."""
    if is_flow_matching(scheduler):
        s = float(scheduler.sigmas[index])
        return (1.0 - s) * x0 + s * noise
    t = scheduler.timesteps[index:index + 1]
    return scheduler.add_noise(x0, noise, t)


def scheduler_step(scheduler, model_output: torch.Tensor, timestep, sample: torch.Tensor, index: int) -> torch.Tensor:
    """One ``scheduler.step`` at the schedule's ``index``-th timestep, from a fresh copy (no solver history)."""
    sched = copy.deepcopy(scheduler)
    if hasattr(sched, "_step_index"):
        sched._step_index = None
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(index)
    return sched.step(model_output, timestep, sample, return_dict=False)[0]


def next_timestep(timesteps: Sequence[float], index: int) -> float:
    """The forward difference's second timestep: the next one, 0 after the last, the previous if equal."""
    t = timesteps[index]
    t_next = timesteps[index + 1] if index + 1 < len(timesteps) else 0.0
    if t_next == t and index > 0:
        t_next = timesteps[index - 1]
    return t_next


@torch.no_grad()
def measure(denoise: Denoise, scheduler, clean: Sequence[torch.Tensor], *, seed: int = 0,
            step: Callable | None = None, log: Log | None = None) -> tuple[list[float], np.ndarray, np.ndarray]:
    """Per-sample Jx and Jt on every timestep of ``scheduler`` (its timesteps already set).

    Returns (timesteps, Jx, Jt) with Jx, Jt of shape (samples, timesteps); NaN where a value is undefined
    (the step did not move x, or the two timesteps coincide).
    """
    step = step or scheduler_step
    timesteps = [float(t) for t in scheduler.timesteps]
    n = len(timesteps)
    jx = np.full((len(clean), n), np.nan)
    jt = np.full((len(clean), n), np.nan)
    for s, x0 in enumerate(clean):
        x0 = x0.float()
        g = torch.Generator("cpu").manual_seed(seed + 1000 * s)
        for i, t in enumerate(timesteps):
            noise = torch.randn(x0.shape, generator=g, dtype=torch.float32).to(x0.device)
            x_t = noised(scheduler, x0, noise, i).float()
            f0 = denoise(x_t, t, s).float()
            x_next = step(scheduler, f0, scheduler.timesteps[i], x_t, i).float()
            dx = float(torch.linalg.vector_norm(x_next - x_t))
            if dx > 0 and math.isfinite(dx):
                jx[s, i] = float(torch.linalg.vector_norm(denoise(x_next, t, s).float() - f0)) / dx
            t_next = next_timestep(timesteps, i)
            if t_next != t:
                jt[s, i] = float(torch.linalg.vector_norm(denoise(x_t, t_next, s).float() - f0)) / abs(t_next - t)
        if log is not None:
            log(f"sencache calibration: sample {s + 1}/{len(clean)} measured on {n} timesteps")
    jx[~np.isfinite(jx)] = np.nan
    jt[~np.isfinite(jt)] = np.nan
    return timesteps, jx, jt


def summarize(timesteps: Sequence[float], jx: np.ndarray, jt: np.ndarray, *, model: str, family: str,
              schedule: dict, meta: dict | None = None) -> SensitivityProfile:
    """Mean over samples per timestep (and counts); every timestep needs at least one finite Jx and Jt."""
    counts = np.minimum(np.isfinite(jx).sum(0), np.isfinite(jt).sum(0))
    empty = [timesteps[i] for i in range(len(timesteps)) if counts[i] == 0]
    if empty:
        raise BenchError(f"sencache calibration: no sample gave Jx and Jt at timestep {empty[0]:g}; "
                         f"use more samples or check the model's outputs for NaN")
    with np.errstate(invalid="ignore"):
        jx_mean, jt_mean = np.nanmean(jx, 0), np.nanmean(jt, 0)
    rows = lambda a: [[None if not np.isfinite(v) else float(v) for v in row] for row in a]  # noqa: E731
    meta = dict(meta or {})
    meta["per_sample"] = {"Jx": rows(jx), "Jt": rows(jt)}
    return SensitivityProfile(timesteps=tuple(float(t) for t in timesteps), jx=tuple(float(v) for v in jx_mean),
                              jt=tuple(float(v) for v in jt_mean), counts=tuple(int(c) for c in counts),
                              model=model, family=family, schedule=schedule, meta=meta)


# -- the harness side: a runner's pipeline ----------------------------------------------------------
def adapter_for(family):
    adapter = family.adapters.get("sencache")
    if adapter is None:
        raise BenchError(f"sencache calibration does not support the {family.name} family yet: it needs an "
                         f"adapters['sencache'] entry in sencache_bench/models/{family.name}.py")
    if "refused" in adapter:  # the family's reason, as adacache's adapters say theirs
        raise BenchError(f"sencache calibration on the {family.name} family: {adapter['refused']}")
    return adapter


def capture_scheduler(runner, prompt: str):
    """The pipeline's scheduler with its timesteps set exactly as a run sets them (no step taken).

    Runs the pipeline up to its first transformer call (text encoding only) and copies the scheduler there.
    """
    session = runner.session
    pipe = session.pipe
    box = {}

    def grab(module, args, kwargs):
        box["scheduler"] = copy.deepcopy(pipe.scheduler)
        raise _Captured

    handle = pipe.transformer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            pipe(prompt=prompt, generator=torch.Generator("cpu").manual_seed(0), output_type="latent",
                 **runner.spec.generation_kwargs())
    except _Captured:
        pass
    finally:
        handle.remove()
    if "scheduler" not in box:
        raise BenchError(f"{runner.spec.model_name}: the pipeline finished without calling its transformer")
    return box["scheduler"]


def calibration_prompts(spec) -> tuple[str, ...]:
    """The model's own calibration prompts (a registered model may give some), else :data:`CALIBRATION_PROMPTS`."""
    return (spec.entry.calibration_prompts if spec.entry is not None else ()) or CALIBRATION_PROMPTS


def run_schedule(runner, prompt: str | None = None) -> dict:
    """:func:`.profile.schedule_record` of the schedule a run of ``runner.spec`` samples on."""
    spec = runner.spec
    prompt = prompt or (spec.prompts[0].text if spec.prompts else calibration_prompts(spec)[0])
    return schedule_record(capture_scheduler(runner, prompt), spec.sampling.steps, spec.sampling.shift)


def _sampling_meta(spec) -> dict:
    from ..spec import sampling_dict

    return {k: v for k, v in sampling_dict(spec.sampling).items() if k not in ("seeds",)}


SOURCES = ("clips", "videos", "generated")


def default_source(spec) -> str:
    """``clips`` for a model with ground-truth clips (the paper calibrates on real videos), else ``generated``."""
    return "clips" if spec.entry is not None and spec.entry.calibration_clips is not None else "generated"


def calibration_key(runner, samples: int, source: str | None = None, inputs: Sequence[str] | None = None) -> str:
    spec = runner.spec
    source = source or default_source(spec)
    inputs = calibration_prompts(spec) if inputs is None else inputs
    return profile_key(spec.model_identity(), _sampling_meta(spec), samples, source, inputs)


def auto_profile_path(runner, samples: int = 8) -> Path:
    """Where a run without ``policy.profile`` keeps the profile it calibrates with the defaults."""
    return default_profile_path(runner.spec.output_dir, calibration_key(runner, samples))


def _resize_video(frames: np.ndarray, num_frames: int, height: int, width: int) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> float (1, 3, num_frames, height, width) in [-1, 1]: frames sampled evenly,
    centre-cropped to the target aspect ratio, resized (bilinear, antialiased)."""
    idx = np.linspace(0, len(frames) - 1, num_frames).round().astype(int)
    video = torch.from_numpy(frames[idx]).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # F, 3, H, W
    h, w = video.shape[-2:]
    if h * width > w * height:  # too tall: crop height
        ch = max(1, round(w * height / width))
        top = (h - ch) // 2
        video = video[:, :, top:top + ch]
    else:
        cw = max(1, round(h * width / height))
        left = (w - cw) // 2
        video = video[:, :, :, left:left + cw]
    video = torch.nn.functional.interpolate(video, size=(height, width), mode="bilinear", antialias=True,
                                            align_corners=False)
    return video.clamp(-1, 1).permute(1, 0, 2, 3).unsqueeze(0)  # 1, 3, F, H, W


def _encode(runner, adapter, frames: np.ndarray) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> the latents the transformer takes, at the spec's frames and size (VAE, float32)."""
    s, pipe = runner.spec.sampling, runner.session.pipe
    video = _resize_video(frames, s.frames, s.height, s.width)
    vae = pipe.vae
    with torch.no_grad():
        latents = adapter["encode_video"](pipe, video.to(device=vae.device, dtype=vae.dtype), runner.spec.call_kwargs())
    return latents.float()


def _clean_from_clips(runner, adapter, prompts: Sequence[str], samples: int, seed: int, log: Log) -> list:
    """The model's ground-truth clips of the calibration prompts (seed + k for sample k), VAE-encoded."""
    clips = runner.spec.entry.calibration_clips
    clean = []
    for k in range(samples):
        prompt = prompts[k % len(prompts)]
        clean.append(_encode(runner, adapter, np.asarray(clips(prompt, seed + k))))
        log(f"sencache calibration: encoded ground-truth clip {k + 1}/{samples} (seed {seed + k}): {prompt[:48]}")
    return clean


def _clean_from_videos(runner, adapter, videos: Path, samples: int, log: Log) -> tuple[list, list[str], list[str]]:
    from ..metrics.video_io import read_video

    videos = Path(videos)
    if not videos.is_dir():
        raise BenchError(f"--videos {videos}: not a directory (give a folder of {', '.join(VIDEO_SUFFIXES)} files)")
    files = sorted(p for p in videos.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        raise BenchError(f"--videos {videos}: no video files ({', '.join(VIDEO_SUFFIXES)}) in it")
    if len(files) < samples:
        log(f"sencache calibration: {videos} holds {len(files)} videos, fewer than {samples} samples: using all")
    files = files[:samples]
    spec = runner.spec
    clean, prompts, default_prompts = [], [], calibration_prompts(spec)
    for k, path in enumerate(files):
        caption = path.with_suffix(".txt")
        prompts.append(caption.read_text().strip() if caption.is_file() and caption.read_text().strip()
                       else default_prompts[k % len(default_prompts)])
        clean.append(_encode(runner, adapter, read_video(path)))
        log(f"sencache calibration: encoded {path.name} ({k + 1}/{len(files)})")
    return clean, prompts, [p.name for p in files]


def _clean_from_generations(runner, prompts: Sequence[str], samples: int, seed: int, log: Log) -> list:
    pipe = runner.session.pipe
    kwargs = runner.spec.generation_kwargs()
    clean = []
    for k in range(samples):
        prompt = prompts[k % len(prompts)]
        with torch.no_grad():
            out = pipe(prompt=prompt, generator=torch.Generator("cpu").manual_seed(seed + k), output_type="latent",
                       **kwargs)
        clean.append(out.frames[:1].float())
        log(f"sencache calibration: generated clean latents {k + 1}/{samples} (seed {seed + k}): {prompt[:48]}")
    return clean


def calibrate(runner, samples: int = 8, out: Path | None = None, log: Log = print, videos: Path | None = None,
              prompts: str | Sequence[str] = "calibration", seed: int = 0, source: str | None = None) -> Path:
    """Measure Jx(t), Jt(t) of ``runner``'s model on its spec's schedule; write the profile; return its path.

    ``source`` (module doc): ``videos`` when ``videos`` is given, else by default ``clips`` for a model with
    ground-truth clips and ``generated`` otherwise; ``source="generated"`` forces generations.

    ``out`` defaults to ``<output_dir>/profiles/sencache-<key>.json``, the key hashing the model, the
    sampling settings and the calibration inputs: with the defaults this is the file a run without
    ``policy.profile`` looks for, so a run after ``sencache-bench calibrate`` uses it. ``prompts``:
    "calibration" (:func:`calibration_prompts`), "spec" (the spec's prompts) or a list of prompts.
    """
    from ..runner import library_versions

    if samples < 1:
        raise BenchError(f"--samples: need at least 1 sample (found {samples})")
    spec = runner.spec
    adapter = adapter_for(spec.family)
    session = runner.session
    pipe, transformer = session.pipe, session.transformer
    if prompts is None or prompts == "calibration":
        prompts = calibration_prompts(spec)
    elif prompts == "spec":
        prompts = tuple(p.text for p in spec.prompts)
    elif isinstance(prompts, str) or not prompts:
        raise BenchError(f"calibration option prompts: expected 'calibration', 'spec' or a list (found {prompts!r})")
    prompts = tuple(prompts)
    source = "videos" if videos is not None else (source or default_source(spec))
    if source not in SOURCES or (source == "videos") != (videos is not None):
        raise BenchError(f"calibration source {source!r}: expected clips or generated (videos: give a folder)")
    if spec.image is not None and source != "generated":
        raise BenchError(f"calibration source {source}: on an image-to-video spec every sample is conditioned on "
                         f"sampling.image, so its clean latents must be generations from that image; calibrate "
                         f"on generations (leave --videos out)")
    if source == "clips" and (spec.entry is None or spec.entry.calibration_clips is None):
        raise BenchError(f"calibration source clips: {spec.model_name} has no ground-truth clips; give --videos DIR "
                         f"(real videos, as the paper) or calibrate on generations")
    started = time.time()
    what = {"videos": f"real videos in {videos}", "clips": "the model's ground-truth clips (real videos)",
            "generated": "own uncached generations, not real videos"}[source]
    log(f"sencache calibration: {spec.model_name}, {spec.sampling.steps} steps, {samples} samples ({what}), "
        f"conditional branch")
    scheduler = capture_scheduler(runner, prompts[0])
    schedule = schedule_record(scheduler, spec.sampling.steps, spec.sampling.shift)
    if source == "videos":
        clean, sample_prompts, inputs = _clean_from_videos(runner, adapter, videos, samples, log)
    else:
        if source == "clips":
            clean = _clean_from_clips(runner, adapter, prompts, samples, seed, log)
        else:
            clean = _clean_from_generations(runner, prompts, samples, seed, log)
        sample_prompts = [prompts[k % len(prompts)] for k in range(samples)]
        inputs = list(prompts)

    kwargs = spec.generation_kwargs()
    device, dtype = transformer.device, transformer.dtype
    t_dtype = scheduler.timesteps.dtype if scheduler.timesteps.is_floating_point() else torch.float32
    with torch.no_grad():
        conds = [adapter["conditioning"](pipe, p, kwargs, clean[k].to(device)) for k, p in enumerate(sample_prompts)]
    appended = [c.pop("condition", None) for c in conds]  # channels after the noisy latents, per sample
    step = adapter.get("step")
    clean = [x.to(device) for x in clean]
    meta = {"model_identity": spec.model_identity(), "sampling": _sampling_meta(spec),
            "samples": len(clean), "method": METHOD, "source": source, "calibration_source": source,
            "inputs": inputs, "prompts": sample_prompts,
            "seed": seed, "spec_hash": spec.hash, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": library_versions()}
    profiles = {}
    for expert, model in ((e, t) for e, t, _ in session.recorder.experts):
        # several experts: each one's Jx, Jt on the whole schedule, from its own calls (calibration/experts.py)
        def denoise(x: torch.Tensor, t: float, s: int, model=model) -> torch.Tensor:
            timestep = torch.tensor([t], dtype=t_dtype, device=device)
            x = x.to(device=device, dtype=dtype)
            if appended[s] is not None:
                x = torch.cat([x, appended[s]], dim=1)
            return model(hidden_states=x, timestep=timestep,
                         **conds[s], return_dict=False)[0]

        timesteps, jx, jt = measure(denoise, scheduler, clean, seed=seed, step=step, log=log)
        profiles[expert] = summarize(timesteps, jx, jt, model=spec.model_name, family=spec.family.name,
                                     schedule=schedule, meta={**meta, "seconds": round(time.time() - started, 3)})
    if out is None:
        out = default_profile_path(spec.output_dir, calibration_key(runner, samples, source, inputs))
    if len(profiles) == 1:
        profile = next(iter(profiles.values()))
        path = profile.save(Path(out))
    else:
        parts = {e: {k: v for k, v in p.to_json().items() if k in PER_EXPERT} for e, p in profiles.items()}
        header = {k: v for k, v in next(iter(profiles.values())).to_json().items() if k not in PER_EXPERT}
        path = Path(out)
        write_json(path, per_expert_file(header, parts))
    log(f"sencache calibration: wrote {path} ({len(profiles)} expert(s) x {len(timesteps)} timesteps, {len(clean)} samples, "
        f"{time.time() - started:.1f} s)")
    if path.resolve() == auto_profile_path(runner).resolve():
        log("sencache calibration: a run of this spec without policy.profile uses it")
    else:
        log(f"sencache calibration: a run uses it with policy.profile: {path} (e.g. --set policy.profile={path})")
    return path
