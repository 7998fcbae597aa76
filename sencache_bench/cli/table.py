"""`sencache-bench table RESULTS_DIR`: aggregate run records into the comparison table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import BenchError
from ..results.layouts import LAYOUTS
from ..results.tables import FORMATS
from ._console import load_results, print_table, warn_timing


def table(
    results: Annotated[Path, typer.Argument(help="A results directory (searched recursively).")],
    format: Annotated[str, typer.Option("--format", "-f", help=f"One of: {', '.join(FORMATS)}.")] = "rich",
    by_group: Annotated[bool, typer.Option("--by-group", help="One row per prompt group as well.")] = False,
    layout: Annotated[str, typer.Option("--layout", "-l", help=(
        "default: every column; sencache: SenCache Table 1 (NFE, cache %, LPIPS, PSNR, SSIM); semcache: SemCache "
        "Table 1 (FLOPs, speedup, latency, VBench, LPIPS, SSIM, PSNR); matched: one row per policy per target budget "
        "of `sencache-bench match`, with 95% intervals; pairs: every pair of rows compared on their shared videos "
        "(paired bootstrap, Holm); fronts: per pair of policies run at several budgets, the mean gap between their "
        "quality-vs-NFE fronts over the common NFE range (paired bootstrap, Holm). overhead: per policy, the share of its Amdahl bound reached and the time spent deciding (decision overhead). The ranking layouts set in bold only a row the paired comparison separates from "
        "every other (docs/statistics.md)."))] = "default",
    detect: Annotated[list[str], typer.Option("--detect", help=(
        "METRIC=DIFF, e.g. psnr=0.5 or speedup=1.05 (repeatable): the footnote says how many videos would separate "
        "that difference."))] = [],  # noqa: B006 - Typer needs a literal default
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
    targets = parse_detect(detect)
    records = load_results(results)
    rows = None
    if layout == "default" and not by_group:  # one aggregation serves the warnings and the table (issue 27)
        from ..results.tables import aggregate, render

        rows = aggregate(records)
    warn_timing(records, rows)
    rendered = (render(rows, format) if rows is not None
                else api.table(records, layout=layout, format=format, by_group=by_group, detect=targets))
    if format == "rich":
        print_table(rendered)
    else:
        print(rendered, end="")
    if out is not None:
        from ..results.store import atomic_write_bytes

        text = (rendered if isinstance(rendered, str) else render(rows, "markdown") if rows is not None
                else api.table(records, layout, "markdown", by_group, targets))
        atomic_write_bytes(out, text.encode())


def parse_detect(items: list[str]) -> dict[str, float]:
    """``psnr=0.5`` -> {"psnr": 0.5}; a bad item is one line naming it."""
    from ..results.verdicts import NAMES

    out = {}
    for item in items:
        metric, _, value = (x.strip() for x in item.partition("="))
        try:
            diff = float(value)
        except ValueError:
            diff = None
        if metric not in NAMES or diff is None or not diff > 0:
            raise BenchError(f"--detect {item!r}: give METRIC=DIFF with METRIC one of {', '.join(NAMES)} and DIFF > 0 "
                             f"(e.g. --detect psnr=0.5, --detect speedup=1.05)")
        out[metric] = diff
    return out
