"""VBench in its own environment: set-up, weight checks, the subprocess run and VBench's total score.

VBench (PyPI ``vbench`` 0.1.5) pins transformers==4.33.2 and numpy<2 and imports torchvision at import
time, so it cannot share this package's environment (shared EVALUATION.md). It lives in its own
virtual environment (``.venv-vbench`` by default; ``sencache-bench vbench setup`` or ``make vbench-env``)
and runs as a subprocess: this side writes a job file (videos, prompts, dimensions, mode), the
worker (:mod:`sencache_bench.metrics.vbench_worker`, a plain script that imports nothing of this
package) lays the videos out as VBench expects, calls ``VBench.evaluate`` once per dimension and
writes a result file back.

torch for that environment: the CPU torch 2.13.0 file has no torchvision that imports beside it, and
``vbench.utils`` imports torchvision, so the environment gets a matching pair instead (default
``torch==2.14.1 torchvision==0.29.1``, which are also local files on the project's machines; override
with ``--torch``). It is a separate interpreter, so this does not touch the main environment.

Scores: per video, VBench's own per-video result of each dimension (stored in the run records as
``metrics["vbench_<dimension>"]``); per row of a table, the mean over its videos. The total score is
computed only when all 16 dimensions are present, as VBench's ``scripts/cal_final_score.py`` does:
each dimension normalised with VBench's Min/Max, weighted (dynamic_degree 0.5, the rest 1),
Quality = weighted mean of the 7 quality dimensions, Semantic = weighted mean of the 9 semantic ones,
Total = (4 Quality + 1 Semantic) / 5. Otherwise only the per-dimension scores are reported.

Weights: every dimension but temporal_flickering needs model files in ``$VBENCH_CACHE_DIR`` (default
``~/.cache/vbench``). VBench would download them at run time; here nothing is downloaded: a dimension
whose files are missing is skipped with one line naming each file, where to get it and where it goes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BenchError

VBENCH_VERSION = "0.1.5"
DEFAULT_TORCH = ("torch==2.14.1", "torchvision==0.29.1")
ENV_DIR_NAME = ".venv-vbench"
PYTHON_ENV_VAR = "SENCACHE_VBENCH_PYTHON"
MODES = ("custom_input", "vbench_standard")

# The 16 dimensions, in VBench's order (scripts/constant.py TASK_INFO, with underscores).
DIMENSIONS = (
    "subject_consistency", "background_consistency", "temporal_flickering", "motion_smoothness",
    "dynamic_degree", "aesthetic_quality", "imaging_quality", "object_class", "multiple_objects",
    "human_action", "color", "spatial_relationship", "scene", "appearance_style", "temporal_style",
    "overall_consistency",
)
QUALITY = ("subject_consistency", "background_consistency", "temporal_flickering", "motion_smoothness",
           "aesthetic_quality", "imaging_quality", "dynamic_degree")
SEMANTIC = ("object_class", "multiple_objects", "human_action", "color", "spatial_relationship", "scene",
            "appearance_style", "temporal_style", "overall_consistency")
# VBench scripts/constant.py NORMALIZE_DIC: (Min, Max) per dimension.
NORMALIZE = {
    "subject_consistency": (0.1462, 1.0), "background_consistency": (0.2615, 1.0),
    "temporal_flickering": (0.6293, 1.0), "motion_smoothness": (0.706, 0.9975), "dynamic_degree": (0.0, 1.0),
    "aesthetic_quality": (0.0, 1.0), "imaging_quality": (0.0, 1.0), "object_class": (0.0, 1.0),
    "multiple_objects": (0.0, 1.0), "human_action": (0.0, 1.0), "color": (0.0, 1.0),
    "spatial_relationship": (0.0, 1.0), "scene": (0.0, 0.8222), "appearance_style": (0.0009, 0.2855),
    "temporal_style": (0.0, 0.364), "overall_consistency": (0.0, 0.364),
}
WEIGHT = {dim: 0.5 if dim == "dynamic_degree" else 1.0 for dim in DIMENSIONS}  # DIM_WEIGHT
QUALITY_WEIGHT, SEMANTIC_WEIGHT = 4.0, 1.0
# VBench refuses these in custom_input mode: they need the prompt suite's auxiliary info.
CUSTOM_UNSUPPORTED = frozenset({"object_class", "multiple_objects", "scene", "appearance_style", "color",
                                "spatial_relationship"})

_CLIP_B32 = ("clip_model/ViT-B-32.pt", "https://openaipublic.azureedge.net/clip/models/"
             "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt")
_GRIT = ("grit_model/grit_b_densecap_objectdet.pth",
         "https://datarelease.blob.core.windows.net/grit/models/grit_b_densecap_objectdet.pth")
_VICLIP = ("ViCLIP/ViClip-InternVid-10M-FLT.pth",
           "https://huggingface.co/OpenGVLab/VBench_Used_Models/resolve/main/ViClip-InternVid-10M-FLT.pth")
# Files each dimension reads from the cache dir when VBench runs with local=True (vbench 0.1.5
# utils.init_submodules and aesthetic_quality.py): (path under the cache dir, where to get it).
WEIGHT_FILES: dict[str, tuple[tuple[str, str], ...]] = {
    "temporal_flickering": (),
    "subject_consistency": (
        ("dino_model/facebookresearch_dino_main", "a clone of https://github.com/facebookresearch/dino"),
        ("dino_model/dino_vitbase16_pretrain.pth",
         "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth")),
    "background_consistency": (_CLIP_B32,),
    "appearance_style": (_CLIP_B32,),
    "aesthetic_quality": (
        ("clip_model/ViT-L-14.pt", "https://openaipublic.azureedge.net/clip/models/"
         "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt"),
        ("aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth",
         "https://github.com/LAION-AI/aesthetic-predictor/blob/main/sa_0_4_vit_l_14_linear.pth?raw=true")),
    "imaging_quality": (("pyiqa_model/musiq_spaq_ckpt-358bb6af.pth", "https://github.com/chaofengc/IQA-PyTorch/"
                         "releases/download/v0.1-weights/musiq_spaq_ckpt-358bb6af.pth"),),
    "motion_smoothness": (("amt_model/amt-s.pth", "https://huggingface.co/lalala125/AMT/resolve/main/amt-s.pth"),),
    "dynamic_degree": (("raft_model/models/raft-things.pth",
                        "models.zip from https://dl.dropboxusercontent.com/s/4j4z58wuv8o0mfz/models.zip, "
                        "unzipped in raft_model/"),),
    "human_action": (("umt_model/l16_ptk710_ftk710_ftk400_f16_res224.pth", "https://huggingface.co/OpenGVLab/"
                      "VBench_Used_Models/resolve/main/l16_ptk710_ftk710_ftk400_f16_res224.pth"),),
    "object_class": (_GRIT,), "multiple_objects": (_GRIT,), "color": (_GRIT,), "spatial_relationship": (_GRIT,),
    "scene": (("caption_model/tag2text_swin_14m.pth", "https://huggingface.co/spaces/xinyu1205/recognize-anything/"
               "resolve/main/tag2text_swin_14m.pth"),),
    "temporal_style": (_VICLIP,), "overall_consistency": (_VICLIP,),
}
# Beyond the cache-dir files (VBench also needs these, which this harness does not check for).
EXTRA_NEEDS = {
    "object_class": "detectron2 installed in the VBench environment", "multiple_objects": "detectron2",
    "color": "detectron2", "spatial_relationship": "detectron2",
    "scene": "bert-base-uncased in the Hugging Face cache of the VBench environment",
}

Log = Callable[[str], None]


# -- scores -------------------------------------------------------------------------------------
def check_dimensions(dims: Sequence[str], mode: str = "custom_input") -> list[str]:
    """The dimensions, validated; BenchError naming the bad one and the valid ones."""
    if mode not in MODES:
        raise BenchError(f"vbench mode {mode!r} is not one of {', '.join(MODES)}")
    out = []
    for dim in dims:
        if dim not in DIMENSIONS:
            raise BenchError(f"unknown VBench dimension {dim!r} (valid: {', '.join(DIMENSIONS)})")
        if mode == "custom_input" and dim in CUSTOM_UNSUPPORTED:
            raise BenchError(f"VBench dimension {dim} needs the standard prompt suite: use mode vbench_standard "
                             f"(custom_input refuses {', '.join(sorted(CUSTOM_UNSUPPORTED))})")
        if dim not in out:
            out.append(dim)
    return out


def normalised(dim: str, value: float) -> float:
    lo, hi = NORMALIZE[dim]
    return (value - lo) / (hi - lo)


def total_score(scores: dict[str, float | None]) -> dict | None:
    """VBench's Quality, Semantic and Total scores from the 16 per-dimension scores; None if any is missing."""
    if any(scores.get(dim) is None for dim in DIMENSIONS):
        return None
    weighted = {dim: normalised(dim, float(scores[dim])) * WEIGHT[dim] for dim in DIMENSIONS}
    quality = sum(weighted[d] for d in QUALITY) / sum(WEIGHT[d] for d in QUALITY)
    semantic = sum(weighted[d] for d in SEMANTIC) / sum(WEIGHT[d] for d in SEMANTIC)
    total = (QUALITY_WEIGHT * quality + SEMANTIC_WEIGHT * semantic) / (QUALITY_WEIGHT + SEMANTIC_WEIGHT)
    return {"quality": quality, "semantic": semantic, "total": total, "weighted_normalised": weighted}


def dimension_scores(metrics: dict) -> dict[str, float]:
    """The ``vbench_<dimension>`` entries of a metrics dict, keyed by dimension."""
    return {key[len("vbench_"):]: value for key, value in metrics.items()
            if key.startswith("vbench_") and key[len("vbench_"):] in DIMENSIONS and value is not None}


# -- weights --------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """Where VBench looks for its model files: $VBENCH_CACHE_DIR, else ~/.cache/vbench."""
    env = os.environ.get("VBENCH_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "vbench"


def missing_weights(dims: Sequence[str], cache: Path | None = None) -> dict[str, str]:
    """One line per dimension with missing files: each file (its full path, i.e. where it goes) and its source."""
    cache = cache or cache_dir()
    out: dict[str, str] = {}
    for dim in dims:
        missing = [f"{cache / rel} (from {source})" for rel, source in WEIGHT_FILES[dim] if not (cache / rel).exists()]
        if missing:
            out[dim] = (f"VBench {dim}: skipped, missing {'; '.join(missing)}: put them at those paths under "
                        f"$VBENCH_CACHE_DIR ({cache}); nothing is downloaded here")
    return out


# -- the environment -----------------------------------------------------------------------------
def default_env_dir() -> Path:
    """``.venv-vbench`` beside this package's checkout (the repository root), else in the working directory."""
    root = Path(__file__).resolve().parents[2]
    return root / ENV_DIR_NAME if (root / "pyproject.toml").is_file() else Path.cwd() / ENV_DIR_NAME


def env_python(env: Path | None = None) -> Path:
    """The VBench environment's interpreter: $SENCACHE_VBENCH_PYTHON, else ``<env>/bin/python``."""
    if env is None and os.environ.get(PYTHON_ENV_VAR):
        return Path(os.environ[PYTHON_ENV_VAR])
    return (env or default_env_dir()) / "bin" / "python"


def require_env(python: Path) -> Path:
    if not python.exists():
        raise BenchError(f"no VBench environment at {python}: create it with `sencache-bench vbench setup` "
                         f"(or `make vbench-env`), or point ${PYTHON_ENV_VAR} at an interpreter that has vbench")
    return python


def setup_commands(env: Path, torch_reqs: Sequence[str] = DEFAULT_TORCH,
                   base_python: str | None = None) -> list[list[str]]:
    """The commands that create the VBench environment (each idempotent)."""
    pip = [str(env / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    cmds = []
    if not (env / "bin" / "python").exists():
        cmds.append([base_python or _base_python(), "-m", "venv", str(env)])
    cmds.append([*pip, *torch_reqs])
    cmds.append([*pip, f"vbench=={VBENCH_VERSION}", *torch_reqs])  # torch pinned again: vbench must not move it
    cmds.append([str(env / "bin" / "python"), "-c", CHECK_IMPORTS])
    return cmds


CHECK_IMPORTS = ("import numpy, torch, torchvision, cv2, transformers, vbench; "
                 "print('vbench', vbench.__file__, 'torch', torch.__version__, 'torchvision', torchvision.__version__, "
                 "'numpy', numpy.__version__, 'transformers', transformers.__version__)")


def _base_python() -> str:
    """A Python to make the venv with: the interpreter this venv was made from (it has the venv module)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return base if Path(base).exists() else shutil.which("python3") or sys.executable


def setup_env(env: Path, torch_reqs: Sequence[str] = DEFAULT_TORCH, log: Log = print) -> None:
    for cmd in setup_commands(env, torch_reqs):
        log("$ " + " ".join(cmd))
        done = subprocess.run(cmd)
        if done.returncode != 0:
            raise BenchError(f"VBench environment set-up failed at `{' '.join(cmd)}` (exit {done.returncode}); "
                             f"see the output above. The environment {env} is left as it is: rerun to resume")


# -- running --------------------------------------------------------------------------------------
@dataclass
class Video:
    id: str  # the caller's key for this video (a record path, a reference key)
    path: Path
    prompt: str
    index: int = 0  # standard mode: the video's index i in "{prompt}-{i}.mp4" (0..4)


@dataclass
class VBenchResult:
    per_video: dict[str, dict[str, float]] = field(default_factory=dict)  # video id -> {dimension: score}
    aggregate: dict[str, float] = field(default_factory=dict)  # dimension -> VBench's own aggregate
    skipped: dict[str, str] = field(default_factory=dict)  # dimension -> why (one line)
    eval_results: list[str] = field(default_factory=list)  # VBench's own *_eval_results.json files
    log: Path | None = None

    @property
    def total(self) -> dict | None:
        return total_score(self.aggregate)


WORKER = Path(__file__).with_name("vbench_worker.py")


def run_vbench(videos: Sequence[Video], dims: Sequence[str], work: Path, *, mode: str = "custom_input",
               device: str = "cpu", python: Path | None = None, name: str = "sencache", log: Log = print,
               timeout: float | None = None) -> VBenchResult:
    """Score ``videos`` on ``dims`` with VBench in its own environment; files are exchanged under ``work``.

    Dimensions with missing weight files are skipped (one line each, through ``log`` and in
    ``result.skipped``); a dimension that fails inside VBench is skipped with its last error line.
    Standard mode names files ``{prompt}-{index}.mp4``, so videos that share both (a run and its
    reference) go to separate batches (separate ``VBench.evaluate`` calls in one worker process);
    ``aggregate`` is then the mean over all videos, and VBench's own aggregate with one batch.
    """
    dims = check_dimensions(dims, mode)
    result = VBenchResult()
    for dim, line in missing_weights(dims).items():
        log(line)
        result.skipped[dim] = line
    ready = [d for d in dims if d not in result.skipped]
    if not ready or not videos:
        return result
    python = require_env(python or env_python())
    batches = _batches(videos) if mode == "vbench_standard" else [list(videos)]
    data = _run_worker(batches, ready, Path(work), mode=mode, device=device, python=python, name=name,
                       timeout=timeout)
    result.log = Path(work) / "vbench.log"
    for part in data["batches"]:
        for dim, why in part.get("failed", {}).items():
            if dim not in result.skipped:
                line = f"VBench {dim}: failed inside VBench: {why} (full output in {result.log})"
                log(line)
                result.skipped[dim] = line
        for vid, scores in part.get("per_video", {}).items():
            result.per_video.setdefault(vid, {}).update(scores)
        result.eval_results += part.get("eval_results", [])
        for dim, ids in part.get("unmatched", {}).items():
            if ids and dim not in result.skipped:
                log(f"VBench {dim}: no result for {len(ids)} video(s), e.g. {ids[0]}"
                    + (" (standard mode scores only the VBench suite's prompts)" if mode == "vbench_standard" else ""))
    if len(batches) == 1:
        result.aggregate = {d: float(v) for d, v in data["batches"][0].get("aggregate", {}).items() if v is not None}
    else:
        for dim in ready:
            values = [s[dim] for s in result.per_video.values() if dim in s]
            if values:
                result.aggregate[dim] = sum(values) / len(values)
    return result


def _batches(videos: Sequence[Video]) -> list[list[Video]]:
    """Split so that no batch has two videos with the same (prompt, index)."""
    batches: list[tuple[set, list[Video]]] = []
    for v in videos:
        key = (v.prompt, v.index)
        for keys, batch in batches:
            if key not in keys:
                keys.add(key)
                batch.append(v)
                break
        else:
            batches.append(({key}, [v]))
    return [batch for _, batch in batches]


def _run_worker(batches: list[list[Video]], dims: Sequence[str], work: Path, *, mode: str, device: str,
                python: Path, name: str, timeout: float | None) -> dict:
    """One worker process for every batch (VBench's imports are paid once); batch k in ``work/batch-k``.

    Every path handed to the worker is absolute (it runs with ``cwd=work``); abspath, not resolve, so a
    virtual environment's python symlink stays the environment's interpreter.
    """
    work, python = Path(os.path.abspath(work)), Path(os.path.abspath(python))
    work.mkdir(parents=True, exist_ok=True)
    job = {"name": name, "mode": mode, "device": device, "dimensions": list(dims),
           "batches": [{"work": str((work if len(batches) == 1 else work / f"batch-{k}").resolve()),
                        "videos": [{"id": v.id, "path": str(Path(v.path).resolve()), "prompt": v.prompt,
                                    "index": v.index} for v in batch]}
                       for k, batch in enumerate(batches)]}
    job_path, out_path, log_path = work / "job.json", work / "result.json", work / "vbench.log"
    job_path.write_text(json.dumps(job, indent=1))
    out_path.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    with open(log_path, "w") as logf:
        try:
            done = subprocess.run([str(python), str(WORKER), str(job_path), str(out_path)], stdout=logf,
                                  stderr=subprocess.STDOUT, env=env, cwd=work, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"VBench did not finish within {timeout:g} s; its output is in {log_path}") from None
    if not out_path.is_file():
        raise BenchError(f"VBench exited {done.returncode} without a result ({_tail(log_path)}); "
                         f"full output in {log_path}")
    data = _checked_result(out_path, len(batches), log_path)
    if data.get("error"):
        raise BenchError(f"VBench could not run: {data['error']}; full output in {log_path}")
    return data


def _checked_result(out_path: Path, batches: int, log_path: Path) -> dict:
    """The worker's result file, checked before any score is written back: one batch entry per batch,
    and per-video scores that are finite numbers."""
    import math

    rerun = f"full output in {log_path}; rerun the same command to score again"
    try:
        data = json.loads(out_path.read_bytes())
    except (OSError, ValueError) as err:
        raise BenchError(f"VBench's result {out_path} is unreadable ({err.__class__.__name__}); {rerun}") from None
    if not isinstance(data, dict):
        raise BenchError(f"VBench's result {out_path} is not a JSON object; {rerun}")
    if data.get("error"):
        return data
    parts = data.get("batches")
    if not isinstance(parts, list) or len(parts) != batches or not all(isinstance(b, dict) for b in parts):
        raise BenchError(f"VBench's result {out_path} has {len(parts) if isinstance(parts, list) else 'no'} "
                         f"batch entries for {batches} batch(es); {rerun}")
    for part in parts:
        per_video = part.get("per_video", {})
        ok = isinstance(per_video, dict) and all(
            isinstance(scores, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                             and math.isfinite(v) for v in scores.values())
            for scores in per_video.values())
        if not ok:
            raise BenchError(f"VBench's result {out_path} holds a per-video score that is not a finite number; "
                             f"{rerun}")
    return data


def _tail(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
