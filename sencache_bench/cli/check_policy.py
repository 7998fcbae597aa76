"""`sencache-bench check-policy NAME`: the conformance kit (sencache_bench.testing) on a tiny model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import BenchError


def _pairs(items: list[str], option: str) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BenchError(f"{option} {item!r}: expected KEY=VALUE, e.g. {option} thresh=0.1")
        out[key] = yaml.safe_load(value)
    return out


def check_policy(
    name: Annotated[str, typer.Argument(help="A registered policy (built-in or plugin).")],
    model: Annotated[str, typer.Option("--model", "-m", help="A tiny model to check on.")] = "tiny-wan",
    params: Annotated[list[str], typer.Option("--set", help=(
        "A policy parameter of the setting that may reuse, e.g. --set thresh=0.2 (repeatable, YAML values)."))
    ] = [],  # noqa: B006 - Typer needs a literal default
    never: Annotated[list[str], typer.Option("--never-reuse", help=(
        "A parameter of the never-reuse setting, for a policy without a knob (repeatable)."))] = [],  # noqa: B006
    plugin: Annotated[list[str], typer.Option("--plugin", help="Import this module first (a plugin that is not "
                                                              "installed; repeatable).")] = [],  # noqa: B006
    steps: Annotated[int, typer.Option(min=2, help="Denoising steps.")] = 4,
    image: Annotated[Path | None, typer.Option(help="The first frame for an image-to-video model (default: frame 0 "
                                                     "of a bench-t2v clip, a red circle moving right).")] = None,
) -> None:
    """Check a policy: never-reuse = reference bit for bit, first call computes, NFE and trace counted, branches
    independent, no state across videos, monotone knob. Exit code 1 when a check fails."""
    from ..plugins import load_spec_plugins
    from ..testing import check_policy as run_checks

    if plugin:  # modules in the working directory import, as with `python -m` (a console script's sys.path lacks it)
        load_spec_plugins(plugin, search=[Path.cwd()])
    report = run_checks(name, model, params=_pairs(params, "--set"),
                        never_reuse=_pairs(never, "--never-reuse") if never else None, steps=steps, image=image)
    typer.echo(f"{report.policy} on {report.model}:")
    for line in report.lines():
        typer.echo(f"  {line}")
    if not report.ok:
        raise typer.Exit(1)
