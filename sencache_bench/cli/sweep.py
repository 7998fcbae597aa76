"""`sencache-bench sweep SPEC.yaml --set policy.eps_main=0.05,0.1,0.2 --set policy.max_reuse=2,3`: run a grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..results.tables import aggregate, render
from ._console import load_results, print_table

SetOption = Annotated[list[str], typer.Option("--set", help=(
    "KEY=VALUE or KEY=V1,V2,... (repeatable): every comma list is an axis of the grid, the run is their "
    "cartesian product; commas inside [] {} or quotes do not split."))]


def sweep(
    spec: Annotated[Path, typer.Argument(help="YAML experiment spec (see configs/).")],
    overrides: SetOption = [],  # noqa: B006 - Typer needs a literal default
    force: Annotated[bool, typer.Option("--force", help="Recompute records that already exist.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no table.")] = False,
    plot: Annotated[bool, typer.Option("--plot", help="Then write the figures to OUTPUT_DIR/plots "
                                                      "(as `sencache-bench plot`).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the grid points and stop.")] = False,
) -> None:
    """Run every grid point of a spec, sharing the uncached references and the loaded pipeline.

    Under torchrun (or srun) the grid's videos are dealt across ranks; rank 0 prints the merged table.
    """
    from ..distributed import barrier, detect, device_for
    from ..interrupts import Interrupted, interrupted_line, stop_on_signals
    from ..sweep import grid_share, resolve_grid, run_grid

    grid = resolve_grid(spec, overrides)
    console = Console(stderr=True, quiet=quiet and not dry_run, highlight=False, soft_wrap=True)
    loud = Console(stderr=True, highlight=False, soft_wrap=True)
    if dry_run:
        for i, point in enumerate(grid, 1):
            console.print(f"{i}/{len(grid)}: {escape(point.label)} -> {point.spec.output_dir}")
        return
    dist = detect()
    for point in grid:
        point.spec.device = device_for(point.spec.device, dist)
    rank = f"rank {dist.rank}/{dist.world}: " if dist.world > 1 else ""
    total, done = grid_share(grid, dist, force=force)
    finished = [done]

    def log(message: str) -> None:
        (loud if message.startswith("warning:") else console).print(message, markup=False)

    try:
        with stop_on_signals(), Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                         TimeElapsedColumn(), console=console, disable=quiet) as progress:
            points = progress.add_task("grid", total=len(grid))
            steps = progress.add_task("steps", total=grid[0].spec.sampling.steps)

            def on_point(i, point, pending):
                progress.update(points, completed=i, description=f"{i + 1}/{len(grid)} {point.label}")
                progress.console.print(f"{rank}{i + 1}/{len(grid)}: {escape(point.label)}: {pending} video(s) to run")

            def on_video():
                finished[0] += 1

            run_grid(grid, force=force, log=log, on_point=on_point, dist=dist, on_video=on_video,
                     on_step=lambda i, n: progress.update(steps, completed=i, total=n))
            progress.update(points, completed=len(grid))
    except Interrupted as stop:
        loud.print(f"{rank}{interrupted_line(finished[0], total)}", markup=False)
        raise typer.Exit(stop.exit_code) from None
    merged = barrier(dist)
    if not dist.is_main:
        return
    outputs = list(dict.fromkeys(p.spec.output_dir for p in grid))
    if not merged:
        console.print(f"{rank}done; run `sencache-bench table {outputs[0]}` once every rank has finished")
        return
    if plot:
        from ..results.plots import plot_results

        for out in outputs:
            paths, notes = plot_results(out, out / "plots")
            for note in notes:
                console.print(f"[yellow]note:[/] {escape(note)}")
            for path in paths:
                print(path)
    if not quiet:
        for out in outputs:
            records = load_results(out, required=False)
            if records:
                print_table(render(aggregate(records), "rich"))
