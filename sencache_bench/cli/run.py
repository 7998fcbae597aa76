"""`sencache-bench run SPEC.yaml`: references + policy runs, then the table of the results dir."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..distributed import barrier, detect, device_for, shard
from ..errors import BenchError
from ..interrupts import Interrupted, interrupted_line, stop_on_signals
from ..results.tables import aggregate, render
from ._console import load_results, print_table, warn_timing

SetOption = Annotated[list[str], typer.Option("--set", help="Override a spec field, e.g. --set sampling.steps=10 "
                                                            "(repeatable; the value is parsed as YAML).")]


def run(
    spec: Annotated[Path, typer.Argument(help="YAML experiment spec (see configs/).")],
    overrides: SetOption = [],  # noqa: B006 - Typer needs a literal default
    force: Annotated[bool, typer.Option("--force", help="Recompute records that already exist.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no table.")] = False,
    report: Annotated[bool, typer.Option("--report", help="At the end, also write OUTPUT_DIR/report.html "
                                                          "(`sencache-bench report`).")] = False,
) -> None:
    """Generate uncached references and policy runs for a spec; write records; print the table."""
    from ..runner import Runner, check_output_dir  # torch and diffusers: imported when a command needs them
    from ..spec import load_spec

    resolved = load_spec(spec, overrides)
    check_output_dir(resolved.output_dir)
    dist = detect()
    resolved.device = device_for(resolved.device, dist)
    console = Console(stderr=True, quiet=quiet)
    loud = Console(stderr=True, highlight=False, soft_wrap=True)  # warnings and the interrupt line, even with -q

    def log(message: str) -> None:
        (loud if message.startswith("warning:") else console).print(message, markup=False)

    runner = Runner(resolved, force=force, log=log)
    mine = shard(runner.items(), dist)
    todo = [item for item in runner.pending() if item in mine]
    done = len(mine) - len(todo)
    rank = f"rank {dist.rank}/{dist.world}: " if dist.world > 1 else ""
    if done:
        console.print(f"{rank}{done} of {len(mine)} videos already have records in {runner.run_dir()} "
                      f"(use --force to recompute)")
    finished = done
    try:
        with stop_on_signals(), Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                         TimeElapsedColumn(), console=console, disable=quiet) as progress:
            videos = progress.add_task(f"{resolved.model_name} / {resolved.policy.name}", total=len(todo))
            steps = progress.add_task("steps", total=resolved.sampling.steps)

            def one_done(i, path):
                nonlocal finished
                finished += 1
                progress.advance(videos)

            runner.run_items(todo, on_step=lambda i, n: progress.update(steps, completed=i, total=n),
                             on_done=one_done)
    except Interrupted as stop:
        loud.print(f"{rank}{interrupted_line(finished, len(mine))}", markup=False)
        raise typer.Exit(stop.exit_code) from None
    except OSError as err:  # a write outside store.py (the mp4 encoder) on a full disk or a read-only folder
        if err.errno is None:
            raise
        where = err.filename or resolved.output_dir
        raise BenchError(f"cannot write {where}: {os.strerror(err.errno)}; free space or choose a writable "
                         f"output.dir, then rerun (finished records are kept)") from None
    merged = barrier(dist)
    if not dist.is_main:
        return
    if not merged:
        console.print(f"{rank}done; run `sencache-bench table {resolved.output_dir}` once every rank has finished")
        return
    if resolved.vbench is not None:  # metrics: [..., vbench]: VBench in its own environment, over the saved videos
        from ..results.vbench_scores import score_spec_run

        score_spec_run(runner, log=console.print)
    records = load_results(resolved.output_dir)
    warn_timing(records)
    if not quiet:
        print_table(render(aggregate(records), "rich"))
    if report:
        from ..results.report import write_report

        console.print(f"report: {write_report(resolved.output_dir, log=log)}", markup=False)
