"""`sencache-bench match SPEC [SPEC ...] --nfe 0.5 --nfe 0.42`: every policy tuned to the same budgets, then run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from ._console import load_results, print_table

SetOption = Annotated[list[str], typer.Option("--set", help="Override a field of every spec, e.g. --set "
                                                            "output.dir=results/matched (repeatable; YAML value).")]


def match(
    specs: Annotated[list[Path], typer.Argument(help="YAML specs, one per policy (same model and sampling).")],
    nfe: Annotated[list[float], typer.Option("--nfe", help=(
        "Target NFE as a fraction of the steps (per CFG branch), e.g. 0.5; repeatable."))] = [],  # noqa: B006
    flops: Annotated[list[float], typer.Option("--flops", help=(
        "Target FLOPs as a fraction of the uncached video's (no attention matmuls); repeatable."))] = [],  # noqa: B006
    overrides: SetOption = [],  # noqa: B006 - Typer needs a literal default
    tune_prompts: Annotated[Path | None, typer.Option("--tune-prompts", help=(
        "Prompt file to tune on (default: the model's calibration prompts; never the evaluation prompts)."))] = None,
    tol: Annotated[float, typer.Option("--tol", help="Stop the search once the tuned NFE is this close to the "
                                                     "target (in steps).")] = 0.1,
    max_evals: Annotated[int, typer.Option("--max-evals", help="Most knob values tried per target.")] = 10,
    tuned: Annotated[Path | None, typer.Option("--tuned", help=(
        "A tuning file kept from an earlier run (its <output>/match/tuning.json, e.g. configs/calibrated/"
        "bench-t2v_tuning.json): knob values it holds for the same specs are not measured again."))] = None,
    tune_only: Annotated[bool, typer.Option("--tune-only", help="Tune the knobs, run no evaluation (the tuning "
                                                                "file is <output>/match/tuning.json).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Recompute evaluation records that already exist.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no table.")] = False,
    report: Annotated[bool, typer.Option("--report", help="At the end, also write OUTPUT_DIR/report.html per "
                                                          "output folder (`sencache-bench report`).")] = False,
) -> None:
    """Search each policy's budget knob to each target NFE on tuning prompts, then run the evaluation prompts."""
    from ..matching import parse_targets, run_match, summary
    from ..results.layouts import render_layout

    console = Console(stderr=True, quiet=quiet, highlight=False, soft_wrap=True)
    targets = parse_targets(nfe, flops)

    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, disable=quiet)
    tasks: dict[tuple[str, str], int] = {}

    def progress(label: str, phase: str, done: int, total: int | None) -> None:
        """One bar per policy and phase: tuning (generations; its length is known when the search ends), then
        evaluation (videos, with an ETA)."""
        key = (label, phase)
        if key not in tasks:
            what = "tuning generations" if phase == "tuning" else "evaluation videos"
            tasks[key] = bars.add_task(f"{label}: {what}", total=total)
        bars.update(tasks[key], completed=done, total=total)

    with bars:
        points = run_match(specs, targets, overrides, tune_file=tune_prompts, force=force, tol=tol,
                           max_evals=max_evals, log=lambda s: console.print(escape(s)), progress=progress, tuned=tuned,
                           tune_only=tune_only)
    loud = Console(stderr=True, highlight=False, soft_wrap=True)  # warning lines, even with -q
    for line in summary(points):
        (loud if line.startswith("warning:") else console).print(escape(line))
    if not quiet and not tune_only:
        for out in dict.fromkeys(p.spec.output_dir for p in points if p.spec is not None):
            print_table(render_layout(load_results(out), "matched", "rich"))
    if report:
        from ..results.report import write_report

        for out in dict.fromkeys(p.spec.output_dir for p in points if p.spec is not None):
            console.print(escape(f"report: {write_report(out, log=lambda s: console.print(escape(s)))}"))
