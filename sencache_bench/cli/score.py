"""`sencache-bench score REF_DIR GEN_DIR`: LPIPS / SSIM / PSNR of any two folders of videos, paired by name."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import BenchError
from ..results.score import SCORE_CHOICES, SCORE_METRICS, render_score, score_dirs
from ..results.tables import FORMATS
from ._console import print_table


def score(
    ref_dir: Annotated[Path, typer.Argument(help="Folder of reference (uncached) videos, e.g. RESULTS/references.")],
    gen_dir: Annotated[Path, typer.Argument(help="Folder of generated videos with the same file names, or this "
                                                 "harness's run videos, e.g. RESULTS/runs/<setting>.")],
    format: Annotated[str, typer.Option("--format", "-f", help=f"One of: {', '.join(FORMATS)}.")] = "rich",
    metrics: Annotated[str, typer.Option("--metrics", "-m", help="Comma-separated, from "
                                                                       f"{', '.join(SCORE_CHOICES)}.")]
    = ",".join(SCORE_METRICS),
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write the full report as JSON here.")] = None,
) -> None:
    """Pair videos by file name and print per-video and mean LPIPS, SSIM and PSNR (the code `run` uses).

    Missing pairs, unreadable files and mismatched shapes get one line each on stderr; the rest is
    still scored. Exit 0 when at least one pair was scored.
    """
    if format not in FORMATS:
        raise BenchError(f"--format: unknown format {format!r} (valid: {', '.join(FORMATS)})")
    chosen = [m.strip() for m in metrics.split(",") if m.strip()]
    bad = [m for m in chosen if m not in SCORE_CHOICES]
    if bad or not chosen:
        raise BenchError(f"--metrics: unknown metric {bad[0] if bad else '(none)'!r} "
                         f"(valid: {', '.join(SCORE_CHOICES)})")
    for folder, what in ((ref_dir, "reference"), (gen_dir, "generated")):
        if not folder.is_dir():
            raise BenchError(f"{what} folder {folder} not found")
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    report = score_dirs(ref_dir, gen_dir, chosen)
    for problem in report.problems:
        console.print(f"[yellow]warning:[/] {escape(problem)}")
    for metric, note in report.notes.items():
        console.print(f"[yellow]note:[/] {metric}: {escape(note)}")
    if out is not None:
        import json

        from ..results.store import atomic_write_bytes

        atomic_write_bytes(out, (json.dumps(report.to_json(), indent=1) + "\n").encode())
    if not report.rows:
        raise BenchError(f"nothing scored: no pair of readable videos with the same name and shape in {ref_dir} "
                         f"and {gen_dir}")
    rendered = render_score(report, format)
    if format == "rich":
        print_table(rendered)
    else:
        print(rendered, end="")
