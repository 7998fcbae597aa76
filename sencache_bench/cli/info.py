"""`sencache-bench models` / `policies`: what can go in a spec, and where each name comes from.

Plugins (entry points, see :mod:`sencache_bench.plugins`) are listed beside the built-ins; one that
fails to load is one warning line, and the rest of the table is still printed.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import BenchError
from ._console import print_table


def _problems(failed: list[str]) -> None:
    """Entries that failed to load now (discovery problems were printed when they were found)."""
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    for line in failed:
        console.print(f"[yellow]warning:[/] {escape(line)}")


def models() -> None:
    """List the registered models with their default sampling settings and where each comes from."""
    table = Table("name", "kind", "pipeline", "weights", "default sampling", "source")
    from ..models import MODELS

    failed = []
    for name in MODELS:
        try:
            e = MODELS.get(name)
        except BenchError as err:
            failed.append(str(err))
            continue
        d = e.defaults
        table.add_row(name, e.kind, e.family.pipeline_class, e.repo_id or "built in code",
                      f"{d.width}x{d.height}x{d.frames}, {d.steps} steps, cfg {d.guidance_scale}",
                      escape(MODELS.source(name)))
    print_table(table)
    _problems(failed)


def policies() -> None:
    """List the cache policies, their parameters and where each comes from."""
    table = Table("name", "method", "parameters", "source")
    from ..policies import METHODS, POLICIES

    failed = []
    for name in POLICIES:
        try:
            cfg = POLICIES.get(name)
        except BenchError as err:
            failed.append(str(err))
            continue
        params = ", ".join(f"{k}={'' if f.default is None else f.default}" for k, f in cfg.model_fields.items()
                           if k != "name")
        table.add_row(name, escape(METHODS.get(name, "-")), escape(params) or "-", escape(POLICIES.source(name)))
    print_table(table)
    _problems(failed)
