"""Parameter sweeps: one spec, ``--set key=v1,v2,...`` axes, the cartesian product run as one job.

Every grid point is the spec with its overrides, run by its own :class:`Runner` over the same output
directory, so the uncached references are generated once and shared by all points (they are keyed by
model, sampling, prompt and seed, not by policy). The loaded pipeline (the runner's Session) is handed
from point to point whenever the model, dtype, device and scheduler shift agree; records already on
disk are skipped as with ``run``, so a sweep resumes where it stopped (after Ctrl-C or kill -9 alike).
Under torchrun (or srun) the (point, item) pairs are dealt across ranks (distributed.shard_grid):
no pair twice, none left out; rank 0 prints the merged table once every rank is done.

A ``--set`` value is split on commas outside brackets, braces and quotes: ``policy.eps_main=0.05,0.1``
is an axis of two values, ``sampling.seeds=[0,1]`` one value, ``prompts='"a, b"'`` one string.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .distributed import Dist, shard_grid
from .errors import SpecError
from .runner import Runner, Session, StepCallback, check_output_dir
from .spec import ResolvedSpec, load_spec


def split_values(value: str) -> list[str]:
    """``a,b`` -> [a, b]; commas inside [], {}, () or quotes do not split."""
    parts, depth, quote, current = [], 0, None, []
    for ch in value:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return parts


def expand_grid(overrides: list[str]) -> tuple[list[str], list[list[str]]]:
    """(overrides common to every point, the grid points: each a list of ``KEY=VALUE``), in --set order."""
    fixed, axes, seen = [], [], set()
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SpecError(f"--set {item!r}: expected KEY=VALUE or KEY=V1,V2,..., e.g. --set policy.eps_main=0.1,0.2")
        if key in seen:
            raise SpecError(f"--set {key}: given twice; list every value once, comma-separated")
        seen.add(key)
        values = split_values(value)
        if any(v == "" for v in values):
            raise SpecError(f"--set {item!r}: an empty value in the list")
        if len(values) == 1:
            fixed.append(f"{key}={values[0]}")
        else:
            axes.append([f"{key}={v}" for v in values])
    return fixed, [list(point) for point in itertools.product(*axes)]


@dataclass
class GridPoint:
    overrides: list[str]
    spec: ResolvedSpec
    records: list[Path] = field(default_factory=list)
    reused_session: bool = False

    @property
    def label(self) -> str:
        return " ".join(self.overrides) or "(spec as is)"


def resolve_grid(spec_path: Path, overrides: list[str]) -> list[GridPoint]:
    """Every grid point's resolved spec, all checked before anything runs (a bad one: SpecError, exit 2)."""
    fixed, points = expand_grid(overrides)
    grid = []
    for point in points:
        try:
            resolved = load_spec(spec_path, fixed + point)
        except SpecError as err:
            where = f" (grid point {' '.join(point)})" if point else ""
            raise SpecError(f"{err}{where}") from None
        check_output_dir(resolved.output_dir)
        grid.append(GridPoint(point, resolved))
    return grid


def _shareable(session: Session, spec: ResolvedSpec) -> bool:
    """The loaded pipeline serves ``spec`` too: same model, dtype, device and scheduler shift."""
    old = session.spec
    return (old.model_identity() == spec.model_identity() and old.device == spec.device
            and old.sampling.shift == spec.sampling.shift and old.family.name == spec.family.name)


def run_grid(grid: list[GridPoint], force: bool = False, log: Callable[[str], None] = print,
             on_point: Callable[[int, GridPoint, int], None] | None = None,
             on_step: StepCallback | None = None, dist: Dist = Dist(),
             on_video: Callable[[], None] | None = None) -> list[GridPoint]:
    """Run this rank's share of every point (its pending items); the pipeline is loaded once and shared
    where it can be. ``on_video`` is called after each finished record."""
    runners = [Runner(point.spec, force=force, log=log) for point in grid]
    mine = shard_grid(list(range(len(grid))), lambda i: runners[i].items(), dist)
    session: Session | None = None
    for i, point in enumerate(grid):
        runner = runners[i]
        if session is not None and _shareable(session, point.spec):
            session.spec = point.spec  # the sampling arguments of this point (call_kwargs read it per call)
            runner._session = session
            point.reused_session = True
        share = [item for j, item in mine if j == i]
        todo = [item for item in runner.pending() if item in share]
        if on_point is not None:
            on_point(i, point, len(todo))
        point.records.extend(runner.run_items(todo, on_step=on_step,
                                              on_done=(lambda i, path: on_video()) if on_video is not None else None))
        if runner._session is not None:
            session = runner._session
    return grid


def grid_share(grid: list[GridPoint], dist: Dist = Dist(), force: bool = False) -> tuple[int, int]:
    """(videos in this rank's share of the grid, how many of them already have a finished record)."""
    runners = [Runner(point.spec, force=force) for point in grid]
    mine = shard_grid(list(range(len(grid))), lambda i: runners[i].items(), dist)
    pending = {i: runner.pending() for i, runner in enumerate(runners)}
    return len(mine), sum(item not in pending[i] for i, item in mine)
