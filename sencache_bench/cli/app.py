"""The Typer app: one command per module, errors mapped to one line and an exit code.

Set SENCACHE_BENCH_DEBUG=1 to see the full traceback of an error.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

from .. import __version__
from ..errors import BenchError

err_console = Console(stderr=True, highlight=False, soft_wrap=True)

app = typer.Typer(
    name="sencache-bench",
    help="Benchmark training-free caches of video diffusion transformers against uncached references.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"sencache-bench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Benchmark training-free caches of video diffusion transformers against uncached references."""


def _register() -> None:
    from .calibrate import calibrate
    from .check_policy import check_policy
    from .compare import compare_cmd
    from .flops import flops
    from .info import models, policies
    from .match import match
    from .plot import plot
    from .report import report
    from .run import run
    from .score import score
    from .sweep import sweep
    from .table import table
    from .train_bench import train_bench_model
    from .vbench import vbench

    app.command("run")(run)
    app.command("table")(table)
    app.command("calibrate")(calibrate)
    app.command("flops")(flops)
    app.command("compare")(compare_cmd)
    app.command("models")(models)
    app.command("policies")(policies)
    app.command("train-bench-model")(train_bench_model)
    app.command("score")(score)
    app.command("plot")(plot)
    app.command("sweep")(sweep)
    app.command("vbench")(vbench)
    app.command("match")(match)
    app.command("check-policy")(check_policy)
    app.command("report")(report)


_register()


def main() -> None:
    try:
        app()
    except BenchError as err:
        if os.environ.get("SENCACHE_BENCH_DEBUG"):
            raise
        for line in str(err).splitlines() or ["error"]:
            err_console.print(f"[bold red]error:[/] {line}", markup=True, highlight=False)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted: finished records are kept; rerun the same command to resume")
        sys.exit(130)
