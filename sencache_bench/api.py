"""The Python API under the CLI: run a spec, load its records, render its table, count FLOPs, match budgets.

    import sencache_bench as sb
    records = sb.run({"model": {"name": "tiny-wan"}, "prompts": ["a red ball"], "policy": {"name": "static",
                      "every": 2}, "output": {"dir": "results/demo"}})
    df = sb.load_results("results/demo")          # one row per record (pandas)
    print(sb.table("results/demo", format="markdown"))

Everything heavy (torch, diffusers, pandas) is imported inside the functions, so ``import sencache_bench``
stays light. The CLI commands ``run`` and ``table`` go through the same code (cli/run.py, cli/table.py).
See docs/api.md.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BenchError

if TYPE_CHECKING:
    import pandas

    from .distributed import Dist
    from .spec import ResolvedSpec

__all__ = ["RunPlan", "flops", "load_results", "load_spec", "match", "run", "table"]


def load_spec(spec: str | Path | Mapping, overrides: list[str] | Mapping[str, Any] | None = None) -> ResolvedSpec:
    """A validated spec from a path, a YAML string or a dict; ``overrides`` as ``["a.b=v", ...]`` or
    ``{"a.b": v}`` (``--set`` on the command line)."""
    from .spec import load_source

    return load_source(spec, overrides)


@dataclass
class RunPlan:
    """What :func:`run` is about to do, handed to its ``on_start`` (the CLI's progress bar and lines)."""

    spec: ResolvedSpec
    run_dir: Path  # where this policy setting's records go
    dist: Dist  # this process's rank under torchrun / srun (rank 0 of 1 otherwise)
    items: int  # (prompt, seed) items of this rank
    todo: int  # of which still without a record (all of them with ``force``)
    #: every rank's records are in (False: ranks under plain srun, not joined); None until the items have run
    merged: bool | None = None

    @property
    def done(self) -> int:
        return self.items - self.todo


def run(spec: str | Path | Mapping, overrides: list[str] | Mapping[str, Any] | None = None, *, force: bool = False,
        log: Callable[[str], None] | None = None, on_start: Callable[[RunPlan], None] | None = None,
        on_step: Callable[[int, int], None] | None = None,
        on_done: Callable[[int, Path], None] | None = None) -> list[dict]:
    """Generate a spec's references and policy runs (items with a record already are kept, unless ``force``);
    the run records of every item of the spec, in spec order. ``sencache-bench run`` is this function.

    Under torchrun or srun each rank runs its share of the items (:mod:`sencache_bench.distributed`) and
    returns its own records; rank 0 returns every item's once the ranks have met (``RunPlan.merged``).
    ``on_start(plan)`` before anything runs, ``on_step(step, steps)`` per denoising step, ``on_done(i, path)``
    per record written."""
    from .distributed import barrier, detect, device_for, shard
    from .parallel import hang_guard
    from .runner import Runner, check_output_dir

    resolved = load_spec(spec, overrides)
    check_output_dir(resolved.output_dir)
    dist = detect()
    resolved.device = device_for(resolved.device, dist)
    log = log or (lambda line: print(line, file=sys.stderr))
    layout = None
    if resolved.parallel is not None:  # one video across ranks: groups of ranks share the items
        from . import parallel

        layout = parallel.setup(resolved.parallel, dist, resolved.device)
        if not layout.is_leader:  # the leader's records hold every rank's figures; the others keep their own
            resolved.output_dir = parallel.rank_dir(resolved.output_dir, dist)  # files beside, out of its tables
    runner = Runner(resolved, force=force, log=log, layout=layout)
    mine = shard(runner.items(), layout.items_dist() if layout else dist)
    todo = [item for item in runner.pending() if item in mine]
    if layout is not None:
        todo = parallel.agree(layout, todo)
    plan = RunPlan(resolved, runner.run_dir(), dist, len(mine), len(todo))
    if on_start is not None:
        on_start(plan)
    try:
        with hang_guard(layout):
            runner.run_items(todo, on_step=on_step, on_done=on_done)
    except OSError as err:  # a write outside store.py (the mp4 encoder) on a full disk or a read-only folder
        if err.errno is None:
            raise
        raise BenchError(f"cannot write {err.filename or resolved.output_dir}: {os.strerror(err.errno)}; free "
                         f"space or choose a writable output.dir, then rerun (finished records are kept)") from None
    plan.merged = barrier(dist)
    every = plan.merged and dist.is_main
    if every and resolved.vbench is not None:  # metrics: [..., vbench]: VBench in its own environment
        from .results.vbench_scores import score_spec_run

        score_spec_run(runner, log=log)
    return [_record(runner.record_path(prompt, seed)) for prompt, seed in (runner.items() if every else mine)]


def _record(path: Path) -> dict:
    from .results.store import read_json

    return {**read_json(path), "_path": str(path)}


def records(results: str | Path, required: bool = True, warn: Callable[[str], None] | None = None) -> list[dict]:
    """The run records under ``results`` (recursively); unreadable or old ones are warned about (``warn``, default:
    a line on stderr) and skipped."""
    from .results.store import load_records

    results = Path(results)
    if not results.is_dir():
        if not required:
            return []
        raise BenchError(f"results directory {results} not found: run `sencache-bench run SPEC.yaml` first")
    found, problems = load_records(results)
    for line in problems:
        (warn or (lambda s: print(f"warning: {s}", file=sys.stderr)))(line)
    if required and not found:
        raise BenchError(f"no run records under {results}: run `sencache-bench run SPEC.yaml` first")
    return found


#: nested parts of a record kept whole in one column (lists and large dicts), not spread over columns
_WHOLE = ("spec", "trace", "metrics_per_frame", "metric_notes", "policy_params", "policy_inputs", "versions",
          "timing", "baseline", "reference", "sampling", "flops_parts")


def load_results(results: str | Path) -> pandas.DataFrame:
    """One row per run record under ``results``: scalars as columns, small dicts spread out with dots
    (``metrics.psnr``, ``flops.total``, ``latency.total_s``, ``nfe_per_branch.cond``); the spec, the trace and
    the other large parts kept whole in their own columns."""
    import pandas as pd

    rows = []
    for rec in records(results):
        flat: dict[str, Any] = {}
        for key, value in rec.items():
            if isinstance(value, dict) and key not in _WHOLE:
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                flat[key] = value
        rows.append(flat)
    return pd.DataFrame(rows)


def table(results: str | Path | list[dict], layout: str = "default", format: str | None = None,
          by_group: bool = False, detect: Mapping[str, float] | None = None, intervals: bool = False):
    """The comparison table of ``results`` (a results directory, or records already loaded). ``format=None``:
    the rows as dicts (one per model, policy and setting; the other layouts: their json rows); else rendered as
    rich (a rich Table), markdown, csv, latex or json (a string). ``detect``: per metric a difference (e.g.
    ``{"psnr": 0.5}``) for which the verdict footnote states how many videos would separate it. ``intervals``: the
    matched layout's every column in rich too (by default a compact table for a terminal)."""
    import json

    from .results.layouts import LAYOUTS, render_layout
    from .results.tables import FORMATS, aggregate, render

    if format is not None and format not in FORMATS:
        raise BenchError(f"--format: unknown format {format!r} (valid: {', '.join(FORMATS)})")
    if layout not in LAYOUTS:
        raise BenchError(f"--layout: unknown layout {layout!r} (valid: {', '.join(LAYOUTS)})")
    if by_group and layout != "default":
        raise BenchError("--by-group applies to the default layout only")
    found = results if isinstance(results, list) else records(results)
    if layout == "default":
        rows = aggregate(found, by_group=by_group)
        return rows if format is None else render(rows, format, by_group=by_group)
    if format is None:
        return json.loads(render_layout(found, layout, "json", dict(detect or {})))
    return render_layout(found, layout, format, dict(detect or {}), intervals=intervals)


def flops(model: str | None = None, *, spec: str | Path | Mapping | None = None, height: int | None = None,
          width: int | None = None, frames: int | None = None, steps: int | None = None,
          nfe: float | None = None) -> dict:
    """Exact FLOPs of a registered full-size model (``sencache-bench flops --format json``): per component,
    with and without attention; with ``nfe`` (computed calls per branch), the cached run's total as well."""
    from .measure.full_size import count_full_size, policy_total

    if (spec is None) == (model is None):
        raise BenchError("give either a model name or a spec (sencache-bench flops --model wan2.1-t2v-1.3b, or "
                         "sencache_bench.flops('wan2.1-t2v-1.3b'))")
    if spec is not None:
        resolved = load_spec(spec)
        if resolved.entry is None:
            raise BenchError(f"{resolved.model_name!r} is not a registered model: FLOPs are counted from the "
                             f"architectures of the registered full-size models")
        name, sampling = resolved.entry.name, resolved.sampling
    else:
        from .models import MODELS

        entry = MODELS.get(model)
        name, sampling = entry.name, entry.defaults
    pick = lambda given, default: default if given is None else given  # noqa: E731
    counted = count_full_size(name, pick(height, sampling.height), pick(width, sampling.width),
                              pick(frames, sampling.frames), pick(steps, sampling.steps), sampling.guidance_scale)
    out = counted.to_dict()
    if nfe is not None:
        cached = policy_total(counted, nfe)
        out["policy"] = {"nfe": nfe, "total": cached.to_dict(),
                         "reduction": 1 - cached.total / counted.total.total,
                         "reduction_no_attn": 1 - cached.no_attn / counted.total.no_attn}
    return out


def match(specs: list[str | Path | Mapping], nfe: list[float] = (), flops: list[float] = (),
          overrides: list[str] | Mapping[str, Any] | None = None, **kwargs) -> list[dict]:
    """Equal-budget matching (``sencache-bench match``): each spec's policy knob tuned so that its NFE (or FLOPs)
    is each target fraction, then the evaluation prompts run at that value; returns the records written.

    ``specs`` and ``overrides``: what :func:`run` accepts (paths, YAML strings or dicts; ``["a.b=v"]`` or
    ``{"a.b": v}``); further keyword arguments go to :func:`sencache_bench.matching.run_match`
    (``tune_file``, ``force``, ``tol``, ``max_evals``, ``log``)."""
    from .matching import parse_targets, run_match
    from .spec import override_list

    points = run_match(list(specs), parse_targets(list(nfe), list(flops)), override_list(overrides), **kwargs)
    return [_record(Path(path)) for point in points for path in point.records]
