"""Printing rich tables whole: never squeeze columns to ellipses, even when stdout is not a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_table(table: Table) -> None:
    console = Console()
    width = Console(width=10_000).measure(table).maximum
    Console(width=max(console.width, width)).print(table)
