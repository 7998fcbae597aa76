"""VBench over a results directory: the saved videos of run records (and their references) scored, the
per-video scores written back into the records as ``metrics["vbench_<dimension>"]``.

A record's video is the mp4 beside it (``runs/<policy>-<setting>/<item>.mp4``); its reference's is
``references/<key>.mp4`` of the same output directory. A reference's scores go into the reference's
JSON (``metrics``) and into every record that points at it (``reference.metrics``), so the paper
layouts can show VBench for the uncached row too. VBench's own output files are kept under
``<results>/vbench/`` with the job, the worker's result and its log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import BenchError
from ..metrics.vbench import VBENCH_VERSION, Video, VBenchResult, check_dimensions, run_vbench
from .store import load_records, write_json

Log = Callable[[str], None]


def _record_video(rec: dict) -> Path | None:
    beside = Path(rec["_path"]).with_suffix(".mp4")
    if beside.is_file():
        return beside
    saved = rec.get("video")
    return Path(saved) if saved and Path(saved).is_file() else None


def _index(rec: dict) -> int:
    """The video's index i for VBench's ``{prompt}-{i}.mp4``: the seed's position among the spec's seeds."""
    seeds = ((rec.get("spec") or {}).get("sampling") or {}).get("seeds") or []
    return seeds.index(rec["seed"]) if rec.get("seed") in seeds else int(rec.get("seed") or 0)


def _scored(metrics: dict | None, dims: Sequence[str]) -> bool:
    return all(f"vbench_{d}" in (metrics or {}) for d in dims)


def score_results(results_dir: Path, dims: Sequence[str], *, mode: str = "custom_input", device: str = "cpu",
                  python: Path | None = None, only: Path | None = None, references: bool = True,
                  force: bool = False, log: Log = print) -> VBenchResult | None:
    """Score the saved videos under ``results_dir`` (only the run dir ``only`` if given) with VBench.

    Videos whose records already hold every requested dimension are skipped unless ``force``.
    Returns VBench's result (None when there was nothing to score).
    """
    dims = check_dimensions(dims, mode)
    results_dir = Path(results_dir)
    records, problems = load_records(results_dir)
    for p in problems:
        log(p)
    if only is not None:
        only = Path(only).resolve()
        records = [r for r in records if Path(r["_path"]).resolve().parent == only]
    if not records:
        raise BenchError(f"no run records under {only or results_dir}: run `sencache-bench run SPEC.yaml` first")
    videos: list[Video] = []
    ref_meta: dict[str, Path] = {}  # video id -> reference JSON
    for rec in records:
        path = _record_video(rec)
        if path is None:
            log(f"VBench: {rec['_path']} has no saved video (output.save_videos was false?); skipped")
        elif force or not _scored(rec.get("metrics"), dims):
            videos.append(Video(id=rec["_path"], path=path, prompt=rec["prompt"], index=_index(rec)))
        if not references:
            continue
        key = (rec.get("reference") or {}).get("key")
        out = Path(rec["_path"]).parents[2]
        meta_path = out / "references" / f"{key}.json"
        ref_id = f"reference:{meta_path}"
        if key is None or ref_id in ref_meta:
            continue
        ref_meta[ref_id] = meta_path
        mp4 = meta_path.with_suffix(".mp4")
        if not mp4.is_file():
            log(f"VBench: reference {mp4} not found (saved videos off when it was made?); skipped")
            continue
        meta = _reference_meta(meta_path)
        if meta is None:
            log(f"VBench: reference {meta_path} is damaged; skipped (rerun its spec to remake it)")
            continue
        if force or not _scored(meta.get("metrics"), dims):
            videos.append(Video(id=ref_id, path=mp4, prompt=rec["prompt"], index=_index(rec)))
    work = results_dir / "vbench"
    result = None
    if videos:
        log(f"VBench ({mode}, {', '.join(dims)}): {len(videos)} video(s) in its own environment; files in {work}")
        result = run_vbench(videos, dims, work, mode=mode, device=device, python=python, log=log)
    elif records:
        log("VBench: every video already has these dimensions (use --force to score again)")
    _write_back(records, ref_meta, result, dims, mode)
    return result


def _reference_meta(path: Path) -> dict | None:
    """A reference's JSON when it parses as a reference record (the frames are not needed here)."""
    try:
        meta = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("kind") == "reference" else None


def _write_back(records: list[dict], ref_meta: dict[str, Path], result: VBenchResult | None, dims: Sequence[str],
                mode: str) -> None:
    per_video = result.per_video if result else {}
    stamp = {"version": VBENCH_VERSION, "mode": mode, "scored": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    ref_scores: dict[str, dict[str, float]] = {}
    for ref_id, meta_path in ref_meta.items():
        meta = _reference_meta(meta_path)
        if meta is None:
            continue
        new = per_video.get(ref_id, {})
        if new:
            meta.setdefault("metrics", {}).update({f"vbench_{d}": v for d, v in new.items()})
            meta["vbench"] = {**stamp, "dimensions": sorted(new)}
            write_json(meta_path, meta)
        ref_scores[meta_path.stem] = {k: v for k, v in (meta.get("metrics") or {}).items() if k.startswith("vbench_")}
    for rec in records:
        new = per_video.get(rec["_path"], {})
        ref = rec.get("reference") or {}
        ref_new = ref_scores.get(ref.get("key"), {})
        changed_ref = any((ref.get("metrics") or {}).get(k) != v for k, v in ref_new.items())
        if not new and not changed_ref:
            continue
        path = Path(rec.pop("_path"))
        if new:
            rec.setdefault("metrics", {}).update({f"vbench_{d}": v for d, v in new.items()})
            rec["vbench"] = {**stamp, "dimensions": sorted(new)}
        if changed_ref:
            ref.setdefault("metrics", {}).update(ref_new)
        write_json(path, rec)
        rec["_path"] = str(path)


def score_spec_run(runner, log: Log = print) -> VBenchResult | None:
    """``metrics: [..., vbench]`` in a spec: score this run's videos (and their references) after ``run``."""
    spec = runner.spec
    vb = spec.vbench
    device = spec.device if vb.device == "auto" else vb.device
    return score_results(spec.output_dir, vb.dimensions, mode=vb.mode, device=device, only=runner.run_dir(), log=log)
