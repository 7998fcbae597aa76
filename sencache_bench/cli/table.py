"""`sencache-bench table RESULTS_DIR`: aggregate run records into the comparison table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..errors import BenchError
from ..results.store import load_records
from ._console import print_table
from ..results.tables import FORMATS, aggregate, render


def table(
    results: Annotated[Path, typer.Argument(help="A results directory (searched recursively).")],
    format: Annotated[str, typer.Option("--format", "-f", help=f"One of: {', '.join(FORMATS)}.")] = "rich",
    by_group: Annotated[bool, typer.Option("--by-group", help="One row per prompt group as well.")] = False,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write the rendered table here.")] = None,
) -> None:
    """Aggregate records per (model, policy, setting) and print the table."""
    if format not in FORMATS:
        raise BenchError(f"--format: unknown format {format!r} (valid: {', '.join(FORMATS)})")
    if not results.is_dir():
        raise BenchError(f"results directory {results} not found: run `sencache-bench run SPEC.yaml` first")
    records, problems = load_records(results)
    console = Console(stderr=True)
    for p in problems:
        console.print(f"[yellow]warning:[/] {p}")
    if not records:
        raise BenchError(f"no run records under {results}: run `sencache-bench run SPEC.yaml` first")
    rendered = render(aggregate(records, by_group=by_group), format, by_group=by_group)
    if format == "rich":
        print_table(rendered)
    else:
        print(rendered, end="")
    if out is not None:
        from ..results.store import atomic_write_bytes

        text = rendered if isinstance(rendered, str) else render(aggregate(records, by_group), "markdown", by_group)
        atomic_write_bytes(out, text.encode())
