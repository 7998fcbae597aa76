"""Stage 2, references: the uncached generation of each item, made once and reused by every policy and rerun.

A reference is a fidelity cache, not a timing sample: its generation carries the output-change probe
(|f_k - f_k-1| per step), and speedups come from the baselines timed beside each policy run
(:mod:`sencache_bench.measure.timing`). Its frames are kept lossless (``.npz``) and checked on reuse.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..measure.output_change import OutputChangeProbe
from ..metrics.video_io import write_mp4
from ..results.store import SCHEMA_VERSION, load_reference, write_frames, write_json
from .session import Generation, Session, StepCallback


def paths(out: Path, key: str) -> tuple[Path, Path]:
    """(meta JSON, frames npz) of the reference ``key`` under ``out/references``."""
    base = out / "references" / key
    return base.with_suffix(".json"), base.with_suffix(".npz")


def load(out: Path, key: str, log) -> tuple[dict, np.ndarray] | None:
    """The stored reference, or None when absent (or damaged: checked by the sha256 and shape of its frames)."""
    return load_reference(*paths(out, key), log=log)


def generate(session: Session, prompt: str, seed: int, on_step: StepCallback | None = None
             ) -> tuple[Generation, dict]:
    """The uncached generation (after the session's untimed warm-up) and its output change per step."""
    session.warm_up(prompt)
    with OutputChangeProbe(session.transformer, session.recorder) as change:
        gen = session.generate(prompt, seed, policy=None, on_step=on_step, purpose="reference")
    return gen, change.to_json()


def write(out: Path, key: str, common: dict, gen: Generation, change: dict, priced: dict,
          save_video: bool, fps: int) -> tuple[dict, np.ndarray]:
    """Store the reference: frames (npz, and mp4 when asked) and its meta; returns (meta, frames)."""
    meta_path, frames_path = paths(out, key)
    meta = {"kind": "reference", "schema_version": SCHEMA_VERSION, "key": key, **common, **priced,
            "latency": {**gen.latency, "note": "probed generation, not a timing baseline"},
            "peak_memory_mb": gen.peak_memory_mb, "memory_kind": gen.memory_kind,
            "trace": [c.to_json() for c in gen.calls], "output_change": change}
    meta["frames_file"] = write_frames(frames_path, gen.frames)
    if save_video:
        write_mp4(meta_path.with_suffix(".mp4"), gen.frames, fps=fps)
    write_json(meta_path, meta)
    return meta, gen.frames
