"""`sencache-bench models` / `policies`: what can go in a spec."""

from __future__ import annotations

from rich.table import Table

from ._console import print_table


def models() -> None:
    """List the registered models with their default sampling settings."""
    table = Table("name", "kind", "pipeline", "weights", "default sampling")
    from ..models import MODELS

    for name in MODELS:
        e = MODELS.get(name)
        d = e.defaults
        table.add_row(name, e.kind, e.family.pipeline_class, e.repo_id or "built in code",
                      f"{d.width}x{d.height}x{d.frames}, {d.steps} steps, cfg {d.guidance_scale}")
    print_table(table)


def policies() -> None:
    """List the cache policies and their parameters."""
    table = Table("name", "parameters")
    from ..policies import POLICIES

    for name in POLICIES:
        cfg = POLICIES.get(name)
        params = ", ".join(f"{k}={'' if f.default is None else f.default}" for k, f in cfg.model_fields.items()
                           if k != "name")
        table.add_row(name, params or "-")
    print_table(table)
