"""`sencache-bench table RESULTS_DIR`: aggregate run records into the comparison table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import BenchError
from ..results.layouts import LAYOUTS
from ._console import load_results, print_table, warn_timing
from ..results.tables import FORMATS


def table(
    results: Annotated[Path, typer.Argument(help="A results directory (searched recursively).")],
    format: Annotated[str, typer.Option("--format", "-f", help=f"One of: {', '.join(FORMATS)}.")] = "rich",
    by_group: Annotated[bool, typer.Option("--by-group", help="One row per prompt group as well.")] = False,
    layout: Annotated[str, typer.Option("--layout", "-l", help=(
        "default: every column; sencache: SenCache Table 1 (NFE, cache %, LPIPS, PSNR, SSIM); semcache: SemCache "
        "Table 1 (FLOPs, speedup, latency, VBench, LPIPS, SSIM, PSNR); matched: one row per policy per target budget "
        "of `sencache-bench match`, fidelity with 95% intervals, bold only where the best interval clears the "
        "runner-up's; fronts: per model, metric and pair of policies run at several budgets, the mean gap between "
        "their quality-vs-NFE fronts over the common NFE range, with a paired bootstrap interval and Holm-adjusted "
        "p. Paper layouts group by model and set the best value per column in bold."))] = "default",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write the rendered table here.")] = None,
) -> None:
    """Aggregate records per (model, policy, setting) and print the table."""
    from .. import api

    if format not in FORMATS:
        raise BenchError(f"--format: unknown format {format!r} (valid: {', '.join(FORMATS)})")
    if layout not in LAYOUTS:
        raise BenchError(f"--layout: unknown layout {layout!r} (valid: {', '.join(LAYOUTS)})")
    if by_group and layout != "default":
        raise BenchError("--by-group applies to the default layout only")
    records = load_results(results)
    warn_timing(records)
    rendered = api.table(records, layout=layout, format=format, by_group=by_group)
    if format == "rich":
        print_table(rendered)
    else:
        print(rendered, end="")
    if out is not None:
        from ..results.store import atomic_write_bytes

        text = rendered if isinstance(rendered, str) else api.table(records, layout, "markdown", by_group)
        atomic_write_bytes(out, text.encode())
