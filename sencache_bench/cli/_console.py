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
    """:func:`sencache_bench.api.records`, its warnings printed by rich (one line per problem, never wrapped)."""
    from rich.markup import escape

    from ..api import records

    console = Console(stderr=True, soft_wrap=True, highlight=False)
    return records(results, required, warn=lambda p: console.print(f"[yellow]warning:[/] {escape(p)}"))


def warn_timing(records: list[dict], rows: list[dict] | None = None) -> None:
    """One warning line per table row whose speedup is implausible (results/speedup.py); ``rows``: the default
    table's rows of ``records`` when the caller has them already."""
    from rich.markup import escape

    from ..results.speedup import warnings
    from ..results.tables import aggregate

    console = Console(stderr=True, soft_wrap=True, highlight=False)  # one line per warning, as it says
    for line in warnings(aggregate(records) if rows is None else rows):
        console.print(f"[yellow]warning:[/] {escape(line)}")
