"""`sencache-bench report RESULTS_DIR`: one self-contained HTML page of a results folder (docs/report.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report(
    results: Annotated[Path, typer.Argument(help="A results directory (searched recursively).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="The HTML file to write (default: "
                                                                 "RESULTS_DIR/report.html).")] = None,
    videos: Annotated[int, typer.Option("--videos", help="Videos shown per policy setting, each beside its "
                                                         "reference and their difference (0: none).")] = 2,
) -> None:
    """Write the tables, figures, videos, decision traces and provenance as one HTML file that opens offline."""
    from rich.console import Console
    from rich.markup import escape

    from ..results.report import write_report

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    path = write_report(results, out, videos=videos, log=lambda line: console.print(escape(line)))
    print(path)
