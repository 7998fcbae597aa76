"""Runs inside the VBench environment (its own interpreter): ``python vbench_worker.py JOB.json RESULT.json``.

A plain script: it imports vbench, torch and the standard library, never sencache_bench (which is not
installed there). The job (written by :func:`sencache_bench.metrics.vbench.run_vbench`) lists the
videos with their prompts, the dimensions and the mode. The videos are linked into one folder under
the names VBench expects: custom_input mode takes every mp4 in the folder with its prompt passed as
``prompt_list`` (file name -> prompt); vbench_standard mode needs ``{prompt}-{i}.mp4`` for the suite's
prompts (VBench_full_info.json, shipped in the vbench package). Each dimension is evaluated by its
own ``VBench.evaluate`` call (local=True: no downloads), so one failing dimension does not lose the
others; Ctrl-C or a ``sys.exit`` inside VBench stops the worker at once (one line on stderr, exit 130 or the
exit code, no result file). The job holds one or more batches (standard mode: a run's video and its reference's share a
file name, so they go to separate batches); the result file holds, per batch, VBench's aggregate per
dimension and its per-video results mapped back to the job's video ids.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from pathlib import Path

# This file sits beside sencache_bench/metrics/vbench.py: drop its folder from the path so that
# `import vbench` finds the vbench package, not that module.
_HERE = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if (Path(p).resolve() if p else Path.cwd().resolve()) != _HERE]


def _link(src: Path, dst: Path) -> None:
    try:
        os.symlink(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _number(value):
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    try:  # numpy scalars and 0-d tensors
        return float(value)
    except (TypeError, ValueError):
        return None


class Stopped(BaseException):
    """Ctrl-C or SystemExit during a dimension: ends the worker (``main``) instead of skipping to the next one."""

    def __init__(self, line: str, code: int):
        super().__init__(line)
        self.line, self.code = line, code


def _stop_code(err: BaseException) -> int:
    if isinstance(err, KeyboardInterrupt):
        return 130
    code = getattr(err, "code", None)
    return code if isinstance(code, int) and code != 0 else 1


def run_batch(VBench, device, full_info: str, job: dict, batch: dict) -> dict:
    """Lay one batch's videos out as VBench expects and evaluate each dimension on them."""
    result = {"aggregate": {}, "per_video": {}, "failed": {}, "unmatched": {}, "eval_results": []}
    work = Path(batch["work"])
    videos_dir = work / "videos"
    if videos_dir.exists():
        shutil.rmtree(videos_dir)
    videos_dir.mkdir(parents=True)
    out_dir = work / "vbench_output"
    out_dir.mkdir(exist_ok=True)
    mode = job["mode"]
    by_name: dict[str, str] = {}  # file name in videos_dir -> video id
    prompts: dict[str, str] = {}
    for k, video in enumerate(batch["videos"]):
        src = Path(video["path"])
        suffix = src.suffix or ".mp4"
        if mode == "vbench_standard":
            name = f"{video['prompt']}-{video['index']}{suffix}"
            if "/" in name or name in by_name:
                raise ValueError(f"standard mode: cannot name {src} {name!r} (a '/' in the prompt, or two videos "
                                 f"with the same prompt and index in one batch)")
        else:
            name = f"v{k:05d}{suffix}"
            prompts[name] = video["prompt"]
        _link(src, videos_dir / name)
        by_name[name] = video["id"]

    bench = VBench(device, full_info, str(out_dir))
    for dim in job["dimensions"]:
        run_name = f"{job['name']}_{dim}"
        kwargs = {"prompt_list": prompts} if mode == "custom_input" else {}
        try:
            bench.evaluate(videos_path=str(videos_dir), name=run_name, dimension_list=[dim], local=True, mode=mode,
                           **kwargs)
        except (KeyboardInterrupt, SystemExit) as err:  # the user (or VBench) means stop: not this dimension only
            what = "interrupted" if isinstance(err, KeyboardInterrupt) else f"VBench called sys.exit({err.code!r})"
            raise Stopped(f"vbench worker: {what} during dimension {dim!r}: stopped, no result written",
                          _stop_code(err)) from None
        except Exception as err:  # noqa: BLE001 - one dimension's failure must not lose the others
            traceback.print_exc()
            last = (str(err).strip().splitlines() or [""])[-1]
            result["failed"][dim] = f"{type(err).__name__}: {last}"[:400]
            continue
        path = out_dir / f"{run_name}_eval_results.json"
        data = json.loads(path.read_text())
        result["eval_results"].append(str(path))
        aggregate, per_video = data[dim][0], data[dim][1]
        result["aggregate"][dim] = _number(aggregate)
        seen = set()
        for item in per_video if isinstance(per_video, list) else []:
            if not isinstance(item, dict) or "video_path" not in item:
                continue
            vid = by_name.get(Path(item["video_path"]).name)
            value = _number(item.get("video_results"))
            if vid is not None and value is not None:
                result["per_video"].setdefault(vid, {})[dim] = value
                seen.add(vid)
        result["unmatched"][dim] = sorted(set(by_name.values()) - seen)
    return result


def _run(job_path: str, out_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    result: dict = {"batches": []}

    def finish() -> int:
        Path(out_path).write_text(json.dumps(result, indent=1))
        return 0

    try:
        import torch
        import vbench
        from vbench import VBench
    except Exception as err:  # noqa: BLE001 - reported to the caller in the result file
        result["error"] = f"cannot import vbench in {sys.executable}: {type(err).__name__}: {err}"
        return finish()
    full_info = str(Path(vbench.__file__).with_name("VBench_full_info.json"))
    device = torch.device(job.get("device", "cpu"))
    try:
        for batch in job["batches"]:
            result["batches"].append(run_batch(VBench, device, full_info, job, batch))
    except ValueError as err:
        result["error"] = str(err)
    return finish()


def main(job_path: str, out_path: str) -> int:
    """Stopped on Ctrl-C or VBench's sys.exit: one line on stderr and no result file (the caller then reports
    "VBench exited N without a result (<that line>)"), never a half-evaluated result that looks complete."""
    try:
        return _run(job_path, out_path)
    except Stopped as stop:
        print(stop.line, file=sys.stderr)
        return stop.code
    except KeyboardInterrupt:  # outside a dimension (importing or loading VBench, laying out videos)
        print("vbench worker: interrupted: stopped, no result written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
