"""`sencache-bench plot RESULTS_DIR`: Pareto, decision-trace, output-change and sensitivity-profile figures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import BenchError
from ..results.plots import FORMATS, X_AXES, plot_frames, plot_profiles, plot_results


def plot(
    results: Annotated[Path | None, typer.Argument(help="A results directory (searched recursively).")] = None,
    profile: Annotated[list[Path], typer.Option("--profile", "-p", help=(
        "A SenCache sensitivity profile JSON to plot Jx(t), Jt(t) from; repeat to overlay (e.g. 8 samples "
        "vs more)."))] = [],  # noqa: B006 - Typer needs a literal default
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for the figures (default: "
                                                                 "RESULTS_DIR/plots, or ./plots).")] = None,
    x: Annotated[str, typer.Option("--x", help="Pareto x axis: speedup (measured latency) or flops "
                                               "(FLOPs ratio, no attention: machine-independent).")] = "speedup",
    formats: Annotated[str, typer.Option("--formats", help="Comma-separated: png, svg.")] = "png,svg",
    frames: Annotated[int | None, typer.Option("--frames", help="Also a frame strip of this prompt index: the "
                                                                "reference above every cached video.")] = None,
) -> None:
    """Write the figures as PNG and SVG and list them."""
    fmts = [f.strip() for f in formats.split(",") if f.strip()]
    bad = [f for f in fmts if f not in FORMATS]
    if bad or not fmts:
        raise BenchError(f"--formats: unknown format {bad[0] if bad else '(none)'!r} (valid: {', '.join(FORMATS)})")
    if x not in X_AXES:
        raise BenchError(f"--x: unknown axis {x!r} (valid: {', '.join(X_AXES)})")
    if results is None and not profile:
        raise BenchError("give a results directory, or --profile FILE (or both)")
    if results is not None and not results.is_dir():
        raise BenchError(f"results directory {results} not found: run `sencache-bench run SPEC.yaml` first")
    for p in profile:
        if not p.is_file():
            raise BenchError(f"profile {p} not found")
    out = out or ((results / "plots") if results is not None else Path("plots"))
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    paths, notes = [], []
    if results is not None:
        paths, notes = plot_results(results, out, x=x, formats=fmts)
        if frames is not None:
            paths += plot_frames(results, out, frames, formats=fmts)
    if profile:
        paths += plot_profiles(profile, out, fmts)
    for note in notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    if not paths:
        raise BenchError("no figure written (see the notes above)")
    for path in paths:
        print(path)
