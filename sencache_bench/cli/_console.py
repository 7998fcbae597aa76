"""Printing rich tables whole: never squeeze columns to ellipses, even when stdout is not a terminal."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table


def print_table(table: Table) -> None:
    console = Console()
    width = Console(width=10_000).measure(table).maximum
    Console(width=max(console.width, width)).print(table)


def load_results(results: Path, required: bool = True) -> list[dict]:
    """Run records under ``results``; unreadable or old ones are warned about (and skipped)."""
    from rich.markup import escape

    from ..errors import BenchError
    from ..results.store import load_records

    if not results.is_dir():
        if not required:
            return []
        raise BenchError(f"results directory {results} not found: run `sencache-bench run SPEC.yaml` first")
    records, problems = load_records(results)
    console = Console(stderr=True, soft_wrap=True, highlight=False)  # one line per problem, never wrapped
    for p in problems:
        console.print(f"[yellow]warning:[/] {escape(p)}")
    if required and not records:
        raise BenchError(f"no run records under {results}: run `sencache-bench run SPEC.yaml` first")
    return records


def warn_timing(records: list[dict], rows: list[dict] | None = None) -> None:
    """One warning line per table row whose speedup is implausible (results/speedup.py); ``rows``: the default
    table's rows of ``records`` when the caller has them already."""
    from rich.markup import escape

    from ..results.speedup import warnings
    from ..results.tables import aggregate

    console = Console(stderr=True)
    for line in warnings(aggregate(records) if rows is None else rows):
        console.print(f"[yellow]warning:[/] {escape(line)}")
