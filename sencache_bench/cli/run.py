"""`sencache-bench run SPEC.yaml`: references + policy runs, then the table of the results dir."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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
    from ..api import run as run_spec  # torch and diffusers: imported when a command needs them

    console = Console(stderr=True, quiet=quiet)
    loud = Console(stderr=True, highlight=False, soft_wrap=True)  # warnings and the interrupt line, even with -q
    state: dict = {}  # the plan (api.RunPlan) and the videos finished so far

    def log(message: str) -> None:
        (loud if message.startswith("warning:") else console).print(message, markup=False)

    try:
        with stop_on_signals(), ExitStack() as stack:

            def on_start(plan) -> None:  # the spec is valid: the progress bar starts (a spec error prints alone)
                state.update(plan=plan, finished=plan.done, rank=_rank(plan))
                if plan.done:
                    console.print(f"{state['rank']}{plan.done} of {plan.items} videos already have records in "
                                  f"{plan.run_dir} (use --force to recompute)")
                progress = stack.enter_context(Progress(TextColumn("{task.description}"), BarColumn(),
                                                        MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                                                        disable=quiet))
                videos = progress.add_task(f"{plan.spec.model_name} / {plan.spec.policy.name}", total=plan.todo)
                steps = progress.add_task("steps", total=plan.spec.sampling.steps)
                state["advance"] = lambda: progress.advance(videos)
                state["step"] = lambda i, n: progress.update(steps, completed=i, total=n)

            def on_done(i, path) -> None:
                state["finished"] += 1
                state["advance"]()

            run_spec(spec, overrides, force=force, log=log, on_start=on_start, on_done=on_done,
                     on_step=lambda i, n: state["step"](i, n))
    except Interrupted as stop:  # after the progress bar's last frame
        if "plan" in state:
            loud.print(f"{state['rank']}{interrupted_line(state['finished'], state['plan'].items)}", markup=False)
        raise typer.Exit(stop.exit_code) from None
    plan = state["plan"]
    if not plan.dist.is_main:
        return
    if not plan.merged:
        console.print(f"{state['rank']}done; run `sencache-bench table {plan.spec.output_dir}` once every rank has "
                      f"finished")
        return
    records = load_results(plan.spec.output_dir)
    warn_timing(records)
    if not quiet:
        print_table(render(aggregate(records), "rich"))
    if report:
        from ..results.report import write_report

        console.print(f"report: {write_report(plan.spec.output_dir, log=log)}", markup=False)


def _rank(plan) -> str:
    return f"rank {plan.dist.rank}/{plan.dist.world}: " if plan.dist.world > 1 else ""
