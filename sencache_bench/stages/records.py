"""Stage 6, records: one JSON record per (policy setting, prompt, seed), with its provenance.

A record is written as its item's timing segment closes, so a run killed at any moment keeps every finished
record; the fields every reader relies on are checked by :mod:`sencache_bench.results.store`.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import torch

from .. import __version__, parallel
from ..measure.timing import ItemTiming
from ..metrics.video_io import write_mp4
from ..prompts import Prompt
from ..results.store import SCHEMA_VERSION, write_json
from ..spec import ResolvedSpec, sampling_dict
from .session import Generation


def library_versions() -> dict[str, str]:
    import diffusers
    import transformers

    return {"sencache_bench": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "numpy": np.__version__, "python": platform.python_version()}


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def common(spec: ResolvedSpec, prompt: Prompt, seed: int) -> dict:
    """The fields a reference and a run record share: model, device, sampling, the item, library versions."""
    return {"model": spec.model_name, "family": spec.family.name, "source": spec.source, "dtype": spec.dtype,
            "device": spec.device, "device_name": device_name(spec.device),
            "sampling": {k: v for k, v in sampling_dict(spec.sampling).items() if k != "seeds"},
            "prompt": prompt.text, "prompt_index": prompt.index, "prompt_group": prompt.group, "seed": seed,
            "versions": library_versions()}


def write_run(path: Path, spec: ResolvedSpec, prompt: Prompt, seed: int, ref_meta: dict, gen: Generation,
              timing: ItemTiming, reproduced: list[bool] | None, warm_up: dict | None, priced: dict,
              scored: dict, extra: dict, layout=None) -> Path:
    """The run record of one item (and its mp4 when the spec saves videos); ``extra`` merged last."""
    video = None
    if spec.save_videos:
        video = path.with_suffix(".mp4")
        write_mp4(video, gen.frames, fps=spec.sampling.fps)
    record = {
        "kind": "run", "schema_version": SCHEMA_VERSION, "spec": spec.raw, "spec_hash": spec.hash,
        "spec_path": str(spec.spec_path) if spec.spec_path else None,
        **common(spec, prompt, seed),
        "policy": spec.policy.name, "policy_params": spec.policy.model_dump(mode="json"),
        "setting": spec.policy.setting(), "policy_inputs": spec.policy.inputs(),
        **priced,
        "latency": {"total_s": timing.latency_s, **{k: v for k, v in timing.policy_phases().items()
                                                    if k != "total_s"}, "statistic": "median of timing.policy_s"},
        "timing": {**timing.to_json(spec.timing), "reference_reproduced": all(reproduced) if reproduced else None,
                   "policy_warm_up": warm_up},
        "baseline": {"latency_s": timing.baseline_latency_s, "phases": timing.baseline_phases()},
        "peak_memory_mb": gen.peak_memory_mb, "memory_above_start_mb": gen.memory_above_start_mb,
        "memory_kind": gen.memory_kind,
        **scored,
        "reference": {"key": ref_meta["key"], "nfe": ref_meta["nfe"], "nfe_per_branch": ref_meta["nfe_per_branch"],
                      "flops": ref_meta["flops"], "latency": ref_meta["latency"],
                      "peak_memory_mb": ref_meta["peak_memory_mb"]},
        "video": str(video) if video else None,
        "trace": [c.to_json() for c in gen.calls],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    record.update(extra)
    if layout is not None:  # one video across ranks: every rank's figures
        record["parallel"] = parallel.record(layout, record)
    write_json(path, record)
    return path
