"""`sencache-bench flops`: exact FLOPs of a full-size model per component, offline, in seconds."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table


class OutputFormat(str, Enum):
    rich = "rich"
    json = "json"


def flops(
    spec: Annotated[Optional[Path], typer.Argument(help="Experiment spec (YAML): count its model and sampling.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Registered full-size model.")] = None,
    height: Annotated[Optional[int], typer.Option(min=1, help="Video height (default: the spec's or model's).")] = None,
    width: Annotated[Optional[int], typer.Option(min=1, help="Video width (default: the spec's or model's).")] = None,
    frames: Annotated[Optional[int], typer.Option(min=1, help="Number of frames (default: the spec's or model's).")] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, help="Denoising steps (default: the spec's or model's).")] = None,
    nfe: Annotated[Optional[float], typer.Option(
        min=0, help="Computed transformer calls per CFG branch of a cached run (out of --steps): adds its total.")] = None,
    format: Annotated[OutputFormat, typer.Option("--format", help="rich table or JSON.")] = OutputFormat.rich,
) -> None:
    """Exact FLOPs of a full-size model (with and without attention), from its architecture alone."""
    from ..api import flops as count

    out = count(model, spec=spec, height=height, width=width, frames=frames, steps=steps, nfe=nfe)
    if format is OutputFormat.json:
        typer.echo(json.dumps(out, indent=2))
    else:
        Console().print(_table(out))


def _table(f: dict) -> Table:
    """The rich table of :func:`sencache_bench.api.flops`' dict."""
    cfg = f"{len(f['branches'])} call(s)/step x batch {f['batch']}"
    table = Table(title=f"{f['model']}: {f['width']}x{f['height']}, {f['frames']} frames, {f['steps']} steps, "
                        f"guidance {f['guidance_scale']:g} ({cfg})",
                  caption="full: attention's QK^T and PV included; no-attn: the papers' convention (SenCache, "
                          f"SemCache), which leaves them out. Counted in {f['seconds']:.1f} s on the meta device.")
    table.add_column("component")
    table.add_column("count", justify="right")
    table.add_column("PFLOPs full", justify="right")
    table.add_column("PFLOPs no-attn", justify="right")
    table.add_column("attention", justify="right")
    rows = [("text encoder", f"x{f['prompt_passes']}", f["text_encoder"]),
            ("transformer, one call", "", f["transformer_call"]),
            ("transformer loop", f"x{f['calls']}", f["transformer_loop"]),
            ("VAE decode", "x1", f["vae_decode"]),
            ("total", "", f["total"])]
    policy = f.get("policy")
    if policy is not None:
        nfe = policy["nfe"]
        rows.append((f"cached total (NFE {nfe:g}/{f['steps']})", f"x{nfe * len(f['branches']):g}", policy["total"]))
    for label, n, value in rows:
        attention = value["flops"] - value["flops_no_attn"]
        table.add_row(label, n, _p(value["flops"]), _p(value["flops_no_attn"]),
                      f"{attention / max(value['flops'], 1):.0%}")
    if policy is not None:
        table.add_row("reduction", "", f"{policy['reduction']:.1%}", f"{policy['reduction_no_attn']:.1%}", "")
    return table


def _p(flops: int) -> str:
    value = flops / 1e15
    return f"{value:.4f}" if value < 1 else f"{value:.2f}"
