"""`sencache-bench calibrate SPEC.yaml`: measure what a policy needs offline (e.g. SenCache's sensitivity profile)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..calibration import CALIBRATORS
from ..errors import BenchError
from .run import SetOption


def calibrate(
    spec: Annotated[Path, typer.Argument(help="YAML experiment spec: its model and sampling schedule are calibrated.")],
    policy: Annotated[str, typer.Option("--policy", "-p", help="Which policy's calibration to run.")] = "sencache",
    samples: Annotated[int | None, typer.Option("--samples", "-n", min=1, help="Calibration samples (videos; "
                                                "default: the calibrator's own, 8, or 4 for lemica and dpcache).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Profile file to write (default: "
                                             "<output.dir>/profiles/, where a run finds it).")] = None,
    videos: Annotated[Path | None, typer.Option("--videos", help="A folder of real videos (mp4) to calibrate on "
                                                "instead of the model's own generations (sencache).")] = None,
    overrides: SetOption = [],  # noqa: B006 - Typer needs a literal default
) -> None:
    """Calibrate a policy for the spec's model and schedule and write its profile file."""
    from ..runner import Runner, check_output_dir
    from ..spec import load_spec

    resolved = load_spec(spec, overrides)
    check_output_dir(resolved.output_dir)
    fn = CALIBRATORS.get(policy)
    if samples is None:
        default = inspect.signature(fn).parameters["samples"].default
        samples = 8 if default is inspect.Parameter.empty else default
    options = {}
    if videos is not None:
        if "videos" not in inspect.signature(fn).parameters:
            raise BenchError(f"--videos: the {CALIBRATORS.canonical(policy)} calibration does not take videos")
        options["videos"] = videos
    if out is None and inspect.signature(fn).parameters["out"].default is inspect.Parameter.empty:
        out = resolved.output_dir / "profiles" / f"{CALIBRATORS.canonical(policy)}-{resolved.hash}.json"
    console = Console(stderr=True)
    runner = Runner(resolved, log=console.print)
    path = fn(runner, samples=samples, out=out, log=console.print, **options)
    print(path)
