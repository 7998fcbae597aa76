"""`sencache-bench compare RESULTS_DIR BASELINE.json`: the regression gate (exit 1 when a policy got worse)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..results.compare import GATED, compare, load_baseline, parse_tolerances, update_baseline
from ..results.tables import aggregate
from ._console import load_results, print_table


def _fmt(value) -> str:
    return "" if value is None else f"{value:.6g}"


def compare_cmd(
    results: Annotated[Path, typer.Argument(help="A results directory.")],
    baseline: Annotated[Path, typer.Argument(help="Baseline JSON (committed).")],
    tolerance: Annotated[list[str], typer.Option("--tolerance", "-t", help=(
        "METRIC=VALUE, repeatable; defaults: " + ", ".join(f"{m}={s[1]}{' (relative)' if s[2] else ''}"
                                                          for m, s in GATED.items())))] = [],  # noqa: B006
    update: Annotated[bool, typer.Option("--update", help="Write a new baseline from the results instead.")] = False,
) -> None:
    """Compare NFE, fidelity and FLOPs with a baseline; exit 1 when a policy got worse beyond tolerance."""
    rows = aggregate(load_results(results))
    console = Console(stderr=True, soft_wrap=True)  # one line per message, never wrapped
    if update:
        update_baseline(baseline, rows)
        console.print(f"wrote {baseline} ({len(rows)} entries)")
        return
    changes = compare(rows, load_baseline(baseline), parse_tolerances(tolerance))
    worse = [c for c in changes if c.worse]
    if changes:
        table = Table("model | policy | setting", "metric", "baseline", "current", "verdict")
        for c in changes:
            verdict = "[red]WORSE[/]" if c.worse else "ok"
            table.add_row(c.key, c.metric, _fmt(c.baseline), _fmt(c.current), verdict + (f" ({c.note})" if c.note else ""))
        print_table(table)
    if worse:
        console.print(f"[red]regression:[/] {len(worse)} value(s) worse than {baseline} beyond tolerance")
        raise typer.Exit(1)
    console.print(f"no regression against {baseline} ({len(rows)} entries, {len(changes)} changed within tolerance)")
