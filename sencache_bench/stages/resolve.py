"""Stage 1, the spec resolved into items: (prompt, seed) pairs, their reference keys and record paths.

A reference is keyed by what its frames depend on (model, sampling without seeds and fps, prompt, seed), so
every policy and rerun of the same item finds it; a record's path names the policy setting and that key.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from .. import parallel
from ..errors import BenchError
from ..prompts import Prompt
from ..results.store import record_done
from ..spec import ResolvedSpec, sampling_dict


def short_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def slug(text: str, limit: int = 48) -> str:
    out = re.sub(r"[^A-Za-z0-9_.=,-]+", "_", text)
    return out if len(out) <= limit else f"{out[:limit - 13]}-{short_hash(text)}"


def items(spec: ResolvedSpec) -> list[tuple[Prompt, int]]:
    return [(p, seed) for p in spec.prompts for seed in spec.sampling.seeds]


def reference_key(spec: ResolvedSpec, prompt: Prompt, seed: int, layout=None) -> str:
    """``layout``: one video across ranks (:mod:`sencache_bench.parallel`), kept apart from single-process keys."""
    s = sampling_dict(spec.sampling)
    s.pop("seeds")
    s.pop("fps")
    return short_hash({"model": spec.model_identity(), "sampling": s, "prompt": prompt.text, "seed": seed,
                       **parallel.key(layout)})


def run_dir(spec: ResolvedSpec) -> Path:
    policy = spec.policy
    return spec.output_dir / "runs" / slug(f"{policy.name}-{policy.setting()}")


def record_path(spec: ResolvedSpec, prompt: Prompt, seed: int, layout=None) -> Path:
    return run_dir(spec) / f"p{prompt.index:03d}-s{seed}-{reference_key(spec, prompt, seed, layout)}.json"


def pending(spec: ResolvedSpec, force: bool = False, layout=None) -> list[tuple[Prompt, int]]:
    """The items still to run: all of them with ``force``, else those without a finished record."""
    if force:
        return items(spec)
    return [(p, s) for p, s in items(spec) if not record_done(record_path(spec, p, s, layout))]


def check_output_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BenchError(f"output.dir {out} exists and is not a directory: choose another output.dir")
