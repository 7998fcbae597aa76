"""The run's records against a golden copy written by the runner before it was split into stages (issue 26).

A small spec (tiny-wan, one prompt x two seeds, six steps) under three policies: ``static`` (a fixed
schedule, priced from its call trace), ``easycache`` (data-dependent, priced from the trace plus its decision
FLOPs) and ``pab`` (skips attention inside the blocks, priced by a counted replay). Every JSON file the run
writes (records, references, FLOP counts) must equal the golden copy, wall-clock figures and machine
details aside. Regenerate the copy (only when a record is meant to change) with
``python tests/test_runner_records.py``.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

GOLDEN = Path(__file__).parent / "data" / "runner_records_golden.json"
POLICIES = [{"name": "static", "every": 2}, {"name": "easycache", "tau": 0.3}, {"name": "pab"}]
SPEC = {
    "model": {"name": "tiny-wan"},
    "sampling": {"steps": 6, "height": 32, "width": 32, "frames": 9, "guidance_scale": 5.0, "seeds": [0, 1]},
    "prompts": ["a red ball bouncing on grass"],
    "policy": {"name": "none"},
    "metrics": ["psnr", "ssim"],
}
#: keys that hold wall-clock figures, memory or the machine and library versions: not part of the comparison;
#: also ``spec_hash``, a hash of the raw spec with its (temporary) output dir, whose text is compared instead
DROPPED = {"latency", "timing", "baseline", "s", "decide_s", "hook_s", "peak_memory_mb", "memory_above_start_mb",
           "memory_kind", "created", "versions", "device_name", "frames_file", "spec_hash"}


def _normalise(value, root: str):
    if isinstance(value, dict):
        return {k: _normalise(v, root) for k, v in value.items() if k not in DROPPED}
    if isinstance(value, list):
        return [_normalise(v, root) for v in value]
    if isinstance(value, str):
        return value.replace(root, "<out>")
    return value


def run_records(tmp: Path) -> dict[str, object]:
    """Run the spec under each policy into ``tmp``; every JSON file written, normalised, by relative path."""
    import torch

    from sencache_bench.runner import Runner
    from sencache_bench.spec import resolve

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for policy in POLICIES:
            spec = copy.deepcopy(SPEC)
            spec["policy"] = policy
            spec["output"] = {"dir": str(tmp / "results"), "save_videos": False}
            runner = Runner(resolve(spec), log=lambda line: None)
            runner.run_items(runner.items())
    finally:
        torch.set_num_threads(threads)
    root = str(tmp / "results")
    return {str(p.relative_to(tmp)): _normalise(json.loads(p.read_text()), root)
            for p in sorted((tmp / "results").rglob("*.json"))}


def _diff(got, want, where: str = "") -> list[str]:
    """Where two normalised JSON values differ; floats to a relative 1e-6 (other CPUs round differently)."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = [f"{where}: keys {sorted(set(got) ^ set(want))}"] if set(got) != set(want) else []
        return out + [d for k in sorted(set(got) & set(want)) for d in _diff(got[k], want[k], f"{where}/{k}")]
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return [f"{where}: {len(got)} items, golden {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want)) for d in _diff(g, w, f"{where}[{i}]")]
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        return [] if math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9) else [f"{where}: {got!r} != {want!r}"]
    return [] if got == want and type(got) is type(want) else [f"{where}: {got!r} != {want!r}"]


def test_records_match_the_golden_copy(tmp_path):
    golden = json.loads(GOLDEN.read_text())
    got = run_records(tmp_path)
    assert sorted(got) == sorted(golden), "the run writes other files than before"
    problems = _diff(got, golden)
    assert not problems, "records differ from the golden copy:\n" + "\n".join(problems[:20])


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(run_records(Path(tmp)), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
